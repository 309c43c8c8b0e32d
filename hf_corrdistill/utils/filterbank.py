"""Filter-bank features: SUPERB's FBANK and MFCC baselines, and the MFCC targets of HuBERT's first iteration."""

import math

import numpy as np
import torch
from transformers.audio_utils import mel_filter_bank

from ..data.sources import SAMPLE_RATE

KINDS = ("fbank", "mfcc")


class Filterbank:
    """Log-mel filterbank (``fbank``, 80 bins) or ``mfcc`` (13 cepstra with deltas and delta-deltas) of 16 kHz audio:
    25 ms windows every 10 ms, Kaldi's mel scale."""

    def __init__(self, kind: str):
        if kind not in KINDS:
            raise ValueError(f"filterbank kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.hidden_size = 80 if kind == "fbank" else 39
        mels = 80 if kind == "fbank" else 40
        self.mel = torch.from_numpy(mel_filter_bank(257, mels, 20.0, SAMPLE_RATE / 2, SAMPLE_RATE, mel_scale="kaldi")
                                    ).float()  # (257, M)
        self.window = torch.hann_window(400)

    @staticmethod
    def frames(samples: int) -> int:
        return 1 + samples // 160

    @staticmethod
    def _deltas(x: torch.Tensor) -> torch.Tensor:  # (F, C) -> (F, C), regression over +-2 frames
        padded = torch.cat([x[:1], x[:1], x, x[-1:], x[-1:]])
        return (padded[3:-1] - padded[1:-3] + 2 * (padded[4:] - padded[:-4])) / 10

    def __call__(self, waves: list[np.ndarray]) -> list[torch.Tensor]:
        """(1, F, D) features per waveform, F = `frames` of its length."""
        features = []
        for wave in waves:
            spectrum = torch.stft(torch.from_numpy(wave), 512, 160, 400, self.window, return_complex=True)  # (257, F)
            logmel = torch.log(spectrum.abs().pow(2).T @ self.mel + 1e-6)  # (F, M)
            if self.kind == "mfcc":
                m = logmel.shape[1]
                dct = torch.cos(math.pi / m * (torch.arange(m)[:, None] + 0.5) * torch.arange(13)[None, :])  # (M, 13)
                cepstra = logmel @ dct
                delta = self._deltas(cepstra)
                logmel = torch.cat([cepstra, delta, self._deltas(delta)], dim=1)  # (F, 39)
            features.append(logmel[None])  # (1, F, D)
        return features
