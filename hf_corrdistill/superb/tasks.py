"""Data of the SUPERB tasks (registry.py lists them): official folder layouts or any `datasets` source.

Each loader returns a `TaskData`: train, dev and test lists of `Item`s whose audio is read lazily by `read_audio`.
Files that cannot be used are reported together: `audio_headers` checks every header before any work, and
`decode_problems` decodes every file once the first undecodable one is met.
"""

import csv
import hashlib
import io
import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from ..data.sources import SAMPLE_RATE, AudioDecodeError, decode_audio, is_audio_file, load_audio_source
from .registry import KS_CLASSES, KS_WORDS, TASKS

logger = logging.getLogger(__name__)

IC_FIELDS = ("action", "object", "location")
CTC_VOCAB = ("<blank>", "|", "'", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ")  # "|" marks a word boundary
SPLITS = ("train", "dev", "test")


class TaskDataError(ValueError):
    """Task data that cannot be used; the message names the file, folder or field."""


class UnusableAudio(TaskDataError):
    """Audio files that cannot be used, all in one message; ``problems`` maps each file to the reason."""

    def __init__(self, problems: dict[str, str]):
        self.problems = dict(problems)
        listed = ", ".join(f"{name} ({reason})" for name, reason in self.problems.items())
        super().__init__(f"{len(self.problems)} file{'s' * (len(self.problems) > 1)} cannot be used: {listed}")


@dataclass(frozen=True)
class Item:
    """One utterance: where its audio is, and its label(s) or transcript.

    ``start``/``frames`` select a stretch of the file (the 1-second `_silence_` crops of Speech Commands).
    """

    key: str
    audio: dict  # an undecoded `datasets` Audio value: {"path": ..., "bytes": ...}
    labels: tuple[int, ...] = ()
    text: str = ""
    start: int = 0
    frames: int = -1


@dataclass
class TaskData:
    name: str
    splits: dict[str, list[Item]]
    label_names: tuple[tuple[str, ...], ...] = ()  # one tuple of class names per output; empty for ASR
    source: str = ""
    counts: dict = field(default_factory=dict)


def file_name(item: Item) -> str:
    """How messages name the item's audio: the file's path, or the item's key for audio held as bytes."""
    return item.key if item.audio.get("bytes") or not item.audio.get("path") else item.audio["path"]


def _soundfile_reason(error: Exception) -> str:
    """"Error opening 'x.wav': Format not recognised." -> "Format not recognised"."""
    return str(error).splitlines()[0].rsplit(": ", 1)[-1].rstrip(".") or type(error).__name__


_DECODE_REASONS = {"empty": "empty", "non_finite": "NaN or inf samples"}


def read_audio(item: Item) -> np.ndarray:
    """The item's float32 mono 16 kHz samples; an unusable file raises `UnusableAudio` naming it (a test set is
    fixed: no utterance may be dropped), all-zero audio is valid here (a `_silence_` clip may be digital silence)."""
    if item.frames < 0:
        try:
            return decode_audio(item.audio)
        except AudioDecodeError as error:
            if error.reason != "silent":
                cause = f"cannot decode: {_soundfile_reason(error.__cause__ or error)}"
                raise UnusableAudio({file_name(item): _DECODE_REASONS.get(error.reason, cause)}) from error
            source = io.BytesIO(item.audio["bytes"]) if item.audio.get("bytes") else item.audio["path"]
            return np.zeros(sf.info(source).frames * SAMPLE_RATE // sf.info(source).samplerate, dtype=np.float32)
    try:
        samples, rate = sf.read(item.audio["path"], start=item.start, frames=item.frames, dtype="float32",
                                always_2d=True)
    except Exception as error:  # soundfile raises several types for broken files
        raise UnusableAudio({file_name(item): f"cannot decode: {_soundfile_reason(error)}"}) from error
    if rate != SAMPLE_RATE:
        raise TaskDataError(f"{item.audio['path']}: {rate} Hz, crops need 16 kHz files")
    if not np.isfinite(samples).all():
        raise UnusableAudio({file_name(item): _DECODE_REASONS["non_finite"]})
    return samples.mean(axis=1)


# "data : 32000 (should be 15979)": libsndfile's note on a WAV whose data chunk ends before its declared length
_SHORT_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def read_header(audio: dict) -> tuple[int, str | None]:
    """(frames, None) from the header of an undecoded audio value, or (0, why it cannot be used): unreadable, no
    frames, or data shorter than the header declares (a truncated file)."""
    try:
        info = sf.info(io.BytesIO(audio["bytes"]) if audio.get("bytes") else audio["path"])
    except Exception as error:  # soundfile raises several types for broken files
        return 0, f"unreadable: {_soundfile_reason(error)}"
    if info.frames <= 0:
        return 0, "empty"
    short = _SHORT_DATA.search(info.extra_info or "")
    if short and 0 < int(short[2]) < int(short[1]) < 0xFFFFFFFF:
        return 0, f"truncated: {short[2]} of {short[1]} data bytes"
    return info.frames, None


def audio_headers(items: Iterable[Item]) -> tuple[dict[str, int], dict[str, str]]:
    """Each file's frame count (native rate) from its header, and the files that cannot be used with the reason;
    one header read per file."""
    frames, problems = {}, {}
    for item in items:
        name = file_name(item)
        if name in frames or name in problems:
            continue
        count, problem = read_header(item.audio)
        if problem is None:
            frames[name] = count
        else:
            problems[name] = problem
    return frames, problems


def decode_problems(items: Iterable[Item], skip: Iterable[str] = ()) -> dict[str, str]:
    """Every file among ``items`` (but ``skip``) that `read_audio` cannot use, with the reason."""
    problems, skipped, done = {}, set(skip), set()
    for item in items:
        name = file_name(item)
        if name in skipped or name in problems or (name, item.start, item.frames) in done:
            continue
        done.add((name, item.start, item.frames))
        try:
            read_audio(item)
        except UnusableAudio as error:
            problems.update(error.problems)
    return problems


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise TaskDataError(f"{what} not found: {path}")
    return path


def _audio_item(path: Path, root: Path, **fields) -> Item:
    return Item(key=path.relative_to(root).as_posix(), audio={"path": str(path), "bytes": None}, **fields)


# ---------------------------------------------------------------------------------------------- keyword spotting
def _class_index(word: str, classes: tuple[str, ...] = KS_CLASSES) -> int:
    return classes.index(word if word in classes else "_unknown_")


def _silence_crops(files: list[Path], count: int, portion: tuple[float, float], seed: int, root: Path) -> list[Item]:
    """``count`` 1-second crops of the background-noise files, from the ``portion`` (fractions) of each file:
    train and dev crop disjoint stretches of the same files."""
    rng = np.random.default_rng(seed)
    items = []
    for index in range(count):
        path = files[index % len(files)]
        total = sf.info(path).frames  # the headers were checked by the caller
        low, high = int(portion[0] * total), int(portion[1] * total) - SAMPLE_RATE
        if high < low:
            raise TaskDataError(f"background noise {path} is too short for 1-second crops")
        start = int(rng.integers(low, high + 1))
        key = f"{path.relative_to(root).as_posix()}@{start}"
        items.append(Item(key=key, audio={"path": str(path), "bytes": None}, labels=(KS_CLASSES.index("_silence_"),),
                          start=start, frames=SAMPLE_RATE))
    return items


def speech_commands(root: Path, test_root: Path, seed: int = 0) -> TaskData:
    """Speech Commands v0.01 as SUPERB uses it: train/dev from ``root`` by its validation and testing lists, test
    from the separate test set ``test_root`` (12 class folders); `_silence_` for train/dev cut from
    ``_background_noise_`` (first 80 % of each file for train, the rest for dev)."""
    _require(root, "Speech Commands folder")
    _require(test_root, "Speech Commands test-set folder")
    lists = {name: set(_require(root / f"{name}_list.txt", "Speech Commands list").read_text().split())
             for name in ("validation", "testing")}
    splits: dict[str, list[Item]] = {"train": [], "dev": []}
    for path in sorted(root.glob("*/*")):
        word = path.parent.name
        if word.startswith("_") or not is_audio_file(path):
            continue
        relative = path.relative_to(root).as_posix()
        if relative in lists["testing"]:
            continue
        split = "dev" if relative in lists["validation"] else "train"
        splits[split].append(_audio_item(path, root, labels=(_class_index(word),)))
    noise = sorted(p for p in _require(root / "_background_noise_", "Speech Commands _background_noise_").iterdir()
                   if is_audio_file(p))
    _, problems = audio_headers(_audio_item(path, root) for path in noise)
    if problems:
        raise UnusableAudio(problems)
    for split, portion in (("train", (0.0, 0.8)), ("dev", (0.8, 1.0))):
        if not splits[split]:
            raise TaskDataError(f"no {split} utterances under {root}")
        per_class = Counter(item.labels[0] for item in splits[split])
        count = int(np.median([per_class[KS_CLASSES.index(w)] for w in KS_WORDS]))  # as many as a typical word
        splits[split] += _silence_crops(noise, max(count, 1), portion, seed + (split == "dev"), root)
    splits["test"] = []
    for path in sorted(test_root.glob("*/*")):
        label = path.parent.name
        if not is_audio_file(path):
            continue
        if label not in KS_CLASSES:
            raise TaskDataError(f"{path}: folder {label!r} is not one of the 12 test classes {KS_CLASSES}")
        splits["test"].append(_audio_item(path, test_root, labels=(KS_CLASSES.index(label),)))
    return TaskData("ks", splits, (KS_CLASSES,), str(root))


# ----------------------------------------------------------------------------------------- intent classification
def fluent_speech_commands(root: Path) -> TaskData:
    """Fluent Speech Commands: ``data/{train,valid,test}_data.csv`` with path, speakerId, transcription, action,
    object, location; label vocabularies from the training CSV."""
    rows = {}
    for split, name in (("train", "train"), ("dev", "valid"), ("test", "test")):
        table = _require(root / "data" / f"{name}_data.csv", "Fluent Speech Commands CSV")
        with open(table, newline="") as handle:
            rows[split] = list(csv.DictReader(handle))
        missing = {"path", *IC_FIELDS} - set(rows[split][0] if rows[split] else {})
        if missing:
            raise TaskDataError(f"{table} lacks column(s) {sorted(missing)}")
    vocab = tuple(tuple(sorted({row[f] for row in rows["train"]})) for f in IC_FIELDS)
    splits = {}
    for split, table in rows.items():
        items = []
        for row in table:
            labels = []
            for f, names in zip(IC_FIELDS, vocab, strict=True):
                if row[f] not in names:
                    raise TaskDataError(f"{root}: {split} row {row['path']} has {f} {row[f]!r}, unseen in training")
                labels.append(names.index(row[f]))
            path = _require(root / row["path"], "audio file listed in the CSV")
            items.append(_audio_item(path, root, labels=tuple(labels), text=row.get("transcription", "")))
        splits[split] = items
    return TaskData("ic", splits, vocab, str(root))


# --------------------------------------------------------------------------------------------------------- ASR
def normalise_transcript(text: str) -> str:
    """Upper case, letters and apostrophes, single spaces (LibriSpeech's convention)."""
    return " ".join(re.sub(r"[^A-Z' ]", " ", text.upper()).split())


def librispeech(root: Path, split_names: tuple[str, str, str]) -> TaskData:
    """A LibriSpeech folder: ``<split>/<speaker>/<chapter>/*.flac`` with ``<speaker>-<chapter>.trans.txt``."""
    splits = {}
    for split, name in zip(SPLITS, split_names, strict=True):
        folder = _require(root / name, f"LibriSpeech split {name!r}")
        items = []
        for transcripts in sorted(folder.glob("*/*/*.trans.txt")):
            for line in transcripts.read_text().splitlines():
                if not line.strip():
                    continue
                utterance, _, text = line.partition(" ")
                path = _require(transcripts.parent / f"{utterance}.flac", f"audio of {utterance} ({transcripts})")
                if not normalise_transcript(text):
                    raise TaskDataError(f"{transcripts}: utterance {utterance} has an empty transcript")
                items.append(_audio_item(path, root, text=normalise_transcript(text)))
        if not items:
            raise TaskDataError(f"no transcribed utterances under {folder}")
        splits[split] = items
    return TaskData("asr", splits, (), str(root))


# ------------------------------------------------------------------------------------------- any datasets source
def _key(source: str, split: str, index: int, audio: dict) -> str:
    name = audio.get("path") or hashlib.sha1(audio.get("bytes") or b"").hexdigest()[:16]
    return f"{source}:{split}:{index}:{name}"


def from_datasets(task: str, source: str, split_names: tuple[str, str, str], *, config_name: str | None = None,
                  audio_column: str = "audio", label_columns: tuple[str, ...] = (), text_column: str = "text",
                  ) -> TaskData:
    """A `datasets` source (Hub id, ``save_to_disk`` folder, parquet) with an audio column and, per task, label
    columns (a task with fixed classes, as KS: one column of words, mapped to its classes; else one column per
    output, classes from the training split) or a transcript column (a CTC task, as ASR)."""
    spec = TASKS[task]
    ctc = spec.head == "ctc"
    tables = {}
    for split, name in zip(SPLITS, split_names, strict=True):
        table = load_audio_source(source, name, config_name=config_name, audio_column=audio_column)
        wanted = (text_column,) if ctc else label_columns
        missing = [c for c in wanted if c not in table.column_names]
        if missing:
            raise TaskDataError(f"{source} split {name!r} has no column(s) {missing}; columns: {table.column_names}")
        tables[split] = table

    def names_of(table, column) -> list[str]:
        feature = table.features[column]
        values = table[column]
        return [feature.int2str(v) for v in values] if hasattr(feature, "int2str") else [str(v) for v in values]

    splits, vocab = {}, ()
    if not ctc and not spec.classes:
        vocab = tuple(tuple(sorted(set(names_of(tables["train"], c)))) for c in label_columns)
    for split, table in tables.items():
        audio = table[audio_column]
        if ctc:
            texts = table[text_column]
            items = [Item(_key(source, split, i, a), a, text=normalise_transcript(t))
                     for i, (a, t) in enumerate(zip(audio, texts, strict=True))]
        else:
            columns = [names_of(table, c) for c in label_columns]
            items = []
            for i, a in enumerate(audio):
                values = [col[i] for col in columns]
                if spec.classes:
                    labels = (_class_index(values[0], spec.classes),)
                else:
                    unseen = [v for v, names in zip(values, vocab, strict=True) if v not in names]
                    if unseen:
                        raise TaskDataError(f"{source} {split} row {i}: label(s) {unseen} unseen in training")
                    labels = tuple(names.index(v) for v, names in zip(values, vocab, strict=True))
                items.append(Item(_key(source, split, i, a), a, labels=labels))
        splits[split] = items
    return TaskData(task, splits, (spec.classes,) if spec.classes else vocab, source)
