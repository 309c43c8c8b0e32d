"""Audio sources and decoding: folders, saved datasets, parquet and Hub datasets, read with soundfile.

Every source becomes a `datasets` dataset with an ``Audio(decode=False)`` column, decoded here with soundfile
(FLAC/WAV/OGG, no FFmpeg or torchcodec needed), mixed down to mono and resampled to 16 kHz with soxr where needed.
"""

import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import soundfile as sf
import soxr
from datasets import Audio, load_dataset, load_from_disk
from transformers import Wav2Vec2FeatureExtractor

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
AUDIO_SUFFIXES = (".flac", ".wav", ".ogg")


SKIP_REASONS = ("undecodable", "empty", "silent", "non_finite", "too_short")


class AudioDecodeError(ValueError):
    """An utterance that cannot be used; the message names it and ``reason`` is one of `SKIP_REASONS`."""

    def __init__(self, message: str, reason: str = "undecodable"):
        super().__init__(message)
        self.reason = reason


def is_audio_file(path: Path) -> bool:
    """A regular file with a suffix of `AUDIO_SUFFIXES` (any case); a directory named like one (``x.wav/``) is not."""
    return path.suffix.lower() in AUDIO_SUFFIXES and path.is_file()


def audio_files_under(root: Path) -> Iterator[Path]:
    """The audio files under ``root``, recursively, unsorted (`is_audio_file`)."""
    return (p for p in root.rglob("*") if is_audio_file(p))


def _audio_files(folder: Path, split: str) -> list[str]:
    """Audio files of ``split``: those under ``folder/split`` if it exists, else all of ``folder`` for "train"."""
    root = folder / split if (folder / split).is_dir() else folder
    if root is folder and split != "train":
        raise FileNotFoundError(f"no folder {folder / split} for split {split!r}")
    files = sorted(str(p) for p in audio_files_under(root))
    if not files:
        raise FileNotFoundError(f"no {'/'.join(AUDIO_SUFFIXES)} files under {root}")
    return files


def _audiofolder(folder: Path, split: str, audio_column: str) -> datasets.Dataset:
    """An audiofolder layout (split subfolders optional, ``metadata.csv``/``.jsonl`` with a ``file_name`` column
    optional), read without the ``audiofolder`` builder, which needs torchcodec in datasets 5."""
    root = folder / split if (folder / split).is_dir() else folder
    for metadata in (root / "metadata.csv", root / "metadata.jsonl"):
        if metadata.exists():
            table = load_dataset(metadata.suffix.lstrip(".").replace("jsonl", "json"), data_files=str(metadata),
                                 split="train")
            if "file_name" not in table.column_names:
                raise KeyError(f"{metadata} has no file_name column")
            paths = [str(root / name) for name in table["file_name"]]
            missing = [p for p in paths if not Path(p).is_file()]
            if missing:
                raise FileNotFoundError(f"{metadata} lists missing files, e.g. {missing[0]}")
            return table.remove_columns("file_name").add_column(audio_column, paths)
    return datasets.Dataset.from_dict({audio_column: _audio_files(folder, split)})


def _split_size(dataset: datasets.IterableDataset, split: str) -> int | None:
    splits = getattr(dataset.info, "splits", None) or {}
    info = splits.get(split)
    return getattr(info, "num_examples", None) or None


def _stream(dataset: datasets.Dataset) -> datasets.IterableDataset:
    """A local dataset as a stream, in shards so that DataLoader workers can share it."""
    return dataset.to_iterable_dataset(num_shards=max(1, min(len(dataset), 64)))


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a folder written by `save_to_disk`."""
    return (path / "dataset_dict.json").exists() or (path / "state.json").exists()


def load_audio_source(
    source: str,
    split: str = "train",
    *,
    config_name: str | None = None,
    audio_column: str = "audio",
    streaming: bool = False,
    seed: int = 0,
) -> datasets.Dataset | datasets.IterableDataset:
    """Open an audio source as a dataset whose ``audio_column`` is ``Audio(decode=False)``.

    ``source`` is a folder of audio files (the audiofolder layout: ``split`` subfolders and a ``metadata.csv``
    optional), a folder written by ``save_to_disk``, a parquet file or glob, or a Hub dataset id (with
    ``config_name``), streamed when ``streaming`` is set. ``split`` may join several: "a+b+c".
    """
    if "+" in split:  # "a+b+c": several splits; concatenated, or interleaved in proportion when streamed remotely
        local = Path(source).exists()
        parts = [
            load_audio_source(source, part, config_name=config_name, audio_column=audio_column,
                              streaming=streaming and not local, seed=seed)
            for part in split.split("+")
        ]
        if not streaming or local:
            joined = datasets.concatenate_datasets(parts)
            return _stream(joined) if streaming else joined
        sizes = [_split_size(part, name) for part, name in zip(parts, split.split("+"), strict=True)]
        if None in sizes:
            logger.warning("split sizes of %s unknown: its splits %s are interleaved in equal shares", source, split)
            return datasets.interleave_datasets(parts, seed=seed, stopping_strategy="all_exhausted")
        shares = [size / sum(sizes) for size in sizes]  # in proportion to size: one pass reads each split about once
        return datasets.interleave_datasets(parts, probabilities=shares, seed=seed, stopping_strategy="all_exhausted")
    path = Path(source)
    if path.is_dir():
        if is_saved_dataset(path):
            dataset = load_from_disk(str(path))
            if isinstance(dataset, datasets.DatasetDict):
                if split not in dataset:
                    raise KeyError(f"{source} has splits {list(dataset)}, not {split!r}")
                dataset = dataset[split]
        else:
            dataset = _audiofolder(path, split, audio_column)
        if streaming:
            dataset = _stream(dataset)
    elif path.suffix == ".parquet" or "*" in source:
        dataset = load_dataset("parquet", data_files=source, split="train", streaming=streaming)
    else:
        dataset = load_dataset(source, config_name, split=split, streaming=streaming)
    if dataset.features is not None and audio_column not in dataset.features:
        raise KeyError(f"{source} has no column {audio_column!r}; columns: {list(dataset.features)}")
    return dataset.cast_column(audio_column, Audio(decode=False))


def default_feature_extractor() -> Wav2Vec2FeatureExtractor:
    """The raw-waveform front end of HuBERT Base: 16 kHz, zero padding, no normalisation."""
    return Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=False, return_attention_mask=True
    )


def describe(value: dict[str, Any]) -> str:
    """The name of an ``Audio`` value in messages: its path, or "<in-memory audio>"."""
    return str(value.get("path") or "<in-memory audio>")


def _holds_no_bytes(value: dict[str, Any]) -> bool:
    """Whether an ``Audio`` value is a zero-byte file or zero bytes in memory (so nothing to decode)."""
    if value.get("bytes"):
        return False
    if value.get("path"):
        try:
            return os.path.getsize(value["path"]) == 0
        except OSError:  # missing or unreadable: not known to be empty
            return False
    return value.get("bytes") is not None


def decode_audio(value: dict[str, Any], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode an undecoded ``Audio`` value ({"bytes", "path"}) to float32 mono at ``sample_rate``.

    Raises `AudioDecodeError` naming the file for unreadable, empty (no samples, or a zero-byte file), silent or
    non-finite audio.
    """
    name = describe(value)
    try:
        source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
        samples, rate = sf.read(source, dtype="float32")  # (T,) for mono, (T, channels) otherwise
    except Exception as error:  # soundfile raises several types for broken files
        if _holds_no_bytes(value):
            raise AudioDecodeError(f"{name} is an empty file (0 bytes)", "empty") from error
        raise AudioDecodeError(f"cannot decode {name}: {error}", "undecodable") from error
    if samples.ndim == 2:
        samples = samples.mean(axis=1)  # mono
    if samples.size == 0:
        raise AudioDecodeError(f"{name} holds no samples", "empty")
    if not np.isfinite(samples).all():
        raise AudioDecodeError(f"{name} contains NaN or inf samples", "non_finite")
    if not np.any(samples):
        raise AudioDecodeError(f"{name} is all zeros", "silent")
    if rate != sample_rate:
        samples = soxr.resample(samples, rate, sample_rate).astype(np.float32)
    return samples
