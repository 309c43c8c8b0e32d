"""L_CL, the correlation objective of Ritter-Gutierrez et al. (2024), as pure tensor functions (docs/method.md).

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
from transformers.utils import ModelOutput

from .common import cosine_term, prepare_pair

Style = Literal["batch", "frames"]
Weighting = Literal["fixed", "snr-reference", "snr"]
STYLES: tuple[str, ...] = ("batch", "frames")
WEIGHTINGS: tuple[str, ...] = ("fixed", "snr-reference", "snr")

STD_EPS = 1e-5  # z_hat = (z - mean) / (std + eps), docs/method.md, "L_CL"
_VAR_FLOOR = 1e-30  # keeps d sqrt(var) finite for constant features; far below STD_EPS**2


@dataclass
class CorrelationLossOutput(ModelOutput):
    """L_CL and its terms, each already weighted as it enters `loss` (docs/method.md, "L_CL")."""

    loss: torch.Tensor | None = None
    on_diagonal: torch.Tensor | None = None
    off_diagonal_cross: torch.Tensor | None = None
    off_diagonal_self: torch.Tensor | None = None
    cosine: torch.Tensor | None = None


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
    per-sample form of the reference code (docs/method.md, "SNR weighting"), computed as
    ||a||^2 ||b||^2 - sum_i a_i^2 b_i^2.
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


def _check_options(style: str, weighting: str, pool_positions: int) -> None:
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if pool_positions < 1:
        raise ValueError(f"pool_positions must be >= 1, got {pool_positions}")


@dataclass
class _SnrWeights:
    """How the off-diagonal terms are weighted: batch-level scales (``snr``) or per-utterance weights
    (``snr-reference``, (B,) over the gathered batch)."""

    cross_scale_by: torch.Tensor | float = 1.0
    self_scale_by: torch.Tensor | float = 1.0
    cross_sample: torch.Tensor | None = None
    self_sample: torch.Tensor | None = None


def _snr_weights(
    weighting: str,
    student_snr: torch.Tensor | None,
    teacher_snr: torch.Tensor | None,
    like: torch.Tensor,
    snr_low: float,
    snr_high: float,
    gather: Callable[[torch.Tensor], torch.Tensor] | None,
) -> _SnrWeights:
    """METHOD 3.4: C is weighted by the teacher view's SNR, A by the student view's."""
    if weighting == "fixed":
        return _SnrWeights()
    batch = like.shape[0]
    t_snr = _snr_tensor(teacher_snr, "teacher_snr", batch, like)
    s_snr = _snr_tensor(student_snr, "student_snr", batch, like)
    if gather is not None:
        t_snr, s_snr = gather(t_snr), gather(s_snr)
    if weighting == "snr":
        return _SnrWeights(
            cross_scale_by=clipped_snr_weight(t_snr, snr_low, snr_high).reciprocal().mean(),
            self_scale_by=clipped_snr_weight(s_snr, snr_low, snr_high).reciprocal().mean(),
        )
    return _SnrWeights(
        cross_sample=reference_snr_weight(t_snr).reciprocal(), self_sample=reference_snr_weight(s_snr).reciprocal()
    )


def _samples(
    student: torch.Tensor,
    teacher: torch.Tensor,
    mask: torch.Tensor,
    style: str,
    pool_positions: int,
    gather: Callable[[torch.Tensor], torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The features correlations are taken over: pooled positions (``batch``) or frames (``frames``), of this
    process's batch or, with ``gather``, of the global batch. (B, N, F, D) -> (B', N, P or F, D), mask (B', P or F)."""
    if style == "batch":  # samples: the utterances, at every (layer, pooled position)
        student = pool_valid_frames(student, mask, pool_positions)  # (B, N, P, D)
        teacher = pool_valid_frames(teacher, mask, pool_positions)
        mask = mask.new_ones(student.shape[0], pool_positions)  # every pooled position holds valid frames
    if gather is not None:  # the global batch of all processes
        student, teacher, mask = gather(student), gather(teacher), gather(mask)  # (W*B, N, P or F, D)
    if student.shape[0] < 2:
        raise ValueError(f"correlation_loss needs at least 2 utterances in the batch, got {student.shape[0]}")
    return student, teacher, mask


def _standardised_groups(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, style: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | int]:
    """Standardised (G, M, D) groups of samples, the self-correlation diagonal (G, D) and the divisor M - 1.

    ``batch``: a group per (layer, pooled position), samples = the B utterances; ``frames``: a group per layer,
    samples = all B*F frames, padded ones zero and left out of the statistics."""
    batch, layers, positions, features = student.shape
    if style == "batch":
        groups = (layers * positions, batch, features)
        s_hat, a_diag = _standardise(student.permute(1, 2, 0, 3).reshape(groups), None, batch)  # (N*P, B, D)
        t_hat, _ = _standardise(teacher.permute(1, 2, 0, 3).reshape(groups), None, batch)
        return s_hat, t_hat, a_diag, batch - 1
    samples = (layers, batch * positions, features)
    valid = mask.reshape(1, batch * positions, 1)  # (1, B*F, 1)
    count = mask.sum()
    s_hat, a_diag = _standardise(student.transpose(0, 1).reshape(samples), valid, count)  # (N, B*F, D)
    t_hat, _ = _standardise(teacher.transpose(0, 1).reshape(samples), valid, count)
    return s_hat, t_hat, a_diag, count - 1


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
    """L_CL: correlation terms per predicted layer plus the cosine term (docs/method.md, "L_CL").

    For each group (style ``batch``: every (layer, pooled position), samples = the B utterances; style ``frames``:
    every layer, samples = all valid frames of the batch), features are standardised over the samples and
        L = (1/diag_scale) sum_i (C_ii - 1)^2 + lambda_cross (1/cross_scale) sum_{i!=j} C_ij^2
            + lambda_self (1/self_scale) sum_{i!=j} A_ij^2,
    averaged over groups; the cosine term of L_KD is added on the pooled (``batch``) or valid (``frames``) frames.

    Weighting: ``fixed`` uses the lambdas as given; ``snr-reference`` divides every sample's off-diagonal
    contribution by w = 9.9 snr - 98 of its view (teacher view for C, student view for A), defined for SNRs above
    9.9 dB only; ``snr`` scales lambda_cross by the batch mean of 1/w(teacher_snr) and lambda_self by the batch mean
    of 1/w(student_snr), with w clipped to [1, 100] between ``snr_low`` and ``snr_high``.

    Padded frames never contribute, whatever they hold (NaN included), to the values or the gradients.

    ``gather`` (e.g. `training.distributed.gather_rows`) concatenates a tensor's dim 0 over processes: the
    correlations, standardisation and weights then use the global batch (pooled features in the ``batch`` style,
    frames in the ``frames`` style, whose frame counts must then agree across processes).
    """
    _check_options(style, weighting, pool_positions)
    with torch.autocast(student.device.type, enabled=False):
        student, teacher, mask = prepare_pair(student, teacher, padding_mask, zero_padding=style == "frames")
        frames = student.shape[2]
        weights = _snr_weights(weighting, student_snr, teacher_snr, student, snr_low, snr_high, gather)
        student, teacher, mask = _samples(student, teacher, mask, style, pool_positions, gather)  # (B', N, M, D)
        cosine = cosine_weight * cosine_term(student, teacher, mask)
        s_hat, t_hat, a_diag, denom = _standardised_groups(student, teacher, mask, style)
        cross_sample, self_sample = weights.cross_sample, weights.self_sample  # (B',) or None
        if cross_sample is not None and style == "frames":  # every frame carries its utterance's weight
            cross_sample, self_sample = cross_sample.repeat_interleave(frames), self_sample.repeat_interleave(frames)
        on_diag, cross_off, self_off = _correlation_terms(
            s_hat,
            t_hat,
            a_diag,
            denom,
            None if cross_sample is None else cross_sample[None, :],
            None if self_sample is None else self_sample[None, :],
        )
        on_diagonal = on_diag.mean() / diag_scale
        off_diagonal_cross = lambda_cross * weights.cross_scale_by * cross_off.mean() / cross_scale
        off_diagonal_self = lambda_self * weights.self_scale_by * self_off.mean() / self_scale
        return CorrelationLossOutput(
            loss=on_diagonal + off_diagonal_cross + off_diagonal_self + cosine,
            on_diagonal=on_diagonal,
            off_diagonal_cross=off_diagonal_cross,
            off_diagonal_self=off_diagonal_self,
            cosine=cosine,
        )
