"""Configuration dataclasses of a distillation run, parsed by `HfArgumentParser` from YAML and flags."""

import inspect
import json
from dataclasses import MISSING, dataclass, field, fields
from types import SimpleNamespace
from typing import Any, Literal

from transformers import TrainingArguments

from ..data.views import PRESETS, SETUPS
from ..losses import STYLES, WEIGHTINGS, correlation_loss, distilhubert_loss

_CORRELATION_DEFAULTS = {k: p.default for k, p in inspect.signature(correlation_loss).parameters.items()}
_KD_DEFAULTS = {k: p.default for k, p in inspect.signature(distilhubert_loss).parameters.items()}
LOSSES = ("correlation", "distilhubert")
EXPORT_FORMATS = ("native", "hubert")  # how a student is published: with its code, or as a plain HubertModel
TEACHER_DTYPES = ("float32", "bfloat16", "float16")
SYNCS = ("local", "global")


def _loss_default(name: str) -> Any:
    """Loss hyper-parameter defaults come from the loss functions' signatures: defined once."""
    return _CORRELATION_DEFAULTS.get(name, _KD_DEFAULTS.get(name))


@dataclass
class DistillationConfig(TrainingArguments):
    """`TrainingArguments` plus the teacher, the student and the objective (METHOD.md sections 2, 3 and 5)."""

    teacher_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Teacher: a Hub id or local folder that AutoModel loads (HuBERT, WavLM, wav2vec 2.0, ...)."},
    )
    student_config: str | None = field(
        default=None,
        metadata={"help": "A CorrDistillConfig (folder or config.json) for the student; default: DistilHuBERT."},
    )
    student_overrides: dict | str | None = field(
        default=None,
        metadata={"help": "Student config fields to override, as a mapping (YAML) or a JSON string (flag)."},
    )
    pred_layers: list[int] | None = field(
        default=None,
        metadata={"help": "Teacher layers to predict, indexed like hidden_states (1 = first layer's output); "
                  "default: the student config's pred_layer_ids (4 8 12)."},
    )
    init_from_teacher: bool = field(
        default=True,
        metadata={"help": "Copy the teacher's CNN, projection, positional conv and first layers into the student."},
    )
    teacher_dtype: Literal[TEACHER_DTYPES] = field(
        default="float32", metadata={"help": "Precision of the frozen teacher's weights."}
    )
    teacher_attention_mask: bool = field(
        default=True, metadata={"help": "Pass the padding mask to the teacher (False for models trained without)."}
    )
    cudnn_benchmark: bool = field(
        default=False,
        metadata={"help": "Let cuDNN time its convolution algorithms per input shape (torch.backends.cudnn.benchmark)"
                  ": +12 % steps/s on an H200 at fixed shapes (benchmarks/RESULTS.md); costly when shapes vary."},
    )
    loss: Literal[LOSSES] = field(
        default="correlation",
        metadata={"help": "'correlation' (L_CL, METHOD.md 3.2) or 'distilhubert' (L1 + cosine, METHOD.md 3.1)."},
    )
    correlation_style: Literal[STYLES] = field(
        default=_loss_default("style"),
        metadata={"help": "'batch': correlations over the batch per pooled position (reference); "
                  "'frames': over all valid frames."},
    )
    pool_positions: int = field(
        default=_loss_default("pool_positions"), metadata={"help": "Pooled positions P of the batch style."}
    )
    lambda_cross: float = field(
        default=_loss_default("lambda_cross"), metadata={"help": "Weight of the cross-correlation off-diagonal."}
    )
    lambda_self: float = field(
        default=_loss_default("lambda_self"), metadata={"help": "Weight of the self-correlation off-diagonal."}
    )
    diag_scale: float = field(default=_loss_default("diag_scale"), metadata={"help": "Divisor s_d of the diagonal."})
    cross_scale: float = field(
        default=_loss_default("cross_scale"), metadata={"help": "Divisor s_cc of the cross off-diagonal."}
    )
    self_scale: float = field(
        default=_loss_default("self_scale"), metadata={"help": "Divisor s_sc of the self off-diagonal."}
    )
    cosine_weight: float = field(
        default=_loss_default("cosine_weight"), metadata={"help": "Weight of the -log sigmoid(cosine) term."}
    )
    correlation_sync: Literal[SYNCS] = field(
        default="local",
        metadata={"help": "With several processes: 'local' correlates each process's own batch; 'global' gathers "
                  "the samples of all processes so that every correlation uses the global batch (exact gradients)."},
    )
    weighting: Literal[WEIGHTINGS] = field(
        default=_loss_default("weighting"),
        metadata={"help": "Correlation term weighting (METHOD.md 3.4): 'fixed', 'snr-reference' or 'snr'."},
    )
    snr_low: float = field(default=_loss_default("snr_low"), metadata={"help": "SNR (dB) where w = 1 in 'snr'."})
    snr_high: float = field(default=_loss_default("snr_high"), metadata={"help": "SNR (dB) where w = 100 in 'snr'."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the collator builds the model inputs."}
    )
    export_format: Literal[EXPORT_FORMATS] = field(
        default="native",
        metadata={"help": "What --push_to_hub uploads once training has ended: 'native' (the student and its code, "
                  "loadable with trust_remote_code) or 'hubert' (the backbone as a plain HubertModel)."},
    )

    def __post_init__(self):
        check_distillation_fields(self)  # ours first: they need nothing that TrainingArguments builds
        super().__post_init__()

    @classmethod
    def preview(cls, values: dict[str, Any]) -> SimpleNamespace:
        """The fields a config built from ``values`` would hold (defaults filled in), after this class's own checks,
        without building it: `TrainingArguments.__post_init__` imports transformers' integrations and with them
        the modeling code, seconds on a small machine, so train.py checks a configuration on a preview first."""
        defaults = {f.name: f.default if f.default is not MISSING else f.default_factory()
                    for f in fields(cls) if f.init and (f.default is not MISSING or f.default_factory is not MISSING)}
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown field(s) of {cls.__name__}: {', '.join(unknown)}")
        preview = SimpleNamespace(**{**defaults, **values})
        check_distillation_fields(preview)
        return preview

    def loss_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the selected loss function, from this config."""
        if self.loss == "distilhubert":
            return {"cosine_weight": self.cosine_weight}
        return {
            "style": self.correlation_style,
            "pool_positions": self.pool_positions,
            "lambda_cross": self.lambda_cross,
            "lambda_self": self.lambda_self,
            "diag_scale": self.diag_scale,
            "cross_scale": self.cross_scale,
            "self_scale": self.self_scale,
            "cosine_weight": self.cosine_weight,
            "weighting": self.weighting,
            "snr_low": self.snr_low,
            "snr_high": self.snr_high,
        }


def check_distillation_fields(config: "DistillationConfig | SimpleNamespace") -> None:
    """`DistillationConfig`'s own checks (not TrainingArguments'); parses a JSON ``student_overrides`` in place."""
    if not config.teacher_name_or_path:
        raise ValueError("teacher_name_or_path is required: a Hub id or a local folder of an audio encoder")
    if isinstance(config.student_overrides, str):
        try:
            config.student_overrides = json.loads(config.student_overrides)
        except json.JSONDecodeError as error:
            raise ValueError(f"student_overrides is not valid JSON: {error}") from error
    if config.student_overrides is not None and not isinstance(config.student_overrides, dict):
        raise ValueError(f"student_overrides must be a mapping, got {type(config.student_overrides).__name__}")
    if config.pred_layers is not None and (not config.pred_layers or min(config.pred_layers) < 1):
        raise ValueError(f"pred_layers must be teacher layers >= 1, got {config.pred_layers}")
    for name, allowed in (("loss", LOSSES), ("correlation_style", STYLES), ("weighting", WEIGHTINGS),
                          ("teacher_dtype", TEACHER_DTYPES), ("export_format", EXPORT_FORMATS),
                          ("correlation_sync", SYNCS)):
        if getattr(config, name) not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {getattr(config, name)!r}")
    if config.pool_positions < 1:
        raise ValueError(f"pool_positions must be >= 1, got {config.pool_positions}")
    for name in ("diag_scale", "cross_scale", "self_scale"):
        if getattr(config, name) <= 0:
            raise ValueError(f"{name} must be > 0, got {getattr(config, name)}")
    for name in ("lambda_cross", "lambda_self", "cosine_weight"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(config, name)}")
    if config.push_to_hub and not config.hub_model_id:
        raise ValueError("push_to_hub needs hub_model_id: the repository to create or update, as ORG/NAME")
    if config.push_to_hub and config.hub_revision:
        raise ValueError("hub_revision is not supported: the student is pushed to the repository's main branch")
    if config.snr_high <= config.snr_low:
        raise ValueError(f"snr_high ({config.snr_high}) must exceed snr_low ({config.snr_low})")
    if config.loss == "correlation" and min(config.per_device_train_batch_size, config.per_device_eval_batch_size) < 2:
        raise ValueError("the correlation loss needs per_device_train_batch_size and per_device_eval_batch_size "
                         ">= 2: correlations come from several utterances")


@dataclass
class DataArguments:
    """Where the speech comes from and how it is cut."""

    train_data: str | None = field(
        default=None,
        metadata={"help": "Training audio: a folder of audio files, a save_to_disk folder, parquet file(s) or a "
                  "Hub dataset id."},
    )
    train_split: str = field(default="train", metadata={"help": "Split of train_data."})
    data_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    eval_data: str | None = field(
        default=None, metadata={"help": "Evaluation audio (same kinds as train_data); default: train_data."}
    )
    eval_split: str | None = field(
        default=None, metadata={"help": "Split of eval_data (or of train_data) to evaluate on; none: no evaluation."}
    )
    audio_column: str = field(default="audio", metadata={"help": "Column holding the audio."})
    streaming: bool = field(default=False, metadata={"help": "Stream the training data instead of indexing it."})
    shuffle_buffer: int = field(default=1000, metadata={"help": "Shuffle buffer of a streamed source."})
    length_group_batches: int = field(
        default=32,
        metadata={"help": "A streamed source is sorted by length this many batches at a time, to limit padding "
                  "(0: off)."},
    )
    max_length: int = field(default=250_000, metadata={"help": "Random crop length in samples (15.6 s at 16 kHz)."})
    min_length: int = field(default=8_000, metadata={"help": "Shorter utterances are skipped (samples)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on at most this many."})
    views: Literal[SETUPS] = field(
        default="clean",
        metadata={"help": "'clean': both models hear the utterance; 'setup1': clean teacher, distorted student; "
                  "'setup2': both distorted, drawn independently (METHOD.md section 4)."},
    )
    distortion: Literal[PRESETS] = field(
        default="huang2022", metadata={"help": "Distortion preset of the views: 'huang2022' or 'robustdistiller'."}
    )
    noise_sources: list[str] | None = field(
        default=None,
        metadata={"help": "Noise for the views: folders of audio files (MUSAN-style noise/music/speech, WHAM!, ...) "
                  "or datasets (save_to_disk folder, parquet, Hub id) with an 'audio' column."},
    )
    noise_cache_dir: str | None = field(
        default=None, metadata={"help": "Where noise files not at 16 kHz mono are converted once (default ~/.cache)."}
    )
    impulse_response_dir: str | None = field(
        default=None, metadata={"help": "Folder of room impulse responses; default: simulated rooms."}
    )
    snr_min: int | None = field(default=None, metadata={"help": "Lowest SNR (dB) of added noise; default: preset's."})
    snr_max: int | None = field(default=None, metadata={"help": "Highest SNR (dB) of added noise; default: preset's."})
    clean_probability: float = field(
        default=0.0, metadata={"help": "Probability that a view is left undistorted before the preset's draw."}
    )

    def __post_init__(self):
        if not self.train_data:
            raise ValueError("train_data is required: a folder, a saved dataset, parquet files or a Hub dataset id")
        if self.eval_data and not self.eval_split:
            raise ValueError("eval_data is set but eval_split is not: name the split to evaluate on")
        if self.min_length < 400:
            raise ValueError(f"min_length must be >= 400 samples (one CNN frame), got {self.min_length}")
        if self.max_length < self.min_length:
            raise ValueError(f"max_length ({self.max_length}) must be >= min_length ({self.min_length})")
        if self.views not in SETUPS or self.distortion not in PRESETS:
            raise ValueError(f"views must be one of {SETUPS} and distortion one of {PRESETS}")
        if self.snr_min is not None and self.snr_max is not None and self.snr_min > self.snr_max:
            raise ValueError(f"inverted SNR range: snr_min ({self.snr_min}) > snr_max ({self.snr_max})")
        if not 0.0 <= self.clean_probability <= 1.0:
            raise ValueError(f"clean_probability must be in [0, 1], got {self.clean_probability}")
        if self.views != "clean" and not self.noise_sources:
            raise ValueError(f"views={self.views!r} mixes noise files: give noise_sources (noise folders or datasets)")
