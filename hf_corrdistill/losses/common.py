"""What both objectives share: input checks and the cosine term.

Shapes: ``student`` and ``teacher`` are (B, N, F, D) = (batch, predicted layers, frames, features);
``padding_mask`` is (B, F) bool with True for valid frames.
"""

import torch
import torch.nn.functional as F


def prepare_pair(
    student: torch.Tensor, teacher: torch.Tensor, padding_mask: torch.Tensor | None, zero_padding: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate shapes, upcast half precision to float32 and return the (B, F) bool mask.

    With ``zero_padding``, padded frames are replaced by zeros with `where` (not a product), which makes them inert
    even when they hold NaN or inf, in the values and in the gradients.
    """
    if student.dim() != 4 or student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher must both be (batch, layers, frames, features); got {tuple(student.shape)} "
            f"and {tuple(teacher.shape)}"
        )
    batch, _, frames, _ = student.shape
    dtype = torch.promote_types(torch.promote_types(student.dtype, teacher.dtype), torch.float32)
    if padding_mask is None:
        return student.to(dtype), teacher.to(dtype), torch.ones(batch, frames, dtype=torch.bool, device=student.device)
    if padding_mask.shape != (batch, frames):
        raise ValueError(f"padding_mask must be (batch, frames) = {(batch, frames)}, got {tuple(padding_mask.shape)}")
    mask = padding_mask.to(device=student.device, dtype=torch.bool)
    if not zero_padding:
        return student.to(dtype), teacher.to(dtype), mask
    valid = mask[:, None, :, None]  # (B, 1, F, 1)
    return student.to(dtype).where(valid, 0.0), teacher.to(dtype).where(valid, 0.0), mask


def cosine_term(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean_n [ mean over valid (b, f) of -log sigmoid(cos(S_bf, T_bf)) ]; inputs (B, N, F, D), mask (B, F)."""
    neg_log_sig = -F.logsigmoid(F.cosine_similarity(student, teacher, dim=-1))  # (B, N, F)
    valid = mask[:, None, :]  # (B, 1, F)
    per_layer = neg_log_sig.where(valid, 0.0).sum((0, 2)) / valid.sum((0, 2)).clamp_min(1)  # (N,)
    return per_layer.mean()


