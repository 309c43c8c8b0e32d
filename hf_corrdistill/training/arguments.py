"""Settings of a distillation run, parsed by `HfArgumentParser` from YAML and flags.

`DistillationConfig` (TrainingArguments plus the teacher, the student and the objective) and `DataArguments` check
their own fields in ``__post_init__``; `check_run_settings` checks what spans both. train.py runs the same checks on
a preview first (`DistillationConfig.preview`), never copies of them.
"""

import json
import typing
from dataclasses import MISSING, dataclass, field, fields
from types import SimpleNamespace
from typing import Any, Literal

from transformers import TrainingArguments

from ..data.views import PRESET_BUILDERS, PRESETS, SETUPS
from ..losses import LOSSES, STYLES, WEIGHTINGS, loss_field_defaults
from ..models.corrdistill.configuration_corrdistill import CorrDistillConfig

EXPORT_FORMATS = ("native", "hubert")  # how a student is published: with its code, or as a plain HubertModel
TEACHER_DTYPES = ("float32", "bfloat16", "float16")
SYNCS = ("local", "global")

# The TrainingArguments fields that belong to a run's identity (run_config.json, the model card): its seed and how
# it is optimised; not its schedule, logging or output paths.
OPTIMISATION_FIELDS = (
    "seed", "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "weight_decay",
    "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "warmup_steps", "lr_scheduler_type", "bf16", "fp16",
)

# Settings renamed since a release that wrote run records: old name -> new name. A flag or YAML key with an old name
# is refused with the new one; a run_config.json written with it is read under the new one.
RENAMED_FIELDS = {
    "snr_low": "weighting_snr_low",
    "snr_high": "weighting_snr_high",
    "snr_min": "view_snr_min",
    "snr_max": "view_snr_max",
}

_LOSS_DEFAULTS = loss_field_defaults()  # every loss field's default is its loss function's, defined once


class ConfigError(ValueError):
    """A configuration mistake, reported before any work starts."""


def renamed_message(names: list[str]) -> str | None:
    """One line naming what the old names among ``names`` were renamed to; None when none is an old name."""
    renamed = [name for name in names if name in RENAMED_FIELDS]
    return "; ".join(f"{name} was renamed {RENAMED_FIELDS[name]}" for name in renamed) or None


def _check_choices(settings: Any, cls: type, names: set[str]) -> None:
    """Every ``Literal`` field of ``cls`` among ``names`` holds one of its choices: the annotation is the list."""
    for f in fields(cls):
        if f.name in names and typing.get_origin(f.type) is Literal:
            allowed = typing.get_args(f.type)
            if getattr(settings, f.name) not in allowed:
                raise ValueError(f"{f.name} must be one of {allowed}, got {getattr(settings, f.name)!r}")


@dataclass
class DistillationConfig(TrainingArguments):
    """`TrainingArguments` plus the teacher, the student and the objective (docs/method.md)."""

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
        metadata={"help": "Teacher layers to predict, indexed like hidden_states: 1 = the first transformer layer's "
                  "output (0, the CNN/projection output, is not a layer); default: the student config's "
                  "pred_layer_ids (4 8 12). See docs/method.md, 'The student'."},
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
    loss: Literal[tuple(LOSSES)] = field(
        default="correlation",
        metadata={"help": "The objective (docs/method.md, 'The objectives'): "
                  + "; ".join(f"'{name}': {spec.summary}" for name, spec in LOSSES.items()) + "."},
    )
    correlation_style: Literal[STYLES] = field(
        default=_LOSS_DEFAULTS["correlation_style"],
        metadata={"help": "'batch': correlations over the batch per pooled position (reference); "
                  "'frames': over all valid frames."},
    )
    pool_positions: int = field(
        default=_LOSS_DEFAULTS["pool_positions"], metadata={"help": "Pooled positions P of the batch style."}
    )
    lambda_cross: float = field(
        default=_LOSS_DEFAULTS["lambda_cross"], metadata={"help": "Weight of the cross-correlation off-diagonal."}
    )
    lambda_self: float = field(
        default=_LOSS_DEFAULTS["lambda_self"], metadata={"help": "Weight of the self-correlation off-diagonal."}
    )
    diag_scale: float = field(default=_LOSS_DEFAULTS["diag_scale"], metadata={"help": "Divisor s_d of the diagonal."})
    cross_scale: float = field(
        default=_LOSS_DEFAULTS["cross_scale"], metadata={"help": "Divisor s_cc of the cross off-diagonal."}
    )
    self_scale: float = field(
        default=_LOSS_DEFAULTS["self_scale"], metadata={"help": "Divisor s_sc of the self off-diagonal."}
    )
    cosine_weight: float = field(
        default=_LOSS_DEFAULTS["cosine_weight"], metadata={"help": "Weight of the -log sigmoid(cosine) term."}
    )
    enhancement_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of RobustDistiller's enhancement term, added to either objective: a training-only "
                  "head on the student's last hidden state predicts the clean crop's log-mel frames, L1 over valid "
                  "frames (docs/method.md, 'The enhancement term'). 0: off, no head and no clean crop in the batch."},
    )
    enhancement_bins: int = field(
        default=80, metadata={"help": "Log-mel bins the enhancement head predicts (with enhancement_weight > 0)."}
    )
    correlation_sync: Literal[SYNCS] = field(
        default="local",
        metadata={"help": "With several processes: 'local' correlates each process's own batch; 'global' gathers "
                  "the samples of all processes so that every correlation uses the global batch (exact gradients)."},
    )
    weighting: Literal[WEIGHTINGS] = field(
        default=_LOSS_DEFAULTS["weighting"],
        metadata={"help": "Correlation term weighting (docs/method.md, 'SNR weighting'): 'fixed', 'snr-reference' or "
                  "'snr'."},
    )
    weighting_snr_low: float = field(
        default=_LOSS_DEFAULTS["weighting_snr_low"],
        metadata={"help": "Start of the 'snr' weighting ramp: the SNR (dB) where w = 1."},
    )
    weighting_snr_high: float = field(
        default=_LOSS_DEFAULTS["weighting_snr_high"],
        metadata={"help": "End of the 'snr' weighting ramp: the SNR (dB) where w = 100."},
    )
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
    def own_fields(cls) -> set[str]:
        """The fields this class adds to `TrainingArguments`."""
        return {f.name for f in fields(cls)} - {f.name for f in fields(TrainingArguments)}

    @classmethod
    def preview(cls, values: dict[str, Any]) -> SimpleNamespace:
        """The fields a config built from ``values`` would hold (defaults filled in), after this class's own checks,
        without building it: `TrainingArguments.__post_init__` imports transformers' integrations and with them
        the modeling code, seconds on a small machine, so train.py checks a configuration on a preview first."""
        defaults = {f.name: f.default if f.default is not MISSING else f.default_factory()
                    for f in fields(cls) if f.init and (f.default is not MISSING or f.default_factory is not MISSING)}
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(renamed_message(unknown) or f"unknown field(s) of {cls.__name__}: {', '.join(unknown)}")
        preview = SimpleNamespace(**{**defaults, **values})
        check_distillation_fields(preview)
        return preview


Settings = DistillationConfig | SimpleNamespace  # a config, or its preview (the same fields, not yet built)


def check_distillation_fields(config: Settings) -> None:
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
    if config.pred_layers is not None:  # the student config's own check: the two cannot disagree
        CorrDistillConfig.check_pred_layer_ids(config.pred_layers, name="pred_layers")
    _check_choices(config, DistillationConfig, DistillationConfig.own_fields())
    if config.pool_positions < 1:
        raise ValueError(f"pool_positions must be >= 1, got {config.pool_positions}")
    for name in ("diag_scale", "cross_scale", "self_scale"):
        if getattr(config, name) <= 0:
            raise ValueError(f"{name} must be > 0, got {getattr(config, name)}")
    if config.enhancement_bins < 1:
        raise ValueError(f"enhancement_bins must be >= 1, got {config.enhancement_bins}")
    for name in ("lambda_cross", "lambda_self", "cosine_weight", "enhancement_weight"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(config, name)}")
    if config.push_to_hub and not config.hub_model_id:
        raise ValueError("push_to_hub needs hub_model_id: the repository to create or update, as ORG/NAME")
    if config.push_to_hub and config.hub_revision:
        raise ValueError("hub_revision is not supported: the student is pushed to the repository's main branch")
    if config.weighting_snr_high <= config.weighting_snr_low:
        raise ValueError(f"weighting_snr_high ({config.weighting_snr_high}) must exceed weighting_snr_low "
                         f"({config.weighting_snr_low})")
    if LOSSES[config.loss].needs_pairs and min(config.per_device_train_batch_size,
                                               config.per_device_eval_batch_size) < 2:
        raise ValueError(f"the {config.loss} loss needs per_device_train_batch_size and per_device_eval_batch_size "
                         ">= 2: correlations come from several utterances")


@dataclass
class DataArguments:
    """Where the speech comes from, how it is cut, and the views the two models hear."""

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
                  "'setup2': both distorted, drawn independently (docs/method.md, 'Distorted views')."},
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
    view_snr_min: int | None = field(
        default=None, metadata={"help": "Lowest SNR (dB) of the noise added to the views; default: the preset's."}
    )
    view_snr_max: int | None = field(
        default=None, metadata={"help": "Highest SNR (dB) of the noise added to the views; default: the preset's."}
    )
    clean_probability: float = field(
        default=0.0, metadata={"help": "Probability that a view is left undistorted before the preset's draw."}
    )

    def __post_init__(self):
        if self.eval_split is not None and self.eval_split.strip().lower() in ("", "none"):
            self.eval_split = None  # no evaluation, as the help says
        if not self.train_data:
            raise ValueError("train_data is required: a folder, a saved dataset, parquet files or a Hub dataset id")
        if self.eval_data and not self.eval_split:
            raise ValueError("eval_data is set but eval_split is not: name the split to evaluate on")
        if self.min_length < 400:
            raise ValueError(f"min_length must be >= 400 samples (one CNN frame), got {self.min_length}")
        if self.max_length < self.min_length:
            raise ValueError(f"max_length ({self.max_length}) must be >= min_length ({self.min_length})")
        _check_choices(self, DataArguments, {f.name for f in fields(DataArguments)})
        low, high = self.view_snr_range()
        if low > high:
            preset = PRESET_BUILDERS[self.distortion]()
            raise ValueError(f"inverted SNR range: view_snr_min ({low}) > view_snr_max ({high}) (the "
                             f"{self.distortion} preset's range: {preset.snr_low} to {preset.snr_high} dB)")
        if not 0.0 <= self.clean_probability <= 1.0:
            raise ValueError(f"clean_probability must be in [0, 1], got {self.clean_probability}")
        if self.views != "clean" and not self.noise_sources:
            raise ValueError(f"views={self.views!r} mixes noise files: give noise_sources (noise folders or datasets)")

    def view_snr_range(self) -> tuple[int, int]:
        """(lowest, highest) SNR in dB of the noise added to the views: the preset's, overridden where given."""
        preset = PRESET_BUILDERS[self.distortion]()
        return (preset.snr_low if self.view_snr_min is None else self.view_snr_min,
                preset.snr_high if self.view_snr_max is None else self.view_snr_max)


def check_run_settings(config: Settings, data: DataArguments) -> None:
    """The checks that span both classes: the loss weighting against the views whose SNRs it reads."""
    weighting = config.weighting if "weighting" in LOSSES[config.loss].fields else "fixed"
    if weighting == "fixed":
        return
    if data.views == "clean":
        raise ConfigError(f"weighting {weighting!r} needs the SNRs of distorted views: set views")
    lowest, _ = data.view_snr_range()
    if weighting == "snr-reference" and lowest < 10:
        raise ConfigError(f"weighting 'snr-reference' (w = 9.9 snr - 98) is not positive below 10 dB, but the views "
                          f"reach {lowest} dB: raise view_snr_min to 10 or use weighting 'snr'")
