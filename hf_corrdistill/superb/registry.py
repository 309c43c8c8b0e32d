"""The SUPERB tasks of `eval_superb.py`, one `TaskSpec` each in `TASKS`: every module of this package, and the Hub
publishing code, reads what it knows of a task from here.

Adding a task: write the loader of its official layout in tasks.py (it returns a `TaskData`: labels in
``Item.labels`` for an utterance head, transcripts in ``Item.text`` for a CTC head), then add one `TaskSpec` to
`TASKS` below: names and titles, metric, Hub task type and name, its data flags (the corpus folder of each under
``--data``), how to recognise its official layout and call its loader, its `datasets` columns, head kind, sampler and
step profiles. The flags of eval_superb.py, the report, the runner and the Hub card follow. Then add tests: the loader
on a small copy of the layout, and the task end to end in tests/test_eval_superb.py. A head kind other than
"utterance" and "ctc" also needs its head in heads.py and its loss and score in downstream.py.

This module imports nothing heavy (loaders are imported from tasks.py when called).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEAD_KINDS = ("utterance", "ctc")  # classes per utterance (one or more outputs), or characters per frame (CTC)
SAMPLERS = ("random", "class_balanced")
PROFILE_NAMES = ("superb", "quick")
KS_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
KS_CLASSES = (*KS_WORDS, "_unknown_", "_silence_")


@dataclass(frozen=True)
class HeadSettings:
    steps: int
    eval_steps: int
    batch_size: int = 32
    learning_rate: float = 1e-4
    max_grad_norm: float = 1.0


@dataclass(frozen=True)
class Option:
    """A flag of eval_superb.py that belongs to one task.

    ``folder``: for a data flag, the corpus folder it defaults to under ``--data``. ``splits``: a list flag naming
    the train, dev and test subsets (three values).
    """

    name: str
    annotation: Any  # the field's type: str | None, str or list[str]
    default: Any
    help: str
    folder: str | None = None
    splits: bool = False


@dataclass(frozen=True)
class TaskSpec:
    """Everything eval_superb.py knows of one task.

    ``data``: its data flags; the first takes the official folder or a `datasets` source, the others are folders only
    the official layout needs. ``is_official(folder, args)`` says whether the first one holds the official layout;
    ``official(folders, args)`` loads it (one folder per data flag). ``dataset_columns(args)`` gives `from_datasets`
    its column arguments. ``classes``: the fixed classes of a one-output utterance task (other labels of a `datasets`
    source count as ``_unknown_``); empty: each output's classes are those of the training split.
    """

    name: str
    title: str  # report heading and plot axis
    metric: str  # "accuracy" (all outputs right) or "wer"
    higher_is_better: bool
    hub_task_type: str
    hub_task_name: str
    data: tuple[Option, ...]
    options: tuple[Option, ...]  # further flags: `datasets` columns, subset names
    is_official: Callable[[Path, Any], bool]
    official: Callable[[list[Path], Any], Any]
    dataset_columns: Callable[[Any], dict]
    head: str  # one of HEAD_KINDS
    profiles: Mapping[str, HeadSettings]  # one per PROFILE_NAMES entry
    sampler: str = "random"  # one of SAMPLERS
    classes: tuple[str, ...] = ()

    def __post_init__(self):
        if self.head not in HEAD_KINDS or self.sampler not in SAMPLERS or set(self.profiles) != set(PROFILE_NAMES):
            raise ValueError(f"task {self.name}: head in {HEAD_KINDS}, sampler in {SAMPLERS}, profiles "
                             f"{PROFILE_NAMES}")


def _tasks():
    from . import tasks

    return tasks


# s3prl's SUPERB recipes (downstream/{speech_commands,fluent_commands,asr}/config.yaml) and a profile for small budgets
TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec(
        name="ks", title="Keyword spotting (accuracy %)", metric="accuracy", higher_is_better=True,
        hub_task_type="audio-classification", hub_task_name="Keyword spotting (SUPERB KS protocol)",
        data=(Option("ks_data", str | None, None, "Speech Commands v0.01 folder, or a `datasets` source with audio "
                     "and word labels.", folder="speech_commands_v0.01"),
              Option("ks_test_data", str | None, None, "Speech Commands v0.01 test-set folder.",
                     folder="speech_commands_test_set_v0.01")),
        options=(Option("ks_label_column", str, "label", "Word column of a KS `datasets` source."),),
        is_official=lambda folder, args: (folder / "validation_list.txt").is_file(),
        official=lambda folders, args: _tasks().speech_commands(folders[0], folders[1], seed=args.seed),
        dataset_columns=lambda args: {"label_columns": (args.ks_label_column,)},
        head="utterance", sampler="class_balanced", classes=KS_CLASSES,
        profiles={"superb": HeadSettings(200_000, 5_000), "quick": HeadSettings(600, 100)},
    ),
    TaskSpec(
        name="ic", title="Intent classification (accuracy %)", metric="accuracy", higher_is_better=True,
        hub_task_type="audio-classification", hub_task_name="Intent classification (SUPERB IC protocol)",
        data=(Option("ic_data", str | None, None, "Fluent Speech Commands folder, or a `datasets` source with audio, "
                     "action, object, location.", folder="fluent_speech_commands_dataset"),),
        options=(Option("ic_label_columns", list[str], ("action", "object", "location"),
                        "Intent columns of an IC `datasets` source."),),
        is_official=lambda folder, args: (folder / "data" / "train_data.csv").is_file(),
        official=lambda folders, args: _tasks().fluent_speech_commands(folders[0]),
        dataset_columns=lambda args: {"label_columns": tuple(args.ic_label_columns)},
        head="utterance",
        profiles={"superb": HeadSettings(200_000, 5_000), "quick": HeadSettings(600, 100)},
    ),
    TaskSpec(
        name="asr", title="ASR (WER %)", metric="wer", higher_is_better=False,
        hub_task_type="automatic-speech-recognition", hub_task_name="Speech recognition (SUPERB ASR protocol)",
        data=(Option("asr_data", str | None, None, "LibriSpeech folder, or a `datasets` source with audio and text.",
                     folder="LibriSpeech"),),
        options=(Option("asr_splits", list[str], ("train-clean-100", "dev-clean", "test-clean"),
                        "LibriSpeech train, dev and test subsets.", splits=True),
                 Option("text_column", str, "text", "Transcript column of an ASR `datasets` source.")),
        is_official=lambda folder, args: (folder / args.asr_splits[0]).is_dir(),
        official=lambda folders, args: _tasks().librispeech(folders[0], tuple(args.asr_splits)),
        dataset_columns=lambda args: {"text_column": args.text_column},
        head="ctc",
        profiles={"superb": HeadSettings(200_000, 2_000), "quick": HeadSettings(300, 100)},
    ),
)}


def hub_task(name: str) -> tuple[str, str] | None:
    """(Hub task type, Hub task name) of an eval_superb.py task, None for a task this version does not know."""
    spec = TASKS.get(name)
    return None if spec is None else (spec.hub_task_type, spec.hub_task_name)
