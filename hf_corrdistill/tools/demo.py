"""Builds the offline demo data: a small espeak-ng speech corpus, a noise bank and a tiny random HuBERT teacher.

    python -m hf_corrdistill.tools.demo --output demo_data

The tiny teacher (``tiny_teacher/``) is randomly initialised: with configs/tiny.yaml it shows the distillation
mechanics in seconds, not a useful student. The demo's trained teacher (``teacher/``) comes from
`hf_corrdistill.tools.pretrain_teacher` (see the README). Everything is deterministic given ``--seed`` and espeak-ng.
"""

import argparse
import io
import logging
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
from transformers import HubertConfig, HubertModel

from ..data.sources import SAMPLE_RATE, default_feature_extractor

logger = logging.getLogger(__name__)

VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
VARIANTS = ("m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "f4", "f5")
WORDS = (
    "the quick brown fox jumps over a lazy dog while seven bright stars shine above quiet river banks "
    "people often walk home after work through narrow streets where small shops sell bread coffee and fresh "
    "fruit every morning children learn new words music plays softly in the garden and old trains carry heavy "
    "loads across green hills toward the distant city harbour ships arrive late at night"
).split()


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def synthesize(text: str, voice: str, pitch: int, speed: int) -> np.ndarray:
    """Speak ``text`` with espeak-ng and return float32 mono samples at 16 kHz."""
    if not espeak_available():
        raise RuntimeError("espeak-ng is not installed (Debian/Ubuntu: apt-get install -y espeak-ng)")
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "--stdout", text],
        check=True,
        capture_output=True,
    ).stdout
    samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    return soxr.resample(samples, rate, SAMPLE_RATE).astype(np.float32)


def make_speech_corpus(output: Path, num_train: int, num_validation: int, seed: int) -> None:
    """Write ``output/{train,validation}/*.flac``: random word sequences, one speaker setting per file."""
    rng = random.Random(seed)
    for split, count in (("train", num_train), ("validation", num_validation)):
        folder = output / split
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 9)))
            voice = f"{rng.choice(VOICES)}+{rng.choice(VARIANTS)}"
            audio = synthesize(text, voice, pitch=rng.randint(30, 70), speed=rng.randint(150, 190))
            sf.write(folder / f"{split}-{index:04d}.flac", audio, SAMPLE_RATE, subtype="PCM_16")
    logger.info("wrote %d + %d utterances under %s", num_train, num_validation, output)


def coloured_noise(length: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise whose power falls as 1 / f^exponent (0 white, 1 pink, 2 brown), scaled to unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length)
    spectrum[1:] /= freqs[1:] ** (exponent / 2)
    spectrum[0] = 0
    noise = np.fft.irfft(spectrum, n=length)
    return (noise / np.sqrt(np.mean(noise**2))).astype(np.float32)


def babble(length: int, rng: random.Random) -> np.ndarray:
    """Four to six espeak-ng talkers at once, each from a random offset, as cafeteria-style babble."""
    mix = np.zeros(length, dtype=np.float32)
    for _ in range(rng.randint(4, 6)):
        text = " ".join(rng.choice(WORDS) for _ in range(14))
        voice = f"{rng.choice(VOICES)}+{rng.choice(VARIANTS)}"
        talker = synthesize(text, voice, pitch=rng.randint(20, 80), speed=rng.randint(140, 200))
        talker = np.tile(talker, -(-length // talker.size) + 1)
        start = rng.randrange(talker.size - length)
        mix += talker[start : start + length] / (np.sqrt(np.mean(talker**2)) + 1e-8)
    return mix / np.sqrt(np.mean(mix**2))


def tonal_music(length: int, rng: random.Random) -> np.ndarray:
    """Notes of a pentatonic scale with harmonics and decaying envelopes over a sustained chord."""
    t = np.arange(length) / SAMPLE_RATE
    root = rng.choice((110.0, 130.8, 146.8, 164.8))
    scale = [root * 2 ** (step / 12) for step in (0, 2, 4, 7, 9, 12, 14, 16)]
    music = sum(0.3 * np.sin(2 * np.pi * root * ratio * t) for ratio in (1, 1.25, 1.5))  # the chord
    note_length = int(SAMPLE_RATE * rng.choice((0.125, 0.25, 0.375)))
    for start in range(0, length, note_length):
        f0 = rng.choice(scale) * 2
        n = np.arange(min(note_length, length - start)) / SAMPLE_RATE
        note = sum(np.sin(2 * np.pi * f0 * k * n) / k for k in range(1, 5)) * np.exp(-n * rng.uniform(3, 8))
        music[start : start + n.size] += note
    return (music / np.sqrt(np.mean(music**2))).astype(np.float32)


def make_noise_bank(output: Path, seconds: float, seed: int) -> None:
    """Write ``output/{train,test}/{noise,music,babble}/*.flac``; test files are disjoint from training ones."""
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    length = int(seconds * SAMPLE_RATE)
    counts = {"train": 2, "test": 1}
    for split, count in counts.items():
        for index in range(count):
            exponent = (0.0, 1.0, 2.0)[(index + (split == "test")) % 3]
            clips = {
                "noise": coloured_noise(length, exponent, np_rng),
                "music": tonal_music(length, rng),
                "babble": babble(length, rng),
            }
            for category, clip in clips.items():
                folder = output / split / category
                folder.mkdir(parents=True, exist_ok=True)
                sf.write(folder / f"{category}-{split}-{index}.flac", 0.1 * clip, SAMPLE_RATE, subtype="PCM_16")
    logger.info("wrote the noise bank under %s", output)


def demo_teacher_config() -> HubertConfig:
    """A HuBERT-Base-shaped teacher, narrowed (64 wide, 4 layers): the tests' teacher, seconds per run on a CPU."""
    return HubertConfig(
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=256,
        conv_dim=(64,) * 7,
        num_conv_pos_embeddings=32,
        num_conv_pos_embedding_groups=4,
        layerdrop=0.0,
        mask_time_prob=0.0,
    )


def make_teacher(output: Path, seed: int) -> None:
    torch.manual_seed(seed)
    teacher = HubertModel(demo_teacher_config()).eval()
    teacher.save_pretrained(output)
    default_feature_extractor().save_pretrained(output)
    logger.info("wrote a randomly initialised tiny teacher to %s", output)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("demo_data"), help="folder to write into")
    parser.add_argument("--num_train", type=int, default=60, help="training utterances")
    parser.add_argument("--num_validation", type=int, default=12, help="validation utterances")
    parser.add_argument("--noise_seconds", type=float, default=4.0, help="length of each noise-bank clip")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    make_speech_corpus(args.output / "speech", args.num_train, args.num_validation, args.seed)
    make_noise_bank(args.output / "noise", args.noise_seconds, args.seed)
    make_teacher(args.output / "tiny_teacher", args.seed)


if __name__ == "__main__":
    main()
