"""Distillation objectives as pure tensor functions (METHOD.md section 3).

Shapes: ``student`` and ``teacher`` are (B, N, F, D) = (batch, predicted layers, frames, features);
``padding_mask`` is (B, F) bool with True for valid frames; SNRs are (B,) float dB, +inf for no additive noise.

The correlation matrices C (student x teacher) and A (student x student) are D x D, but with M samples they have
rank < M. Their squared off-diagonal mass is computed from M x M Gram matrices when M <= D (the batch style:
M = B) and from D x D products only when M > D (the frames style: M = all valid frames, one matrix per layer):
    ||S^T T||_F^2 = sum_{b,c} (S S^T)_bc (T T^T)_bc,   sum_{i != j} C_ij^2 = ||C||_F^2 - sum_i C_ii^2.
No B x D x D tensor and no D x D matrix per pooled position is ever formed. Everything runs in float32 (or float64
when given float64) with autocast disabled.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput

Style = Literal["batch", "frames"]
Weighting = Literal["fixed", "snr-reference", "snr"]
STYLES: tuple[str, ...] = ("batch", "frames")
WEIGHTINGS: tuple[str, ...] = ("fixed", "snr-reference", "snr")

STD_EPS = 1e-5  # z_hat = (z - mean) / (std + eps), METHOD.md 3.2 step 2
_VAR_FLOOR = 1e-30  # keeps d sqrt(var) finite for constant features; far below STD_EPS**2


@dataclass
class CorrelationLossOutput(ModelOutput):
    """L_CL and its terms, each already weighted as it enters `loss` (METHOD.md 3.2)."""

    loss: torch.Tensor | None = None
    on_diagonal: torch.Tensor | None = None
    off_diagonal_cross: torch.Tensor | None = None
    off_diagonal_self: torch.Tensor | None = None
    cosine: torch.Tensor | None = None


@dataclass
class DistilHubertLossOutput(ModelOutput):
    """L_KD (DistilHuBERT: L1 + cosine) and its terms, each already weighted as it enters `loss` (METHOD.md 3.1)."""

    loss: torch.Tensor | None = None
    l1: torch.Tensor | None = None
    cosine: torch.Tensor | None = None


def _prepare(
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


def _cosine_term(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean_n [ mean over valid (b, f) of -log sigmoid(cos(S_bf, T_bf)) ]; inputs (B, N, F, D), mask (B, F)."""
    neg_log_sig = -F.logsigmoid(F.cosine_similarity(student, teacher, dim=-1))  # (B, N, F)
    valid = mask[:, None, :]  # (B, 1, F)
    per_layer = neg_log_sig.where(valid, 0.0).sum((0, 2)) / valid.sum((0, 2)).clamp_min(1)  # (N,)
    return per_layer.mean()


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
        student, teacher, mask = _prepare(student, teacher, padding_mask)
        valid = mask[:, None, :, None]  # (B, 1, F, 1)
        abs_err = (student - teacher).abs().where(valid, 0.0)  # (B, N, F, D)
        l1 = (abs_err.sum((0, 2, 3)) / (mask.sum().clamp_min(1) * student.shape[-1])).mean()
        cosine = cosine_weight * _cosine_term(student, teacher, mask)
        return DistilHubertLossOutput(loss=l1 + cosine, l1=l1, cosine=cosine)


def pool_valid_frames(features: torch.Tensor, mask: torch.Tensor, positions: int) -> torch.Tensor:
    """Average each utterance's valid frames into ``positions`` bins, as ``AdaptiveAvgPool1d`` does on a crop.

    Bin p of an utterance with L valid frames averages its valid frames of rank floor(pL/P) .. ceil((p+1)L/P) - 1,
    so a pooled position means the same relative position in every utterance; with L < P neighbouring bins share
    frames. The bins form a sparse averaging matrix with a fixed number K = ceil(F/P) + 1 of entries per bin
    (unused entries repeat a frame of the bin with weight 0), applied by one sparse matmul: exact, with no
    data-dependent shapes, and padded frames are never read, so even NaN there changes nothing.
    features (B, N, F, D), mask (B, F) -> (B, N, P, D).
    """
    batch, layers, frames, width = features.shape
    device = features.device
    slots = -(-frames // positions) + 1  # a bin spans at most ceil(F / P) + 1 frames
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # (B, F): valid frame indices first
    length = mask.sum(1, keepdim=True)  # (B, 1)
    p = torch.arange(positions, device=device)[None, :]  # (1, P)
    start = (p * length) // positions  # (B, P), rank of the first frame of each bin
    end = ((p + 1) * length + positions - 1) // positions  # (B, P), one past the last rank (ceil)
    rank = start[..., None] + torch.arange(slots, device=device)  # (B, P, K)
    weight = (rank < end[..., None]).to(features.dtype) / (end - start).clamp_min(1)[..., None]  # (B, P, K)
    frame = order.gather(1, torch.minimum(rank, end[..., None] - 1).clamp_min(0).flatten(1))  # (B, P*K)
    utterance_layer = torch.arange(batch * layers, device=device).view(batch, layers, 1, 1)  # (B, N, 1, 1)
    rows = utterance_layer * positions + p.view(1, 1, positions, 1)  # (B, N, P, 1)
    cols = utterance_layer * frames + frame.view(batch, 1, positions, slots)  # (B, N, P, K)
    indices = torch.stack([rows.expand(-1, -1, -1, slots).flatten(), cols.flatten()])  # (2, B*N*P*K)
    values = weight[:, None].expand(batch, layers, positions, slots).flatten()
    averaging = torch.sparse_coo_tensor(
        indices, values, (batch * layers * positions, batch * layers * frames), check_invariants=False
    )
    pooled = torch.sparse.mm(averaging, features.reshape(batch * layers * frames, width))  # (B*N*P, D)
    return pooled.view(batch, layers, positions, width)


def _standardise(
    x: torch.Tensor, valid: torch.Tensor | None, count: torch.Tensor | int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x - mean) / (std + eps) over dim 1 of x (G, M, D), invalid samples (zero) excluded; unbiased std.

    Also returns sum_m x_hat_m^2 / (count - 1) per (G, D), the diagonal of the self-correlation, from the
    statistics alone: var / (std + eps)^2.
    """
    centred = x - x.sum(1, keepdim=True) / count  # (G, M, D)
    if valid is not None:
        centred = centred.where(valid, 0.0)
    var = centred.square().sum(1, keepdim=True) / (count - 1)  # (G, 1, D)
    inv = (var.clamp_min(_VAR_FLOOR).sqrt() + STD_EPS).reciprocal()  # (G, 1, D)
    return centred * inv, (var * inv.square()).squeeze(1)  # a product: cheaper to differentiate than a quotient


def _squared_frobenius(x: torch.Tensor, y: torch.Tensor, gram_x: torch.Tensor | None) -> torch.Tensor:
    """||x^T y||_F^2 per group for x, y (G, M, D), through M x M Grams when M <= D, else through D x D products."""
    samples, features = x.shape[1], x.shape[2]
    if samples <= features:
        gram_y = gram_x if y is x else y @ y.transpose(1, 2)  # (G, M, M)
        return (gram_x * gram_y).sum((1, 2))
    product = x.transpose(1, 2) @ y  # (G, D, D), one per layer in the frames style
    return product.square().sum((1, 2))


def _correlation_terms(
    s_hat: torch.Tensor,
    t_hat: torch.Tensor,
    a_diag: torch.Tensor,
    denom: torch.Tensor | int,
    cross_sample_weight: torch.Tensor | None,
    self_sample_weight: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per group g: sum_i (C_ii - 1)^2, sum_{i!=j} C_ij^2 and sum_{i!=j} A_ij^2 for standardised (G, M, D) inputs.

    C = s_hat^T t_hat / denom and A = s_hat^T s_hat / denom, whose diagonal ``a_diag`` (G, D) is given. With
    per-sample weights (G, M) the off-diagonal sums are instead sum_m w_m sum_{i!=j} (a_mi b_mj / denom)^2, the
    per-sample form of the reference code (METHOD.md 3.4), computed as ||a||^2 ||b||^2 - sum_i a_i^2 b_i^2.
    """
    c_diag = (s_hat * t_hat).sum(1) / denom  # (G, D)
    on_diag = (c_diag - 1).square().sum(-1)  # (G,)
    if cross_sample_weight is None:
        samples, features = s_hat.shape[1], s_hat.shape[2]
        gram_s = s_hat @ s_hat.transpose(1, 2) if samples <= features else None  # (G, M, M)
        cross_off = _squared_frobenius(s_hat, t_hat, gram_s) / denom**2 - c_diag.square().sum(-1)  # (G,)
        self_off = _squared_frobenius(s_hat, s_hat, gram_s) / denom**2 - a_diag.square().sum(-1)  # (G,)
        return on_diag, cross_off, self_off
    s_sq, t_sq = s_hat.square(), t_hat.square()  # (G, M, D)
    s_norm = s_sq.sum(-1)  # (G, M)
    cross_each = s_norm * t_sq.sum(-1) - (s_sq * t_sq).sum(-1)  # (G, M)
    self_each = s_norm.square() - s_sq.square().sum(-1)  # (G, M)
    cross_off = (cross_sample_weight * cross_each).sum(1) / denom**2
    self_off = (self_sample_weight * self_each).sum(1) / denom**2
    return on_diag, cross_off, self_off


def reference_snr_weight(snr: torch.Tensor) -> torch.Tensor:
    """w(snr) = 9.9 snr - 98 of the authors' reference code (10 dB -> 1, 20 dB -> 100); +inf dB -> +inf."""
    return 9.9 * snr - 98.0


def clipped_snr_weight(snr: torch.Tensor, snr_low: float = 10.0, snr_high: float = 20.0) -> torch.Tensor:
    """Our `snr` mode: w rises linearly from 1 at ``snr_low`` to 100 at ``snr_high`` and is clipped to [1, 100]."""
    return (1.0 + 99.0 * (snr - snr_low) / (snr_high - snr_low)).clamp(1.0, 100.0)


def _snr_tensor(snr: torch.Tensor | None, name: str, batch: int, like: torch.Tensor) -> torch.Tensor:
    if snr is None:
        raise ValueError(f"{name} is required by the SNR weighting modes")
    snr = torch.as_tensor(snr, dtype=like.dtype, device=like.device)
    if snr.shape != (batch,):
        raise ValueError(f"{name} must have shape (batch,) = ({batch},), got {tuple(snr.shape)}")
    return snr


def correlation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
    *,
    style: Style = "batch",
    pool_positions: int = 150,
    lambda_cross: float = 5e-5,
    lambda_self: float = 5e-6,
    diag_scale: float = 10.0,
    cross_scale: float = 100.0,
    self_scale: float = 50000.0,
    cosine_weight: float = 1.0,
    weighting: Weighting = "fixed",
    student_snr: torch.Tensor | None = None,
    teacher_snr: torch.Tensor | None = None,
    snr_low: float = 10.0,
    snr_high: float = 20.0,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> CorrelationLossOutput:
    """L_CL of METHOD.md 3.2: correlation terms per predicted layer plus the cosine term.

    For each group (style ``batch``: every (layer, pooled position), samples = the B utterances; style ``frames``:
    every layer, samples = all valid frames of the batch), features are standardised over the samples and
        L = (1/diag_scale) sum_i (C_ii - 1)^2 + lambda_cross (1/cross_scale) sum_{i!=j} C_ij^2
            + lambda_self (1/self_scale) sum_{i!=j} A_ij^2,
    averaged over groups; the cosine term of L_KD is added on the pooled (``batch``) or valid (``frames``) frames.

    Weighting (METHOD.md 3.4): ``fixed`` uses the lambdas as given; ``snr-reference`` divides every sample's
    off-diagonal contribution by w = 9.9 snr - 98 of its view (teacher view for C, student view for A), defined for
    SNRs above 9.9 dB only; ``snr`` scales lambda_cross by the batch mean of 1/w(teacher_snr) and lambda_self by
    the batch mean of 1/w(student_snr), with w clipped to [1, 100] between ``snr_low`` and ``snr_high``.

    Padded frames never contribute, whatever they hold (NaN included), to the values or the gradients.

    ``gather`` (e.g. `distributed.gather_rows`) concatenates a tensor's dim 0 over processes: the correlations,
    standardisation and weights then use the global batch (pooled features in the ``batch`` style, frames in the
    ``frames`` style, whose frame counts must then agree across processes).
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if pool_positions < 1:
        raise ValueError(f"pool_positions must be >= 1, got {pool_positions}")
    with torch.autocast(student.device.type, enabled=False):
        student, teacher, mask = _prepare(student, teacher, padding_mask, zero_padding=style == "frames")
        batch, layers, frames, features = student.shape
        cross_scale_by, self_scale_by = 1.0, 1.0
        cross_weight = self_weight = None  # per-utterance weights of the snr-reference mode, (B,)
        if weighting != "fixed":
            t_snr = _snr_tensor(teacher_snr, "teacher_snr", batch, student)
            s_snr = _snr_tensor(student_snr, "student_snr", batch, student)
            if gather is not None:
                t_snr, s_snr = gather(t_snr), gather(s_snr)
            if weighting == "snr":
                cross_scale_by = clipped_snr_weight(t_snr, snr_low, snr_high).reciprocal().mean()
                self_scale_by = clipped_snr_weight(s_snr, snr_low, snr_high).reciprocal().mean()
            else:
                cross_weight = reference_snr_weight(t_snr).reciprocal()
                self_weight = reference_snr_weight(s_snr).reciprocal()

        if style == "batch":  # samples: the utterances, at every (layer, pooled position)
            student = pool_valid_frames(student, mask, pool_positions)  # (B, N, P, D)
            teacher = pool_valid_frames(teacher, mask, pool_positions)
            mask = mask.new_ones(batch, pool_positions)  # every pooled position holds valid frames
        if gather is not None:  # the global batch of all processes
            student, teacher, mask = gather(student), gather(teacher), gather(mask)  # (W*B, N, P or F, D)
        batch = student.shape[0]
        if batch < 2:
            raise ValueError(f"correlation_loss needs at least 2 utterances in the batch, got {batch}")
        cosine = _cosine_term(student, teacher, mask)
        if style == "batch":
            groups = (layers * pool_positions, batch, features)
            s_hat, a_diag = _standardise(student.permute(1, 2, 0, 3).reshape(groups), None, batch)  # (N*P, B, D)
            t_hat, _ = _standardise(teacher.permute(1, 2, 0, 3).reshape(groups), None, batch)
            denom = batch - 1
        else:
            samples = (layers, batch * frames, features)
            valid = mask.reshape(1, batch * frames, 1)  # (1, B*F, 1)
            count = mask.sum()
            s_hat, a_diag = _standardise(student.transpose(0, 1).reshape(samples), valid, count)  # (N, B*F, D)
            t_hat, _ = _standardise(teacher.transpose(0, 1).reshape(samples), valid, count)
            denom = count - 1
            if cross_weight is not None:  # every frame carries its utterance's weight
                cross_weight = cross_weight.repeat_interleave(frames)
                self_weight = self_weight.repeat_interleave(frames)

        on_diag, cross_off, self_off = _correlation_terms(
            s_hat,
            t_hat,
            a_diag,
            denom,
            None if cross_weight is None else cross_weight[None, :],
            None if self_weight is None else self_weight[None, :],
        )
        on_diagonal = on_diag.mean() / diag_scale
        off_diagonal_cross = lambda_cross * cross_scale_by * cross_off.mean() / cross_scale
        off_diagonal_self = lambda_self * self_scale_by * self_off.mean() / self_scale
        cosine = cosine_weight * cosine
        return CorrelationLossOutput(
            loss=on_diagonal + off_diagonal_cross + off_diagonal_self + cosine,
            on_diagonal=on_diagonal,
            off_diagonal_cross=off_diagonal_cross,
            off_diagonal_self=off_diagonal_self,
            cosine=cosine,
        )
