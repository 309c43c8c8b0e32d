"""Distillation objectives: pure tensor functions returning every term, and their registry."""

from .correlation import (
    STD_EPS,
    STYLES,
    WEIGHTINGS,
    CorrelationLossOutput,
    clipped_snr_weight,
    correlation_loss,
    pool_valid_frames,
    reference_snr_weight,
)
from .distilhubert import DistilHubertLossOutput, distilhubert_loss
from .enhancement import EnhancementLossOutput, enhancement_loss, frame_geometry, log_mel_frames
from .registry import LOSSES, LossSpec, loss_field_defaults

__all__ = [
    "LOSSES",
    "STD_EPS",
    "STYLES",
    "WEIGHTINGS",
    "CorrelationLossOutput",
    "DistilHubertLossOutput",
    "EnhancementLossOutput",
    "LossSpec",
    "clipped_snr_weight",
    "correlation_loss",
    "distilhubert_loss",
    "enhancement_loss",
    "frame_geometry",
    "log_mel_frames",
    "loss_field_defaults",
    "pool_valid_frames",
    "reference_snr_weight",
]
