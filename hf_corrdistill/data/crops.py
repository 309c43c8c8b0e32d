"""Random crops of decoded utterances, skipped-input bookkeeping, and padding to batches.

An utterance is decoded whole (`sources.decode_audio`), cropped to ``max_length`` at a position drawn from
(seed, epoch, key), and turned into model inputs by a `views.ViewMaker` when one is given.
"""

import itertools
import logging
import math
import warnings
from collections import Counter
from typing import Any

import datasets
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node

from .sources import SKIP_REASONS, AudioDecodeError, decode_audio, describe

logger = logging.getLogger(__name__)


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
    """Iterable: a streamed dataset, shuffled through a seeded buffer, unusable utterances skipped and counted.

    The stream never ends: each copy cycles through its share, pass after pass (the pass is the crops' and views'
    epoch), so every process and worker always has its next batch and a run is bounded by ``max_steps``. With
    ``world_size`` > 1 the copy of process ``rank`` reads only its share (`datasets.distributed.split_dataset_by_node`:
    whole shards when their number divides evenly, otherwise every ``world_size``-th example).
    """

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
        rank: int = 0,
        world_size: int = 1,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of the {world_size} processes")
        self.rank, self.world_size = rank, world_size
        if world_size > 1:  # before the shuffle: every process shuffles the same shard list with the same seed
            shards = dataset.n_shards
            how = (f"{shards // world_size} of its {shards} shards" if shards % world_size == 0
                   else f"one example in {world_size} ({shards} shards do not divide evenly)")
            dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
            logger.info("process %d of %d streams its own share of the data: %s", rank, world_size, how)
        self.dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer) if shuffle_buffer > 0 else dataset
        self._init_crop(audio_column, max_length, min_length, seed, views)
        self.batch_size, self.length_group_batches = batch_size, length_group_batches
        self.first_epoch = 0  # the pass an iteration starts at; self.epoch is the pass being read

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.first_epoch = epoch

    def _usable(self, epoch: int, counter: list[int]):
        """One pass over this copy's share at ``epoch``. Inside a DataLoader worker, `datasets` hands each worker its
        own shards of the share; ``counter`` counts the rows read."""
        self.dataset.set_epoch(epoch)
        worker = torch.utils.data.get_worker_info()
        workers, index = (1, 0) if worker is None else (worker.num_workers, worker.id)
        for position, row in enumerate(self.dataset):
            counter[0] += 1
            # distinct across positions, processes and workers: each utterance its own crop and views
            key = (position * self.world_size + self.rank) * workers + index
            example = self._example(row[self.audio_column], key)
            if example is not None:
                yield example

    def _grouped(self, examples, epoch: int):
        """Sort ``length_group_batches`` batches' worth of examples by length, cut them into batches and emit the
        batches in a shuffled order: little padding, no short-to-long drift."""
        size = self.batch_size * self.length_group_batches
        rng = np.random.default_rng((self.seed, epoch, 2))
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

    def _pass(self, epoch: int, counter: list[int]):
        self.epoch = epoch
        examples = self._usable(epoch, counter)
        if self.length_group_batches > 0:
            examples = self._grouped(examples, epoch)
        held = None  # one example is held back, so that skips after the pass's last usable one still get reported
        for example in examples:
            if held is not None:
                yield held
            held = example
        if held is not None:
            held["skipped"] = dict(Counter(held["skipped"]) + self._unreported)
            self._unreported = Counter()
            yield held

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        for epoch in itertools.count(self.first_epoch):
            counter, usable = [0], 0
            for example in self._pass(epoch, counter):
                usable += 1
                yield example
            if counter[0] == 0:  # a DataLoader worker left without shards (more workers than shards): it stops
                return
            if usable > 0:
                continue
            where = f"process {self.rank}'s share of the stream" if self.world_size > 1 else "the stream"
            if worker is None:  # this copy reads the whole share: nothing to train on
                raise AudioDecodeError(f"no usable utterance in {where} ({counter[0]} read, all skipped)")
            logger.warning("DataLoader worker %d of %s read %d utterances, none usable: it stops, the other workers "
                           "go on", worker.id, where, counter[0])
            return


class AudioCollator:
    """Zero-pads examples to a batch: "input_values" (and "teacher_input_values" / "clean_input_values", the same
    length, when present) become (B, T) with a (B, T) attention mask; "student_snr" / "teacher_snr" become (B,) float
    tensors."""

    companions = ("teacher_input_values", "clean_input_values")  # waveforms aligned sample for sample with the input

    def __init__(self, pad_to_multiple_of: int = 1):
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_values"]) for f in features]
        longest = math.ceil(max(lengths) / self.pad_to_multiple_of) * self.pad_to_multiple_of
        names = ("input_values", *(c for c in self.companions if c in features[0]))
        batch = {name: torch.zeros(len(features), longest) for name in names}  # each (B, T)
        batch["attention_mask"] = torch.zeros(len(features), longest, dtype=torch.long)  # (B, T)
        for row, (feature, length) in enumerate(zip(features, lengths, strict=True)):
            for name in names:
                batch[name][row, :length] = torch.as_tensor(feature[name])
            batch["attention_mask"][row, :length] = 1
        for name in ("student_snr", "teacher_snr"):
            if name in features[0]:
                batch[name] = torch.tensor([f[name] for f in features], dtype=torch.float32)  # (B,)
        if any("skipped" in f for f in features):  # (B, R): utterances skipped before each example, by reason
            batch["skipped"] = torch.tensor([[f.get("skipped", {}).get(r, 0) for r in SKIP_REASONS]
                                             for f in features], dtype=torch.float32)
        return batch
