"""Arguments of `eval_superb.py`, each with its help text and default in one place, checked at start-up."""

import argparse
import typing
from dataclasses import dataclass, field, fields

from .conditions import Condition, parse_conditions
from .downstream import PROFILES, HeadSettings

TASKS = ("ks", "ic", "asr")


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


@dataclass
class EvalArguments:
    upstream: list[str] = field(default_factory=list, metadata={
        "help": "Upstream(s) to compare, repeatable: a model folder or Hub id AutoModel loads, or fbank / mfcc; "
                "NAME=PATH names it in the tables."})
    tasks: list[str] = field(default_factory=lambda: list(TASKS), metadata={"help": "Tasks: ks, ic, asr."})
    data: str | None = field(default=None, metadata={
        "help": "A folder holding the official layouts under their own names: speech_commands_v0.01, "
                "speech_commands_test_set_v0.01, fluent_speech_commands_dataset, LibriSpeech."})
    ks_data: str | None = field(default=None, metadata={
        "help": "Speech Commands v0.01 folder, or a `datasets` source with audio and word labels."})
    ks_test_data: str | None = field(default=None, metadata={"help": "Speech Commands v0.01 test-set folder."})
    ic_data: str | None = field(default=None, metadata={
        "help": "Fluent Speech Commands folder, or a `datasets` source with audio, action, object, location."})
    asr_data: str | None = field(default=None, metadata={
        "help": "LibriSpeech folder, or a `datasets` source with audio and text."})
    asr_splits: list[str] = field(default_factory=lambda: ["train-clean-100", "dev-clean", "test-clean"],
                                  metadata={"help": "LibriSpeech train, dev and test subsets."})
    dataset_splits: list[str] = field(default_factory=lambda: ["train", "validation", "test"],
                                      metadata={"help": "train, dev and test split names of `datasets` sources."})
    dataset_config: str | None = field(default=None, metadata={"help": "Config name of `datasets` sources."})
    audio_column: str = field(default="audio", metadata={"help": "Audio column of `datasets` sources."})
    ks_label_column: str = field(default="label", metadata={"help": "Word column of a KS `datasets` source."})
    ic_label_columns: list[str] = field(default_factory=lambda: ["action", "object", "location"],
                                        metadata={"help": "Intent columns of an IC `datasets` source."})
    text_column: str = field(default="text", metadata={"help": "Transcript column of an ASR `datasets` source."})
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
        "help": f"Few steps for small budgets: {PROFILES['quick']['ks'].steps} (KS, IC) and "
                f"{PROFILES['quick']['asr'].steps} (ASR) instead of SUPERB's 200k."})
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
        if len(self.asr_splits) != 3 or len(self.dataset_splits) != 3:
            raise ValueError("--asr_splits and --dataset_splits take three names: train, dev, test")
        steps, eval_steps = _per_task(self.steps, "steps"), _per_task(self.eval_steps, "eval_steps")
        rates = _per_task(self.learning_rate, "learning_rate", float)
        profile = PROFILES["quick" if self.quick else "superb"]
        self.head_settings: dict[str, HeadSettings] = {}
        for task in self.tasks:
            total = steps.get(task, profile[task].steps)
            every = min(eval_steps.get(task, profile[task].eval_steps), total)
            self.head_settings[task] = HeadSettings(total, every, self.batch_size,
                                                     rates.get(task, HeadSettings.learning_rate))
        if self.asr_size is None:
            self.asr_size = 128 if self.quick else 1024
        if self.batch_size < 1 or self.upstream_batch_size < 1 or self.asr_size < 1:
            raise ValueError("--batch_size, --upstream_batch_size and --asr_size must be positive")

    def public(self) -> dict:
        """The arguments as given (for results.json)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def parse(argv: list[str]) -> EvalArguments:
    """Flags -> `EvalArguments`; list flags take several values and may be repeated (--upstream A --upstream B)."""
    parser = argparse.ArgumentParser(prog="eval_superb.py", description="SUPERB KS / IC / ASR, clean and noisy, "
                                     "for several upstreams side by side.")
    for f in fields(EvalArguments):
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
