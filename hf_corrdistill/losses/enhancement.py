"""The enhancement term of RobustDistiller (Guimaraes et al., ICASSP 2023), at the student's frame rate.

A training-only head on the student's last hidden state predicts the log-mel spectrum of the *clean* crop while the
student hears a distorted view; the term is the L1 distance over valid frames. Each target frame is computed from
exactly the samples the student's CNN reads for that frame (its receptive field, one frame per hop), so target and
prediction align frame for frame and padding never enters a valid frame.

Shapes: ``waveforms`` (B, T); ``predicted`` and ``target`` (B, F, M) = (batch, frames, mel bins); ``frame_mask``
(B, F) bool with True for valid frames.
"""

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers.audio_utils import mel_filter_bank
from transformers.utils import ModelOutput

LOG_FLOOR = 1e-6  # added to the mel power before the log: silence maps to log(1e-6), not -inf


@dataclass
class EnhancementLossOutput(ModelOutput):
    """``loss``: mean over valid frames and mel bins of |predicted - target|."""

    loss: torch.Tensor | None = None


def frame_geometry(conv_kernel: Sequence[int], conv_stride: Sequence[int]) -> tuple[int, int]:
    """(window, hop) in samples of a stack of unpadded 1-d convolutions: its receptive field and total stride
    (400 and 320 for the HuBERT / wav2vec 2.0 CNN: 25 ms every 20 ms at 16 kHz)."""
    window, hop = 1, 1
    for kernel, stride in zip(conv_kernel, conv_stride, strict=True):
        window += (kernel - 1) * hop
        hop *= stride
    return window, hop


@functools.lru_cache(maxsize=8)
def _mel_matrix(fft_bins: int, num_bins: int, sample_rate: int) -> np.ndarray:
    return mel_filter_bank(fft_bins, num_bins, 20.0, sample_rate / 2, sample_rate, mel_scale="kaldi")  # (K, M)


@functools.lru_cache(maxsize=8)
def _mel_tensor(fft_bins: int, num_bins: int, sample_rate: int, device: torch.device) -> torch.Tensor:
    """The float32 mel matrix on ``device``, made once per device (not copied there at every step)."""
    return torch.from_numpy(_mel_matrix(fft_bins, num_bins, sample_rate)).float().to(device)  # (K, M)


def log_mel_frames(
    waveforms: torch.Tensor, num_frames: int, window: int, hop: int, num_bins: int = 80, sample_rate: int = 16000
) -> torch.Tensor:
    """log(mel power + 1e-6) of Hann-windowed frames: frame f reads samples [f * hop, f * hop + window).

    (B, T) -> (B, num_frames, num_bins), in float32 whatever the input's precision.
    """
    if waveforms.dim() != 2:
        raise ValueError(f"waveforms must be (batch, samples), got {tuple(waveforms.shape)}")
    available = (waveforms.shape[1] - window) // hop + 1 if waveforms.shape[1] >= window else 0
    if available < num_frames:
        raise ValueError(f"{waveforms.shape[1]} samples make {available} frames of {window} every {hop}, "
                         f"fewer than the {num_frames} asked for")
    n_fft = 2 ** math.ceil(math.log2(window))
    frames = waveforms.float().unfold(1, window, hop)[:, :num_frames]  # (B, F, window)
    taper = torch.hann_window(window, periodic=True, device=frames.device)
    power = torch.fft.rfft(frames * taper, n=n_fft).abs().square()  # (B, F, K), K = n_fft / 2 + 1
    mel = _mel_tensor(n_fft // 2 + 1, num_bins, sample_rate, power.device)  # (K, M)
    return torch.log(power @ mel + LOG_FLOOR)  # (B, F, M)


def enhancement_loss(
    predicted: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor | None = None
) -> EnhancementLossOutput:
    """Mean absolute error between ``predicted`` and ``target`` log-mel frames over the valid frames and every bin.

    Padded frames are replaced with `where`, so NaN or inf there reaches neither the value nor the gradients.
    """
    if predicted.dim() != 3 or predicted.shape != target.shape:
        raise ValueError(f"predicted and target must both be (batch, frames, bins); got {tuple(predicted.shape)} "
                         f"and {tuple(target.shape)}")
    batch, frames, bins = predicted.shape
    if frame_mask is None:
        frame_mask = torch.ones(batch, frames, dtype=torch.bool, device=predicted.device)
    elif frame_mask.shape != (batch, frames):
        raise ValueError(f"frame_mask must be (batch, frames) = {(batch, frames)}, got {tuple(frame_mask.shape)}")
    valid = frame_mask.to(device=predicted.device, dtype=torch.bool)[:, :, None]  # (B, F, 1)
    dtype = torch.promote_types(torch.promote_types(predicted.dtype, target.dtype), torch.float32)
    error = (predicted.to(dtype).where(valid, 0.0) - target.to(dtype).where(valid, 0.0)).abs()  # (B, F, M)
    return EnhancementLossOutput(loss=error.sum() / (valid.sum() * bins).clamp_min(1))
