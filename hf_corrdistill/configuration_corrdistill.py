"""Configuration of the DistilHuBERT-style student (METHOD.md section 2).

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
            Teacher layers the prediction heads regress, indexed like `hidden_states` (1 = first layer output).
        teacher_hidden_size (`int`): Width of the teacher's hidden states (the heads' output width).
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
        if not self.pred_layer_ids or min(self.pred_layer_ids) < 0:
            raise ValueError(f"pred_layer_ids must be non-empty teacher layer indices >= 0, got {self.pred_layer_ids}")

    @property
    def inputs_to_logits_ratio(self) -> int:
        ratio = 1
        for stride in self.conv_stride:
            ratio *= stride
        return ratio


__all__ = ["CorrDistillConfig"]
