"""Arguments of `eval_superb.py`, each with its help text and default in one place, checked at start-up."""

import argparse
import typing
from dataclasses import dataclass, field, fields, make_dataclass

from .conditions import Condition, parse_conditions
from .registry import TASKS as SPECS
from .registry import HeadSettings, Option

TASKS = tuple(SPECS)


def _per_task(values: list[str], name: str, kind: type = int) -> dict[str, int | float]:
    """["500"] -> every task 500; ["ks=500", "asr=2000"] -> those tasks; later entries win. Values are positive
    numbers of ``kind`` (int or float)."""
    parsed = {}
    for value in values:
        task, _, number = value.rpartition("=")
        if task and task not in TASKS:
            raise ValueError(f"--{name}: unknown task {task!r} in {value!r} (tasks: {', '.join(TASKS)})")
        try:
            parsed_number = kind(number)
        except ValueError:
            parsed_number = 0
        if not parsed_number > 0:
            raise ValueError(f"--{name} takes positive {'integers' if kind is int else 'numbers'}, optionally as "
                             f"TASK=N, not {value!r}")
        parsed.update({t: parsed_number for t in ([task] if task else TASKS)})
    return parsed


def _quick_steps() -> str:
    """"600 (KS, IC) and 300 (ASR)": the quick profile's steps, tasks with the same count together."""
    groups: dict[int, list[str]] = {}
    for spec in SPECS.values():
        groups.setdefault(spec.profiles["quick"].steps, []).append(spec.name.upper())
    return " and ".join(f"{steps} ({', '.join(names)})" for steps, names in groups.items())


def _task_field(option: Option):
    """The dataclass field of a task's flag."""
    if isinstance(option.default, tuple):
        return field(default_factory=lambda: list(option.default), metadata={"help": option.help})
    return field(default=option.default, metadata={"help": option.help})


TASK_DATA = [option for spec in SPECS.values() for option in spec.data]
TASK_OPTIONS = [option for spec in SPECS.values() for option in spec.options]
SPLIT_FLAGS = [option.name for option in TASK_OPTIONS if option.splits] + ["dataset_splits"]


@dataclass
class _CommonArguments:
    """The flags every task shares; `EvalArguments` adds those of the tasks in the registry."""

    upstream: list[str] = field(default_factory=list, metadata={
        "help": "Upstream(s) to compare, repeatable: a model folder or Hub id AutoModel loads, or fbank / mfcc; "
                "NAME=PATH names it in the tables."})
    tasks: list[str] = field(default_factory=lambda: list(TASKS), metadata={
        "help": f"Tasks: {', '.join(TASKS)}."})
    data: str | None = field(default=None, metadata={
        "help": "A folder holding the official layouts under their own names: "
                f"{', '.join(option.folder for option in TASK_DATA)}."})
    dataset_splits: list[str] = field(default_factory=lambda: ["train", "validation", "test"],
                                      metadata={"help": "train, dev and test split names of `datasets` sources."})
    dataset_config: str | None = field(default=None, metadata={"help": "Config name of `datasets` sources."})
    audio_column: str = field(default="audio", metadata={"help": "Audio column of `datasets` sources."})
    noise: list[str] = field(default_factory=list, metadata={
        "help": "Noise for the noisy test copies (folders or `datasets` sources); keep it disjoint from the noise "
                "used in distillation."})
    unseen_noise: list[str] = field(default_factory=list, metadata={
        "help": "A second noise source, reported as 'unseen' (noise types absent from training)."})
    snrs: list[str] = field(default_factory=lambda: ["clean", "20", "10", "5", "0"], metadata={
        "help": "Test conditions: 'clean' and SNRs in dB."})
    layer: str = field(default="weighted", metadata={
        "help": "'weighted' (learnable softmax-weighted sum of all hidden states), 'last', or a layer index."})
    layer_norm: bool = field(default=False, metadata={"help": "Layer-normalise each hidden state before the sum."})
    quick: bool = field(default=False, metadata={
        "help": f"Few steps for small budgets: {_quick_steps()} instead of SUPERB's 200k."})
    steps: list[str] = field(default_factory=list, metadata={"help": "Head training steps: N, or TASK=N entries."})
    eval_steps: list[str] = field(default_factory=list, metadata={
        "help": "Dev evaluation interval: N, or TASK=N entries."})
    batch_size: int = field(default=32, metadata={"help": "Head training batch size."})
    learning_rate: list[str] = field(default_factory=list, metadata={
        "help": f"Adam learning rate of the heads: X, or TASK=X entries (default SUPERB's "
                f"{HeadSettings.learning_rate})."})
    asr_size: int | None = field(default=None, metadata={
        "help": "ASR head width: projection and BiLSTM units per direction (default SUPERB's 1024; 128 with --quick, "
                "which a CPU trains in minutes)."})
    seed: int = field(default=0, metadata={"help": "Seed of the noisy copies, silence crops and head training."})
    output_dir: str = field(default="superb_results", metadata={
        "help": "Where results.json, results.md and the plots go."})
    cache_dir: str | None = field(default=None, metadata={
        "help": "Feature cache (default OUTPUT_DIR/cache); shared between runs that use the same upstream."})
    noise_cache_dir: str | None = field(default=None, metadata={"help": "Cache of noise converted to 16 kHz."})
    upstream_batch_size: int = field(default=16, metadata={"help": "Utterances per upstream forward pass."})
    device: str | None = field(default=None, metadata={"help": "torch device (default: cuda if available)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow upstreams with custom code."})

    def __post_init__(self):
        if not self.upstream:
            raise ValueError("give at least one --upstream")
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; tasks are {', '.join(TASKS)}")
        self.conditions: list[Condition] = parse_conditions(self.snrs, unseen=bool(self.unseen_noise))
        if any(c.noise for c in self.conditions) and not self.noise:
            raise ValueError("--snrs lists noisy conditions but no --noise source is given")
        if self.unseen_noise and not any(c.noise for c in self.conditions):
            raise ValueError("--unseen_noise needs at least one SNR in --snrs")
        if self.layer not in ("weighted", "last") and not self.layer.lstrip("-").isdigit():
            raise ValueError(f"--layer takes 'weighted', 'last' or a layer index, not {self.layer!r}")
        if any(len(getattr(self, name)) != 3 for name in SPLIT_FLAGS):
            raise ValueError(f"{' and '.join(f'--{name}' for name in SPLIT_FLAGS)} take three names: train, dev, test")
        steps, eval_steps = _per_task(self.steps, "steps"), _per_task(self.eval_steps, "eval_steps")
        rates = _per_task(self.learning_rate, "learning_rate", float)
        profile = "quick" if self.quick else "superb"
        self.head_settings: dict[str, HeadSettings] = {}
        for task in self.tasks:
            defaults = SPECS[task].profiles[profile]
            total = steps.get(task, defaults.steps)
            every = min(eval_steps.get(task, defaults.eval_steps), total)
            self.head_settings[task] = HeadSettings(total, every, self.batch_size,
                                                     rates.get(task, HeadSettings.learning_rate))
        if self.asr_size is None:
            self.asr_size = 128 if self.quick else 1024
        if self.batch_size < 1 or self.upstream_batch_size < 1 or self.asr_size < 1:
            raise ValueError("--batch_size, --upstream_batch_size and --asr_size must be positive")

    def public(self) -> dict:
        """The arguments as given (for results.json)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


EvalArguments = make_dataclass(
    "EvalArguments", [(option.name, option.annotation, _task_field(option)) for option in TASK_DATA + TASK_OPTIONS],
    bases=(_CommonArguments,),
    namespace={"__module__": __name__, "__doc__": "Every flag of eval_superb.py: the shared ones and each task's."})


def _flag_order() -> list:
    """The fields in the order --help lists them: each task's data flags after --data, its other flags after
    --audio_column."""
    common = [f for f in fields(EvalArguments) if f.name not in {o.name for o in TASK_DATA + TASK_OPTIONS}]
    by_name = {f.name: f for f in fields(EvalArguments)}
    ordered = []
    for f in common:
        ordered.append(f)
        extra = TASK_DATA if f.name == "data" else TASK_OPTIONS if f.name == "audio_column" else []
        ordered += [by_name[option.name] for option in extra]
    return ordered


def parse(argv: list[str]) -> EvalArguments:
    """Flags -> `EvalArguments`; list flags take several values and may be repeated (--upstream A --upstream B)."""
    parser = argparse.ArgumentParser(prog="eval_superb.py", description="SUPERB KS / IC / ASR, clean and noisy, "
                                     "for several upstreams side by side.")
    for f in _flag_order():
        flag, help_text = f"--{f.name}", f.metadata["help"]
        if f.type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif str(f.type).startswith("list"):
            parser.add_argument(flag, action="extend", nargs="+", default=None, help=help_text)
        else:
            kind = next((t for t in (int, float) if t is f.type or t in typing.get_args(f.type)), str)
            parser.add_argument(flag, type=kind, default=None, help=help_text)
    given = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    return EvalArguments(**given)
