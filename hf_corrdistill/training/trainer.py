"""`DistillationTrainer`: a `Trainer` whose loss is a distillation objective against a frozen teacher."""

import logging
from dataclasses import dataclass
from typing import Any

import torch
from accelerate.data_loader import IterableDatasetShard
from torch import nn
from torch.utils.data import DataLoader
from transformers import PreTrainedModel, Trainer
from transformers.utils import ModelOutput

from ..data.crops import StreamedCroppedAudio
from ..data.sources import AudioDecodeError
from ..losses import LOSSES, enhancement_loss, frame_geometry, log_mel_frames
from .arguments import DistillationConfig
from .callbacks import DistillationMetrics, EpochSetter
from .distributed import gather_rows, world_size
from .teacher import teacher_targets

logger = logging.getLogger(__name__)


@dataclass
class DistillationOutput(ModelOutput):
    """What `compute_loss(..., return_outputs=True)` returns beside the loss."""

    loss: torch.Tensor | None = None
    terms: dict[str, torch.Tensor] | None = None
    predictions: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    frame_mask: torch.Tensor | None = None


class DistillationTrainer(Trainer):
    """Distils a frozen `teacher` into `model` (a `CorrDistillForPreTraining`) with the objective ``args.loss``
    (one of `losses.LOSSES`).

    The teacher runs in eval mode without gradients, in its own precision (`teacher_dtype`, outside any
    mixed-precision autocast of the student), on the accelerator's device; it is never wrapped for data
    parallelism, never enters the optimizer and is never written into checkpoints (only `self.model` is).
    Loss terms, SNRs and skip counters are logged by the `DistillationMetrics` callback.
    """

    # compute_loss returns a per-batch mean, so the Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, model: PreTrainedModel, teacher: PreTrainedModel, args: DistillationConfig, **kwargs):
        if isinstance(kwargs.get("train_dataset"), StreamedCroppedAudio):  # each process reads its own share
            args.accelerator_config.dispatch_batches = False  # accelerate's default: rank 0 reads every batch
        super().__init__(model=model, args=args, **kwargs)
        self.teacher = teacher.eval().requires_grad_(False).to(self.accelerator.device)
        self.teacher_layers = tuple(model.config.pred_layer_ids)
        self.add_callback(DistillationMetrics())
        self.add_callback(EpochSetter(self.train_dataset))

    def get_train_dataloader(self) -> DataLoader:
        """The stock loader; a stream that reads only this process's share passes through accelerate's
        `IterableDatasetShard` whole (the Trainer does the same for its rank-aware batch samplers)."""
        loader = super().get_train_dataloader()
        shard = loader.dataset
        if (isinstance(shard, IterableDatasetShard) and isinstance(shard.dataset, StreamedCroppedAudio)
                and shard.dataset.world_size > 1):
            shard.num_processes, shard.process_index = 1, 0
        return loader

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device) -> tuple[list, Any]:
        """The stock batches. A stream never ends, so fewer batches than asked means that none of this process's
        DataLoader workers has a usable utterance: an error, rather than a process that leaves the others waiting."""
        batches, items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if len(batches) < num_batches and isinstance(self.train_dataset, StreamedCroppedAudio):
            raise AudioDecodeError(f"the stream of process {self.args.process_index} ended: none of its DataLoader "
                                   "workers has a usable utterance (see the skip warnings)")
        return batches, items

    @property
    def distillation_metrics(self) -> DistillationMetrics:
        """The metrics callback (looked up: restoring callback states from a checkpoint replaces it)."""
        return next(cb for cb in self.callback_handler.callbacks if isinstance(cb, DistillationMetrics))

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, DistillationOutput]:
        """The objective between the student's predictions and the teacher's targets on the batch ``inputs``."""
        spec = LOSSES[self.args.loss]
        mode = "train" if model.training else "eval"
        targets = self._teacher_targets(inputs)  # (B, N, F, D)
        outputs = model(input_values=inputs["input_values"], attention_mask=inputs.get("attention_mask"))
        predictions, frame_mask = outputs.predictions, outputs.frame_mask  # (B, N, F, D), (B, F)
        if predictions.shape != targets.shape:
            raise RuntimeError(f"student predictions {tuple(predictions.shape)} and teacher targets "
                               f"{tuple(targets.shape)} do not align")
        if self._too_small(inputs):  # e.g. the last, partial batch of a stream: no correlation from one utterance
            logger.warning("a batch of one utterance cannot form correlations: the step is skipped")
            self.distillation_metrics.record_skipped_batch(mode)
            loss = predictions.sum() * 0.0  # zero gradients, and every process still takes part in the step
            return (loss, None) if return_outputs else loss
        extra = {}
        if spec.takes_snr:
            extra = {"student_snr": inputs.get("student_snr"), "teacher_snr": inputs.get("teacher_snr")}
            if self._global_correlations():  # frames padded to one length, so that every process's shapes agree
                pad = self.accelerator.pad_across_processes
                predictions, targets, frame_mask = pad(predictions, dim=2), pad(targets, dim=2), pad(frame_mask, dim=1)
                extra["gather"] = gather_rows
        result = spec.function(predictions, targets, frame_mask, **spec.kwargs(self.args), **extra)
        loss, terms = result.loss, {name: value for name, value in result.items() if name != "loss"}
        if self.args.enhancement_weight > 0:
            terms["enhancement"] = self._enhancement(inputs, outputs.enhancement, outputs.frame_mask)
            loss = loss + self.args.enhancement_weight * terms["enhancement"]
        self.distillation_metrics.record(mode, terms, inputs)
        if not return_outputs:
            return loss
        return loss, DistillationOutput(
            loss=loss, terms=terms, predictions=predictions, targets=targets, frame_mask=frame_mask
        )

    def _enhancement(self, inputs: dict[str, torch.Tensor], predicted: torch.Tensor,
                     frame_mask: torch.Tensor | None) -> torch.Tensor:
        """The enhancement term: the head's frames (B, F, M) against the log-mel frames of the clean crop, which is
        the student's own input when both models hear clean audio."""
        clean_name = "clean_input_values" if "teacher_input_values" in inputs else "input_values"
        if clean_name not in inputs:
            raise KeyError("enhancement_weight > 0 needs the clean crop in the batch (clean_input_values): build the "
                           "views with keep_clean=True")
        config = self.model.config
        window, hop = frame_geometry(config.conv_kernel, config.conv_stride)
        with torch.autocast(predicted.device.type, enabled=False):
            target = log_mel_frames(inputs[clean_name], predicted.shape[1], window, hop, config.enhancement_bins)
        return enhancement_loss(predicted, target, frame_mask).loss

    def _teacher_targets(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The teacher's hidden states on its own view of the batch (the student's when it has none), without
        gradients and outside autocast: (B, T) -> (B, N, F, D)."""
        values = inputs.get("teacher_input_values", inputs["input_values"])  # (B, T)
        mask = inputs.get("attention_mask") if self.args.teacher_attention_mask else None  # (B, T)
        with torch.no_grad(), torch.autocast(values.device.type, enabled=False):
            return teacher_targets(self.teacher, values, mask, self.teacher_layers)

    def _global_correlations(self) -> bool:
        return self.args.correlation_sync == "global" and world_size() > 1

    def _too_small(self, inputs: dict[str, Any]) -> bool:  # with global correlations the batch is never one utterance
        return (LOSSES[self.args.loss].needs_pairs and inputs["input_values"].shape[0] < 2
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

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the distillation metrics to ``logs`` (`Trainer.log` is documented for overriding: callbacks' `on_log`
        runs after the logs are stored in ``state.log_history``)."""
        self.distillation_metrics.add_to(logs, self.args.device)
        super().log(logs, start_time)
