"""`train.py`: parse a YAML config plus flag overrides, check everything, then distil.

    accelerate launch train.py configs/NAME.yaml [--field value ...]
"""

import argparse
import dataclasses
import gc
import json
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import yaml
from transformers import HfArgumentParser, set_seed

from .. import register_auto_classes
from ..data.crops import AudioCollator, CroppedAudioDataset, StreamedCroppedAudio
from ..data.sources import default_feature_extractor, load_audio_source
from ..data.views import PRESET_BUILDERS, Distorter, NoiseBank, ViewMaker, load_impulse_responses
from ..models.corrdistill.configuration_corrdistill import CorrDistillConfig
from .arguments import (
    ConfigError,
    DataArguments,
    DistillationConfig,
    Settings,
    check_run_settings,
    renamed_message,
)
from .run_record import RUN_CONFIG, check_output_dir, complete_checkpoint, read_run_record, record_run, run_identity
from .teacher import TeacherError, check_compatible, init_student_from_teacher, load_teacher, load_teacher_config

__all__ = [
    "RUN_CONFIG",
    "ConfigError",
    "build_args",
    "build_student_config",
    "build_views",
    "check_output_dir",
    "complete_checkpoint",
    "end_processes",
    "main",
    "parse_args",
    "preview_args",
    "read_config",
    "read_run_record",
    "record_run",
    "run_identity",
]

logger = logging.getLogger(__name__)


@contextmanager
def _config_mistakes(*kinds: type[Exception]):
    """Errors of ``kinds`` raised while opening what the settings name (data, noise, a student config, the Hub
    repository) are configuration mistakes: re-raised as `ConfigError`, the same message."""
    try:
        yield
    except kinds as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error  # no quotes around it
        raise ConfigError(str(message)) from error


def read_config(argv: list[str]) -> dict[str, Any]:
    """YAML file (first argument, optional) gives defaults; ``--field value`` flags override; unknown keys fail.
    The values as given: nothing is built or checked beyond their names and the flags' types."""
    parser = HfArgumentParser((DistillationConfig, DataArguments), exit_on_error=False)
    values: dict = {}
    if argv and argv[0].endswith((".yaml", ".yml")):
        path = Path(argv[0])
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        with _config_mistakes(yaml.YAMLError):
            values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must hold a mapping of field: value")
        argv = argv[1:]
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(renamed_message(unknown) or f"unknown config key(s): {', '.join(unknown)}")
    for action in parser._actions:  # flags that are not given must not override the YAML
        action.default = argparse.SUPPRESS
        action.required = False
    try:
        flags, rest = parser.parse_known_args(argv)
    except argparse.ArgumentError as error:
        raise ConfigError(str(error)) from error
    if rest:
        names = [arg[2:].split("=")[0] for arg in rest if arg.startswith("--")]
        raise ConfigError(renamed_message(names) or f"unknown argument(s): {' '.join(rest)}")
    values.update(vars(flags))
    if _launched_processes() > 1 and not torch.cuda.is_available():
        values.setdefault("use_cpu", True)  # several processes and no GPU: DDP on the CPU over gloo
    return values


def _split(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(DistillationConfig values, DataArguments values)."""
    data_fields = {f.name for f in dataclasses.fields(DataArguments)}
    return ({k: v for k, v in values.items() if k not in data_fields},
            {k: v for k, v in values.items() if k in data_fields})


def preview_args(values: dict[str, Any]) -> tuple[SimpleNamespace, DataArguments]:
    """The run's settings with every check of ours run, in a fraction of a second: a `DistillationConfig.preview`
    (the config's fields, not yet a TrainingArguments) and the `DataArguments`."""
    config_values, data_values = _split(values)
    with _config_mistakes(ValueError, TypeError):
        preview, data = DistillationConfig.preview(config_values), DataArguments(**data_values)
        check_run_settings(preview, data)
    return preview, data


def build_args(values: dict[str, Any]) -> tuple[DistillationConfig, DataArguments]:
    """The `DistillationConfig` (TrainingArguments' own checks run here: seconds of imports) and `DataArguments`,
    after the same checks as `preview_args`."""
    config_values, data_values = _split(values)
    with _config_mistakes(ValueError, TypeError):
        data = DataArguments(**data_values)
        if data.eval_split is None and config_values.get("eval_strategy", "no") != "no":
            logger.warning("no evaluation split (eval_split none): evaluation is off whatever eval_strategy says")
            config_values["eval_strategy"] = "no"
        args = DistillationConfig(**config_values)
        check_run_settings(args, data)
    return args, data


def parse_args(argv: list[str]) -> tuple[DistillationConfig, DataArguments]:
    """`read_config`, our checks on a preview, then the dataclasses."""
    values = read_config(argv)
    preview_args(values)
    return build_args(values)


def _launched_processes() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _process_rank() -> int:
    """This process's rank among all processes of all machines (set by the launcher, as WORLD_SIZE)."""
    return int(os.environ.get("RANK", "0"))


def _warn_single_cpu_process() -> None:
    """`accelerate launch --cpu --num_processes N` starts one process unless mpirun is set up: say so."""
    asked_for_several = "MASTER_ADDR" in os.environ and os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true"
    if asked_for_several and "WORLD_SIZE" not in os.environ:
        logger.warning(
            "accelerate's --cpu launcher started a single process (it needs mpirun for more); for N processes on "
            "CPUs use: accelerate launch --multi_gpu --num_processes N train.py CONFIG"
        )


def build_student_config(args: Settings, teacher_config) -> CorrDistillConfig:
    """Student config: file (or DistilHuBERT defaults) + overrides + the teacher's width and predicted layers."""
    with _config_mistakes(OSError, ValueError, TypeError):
        config = CorrDistillConfig.from_pretrained(args.student_config) if args.student_config else CorrDistillConfig()
    updates = dict(args.student_overrides or {})
    unknown = sorted(k for k in updates if not hasattr(config, k))
    if unknown:
        raise ConfigError(f"student_overrides has unknown field(s): {', '.join(unknown)}")
    updates["teacher_hidden_size"] = teacher_config.hidden_size
    if args.pred_layers is not None:
        updates["pred_layer_ids"] = tuple(args.pred_layers)
    updates["enhancement_bins"] = args.enhancement_bins if args.enhancement_weight > 0 else 0  # the head, only if used
    with _config_mistakes(ValueError, TypeError):
        return CorrDistillConfig(**{**config.to_dict(), **updates})


def build_views(data: DataArguments, keep_clean: bool = False) -> ViewMaker | None:
    """The teacher/student views the data arguments ask for, with their noise (and impulse responses) loaded;
    ``keep_clean`` adds the clean crop to every example (for the enhancement term)."""
    if data.views == "clean":
        return None
    snr_low, snr_high = data.view_snr_range()
    preset = dataclasses.replace(PRESET_BUILDERS[data.distortion](), snr_low=snr_low, snr_high=snr_high)
    with _config_mistakes(FileNotFoundError, KeyError, ValueError):  # a missing, empty or unreadable noise source
        bank = NoiseBank(data.noise_sources, data.noise_cache_dir)
        responses = load_impulse_responses(data.impulse_response_dir) if data.impulse_response_dir else None
    return ViewMaker(data.views, Distorter(preset, bank, responses, data.clean_probability), keep_clean)


def _datasets(data: DataArguments, seed: int, views: ViewMaker | None, batch_size: int):
    """The training dataset and the evaluation one (None without an eval split); a source that cannot be opened
    (missing, no such split or column) is a configuration mistake."""
    with _config_mistakes(FileNotFoundError, KeyError, ValueError):
        source = load_audio_source(
            data.train_data, data.train_split, config_name=data.data_config_name, audio_column=data.audio_column,
            streaming=data.streaming, seed=seed,
        )
    crop = {"audio_column": data.audio_column, "max_length": data.max_length, "min_length": data.min_length,
            "views": views}
    if data.streaming:
        train = StreamedCroppedAudio(source, seed=seed, shuffle_buffer=data.shuffle_buffer, batch_size=batch_size,
                                     length_group_batches=data.length_group_batches, rank=_process_rank(),
                                     world_size=_launched_processes(), **crop)
    else:
        train = CroppedAudioDataset(source, seed=seed, **crop)
    evaluation = None
    if data.eval_split is not None:
        with _config_mistakes(FileNotFoundError, KeyError, ValueError):
            eval_source = load_audio_source(
                data.eval_data or data.train_data, data.eval_split, config_name=data.data_config_name,
                audio_column=data.audio_column,
            )
        if data.max_eval_samples is not None:
            eval_source = eval_source.select(range(min(data.max_eval_samples, len(eval_source))))
        evaluation = CroppedAudioDataset(eval_source, seed=seed, **crop)
    return train, evaluation


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _warn_single_cpu_process()
    try:
        values = read_config(sys.argv[1:] if argv is None else argv)
        # Every check of ours on a preview of the settings first: building TrainingArguments loads transformers'
        # modeling code, and a mistake should cost a few seconds of imports, not that too.
        settings, data = preview_args(values)
        if settings.push_to_hub:  # an upload that cannot work fails now, not after training
            from ..hub.push import PushError, check_can_push, check_repo_id

            with _config_mistakes(PushError):
                check_repo_id(settings.hub_model_id)
                check_can_push(settings.hub_token)
        teacher_config = load_teacher_config(settings.teacher_name_or_path)
        student_config = build_student_config(settings, teacher_config)
        check_compatible(student_config, teacher_config, settings.teacher_name_or_path)
        resume = check_output_dir(settings, data)
        views = build_views(data, keep_clean=settings.enhancement_weight > 0)
        train_dataset, eval_dataset = _datasets(data, settings.seed, views, settings.per_device_train_batch_size)
        args, data = build_args(values)
        # Only now the model code: a configuration mistake fails in seconds (train.py defers the registration).
        register_auto_classes()
        from ..models.corrdistill.modeling_corrdistill import CorrDistillForPreTraining
        from .trainer import DistillationTrainer

        set_seed(args.seed)
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
        teacher = load_teacher(args.teacher_name_or_path, getattr(torch, args.teacher_dtype))
        student = CorrDistillForPreTraining(student_config)
        if args.init_from_teacher:
            init_student_from_teacher(student, teacher)
    except (ConfigError, TeacherError) as error:  # anything else is a failure of the run: its traceback
        raise SystemExit(f"configuration error: {error}") from None
    # The stock Trainer would create the repository at start-up and push at every save: turned off, and the final
    # student alone is pushed by push_student once training has ended.
    hub_repo, args.push_to_hub = (args.hub_model_id if args.push_to_hub else None), False
    record_run(args, data)  # only now: a run that never started leaves its folder free for the corrected command
    if args.ddp_find_unused_parameters is None:  # every student parameter is used unless layers can be dropped
        args.ddp_find_unused_parameters = student_config.layerdrop > 0
    trainer = DistillationTrainer(
        model=student,
        teacher=teacher,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=AudioCollator(pad_to_multiple_of=student_config.inputs_to_logits_ratio),
        processing_class=default_feature_extractor(),
    )
    logger.info("student: %.2fM backbone parameters; teacher layers %s", student.corrdistill.num_parameters() / 1e6,
                list(student_config.pred_layer_ids))
    if resume:
        logger.info("resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    trainer.save_state()
    metrics = dict(result.metrics)
    if eval_dataset is not None:
        metrics.update(trainer.evaluate())  # every process takes part
    if trainer.is_world_process_zero():
        Path(args.output_dir, "distillation_results.json").write_text(json.dumps(metrics, indent=2) + "\n")
        logger.info("student written to %s", args.output_dir)
    end_processes(trainer)
    if hub_repo and trainer.is_world_process_zero():  # after the other processes have left: an upload needs no group
        from ..hub.push import push_student

        try:
            push_student(args.output_dir, hub_repo, export_format=args.export_format,
                         private=args.hub_private_repo, token=args.hub_token)
        except Exception:
            logger.error("pushing to %s failed; the student is saved: retry with python -m hf_corrdistill.hub "
                         "push %s --repo_id %s --export_format %s", hub_repo, args.output_dir, hub_repo,
                         args.export_format)
            raise


def end_processes(trainer) -> None:
    """Ends a successful run of several processes deliberately: every process meets the others, lets go of the
    data-parallel wrapper (it holds the process group) and the accelerator's references, then destroys the group.
    Left to interpreter shutdown, gloo's threads can be torn down under a live group, and a finished run aborts."""
    accelerator = trainer.accelerator
    if accelerator.num_processes == 1:
        return
    accelerator.wait_for_everyone()
    trainer.model_wrapped = trainer.model
    accelerator.free_memory()
    gc.collect()  # the wrapper's reducer, before its group
    accelerator.end_training()
