"""Test conditions: clean, and deterministic noisy copies at fixed SNRs with seen or unseen noise.

The noise added to an utterance depends only on (seed, utterance key, noise bank): every upstream hears exactly the
same noisy audio, and the same noise stretch is used at every SNR, so that only its level changes.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..data.views import NoiseBank, mix_at_snr

NOISE_KINDS = ("seen", "unseen")


@dataclass(frozen=True)
class Condition:
    noise: str | None = None  # None (clean), "seen" or "unseen"
    snr: float | None = None

    @property
    def name(self) -> str:
        return "clean" if self.noise is None else f"{self.noise}@{self.snr:g}dB"


def parse_conditions(snrs: list[str], unseen: bool) -> list[Condition]:
    """["clean", "20", "10"] -> clean, seen@20dB, seen@10dB (and unseen@... when an unseen bank is given)."""
    conditions = []
    for value in snrs:
        if value == "clean":
            conditions.append(Condition())
            continue
        try:
            snr = float(value)
        except ValueError:
            raise ValueError(f"--snrs takes 'clean' or numbers (dB), not {value!r}") from None
        conditions += [Condition(kind, snr) for kind in NOISE_KINDS[: 1 + unseen]]
    return sorted(set(conditions), key=lambda c: (c.noise is not None, c.noise or "", -(c.snr or 0)))


def _key_entropy(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "little")


class NoisyCopies:
    """Makes the audio of an item under a condition."""

    def __init__(self, banks: dict[str, NoiseBank], seed: int):
        self.banks, self.seed = banks, seed

    def __call__(self, audio: np.ndarray, key: str, condition: Condition) -> np.ndarray:
        if condition.noise is None:
            return audio
        bank = self.banks[condition.noise]
        rng = np.random.default_rng([self.seed, _key_entropy(key), NOISE_KINDS.index(condition.noise)])
        return mix_at_snr(audio, bank.segment(audio.size, rng), condition.snr)

    def fingerprint(self, condition: Condition) -> dict:
        """What determines the noisy audio besides the utterance: part of the feature-cache key."""
        if condition.noise is None:
            return {"condition": "clean"}
        files = [(Path(path).name, sf.info(path).frames) for path in self.banks[condition.noise].files]
        digest = hashlib.sha1(repr(files).encode()).hexdigest()[:16]
        return {"condition": condition.name, "seed": self.seed, "noise_files": digest}


def content_hashes(bank: NoiseBank) -> dict[str, str]:
    """sha1 of each noise file's samples -> path: finds the same recording under another name or format."""
    hashes = {}
    for path in bank.files:
        samples, _ = sf.read(path, dtype="int16")
        hashes[hashlib.sha1(samples.tobytes()).hexdigest()] = path
    return hashes
