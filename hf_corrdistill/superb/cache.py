"""On-disk cache of upstream features, float16, one folder per (upstream, task, split, condition).

A folder holds shards of `SHARD` utterances (safetensors, one ``(layers, frames, dim)`` tensor per utterance) and,
once every shard is written, ``complete.json``. Shards are written to a temporary name and renamed, so a run killed
at any point leaves only whole shards, and the next run computes only the missing ones.
"""

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .tasks import Item

logger = logging.getLogger(__name__)

SHARD = 256
BATCH_SECONDS = 160.0  # audio per upstream forward pass


def cache_key(description: dict, items: list[Item]) -> str:
    """A folder name determined by what the features depend on: upstream, layers, condition and the items."""
    digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode())
    for item in items:
        digest.update(f"{item.key}\0{item.start}\0{item.frames}\n".encode())
    return digest.hexdigest()[:20]


def _batches(lengths: list[int], same_length_only: bool, max_batch: int) -> list[list[int]]:
    """Indices grouped into forward passes: sorted by length; equal lengths only unless padding is allowed."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, current = [], []
    for i in order:
        full = current and (len(current) == max_batch or lengths[i] * (len(current) + 1) > BATCH_SECONDS * 16_000)
        if current and (full or (same_length_only and lengths[i] != lengths[current[0]])):
            batches.append(current)
            current = []
        current.append(i)
    return batches + [current] if current else batches


class FeatureCache:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.computed = 0  # utterances whose features this object computed (0 when everything came from disk)

    def is_complete(self, key: str) -> bool:
        return (self.root / key / "complete.json").exists()

    def ensure(self, key: str, items: list[Item], audio: Callable[[Item], np.ndarray], upstream,
               layer: int | None, max_batch: int = 16, label: str = "") -> "CachedFeatures":
        """Features of ``items`` (``layer`` only, or every layer when None), computed where not on disk yet."""
        folder = self.root / key
        if not self.is_complete(key):
            folder.mkdir(parents=True, exist_ok=True)
            starts = range(0, len(items), SHARD)
            missing = [s for s in starts if not (folder / f"shard-{s // SHARD:05d}.safetensors").exists()]
            todo = sum(min(SHARD, len(items) - s) for s in missing)
            with tqdm(total=todo, desc=f"features {label}", unit="utt", disable=todo == 0) as progress:
                for start in missing:
                    self._write_shard(folder, start, items[start : start + SHARD], audio, upstream, layer, max_batch,
                                      progress)
            (folder / "complete.json").write_text(json.dumps({"items": len(items), "label": label}) + "\n")
        return CachedFeatures(folder, len(items))

    def _write_shard(self, folder, start, items, audio, upstream, layer, max_batch, progress) -> None:
        waves = [audio(item) for item in items]
        tensors = {}
        for batch in _batches([w.size for w in waves], not upstream.accepts_padding, max_batch):
            for i, hidden in zip(batch, upstream([waves[i] for i in batch]), strict=True):  # (L, F, D)
                hidden = hidden if layer is None else hidden[layer : layer + 1]  # (1, F, D) for one chosen layer
                tensors[str(start + i)] = hidden.to(torch.float16).contiguous()
            progress.update(len(batch))
        self.computed += len(items)
        target = folder / f"shard-{start // SHARD:05d}.safetensors"
        temporary = target.with_suffix(".tmp")
        save_file(tensors, temporary)
        os.replace(temporary, target)


class CachedFeatures:
    """Item i -> its cached ``(layers, frames, dim)`` float16 tensor, read from the memory-mapped shard."""

    def __init__(self, folder: Path, size: int):
        self.folder, self.size = folder, size
        self._shards: dict[int, object] = {}

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> torch.Tensor:
        shard = index // SHARD
        if shard not in self._shards:
            self._shards[shard] = safe_open(str(self.folder / f"shard-{shard:05d}.safetensors"), framework="pt")
        return self._shards[shard].get_tensor(str(index))

    def __getstate__(self):  # shard handles do not pickle; DataLoader workers reopen them
        return {"folder": self.folder, "size": self.size, "_shards": {}}
