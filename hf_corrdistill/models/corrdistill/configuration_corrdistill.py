"""Configuration of the DistilHuBERT-style student (hf-corrdistill docs/method.md, "The student").

This file is copied next to saved checkpoints for ``trust_remote_code`` loading, so it imports nothing from
``hf_corrdistill``. Field names follow ``HubertConfig`` so that a student backbone converts to a plain HuBERT.
"""

from transformers import PreTrainedConfig


class CorrDistillConfig(PreTrainedConfig):
    r"""
    Configuration of a correlation-distilled student. Defaults reproduce DistilHuBERT (Chang et al., ICASSP 2022):
    the HuBERT-Base CNN, a 512 -> 768 projection, a convolutional positional embedding and 2 post-LayerNorm
    transformer layers (about 23.5M parameters), plus one prediction head per distilled teacher layer.

    Args:
        conv_dim, conv_stride, conv_kernel (`tuple[int, ...]`):
            Channels, strides and kernel widths of the CNN feature encoder (320x down-sampling by default).
        conv_bias (`bool`): Whether the CNN convolutions have a bias.
        feat_extract_norm (`str`): `"group"` (GroupNorm on the first conv layer, HuBERT Base) or `"layer"`.
        feat_extract_activation (`str`): Activation of the CNN.
        feat_proj_layer_norm (`bool`): LayerNorm on the CNN output before the projection (DistilHuBERT: none).
        feat_proj_dropout (`float`): Dropout after the projection.
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size (`int`): Transformer sizes.
        hidden_act (`str`): Activation of the feed-forward blocks.
        hidden_dropout, attention_dropout, activation_dropout (`float`): Dropout probabilities.
        layerdrop (`float`): Probability of skipping a transformer layer in training.
        layer_norm_eps (`float`): LayerNorm epsilon.
        num_conv_pos_embeddings, num_conv_pos_embedding_groups (`int`): Positional convolution kernel and groups.
        initializer_range (`float`): Standard deviation of the normal initialisation of linear layers.
        pred_layer_ids (`tuple[int, ...]`):
            Teacher layers the prediction heads regress, indexed like `hidden_states` (1 = first layer output;
            0, the CNN/projection output, is not allowed).
        teacher_hidden_size (`int`): Width of the teacher's hidden states (the heads' output width).
        enhancement_bins (`int`):
            Log-mel bins the training-only enhancement head of [`CorrDistillForPreTraining`] predicts from the last
            hidden state (RobustDistiller's enhancement task); 0, the default: no such head.

    Fine-tuning fields, named as in `HubertConfig` so that the stock `run_audio_classification.py` and
    `run_speech_recognition_ctc.py` scripts set them through `config.update`:

        apply_spec_augment (`bool`):
            Whether SpecAugment masks the projected CNN features in training when `mask_time_prob` or
            `mask_feature_prob` is positive.
        mask_time_prob (`float`):
            About `mask_time_prob * frames / mask_time_length` spans of `mask_time_length` frames per utterance are
            replaced by the learned `masked_spec_embed` in training (spans may overlap); the vector exists only in
            models built with `mask_time_prob > 0`. 0 by default, unlike HuBERT's 0.05, so that distillation sees
            unmasked features and distilled students carry no such vector.
        mask_time_length, mask_time_min_masks (`int`): Span length and minimum number of time spans.
        mask_feature_prob, mask_feature_length, mask_feature_min_masks:
            The same along the hidden channels, which are zeroed for the whole utterance (0 by default, as HuBERT).
        use_weighted_layer_sum (`bool`):
            [`CorrDistillForSequenceClassification`] pools a softmax-weighted sum of all `hidden_states` instead of
            the last layer.
        classifier_proj_size (`int`): Width of the classifier's projection before mean pooling.
        final_dropout (`float`): Dropout before the CTC head.
        vocab_size (`int`): Size of the CTC vocabulary (the CTC head's output width).
        pad_token_id (`int`): Vocabulary id of the padding token, the CTC blank.
        ctc_loss_reduction (`str`): `"sum"` or `"mean"` (per target length, then over the batch), as `ctc_loss`.
        ctc_zero_infinity (`bool`): Zero infinite CTC losses (inputs too short for their targets) and their gradients.
        tokenizer_class (`str`):
            Tokenizer a CTC fine-tuning script builds from a fresh `vocab.json` (the stock script reads it from the
            config because `corrdistill` is not a model type `AutoTokenizer` knows).

    `AutoTokenizer` and `AutoProcessor` know the `corrdistill` type once this file is imported (see
    `CorrDistillProcessor`).
    """

    model_type = "corrdistill"

    conv_dim: list[int] | tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    conv_stride: list[int] | tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: list[int] | tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_bias: bool = False
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    feat_proj_layer_norm: bool = False
    feat_proj_dropout: float = 0.0
    hidden_size: int = 768
    num_hidden_layers: int = 2
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.1
    layerdrop: float = 0.0
    layer_norm_eps: float = 1e-5
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    initializer_range: float = 0.02
    pred_layer_ids: list[int] | tuple[int, ...] = (4, 8, 12)
    teacher_hidden_size: int = 768
    enhancement_bins: int = 0
    # fine-tuning (HubertConfig's names)
    apply_spec_augment: bool = True
    mask_time_prob: float = 0.0
    mask_time_length: int = 10
    mask_time_min_masks: int = 2
    mask_feature_prob: float = 0.0
    mask_feature_length: int = 10
    mask_feature_min_masks: int = 0
    use_weighted_layer_sum: bool = False
    classifier_proj_size: int = 256
    final_dropout: float = 0.1
    vocab_size: int = 32
    pad_token_id: int = 0
    ctc_loss_reduction: str = "sum"
    ctc_zero_infinity: bool = False
    tokenizer_class: str | None = "Wav2Vec2CTCTokenizer"

    def __post_init__(self, **kwargs):
        self.conv_dim = tuple(self.conv_dim)
        self.conv_stride = tuple(self.conv_stride)
        self.conv_kernel = tuple(self.conv_kernel)
        self.pred_layer_ids = tuple(int(i) for i in self.pred_layer_ids)
        self.num_feat_extract_layers = len(self.conv_dim)
        super().__post_init__(**kwargs)
        self._check()

    def _check(self) -> None:
        if not len(self.conv_dim) == len(self.conv_stride) == len(self.conv_kernel):
            raise ValueError(
                f"conv_dim, conv_stride and conv_kernel must have equal lengths, got {len(self.conv_dim)}, "
                f"{len(self.conv_stride)} and {len(self.conv_kernel)}"
            )
        if self.feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {self.feat_extract_norm!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_conv_pos_embedding_groups "
                f"({self.num_conv_pos_embedding_groups})"
            )
        self.check_pred_layer_ids(self.pred_layer_ids)
        if self.enhancement_bins < 0:
            raise ValueError(f"enhancement_bins must be >= 0 (0: no enhancement head), got {self.enhancement_bins}")
        for name in ("mask_time_prob", "mask_feature_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.mask_time_length < 1 or self.mask_feature_length < 1:
            raise ValueError(
                f"mask_time_length and mask_feature_length must be >= 1, got {self.mask_time_length} and "
                f"{self.mask_feature_length}"
            )
        if self.ctc_loss_reduction not in ("sum", "mean"):
            raise ValueError(f"ctc_loss_reduction must be 'sum' or 'mean', got {self.ctc_loss_reduction!r}")

    @staticmethod
    def check_pred_layer_ids(layer_ids, name: str = "pred_layer_ids") -> None:
        """Teacher layers are `hidden_states` indices: 1 is the first transformer layer's output; 0, the CNN and
        projection output that enters the first layer, is not a layer to distil. The training arguments check their
        ``pred_layers`` here too."""
        if not layer_ids or min(layer_ids) < 1:
            raise ValueError(f"{name} must be non-empty teacher layer indices >= 1 (hidden_states indices: 1 = the "
                             f"first transformer layer), got {layer_ids!r}")

    @property
    def inputs_to_logits_ratio(self) -> int:
        ratio = 1
        for stride in self.conv_stride:
            ratio *= stride
        return ratio


class CorrDistillProcessor:
    """What `AutoProcessor` loads from a `corrdistill` folder: a `Wav2Vec2Processor` (feature extractor and CTC
    tokenizer, as for HuBERT) where the folder holds a CTC vocabulary, as a fine-tuning script's output does; the
    `Wav2Vec2FeatureExtractor` alone where it holds none, as a pre-trained student."""

    _HUB_KWARGS = ("cache_dir", "force_download", "token", "revision", "local_files_only", "subfolder")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Processor
        from transformers.utils import cached_file

        vocabulary = cached_file(
            pretrained_model_name_or_path, "vocab.json", _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False, **{k: v for k, v in kwargs.items() if k in cls._HUB_KWARGS}
        )
        if vocabulary is None:
            kwargs.pop("trust_remote_code", None)
            return Wav2Vec2FeatureExtractor.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return Wav2Vec2Processor.from_pretrained(pretrained_model_name_or_path, **kwargs)


def _register_with_auto_classes() -> None:
    """Register `corrdistill` with `AutoConfig` and `AutoTokenizer`, unless it is registered already (by
    hf_corrdistill, or by a student loaded before).

    Imported as remote code (`trust_remote_code=True`), this file makes the folders that scripts save from a loaded
    student (a config.json with `auto_map`, beside a feature extractor and a tokenizer) load with `AutoConfig` and
    `AutoProcessor` in the same process without asking again for remote code, as the stock CTC script's
    `AutoProcessor.from_pretrained(output_dir)` does, and lets that script build its tokenizer with
    `tokenizer_type=config.model_type`. Once registered, this class serves every `corrdistill` config loaded in the
    process.
    """
    from transformers import AutoConfig, AutoTokenizer, Wav2Vec2CTCTokenizer
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES

    model_type = CorrDistillConfig.model_type
    if model_type not in CONFIG_MAPPING:
        AutoConfig.register(model_type, CorrDistillConfig)
    AutoTokenizer.register(CONFIG_MAPPING[model_type], Wav2Vec2CTCTokenizer, exist_ok=True)
    # `tokenizer_type=` is looked up in this name table alone, which `AutoTokenizer.register` does not fill
    TOKENIZER_MAPPING_NAMES.setdefault(model_type, Wav2Vec2CTCTokenizer.__name__)


def register_processor() -> None:
    """`CorrDistillProcessor` for `AutoProcessor`. Importing `AutoProcessor` loads transformers' modeling code, so
    the package calls this with its other Auto registrations (after train.py's checks); as remote code, this file
    calls it on import."""
    from transformers import AutoProcessor
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    AutoProcessor.register(CONFIG_MAPPING[CorrDistillConfig.model_type], CorrDistillProcessor, exist_ok=True)


_register_with_auto_classes()
if not __name__.startswith("hf_corrdistill."):  # imported as remote code: nothing else registers the processor
    register_processor()

__all__ = ["CorrDistillConfig", "CorrDistillProcessor", "register_processor"]
