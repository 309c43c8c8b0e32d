"""Callbacks of `DistillationTrainer`: the values it logs beside the loss, and the training data's epoch."""

import logging
from collections import defaultdict
from typing import Any

import torch
from accelerate.utils import reduce
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState

from ..data.sources import SKIP_REASONS

logger = logging.getLogger(__name__)

MODES = ("train", "eval")
LEGACY_ENTRY = "DistillationSkipCounters"  # where checkpoints of earlier versions kept the skip counters


def _no_skips() -> dict[str, Any]:
    return {"skipped": dict.fromkeys(SKIP_REASONS, 0), "skipped_batches": 0}


class DistillationMetrics(TrainerCallback, ExportableState):
    """What `DistillationTrainer` adds to its logs: the mean of every loss term and of the padded fraction, the SNRs
    of the views and the skip counters, each reduced over processes.

    Training counters run over the whole run (``skipped_<reason>``: utterances the data left out; ``skipped_batches``:
    steps skipped for a batch of one) and survive a resume: they are kept in the checkpoint's trainer_state.json as
    this callback's state (`ExportableState`) and read back in `on_train_begin`. Evaluation counters cover one
    evaluation.
    """

    def __init__(self) -> None:
        self.terms: dict[str, dict[str, list[torch.Tensor]]] = {mode: defaultdict(list) for mode in MODES}
        self.snrs: dict[str, dict[str, list[torch.Tensor]]] = {mode: defaultdict(list) for mode in MODES}
        self.skipped: dict[str, list[torch.Tensor]] = {mode: [] for mode in MODES}  # per batch, (B, R) by reason
        self.skipped_total = {mode: torch.zeros(len(SKIP_REASONS)) for mode in MODES}  # over all processes
        self.skipped_batches = dict.fromkeys(MODES, 0)  # steps skipped for a batch of one, this process
        self.checkpoint_counts = _no_skips()  # the training counters over all processes, as the next checkpoint saves
        self.counted_step: int | None = None  # the step checkpoint_counts were counted at

    # ------------------------------------------------------------ fed by the trainer
    def record(self, mode: str, terms: dict[str, torch.Tensor], inputs: dict[str, Any]) -> None:
        """Keeps the loss terms of one batch, its padded fraction, its views' SNRs and its skip counts."""
        for name, value in terms.items():
            self.terms[mode][name].append(value.detach())
        for name in ("student_snr", "teacher_snr"):
            if inputs.get(name) is not None:
                self.snrs[mode][name].append(inputs[name].detach())
        if inputs.get("skipped") is not None:
            self.skipped[mode].append(inputs["skipped"])
        mask = inputs.get("attention_mask")  # (B, T)
        valid = mask.float().mean() if mask is not None else torch.ones((), device=inputs["input_values"].device)
        self.terms[mode]["padded_fraction"].append(1.0 - valid.detach())

    def record_skipped_batch(self, mode: str) -> None:
        self.skipped_batches[mode] += 1

    def add_to(self, logs: dict[str, float], device: torch.device) -> None:
        """Adds the means since the last log (every process must call it at every log: it reduces over them)."""
        mode = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        prefix = "eval_" if mode == "eval" else ""
        for name, values in self.terms[mode].items():
            if values:
                logs[f"{prefix}{name}"] = reduce(torch.stack(values).mean(), reduction="mean").item()
        self.terms[mode].clear()
        for name, values in self.snrs[mode].items():  # per view: mean SNR of noisy views, share of noisy views
            snr = torch.cat(values)
            noisy = torch.isfinite(snr)
            stats = torch.stack([snr.where(noisy, 0.0).sum(), noisy.sum().to(snr.dtype), snr.new_tensor(snr.numel())])
            total, count, seen = reduce(stats, reduction="sum").tolist()
            if count:
                logs[f"{prefix}{name}_db"] = total / count
            logs[f"{prefix}{name}_noisy_fraction"] = count / seen
        self.snrs[mode].clear()
        if self.skipped[mode]:  # training: running totals of the run; evaluation: this evaluation's
            if mode == "eval":
                self.skipped_total[mode].zero_()
            self.skipped_total[mode] += self._reduced_skips(mode)
            self.skipped[mode].clear()
            for reason, total in zip(SKIP_REASONS, self.skipped_total[mode].tolist(), strict=True):
                logs[f"{prefix}skipped_{reason}"] = int(total)
        if mode == "train":  # every process reduces at every log, so no process waits on another
            total = self._reduced_skipped_batches(device)
            if total:
                logs["skipped_batches"] = total

    def _reduced_skips(self, mode: str) -> torch.Tensor:
        """The skip counts of the batches kept since the last flush, summed over processes: (R,) on the CPU."""
        if not self.skipped[mode]:
            return torch.zeros(len(SKIP_REASONS))
        return reduce(torch.cat(self.skipped[mode]).sum(0), reduction="sum").cpu()

    def _reduced_skipped_batches(self, device: torch.device) -> int:
        return int(reduce(torch.tensor(float(self.skipped_batches["train"]), device=device), reduction="sum").item())

    # ------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        """Saved by the Trainer (first process) into every checkpoint's trainer_state.json."""
        return {"args": {}, "attributes": {"checkpoint_counts": self.checkpoint_counts}}

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._count_for_checkpoint(args, state, control)

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._count_for_checkpoint(args, state, control)

    def _count_for_checkpoint(self, args: TrainingArguments, state: TrainerState, control: TrainerControl) -> None:
        """Sums the training counters over processes when a checkpoint may follow. The Trainer asks `state` of the
        first process only, so the reduction, which every process must join, happens here: after the default flow
        callback (always first) has decided on saving, before the step's log, evaluation and checkpoint."""
        if not (control.should_save or (control.should_evaluate and args.save_strategy == "best")):
            return
        skipped = self.skipped_total["train"] + self._reduced_skips("train")
        self.checkpoint_counts = {
            "skipped": dict(zip(SKIP_REASONS, map(int, skipped.tolist()), strict=True)),
            "skipped_batches": self._reduced_skipped_batches(args.device),
        }
        self.counted_step = state.global_step

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        """The batches counted for the checkpoint join the running totals (the step's log, if any, already has)."""
        if self.counted_step != state.global_step:
            logger.warning("step %d was saved without its skip counters being counted (a callback after %s asked "
                           "for the save): the checkpoint holds those of step %s", state.global_step,
                           type(self).__name__, self.counted_step)
            return
        skipped = self.checkpoint_counts["skipped"]
        self.skipped_total["train"] = torch.tensor([float(skipped[reason]) for reason in SKIP_REASONS])
        self.skipped["train"].clear()

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        """On a resume, takes the training counters back from the checkpoint's trainer_state.json, which the Trainer
        has loaded into ``state`` by now. Read here rather than through ``restore_callback_states_from_checkpoint``
        (off by default, and it would replace this instance): the counters come back whatever that setting, and
        with it on, the instance it builds restores itself the same way."""
        name = type(self).__name__
        saved = state.stateful_callbacks.get(name)
        state.stateful_callbacks.setdefault(name, self.state())  # the Trainer expects its entry at every save
        if state.global_step == 0:  # a new run
            return
        counts = saved["attributes"]["checkpoint_counts"] if saved else state.stateful_callbacks.get(LEGACY_ENTRY)
        if counts is None:
            return
        self.checkpoint_counts = {"skipped": {r: counts["skipped"].get(r, 0) for r in SKIP_REASONS},
                                  "skipped_batches": counts["skipped_batches"]}
        self.skipped_total["train"] = torch.tensor([float(n) for n in self.checkpoint_counts["skipped"].values()])
        # the batch count is summed over processes when logged: the first process carries the restored total
        self.skipped_batches["train"] = counts["skipped_batches"] if state.is_world_process_zero else 0


class EpochSetter(TrainerCallback):
    """Gives the training dataset the epoch (crops and views change between epochs); evaluation data keeps epoch 0,
    so every evaluation sees the same crops and views."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(int(state.epoch or 0))
