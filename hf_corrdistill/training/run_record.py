"""A run's record, ``output_dir/run_config.json``: what makes a run this run, so that one folder holds one run.

`record_run` writes it when training starts; `check_output_dir` compares it with the settings of a new command;
`read_run_record` reads one written by any version (for the model card too).
"""

import dataclasses
import json
import logging
from pathlib import Path

from .arguments import OPTIMISATION_FIELDS, RENAMED_FIELDS, ConfigError, DataArguments, DistillationConfig, Settings

logger = logging.getLogger(__name__)

RUN_CONFIG = "run_config.json"
# Not part of a run's identity: its schedule (may grow on resume), how the student is published, how fast it runs.
_FREE_FIELDS = {"max_steps", "num_train_epochs", "export_format", "cudnn_benchmark"}


def run_identity(args: Settings, data: DataArguments) -> dict:
    """What makes a run this run: teacher, student, objective, data, seed and optimisation (not its schedule,
    logging or output paths)."""
    chosen = DistillationConfig.own_fields() | set(OPTIMISATION_FIELDS)
    identity = {name: getattr(args, name) for name in sorted(chosen - _FREE_FIELDS)}
    identity.update({f"data.{k}": v for k, v in dataclasses.asdict(data).items() if not k.startswith("eval")})
    return json.loads(json.dumps(identity, default=str))


def _current_name(key: str) -> str:
    """A record key (a field name, ``data.`` before a DataArguments field) under this version's name."""
    prefix, dot, name = key.rpartition(".")
    return f"{prefix}{dot}{RENAMED_FIELDS.get(name, name)}"


def read_run_record(path: str | Path) -> dict:
    """A run_config.json with the settings under this version's names (keys of earlier versions translated by
    `RENAMED_FIELDS`). Raises OSError or ValueError for a missing or unreadable file."""
    record = json.loads(Path(path).read_text())
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a run record: it holds no JSON object")
    return {_current_name(key): value for key, value in record.items()}


def _setting_defaults() -> dict:
    """Every recorded setting's default (as run_identity writes it), for records of versions that lacked it."""
    defaults = {f.name: f.default for f in dataclasses.fields(DistillationConfig)}
    defaults.update({f"data.{f.name}": f.default for f in dataclasses.fields(DataArguments)})
    return json.loads(json.dumps(defaults, default=str))


def complete_checkpoint(folder: Path) -> bool:
    """A checkpoint is complete when its trainer state, written last, parses: a kill while saving leaves none."""
    try:
        json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def check_output_dir(args: Settings, data: DataArguments) -> str | None:
    """Refuse an output folder holding another run; resolve ``resume_from_checkpoint`` ("last" allowed). Reads only:
    `record_run` writes the run's record when training starts.

    Returns the checkpoint to resume from, or None.
    """
    output = Path(args.output_dir)
    identity = run_identity(args, data)
    saved = output / RUN_CONFIG
    checkpoints = sorted(output.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    if saved.exists():
        try:
            before = read_run_record(saved)
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read {saved}: {error}") from error
        defaults = _setting_defaults()  # a setting added since the record was written matches at its default
        differs = sorted(k for k in set(before) | set(identity) if before.get(k, defaults.get(k)) != identity.get(k))
        if differs:
            raise ConfigError(f"{output} holds a different run (it differs in {', '.join(differs[:8])}); "
                              "choose another output_dir")
    elif checkpoints:
        raise ConfigError(f"{output} holds checkpoints of a run this version did not record; choose another "
                          "output_dir")
    resume = args.resume_from_checkpoint
    if resume in ("last", "true", "True"):
        complete = [c for c in checkpoints if complete_checkpoint(c)]
        for broken in sorted(set(checkpoints) - set(complete)):
            logger.warning("ignoring %s: written only in part (the run stopped while saving it)", broken)
        resume = str(complete[-1]) if complete else None
        if resume is None:
            logger.info("no complete checkpoint in %s: starting from the beginning", output)
    elif resume is not None and not complete_checkpoint(Path(resume)):
        raise ConfigError(f"{resume} is not a complete checkpoint (no readable trainer_state.json)")
    return resume


def record_run(args: DistillationConfig, data: DataArguments) -> None:
    """Write the run's identity into its output folder (the first process only), for `check_output_dir`."""
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if args.process_index == 0:
        (output / RUN_CONFIG).write_text(json.dumps(run_identity(args, data), indent=2, sort_keys=True) + "\n")
