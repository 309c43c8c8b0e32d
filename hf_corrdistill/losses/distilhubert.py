"""L_KD, DistilHuBERT's objective: L1 + cosine per predicted layer (docs/method.md, "L_KD")."""

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

from .common import cosine_term, prepare_pair


@dataclass
class DistilHubertLossOutput(ModelOutput):
    """L_KD (DistilHuBERT: L1 + cosine) and its terms, each already weighted as it enters `loss`."""

    loss: torch.Tensor | None = None
    l1: torch.Tensor | None = None
    cosine: torch.Tensor | None = None


def distilhubert_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
    *,
    cosine_weight: float = 1.0,
) -> DistilHubertLossOutput:
    """L_KD = mean_n mean_{b,f,i} |S - T| + cosine_weight * mean_n mean_{b,f} -log sigmoid(cos(S, T)).

    Padded frames (``padding_mask`` False) are never read into the result, whatever they hold.
    """
    with torch.autocast(student.device.type, enabled=False):
        student, teacher, mask = prepare_pair(student, teacher, padding_mask)
        valid = mask[:, None, :, None]  # (B, 1, F, 1)
        abs_err = (student - teacher).abs().where(valid, 0.0)  # (B, N, F, D)
        l1 = (abs_err.sum((0, 2, 3)) / (mask.sum().clamp_min(1) * student.shape[-1])).mean()
        cosine = cosine_weight * cosine_term(student, teacher, mask)
        return DistilHubertLossOutput(loss=l1 + cosine, l1=l1, cosine=cosine)
