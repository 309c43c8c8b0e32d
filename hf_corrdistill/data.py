"""Audio sources, decoding, random crops and padding for distillation.

Every source becomes a `datasets` dataset with an ``Audio(decode=False)`` column, decoded here with soundfile
(FLAC/WAV/OGG, no FFmpeg or torchcodec needed), mixed down to mono and resampled to 16 kHz with soxr where needed.
"""

import io
import itertools
import logging
import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import soundfile as sf
import soxr
import torch
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


def _audio_files(folder: Path, split: str) -> list[str]:
    """Audio files of ``split``: those under ``folder/split`` if it exists, else all of ``folder`` for "train"."""
    root = folder / split if (folder / split).is_dir() else folder
    if root is folder and split != "train":
        raise FileNotFoundError(f"no folder {folder / split} for split {split!r}")
    files = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
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
    return str(value.get("path") or "<in-memory audio>")


def decode_audio(value: dict[str, Any], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode an undecoded ``Audio`` value ({"bytes", "path"}) to float32 mono at ``sample_rate``.

    Raises `AudioDecodeError` naming the file for unreadable, empty, silent or non-finite audio.
    """
    name = describe(value)
    try:
        source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
        samples, rate = sf.read(source, dtype="float32", always_2d=True)  # (T, channels)
    except Exception as error:  # soundfile raises several types for broken files
        raise AudioDecodeError(f"cannot decode {name}: {error}", "undecodable") from error
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


class _CropMixin:
    """Shared bookkeeping: decode, check length, crop reproducibly, count what was skipped.

    Every example carries ``skipped``: the utterances skipped, by reason, since the previous example of this
    dataset copy, so that counts made in DataLoader workers reach the Trainer's logs through the batches.
    """

    def _init_crop(self, audio_column: str, max_length: int, min_length: int, seed: int, views) -> None:
        if min_length > max_length:
            raise ValueError(f"min_length ({min_length}) exceeds max_length ({max_length})")
        self.audio_column, self.max_length, self.min_length, self.seed = audio_column, max_length, min_length, seed
        self.views = views  # a views.ViewMaker, or None for the clean utterance alone
        self.epoch = 0
        self.skipped: Counter[str] = Counter()  # totals of this copy of the dataset
        self._unreported: Counter[str] = Counter()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _example(self, value: dict[str, Any], key: int, report: bool = True) -> dict[str, Any] | None:
        """The model inputs made of one utterance (None when it is unusable); reproducible from (seed, epoch, key).

        An unusable utterance is counted and warned about when ``report`` is set.
        """
        samples = self._crop(value, key, report)
        if samples is None:
            return None
        example = {"input_values": samples} if self.views is None else self.views(
            samples, np.random.default_rng((self.seed, self.epoch, key, 1)))
        example["skipped"], self._unreported = dict(self._unreported), Counter()
        return example

    def _skip(self, reason: str, message: str, report: bool) -> None:
        if not report:
            return
        self.skipped[reason] += 1
        self._unreported[reason] += 1
        warnings.warn(f"skipped ({reason}): {message}", stacklevel=3)

    def _crop(self, value: dict[str, Any], key: int, report: bool = True) -> np.ndarray | None:
        try:
            samples = decode_audio(value)
        except AudioDecodeError as error:
            self._skip(error.reason, str(error), report)
            return None
        if samples.size < self.min_length:
            message = f"{describe(value)} has {samples.size} samples, fewer than min_length"
            self._skip("too_short", message, report)
            return None
        if samples.size > self.max_length:  # the crop depends only on (seed, epoch, key): reproducible anywhere
            rng = np.random.default_rng((self.seed, self.epoch, key))
            start = rng.integers(0, samples.size - self.max_length + 1)
            samples = samples[start : start + self.max_length]
        return samples


class CroppedAudioDataset(_CropMixin, torch.utils.data.Dataset):
    """Map-style: item i is utterance i, randomly cropped to ``max_length``.

    An unusable utterance is replaced by the next usable one; it is counted once, at its own index.
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        audio_column: str,
        max_length: int,
        min_length: int,
        seed: int,
        views=None,
    ):
        self.dataset = dataset
        self._init_crop(audio_column, max_length, min_length, seed, views)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        for attempt in range(len(self.dataset)):
            key = (index + attempt) % len(self.dataset)
            example = self._example(self.dataset[key][self.audio_column], key, report=attempt == 0)
            if example is not None:
                return example
        raise AudioDecodeError("no usable utterance in the dataset")


class StreamedCroppedAudio(_CropMixin, torch.utils.data.IterableDataset):
    """Iterable: a streamed dataset, shuffled through a seeded buffer, unusable utterances skipped and counted."""

    def __init__(
        self,
        dataset: datasets.IterableDataset,
        audio_column: str,
        max_length: int,
        min_length: int,
        seed: int,
        shuffle_buffer: int = 0,
        views=None,
        batch_size: int = 1,
        length_group_batches: int = 0,
    ):
        self.dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer) if shuffle_buffer > 0 else dataset
        self._init_crop(audio_column, max_length, min_length, seed, views)
        self.batch_size, self.length_group_batches = batch_size, length_group_batches

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.dataset.set_epoch(epoch)

    def _usable(self):
        """Inside a DataLoader worker, `datasets` hands each worker its own shards of the stream."""
        worker = torch.utils.data.get_worker_info()
        workers, index = (1, 0) if worker is None else (worker.num_workers, worker.id)
        for position, row in enumerate(self.dataset):
            key = position * workers + index  # distinct across workers: each utterance its own crop and views
            example = self._example(row[self.audio_column], key)
            if example is not None:
                yield example

    def _grouped(self, examples):
        """Sort ``length_group_batches`` batches' worth of examples by length, cut them into batches and emit the
        batches in a shuffled order: little padding, no short-to-long drift."""
        size = self.batch_size * self.length_group_batches
        rng = np.random.default_rng((self.seed, self.epoch, 2))
        buffer = []
        for example in itertools.chain(examples, [None]):
            if example is not None:
                buffer.append(example)
            if buffer and (len(buffer) == size or example is None):
                buffer.sort(key=lambda e: len(e["input_values"]))
                batches = [buffer[i : i + self.batch_size] for i in range(0, len(buffer), self.batch_size)]
                for batch in (batches[i] for i in rng.permutation(len(batches))):
                    yield from batch
                buffer = []

    def __iter__(self):
        examples = self._usable()
        if self.length_group_batches > 0:
            examples = self._grouped(examples)
        held = None  # one example is held back, so that skips after the last usable one still get reported
        for example in examples:
            if held is not None:
                yield held
            held = example
        if held is not None:
            held["skipped"] = dict(Counter(held["skipped"]) + self._unreported)
            self._unreported = Counter()
            yield held


class AudioCollator:
    """Zero-pads examples to a batch: "input_values" (and "teacher_input_values", the same length, when present)
    become (B, T) with a (B, T) attention mask; "student_snr" / "teacher_snr" become (B,) float tensors."""

    def __init__(self, pad_to_multiple_of: int = 1):
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_values"]) for f in features]
        longest = math.ceil(max(lengths) / self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_values = torch.zeros(len(features), longest)  # (B, T)
        attention_mask = torch.zeros(len(features), longest, dtype=torch.long)  # (B, T)
        teacher_values = torch.zeros_like(input_values) if "teacher_input_values" in features[0] else None
        for row, (feature, length) in enumerate(zip(features, lengths, strict=True)):
            input_values[row, :length] = torch.as_tensor(feature["input_values"])
            if teacher_values is not None:
                teacher_values[row, :length] = torch.as_tensor(feature["teacher_input_values"])
            attention_mask[row, :length] = 1
        batch = {"input_values": input_values, "attention_mask": attention_mask}
        if teacher_values is not None:
            batch["teacher_input_values"] = teacher_values
        for name in ("student_snr", "teacher_snr"):
            if name in features[0]:
                batch[name] = torch.tensor([f[name] for f in features], dtype=torch.float32)  # (B,)
        if any("skipped" in f for f in features):  # (B, R): utterances skipped before each example, by reason
            batch["skipped"] = torch.tensor([[f.get("skipped", {}).get(r, 0) for r in SKIP_REASONS]
                                             for f in features], dtype=torch.float32)
        return batch
