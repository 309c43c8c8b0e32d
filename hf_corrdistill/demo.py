"""Builds the offline demo: a small espeak-ng speech corpus and a small HuBERT teacher.

    python -m hf_corrdistill.demo --output demo_data

The teacher is a randomly initialised, HuBERT-shaped model: the demo shows the distillation mechanics end to end,
not a useful student. Everything is deterministic given ``--seed`` and the installed espeak-ng.
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

from .data import SAMPLE_RATE, default_feature_extractor

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


def demo_teacher_config() -> HubertConfig:
    """A HuBERT-Base-shaped teacher, narrowed (64 wide, 4 layers) so that the demo runs in minutes on a CPU."""
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
    logger.info("wrote a randomly initialised demo teacher to %s", output)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("demo_data"), help="folder to write into")
    parser.add_argument("--num_train", type=int, default=60, help="training utterances")
    parser.add_argument("--num_validation", type=int, default=12, help="validation utterances")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    make_speech_corpus(args.output / "speech", args.num_train, args.num_validation, args.seed)
    make_teacher(args.output / "teacher", args.seed)


if __name__ == "__main__":
    main()
