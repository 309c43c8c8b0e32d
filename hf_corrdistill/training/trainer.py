"""`DistillationTrainer`: a `Trainer` whose loss is a distillation objective against a frozen teacher."""

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainerCallback
from transformers.utils import ModelOutput

from ..data.sources import SKIP_REASONS
from ..losses import correlation_loss, distilhubert_loss
from .arguments import DistillationConfig
from .distributed import gather_rows, world_size
from .teacher import teacher_targets

logger = logging.getLogger(__name__)

SKIP_STATE = "DistillationSkipCounters"  # its entry in trainer_state.json


@dataclass
class DistillationOutput(ModelOutput):
    """What `compute_loss(..., return_outputs=True)` returns beside the loss."""

    loss: torch.Tensor | None = None
    terms: dict[str, torch.Tensor] | None = None
    predictions: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    frame_mask: torch.Tensor | None = None


class _EpochSetter(TrainerCallback):
    """Gives the training dataset the epoch (crops and views change between epochs); evaluation data keeps epoch 0,
    so every evaluation sees the same crops and views."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(int(state.epoch or 0))


class DistillationTrainer(Trainer):
    """Distils a frozen `teacher` into `model` (a `CorrDistillForPreTraining`).

    The teacher runs in eval mode without gradients, in its own precision (`teacher_dtype`, outside any
    mixed-precision autocast of the student), on the accelerator's device; it is never wrapped for data
    parallelism, never enters the optimizer and is never written into checkpoints (only `self.model` is).
    """

    # compute_loss returns a per-batch mean, so the Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, model: PreTrainedModel, teacher: PreTrainedModel, args: DistillationConfig, **kwargs):
        super().__init__(model=model, args=args, **kwargs)
        self.teacher = teacher.eval().requires_grad_(False).to(self.accelerator.device)
        self.teacher_layers = tuple(model.config.pred_layer_ids)
        self.loss_fn = correlation_loss if args.loss == "correlation" else distilhubert_loss
        self.loss_kwargs = args.loss_kwargs()
        self._terms: dict[str, dict[str, list[torch.Tensor]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._snrs: dict[str, dict[str, list[torch.Tensor]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._skipped: dict[str, list[torch.Tensor]] = {"train": [], "eval": []}  # per batch, (B, R) by reason
        self._skipped_total = {"train": torch.zeros(len(SKIP_REASONS)), "eval": torch.zeros(len(SKIP_REASONS))}
        self._skipped_batches = {"train": 0, "eval": 0}  # training steps skipped for a batch of one, this process
        self.add_callback(_EpochSetter(self.train_dataset))

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, DistillationOutput]:
        student_values = inputs["input_values"]  # (B, T)
        teacher_values = inputs.get("teacher_input_values", student_values)  # (B, T): its own view when given
        attention_mask = inputs.get("attention_mask")  # (B, T)
        with torch.no_grad(), torch.autocast(student_values.device.type, enabled=False):
            teacher_mask = attention_mask if self.args.teacher_attention_mask else None
            targets = teacher_targets(self.teacher, teacher_values, teacher_mask, self.teacher_layers)  # (B, N, F, D)
        outputs = model(input_values=student_values, attention_mask=attention_mask)
        predictions = outputs.predictions  # (B, N, F, D)
        if predictions.shape != targets.shape:
            raise RuntimeError(f"student predictions {tuple(predictions.shape)} and teacher targets "
                               f"{tuple(targets.shape)} do not align")
        mode = "train" if model.training else "eval"
        if self._too_small(inputs):  # e.g. the last, partial batch of a stream: no correlation from one utterance
            logger.warning("a batch of one utterance cannot form correlations: the step is skipped")
            self._skipped_batches[mode] += 1
            loss = predictions.sum() * 0.0  # zero gradients, and every process still takes part in the step
            return (loss, None) if return_outputs else loss
        frame_mask, extra = outputs.frame_mask, {}
        if self.args.loss == "correlation":
            extra = {"student_snr": inputs.get("student_snr"), "teacher_snr": inputs.get("teacher_snr")}
            if self._global_correlations():  # frames padded to one length, so that every process's shapes agree
                pad = self.accelerator.pad_across_processes
                predictions, targets, frame_mask = pad(predictions, dim=2), pad(targets, dim=2), pad(frame_mask, dim=1)
                extra["gather"] = gather_rows
        result = self.loss_fn(predictions, targets, frame_mask, **self.loss_kwargs, **extra)
        terms = {name: value for name, value in result.items() if name != "loss"}
        for name, value in terms.items():
            self._terms[mode][name].append(value.detach())
        for name in ("student_snr", "teacher_snr"):
            if inputs.get(name) is not None:
                self._snrs[mode][name].append(inputs[name].detach())
        if inputs.get("skipped") is not None:
            self._skipped[mode].append(inputs["skipped"])
        valid = attention_mask.float().mean() if attention_mask is not None else predictions.new_ones(())
        self._terms[mode]["padded_fraction"].append(1.0 - valid.detach())
        if not return_outputs:
            return result.loss
        return result.loss, DistillationOutput(
            loss=result.loss, terms=terms, predictions=predictions, targets=targets, frame_mask=frame_mask
        )

    def _global_correlations(self) -> bool:
        return self.args.correlation_sync == "global" and world_size() > 1

    def _too_small(self, inputs: dict[str, Any]) -> bool:  # with global correlations the batch is never one utterance
        return (self.args.loss == "correlation" and inputs["input_values"].shape[0] < 2
                and not self._global_correlations())

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """No labels here: the distillation loss is the evaluation metric (batches it cannot score are left out)."""
        if self._too_small(inputs):
            return None, None, None
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def _flush_skipped(self, mode: str) -> None:
        """Add the skip counts of the batches seen since the last flush, over all processes, to the totals."""
        if self._skipped[mode]:
            batch_counts = self.accelerator.reduce(torch.cat(self._skipped[mode]).sum(0), reduction="sum")
            self._skipped_total[mode] += batch_counts.cpu()
        self._skipped[mode].clear()

    def _save_checkpoint(self, model: nn.Module, trial) -> None:
        """Checkpoints carry the skip counters (in trainer_state.json), so that a resumed run goes on counting."""
        self._flush_skipped("train")
        count = torch.tensor(float(self._skipped_batches["train"]), device=self.args.device)
        self.state.stateful_callbacks[SKIP_STATE] = {
            "skipped": dict(zip(SKIP_REASONS, map(int, self._skipped_total["train"].tolist()), strict=True)),
            "skipped_batches": int(self.accelerator.reduce(count, reduction="sum").item()),
        }
        super()._save_checkpoint(model, trial)

    def _load_callback_state(self) -> None:
        super()._load_callback_state()
        saved = self.state.stateful_callbacks.get(SKIP_STATE)
        if saved is None:
            return
        self._skipped_total["train"] = torch.tensor([float(saved["skipped"].get(r, 0)) for r in SKIP_REASONS])
        # the batch count is summed over processes when logged: the first process carries the restored total
        self._skipped_batches["train"] = saved["skipped_batches"] if self.accelerator.is_main_process else 0

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the mean of every loss term since the last log, averaged over processes."""
        mode = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        prefix = "eval_" if mode == "eval" else ""
        for name, values in self._terms[mode].items():
            if values:
                mean = self.accelerator.reduce(torch.stack(values).mean(), reduction="mean")
                logs[f"{prefix}{name}"] = mean.item()
        self._terms[mode].clear()
        for name, values in self._snrs[mode].items():  # per view: mean SNR of noisy views, share of noisy views
            snr = torch.cat(values)
            noisy = torch.isfinite(snr)
            stats = torch.stack([snr.where(noisy, 0.0).sum(), noisy.sum().to(snr.dtype), snr.new_tensor(snr.numel())])
            total, count, seen = self.accelerator.reduce(stats, reduction="sum").tolist()
            if count:
                logs[f"{prefix}{name}_db"] = total / count
            logs[f"{prefix}{name}_noisy_fraction"] = count / seen
        self._snrs[mode].clear()
        if self._skipped[mode]:  # over all processes; training: running totals of the run, evaluation: this one
            if mode == "eval":
                self._skipped_total[mode].zero_()
            self._flush_skipped(mode)
            for reason, total in zip(SKIP_REASONS, self._skipped_total[mode].tolist(), strict=True):
                logs[f"{prefix}skipped_{reason}"] = int(total)
        if mode == "train":  # every process reduces at every log, so no process waits on another
            count = torch.tensor(float(self._skipped_batches["train"]), device=self.args.device)
            total = int(self.accelerator.reduce(count, reduction="sum").item())
            if total:
                logs["skipped_batches"] = total
        super().log(logs, start_time)
