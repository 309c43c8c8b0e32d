"""Tiny SUPERB-style evaluation sets spoken by espeak-ng, in the on-disk layouts of the real corpora.

    python -m hf_corrdistill.tools.superb_mini --output demo_data/superb_mini

Under ``--output``: keyword spotting as Speech Commands v0.01 (with its separate test set), intent classification as
Fluent Speech Commands, ASR as LibriSpeech, and a noise bank (``noise/{train,test}`` seen categories, ``noise/unseen``
categories found nowhere else), so that the loaders of the real corpora read these too. A speaker is an espeak-ng
(voice, variant, pitch, speed) setting; no speaker appears in two splits, nor in two tasks. ``manifest.json`` lists
the files and speakers of every split. The same seed, sizes and espeak-ng build give byte-identical files.

``--test_scale`` enlarges the keyword-spotting separate test set and the intent-classification test split with new
speakers (and new `_silence_` clips), leaving every file of ``--test_scale 1`` byte-identical except
``test_data.csv`` (rewritten with the added rows) and ``manifest.json``: heads and students trained on the same
seed and sizes stay valid, and the original test items stay in the test sets.
"""

import argparse
import csv
import dataclasses
import hashlib
import json
import logging
import random
import re
import shutil
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

from ..data.sources import SAMPLE_RATE
from .demo import VARIANTS, VOICES, WORDS, babble, coloured_noise, synthesize, tonal_music

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")

# Keyword spotting (Speech Commands v0.01): the 10 commands, and other words of the v0.01 vocabulary as `_unknown_`.
KS_ROOT, KS_TEST_ROOT = "speech_commands_v0.01", "speech_commands_test_set_v0.01"
COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow")
KS_LABELS = (*COMMANDS, "_unknown_", "_silence_")
KS_LIST_FILES = {"dev": "validation_list.txt", "test": "testing_list.txt"}
BACKGROUND_KINDS = ("white_noise", "pink_noise", "music", "babble")  # the files of `_background_noise_`
SILENCE_KINDS = ("pink_noise", "music", "white_noise", "babble", "brown_noise")  # sources of test `_silence_`

# Intent classification (Fluent Speech Commands): FSC's label values; (action, object, location) -> paraphrases.
IC_ROOT = "fluent_speech_commands_dataset"
IC_CSV = {"train": "train_data.csv", "dev": "valid_data.csv", "test": "test_data.csv"}
IC_HEADER = ("", "path", "speakerId", "transcription", "action", "object", "location")
ACTIONS = ("activate", "bring", "change language", "deactivate", "decrease", "increase")
OBJECTS = ("Chinese", "English", "German", "Korean", "heat", "juice", "lamp", "lights", "music", "newspaper", "none",
           "shoes", "socks", "volume")
LOCATIONS = ("bedroom", "kitchen", "none", "washroom")
INTENTS: dict[tuple[str, str, str], tuple[str, ...]] = {
    ("activate", "lights", "kitchen"): ("turn on the kitchen lights", "kitchen lights on",
                                        "switch on the lights in the kitchen"),
    ("deactivate", "lights", "bedroom"): ("turn off the bedroom lights", "bedroom lights off",
                                          "switch off the lights in the bedroom"),
    ("activate", "lamp", "none"): ("turn on the lamp", "lamp on", "switch the lamp on"),
    ("activate", "music", "none"): ("play the music", "put some music on", "start the music"),
    ("increase", "heat", "kitchen"): ("turn up the heat in the kitchen", "kitchen heat up",
                                      "make the kitchen warmer"),
    ("decrease", "heat", "washroom"): ("turn down the heat in the washroom", "washroom heat down",
                                       "make the washroom cooler"),
    ("increase", "volume", "none"): ("turn up the volume", "louder please", "increase the volume"),
    ("bring", "newspaper", "none"): ("bring me the newspaper", "get me the newspaper", "fetch the paper"),
    ("bring", "juice", "none"): ("bring me some juice", "get me a juice", "fetch me some juice"),
    ("bring", "shoes", "none"): ("bring me my shoes", "fetch my shoes", "get my shoes"),
    ("bring", "socks", "none"): ("bring me my socks", "get me some socks", "fetch my socks"),
    ("change language", "Korean", "none"): ("change the language to Korean", "switch to Korean", "Korean please"),
    ("change language", "German", "none"): ("set the language to German", "switch to German", "use German"),
    ("change language", "Chinese", "none"): ("change the language to Chinese", "switch to Chinese"),
    ("change language", "English", "none"): ("set the language to English", "switch to English", "use English"),
    ("change language", "none", "none"): ("change language", "switch the language", "language"),
}

# ASR (LibriSpeech): connected words from a small vocabulary (as TIDIGITS' digit strings), so that a small CTC head
# learns them within a few hundred steps; the grammar below (some hundreds of words) speaks the unlabelled corpus.
ASR_WORDS = (*COMMANDS, *UNKNOWN_WORDS)
ASR_WORD_COUNTS = (3, 5)  # words per ASR sentence, at least and at most (about 0.6-2.4 s)
ASR_ROOT = "LibriSpeech"
ASR_FOLDERS = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
DETERMINERS = ("the", "a", "every", "each", "some", "this", "that", "one", "my", "your", "our", "their", "his", "her")
ADJECTIVES = tuple(
    "old young small large quiet loud bright dark green red blue yellow brown white black gentle heavy warm cold wet "
    "dry busy lazy clever tired happy sad proud brave calm wild tall short narrow wide empty full fresh strange "
    "curious hungry lonely friendly noisy silent ancient modern simple careful golden silver wooden broken distant "
    "rough smooth soft sweet bitter sharp round tiny huge early rich poor famous humble patient eager".split()
)
NOUNS = tuple(
    "farmer teacher doctor sailor baker painter soldier student child woman man girl boy king queen captain driver "
    "writer singer dancer neighbour stranger traveller merchant fisherman gardener horse dog cat bird fox wolf rabbit "
    "mouse goat sheep cow bear owl eagle river mountain forest garden village city house window door table chair book "
    "letter lamp candle bridge road path field meadow lake ocean island ship boat train wagon basket bottle cup plate "
    "knife hammer rope ladder coat hat shoe ring coin bell clock map key box stone tree flower apple bread cheese "
    "soup cake song story picture message gift drum violin piano castle tower market station kitchen cellar roof wall "
    "fence gate".split()
)
VERBS = tuple(
    "found lost saw watched carried pushed pulled opened closed painted cleaned built broke fixed dropped lifted held "
    "followed helped called visited remembered forgot noticed wanted needed bought sold borrowed chased caught washed "
    "moved turned touched climbed crossed reached left filled emptied packed sent brought kept counted drew wrote "
    "heard answered greeted admired ignored guarded hid showed covered dragged kicked tasted dried folded tied warmed "
    "named studied described".split()
)
ADVERBS = tuple(
    "slowly quickly quietly loudly gently carefully suddenly happily sadly eagerly calmly proudly bravely silently "
    "softly warmly yesterday today again early twice soon finally once tonight".split()
)
PREPOSITIONS = tuple("near behind beside under over across through along inside outside past toward beyond".split())
# NP: determiner noun, NPA: determiner adjective noun, POSS: determiner noun's noun.
TEMPLATES = (
    ("NPA", "V", "NP", "ADV"),
    ("NP", "V", "NPA", "P", "NP"),
    ("ADV", "NPA", "V", "NP"),
    ("POSS", "V", "NPA"),
    ("NP", "P", "NP", "V", "NPA"),
    ("POSS", "V", "NP", "P", "NP"),
    ("NPA", "V", "POSS", "ADV"),
)

# Noise bank: seen categories in train and test (different clips), unseen ones only under ``noise/unseen``.
NOISE_ROOT = "noise"
SEEN_NOISE = ("noise", "music", "babble")
UNSEEN_NOISE = ("hum", "clatter")
NOISE_RMS = 0.1  # the level of every noise file (as the demo's noise bank)

# Unlabelled corpus (for pre-training and distillation): grammar sentences and word strings over every task's words,
# spoken by speakers of its own.
CORPUS_ROOT = "corpus"
CORPUS_SPLITS = ("train", "validation")
CORPUS_VALIDATION_SHARE = 0.02
CORPUS_UTTERANCE_SECONDS = 2.5  # the rough mean utterance length, to turn hours into utterance counts
OWNED = (KS_ROOT, KS_TEST_ROOT, IC_ROOT, ASR_ROOT, NOISE_ROOT, CORPUS_ROOT, "manifest.json")
GENERATOR = "hf_corrdistill.superb_mini"  # the name manifests record (stable across module moves)


# ---------------------------------------------------------------------------------------------------- speakers
@dataclasses.dataclass(frozen=True, order=True)
class Speaker:
    """One espeak-ng speaker setting."""

    voice: str
    variant: str
    pitch: int
    speed: int

    @property
    def espeak_voice(self) -> str:
        return f"{self.voice}+{self.variant}"

    @property
    def name(self) -> str:
        return f"{self.espeak_voice}/p{self.pitch}/s{self.speed}"

    @property
    def ks_id(self) -> str:
        """Speech Commands speaker hash: 8 hex characters."""
        return hashlib.sha1(self.name.encode()).hexdigest()[:8]

    @property
    def fsc_id(self) -> str:
        """Fluent Speech Commands speakerId: 16 alphanumeric characters, like FSC's."""
        value = int.from_bytes(hashlib.sha1(f"fsc/{self.name}".encode()).digest(), "big")
        alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        return "".join(alphabet[(value // 62**i) % 62] for i in range(16))

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def say(self, text: str) -> np.ndarray:
        return synthesize(text, self.espeak_voice, pitch=self.pitch, speed=self.speed)


def make_speakers(count: int, seed: int) -> list[Speaker]:
    """``count`` distinct speakers; (voice, variant) pairs repeat only once all 70 are used."""
    rng = _rng(seed, "speakers")
    pairs = sorted((voice, variant) for voice in VOICES for variant in VARIANTS)
    rng.shuffle(pairs)
    speakers: list[Speaker] = []
    ids: set[str] = set()
    while len(speakers) < count:
        voice, variant = pairs[len(speakers) % len(pairs)]
        speaker = Speaker(voice, variant, rng.randint(20, 80), rng.randint(130, 200))
        if {speaker.ks_id, speaker.fsc_id} & ids:
            continue  # the same setting again (or an id collision): draw another pitch and speed
        ids |= {speaker.ks_id, speaker.fsc_id}
        speakers.append(speaker)
    return speakers


def speaker_of(manifest: dict, path: str | Path) -> Speaker:
    """The speaker of a generated file (path under the output folder, or absolute), looked up in ``manifest``."""
    parts = Path(path).parts
    name = parts[-1]
    if KS_ROOT in parts or KS_TEST_ROOT in parts:
        task, speaker_id = "keyword_spotting", name.split("_nohash_")[0]
    elif IC_ROOT in parts:
        task, speaker_id = "intent_classification", parts[-2]
    elif ASR_ROOT in parts:
        task, speaker_id = "asr", name.split("-")[0]
    elif CORPUS_ROOT in parts:
        task, speaker_id = "corpus", name.split("-")[0]
    else:
        raise KeyError(f"{path} is not a speech file of a generated task")
    for split in manifest[task]["splits"].values():
        if speaker_id in split["speakers"]:
            fields = split["speakers"][speaker_id]
            return Speaker(fields["voice"], fields["variant"], fields["pitch"], fields["speed"])
    raise KeyError(f"speaker {speaker_id!r} of {path} is not in the manifest")


# ----------------------------------------------------------------------------------------------------- audio
def _rng(seed: int, name: str) -> random.Random:
    """A random.Random for one purpose, independent of the others (no hash(): stable across processes)."""
    return random.Random(int.from_bytes(hashlib.sha1(f"{seed}/{name}".encode()).digest()[:8], "big"))


def _np_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha1(f"{seed}/{name}/np".encode()).digest()[:8], "big"))


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """float samples -> the int16 samples written to disk (clipped)."""
    return np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32767.0), -32768, 32767).astype(np.int16)


def trim_silence(audio: np.ndarray, pad: int = 0, threshold: float = 2e-3) -> np.ndarray:
    """Cut leading and trailing samples quieter than ``threshold``, keeping up to ``pad`` samples around the rest."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return audio[:0]
    return audio[max(0, loud[0] - pad) : loud[-1] + 1 + pad]


def keyword_segment(speaker: Speaker, word: str) -> np.ndarray:
    """The spoken word without silence around it, at most 1 s: what a Speech Commands clip holds."""
    return trim_silence(speaker.say(word))[:SAMPLE_RATE]


def place_in_second(segment: np.ndarray, offset: int) -> np.ndarray:
    """A 1-s clip: zeros with ``segment`` starting at sample ``offset``."""
    clip = np.zeros(SAMPLE_RATE, dtype=np.float32)
    clip[offset : offset + segment.size] = segment
    return clip


def utterance_audio(speaker: Speaker, text: str) -> np.ndarray:
    """A sentence as written for FSC and LibriSpeech: espeak-ng's silence trimmed to at most 0.1 s each side."""
    return trim_silence(speaker.say(text), pad=SAMPLE_RATE // 10)


def mains_hum(length: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum: 50 or 60 Hz and its harmonics (odd ones stronger, a buzz), slow wobble in level and pitch."""
    t = np.arange(length) / SAMPLE_RATE
    f0 = rng.choice((50.0, 60.0)) * (1 + rng.uniform(-0.01, 0.01))
    wobble = 1 + 0.002 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t)  # slight frequency modulation
    phase = 2 * np.pi * f0 * np.cumsum(wobble) / SAMPLE_RATE
    hum = sum(rng.uniform(0.5, 1.0) / k ** (1.0 if k % 2 else 1.6) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
              for k in range(1, 13))
    hum *= 1 + rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t)  # level modulation
    hum += 0.01 * rng.standard_normal(length)  # a faint noise floor
    return (hum / np.sqrt(np.mean(hum**2))).astype(np.float32)


def clatter(length: int, rng: np.random.Generator) -> np.ndarray:
    """Clatter (cutlery, dishes): random clicks, each a ringing resonance plus a noise burst, decaying fast."""
    out = np.zeros(length + SAMPLE_RATE // 4)
    times = np.sort(rng.uniform(0, length, size=max(1, rng.poisson(rng.uniform(6, 20) * length / SAMPLE_RATE))))
    for start in times.astype(int):
        n = np.arange(int(SAMPLE_RATE * rng.uniform(0.02, 0.2)))
        decay = np.exp(-n / (SAMPLE_RATE * rng.uniform(0.004, 0.04)))
        ring = sum(np.sin(2 * np.pi * rng.uniform(1000, 6000) * n / SAMPLE_RATE) for _ in range(3))
        click = (ring + 2 * rng.standard_normal(n.size)) * decay * rng.uniform(0.1, 1.0)
        out[start : start + n.size] += click
    out = out[:length]
    return (out / (np.sqrt(np.mean(out**2)) + 1e-12)).astype(np.float32)


def noise_clip(kind: str, length: int, rng: random.Random, np_rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of one kind: white/pink/brown_noise, music, babble, hum or clatter."""
    exponents = {"white_noise": 0.0, "pink_noise": 1.0, "brown_noise": 2.0}
    if kind in exponents:
        return coloured_noise(length, exponents[kind], np_rng)
    makers = {"music": lambda: tonal_music(length, rng), "babble": lambda: babble(length, rng),
              "hum": lambda: mains_hum(length, np_rng), "clatter": lambda: clatter(length, np_rng)}
    return np.asarray(makers[kind](), dtype=np.float32)


def _noise_level(clip: np.ndarray) -> np.ndarray:
    """A unit-RMS clip at the noise files' level, lower where its peaks would clip (clatter)."""
    return clip * min(NOISE_RMS, 0.9 / (np.abs(clip).max() + 1e-12))


def _write(path: Path, audio: np.ndarray) -> None:
    """16 kHz mono PCM_16; WAV or FLAC by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    audio_format = {".wav": "WAV", ".flac": "FLAC"}[path.suffix]
    sf.write(path, to_pcm16(audio), SAMPLE_RATE, subtype="PCM_16", format=audio_format)


def _write_text(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), newline="\n")


# ------------------------------------------------------------------------------------------------------ sizes
def _size(help_text: str, default, metavar: tuple[str, ...] = ("TRAIN", "DEV", "TEST")):
    return dataclasses.field(default=default, metadata={"help": help_text, "metavar": metavar})


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much to generate. Triples are (train, dev, test). The shipped tiny set is the defaults with
    ``corpus_hours=0`` (the demo distils on its own demo_data/speech). ``test_scale`` adds new test speakers and
    items on top of the scaled counts (see `test_extra`)."""

    scale: float = _size("multiplies every speaker, utterance and clip count (not seconds or words per speaker)", 1.0)
    ks_speakers: tuple[int, int, int] = _size("keyword spotting speakers", (1, 1, 1))
    ks_unknown: int = _size("other (`_unknown_`) words said by each keyword-spotting speaker", 1)
    ks_repeats: int = _size("times each keyword-spotting speaker says each of its words (<hash>_nohash_<n>)", 1)
    ks_silence: int = _size("`_silence_` clips in the keyword-spotting test set", 2)
    ks_background_seconds: float = _size("length of each `_background_noise_` file (>= 5 s for 80/20 crops)", 5.0)
    ic_speakers: tuple[int, int, int] = _size("intent-classification speakers", (3, 2, 2))
    ic_utterances: tuple[int, int, int] = _size(f"intent-classification utterances (train >= {len(INTENTS)} intents)",
                                                 (len(INTENTS),) * 3)
    asr_speakers: tuple[int, int, int] = _size("LibriSpeech speakers (one chapter each)", (2, 1, 1))
    asr_utterances: tuple[int, int, int] = _size("LibriSpeech utterances", (30, 10, 10))
    noise_clips: tuple[int, int, int] = _size("noise clips per category in noise/train, noise/test, noise/unseen",
                                              (1, 1, 1), ("TRAIN", "TEST", "UNSEEN"))
    noise_seconds: float = _size("length of each noise-bank clip", 2.0)
    corpus_hours: float = _size("hours of unlabelled speech under corpus/{train,validation} (not scaled)", 2.0)
    corpus_speaker_minutes: float = _size("minutes of corpus speech per speaker (sets the corpus's speaker count)",
                                          1.0)
    test_scale: float = _size("multiplies, on top of --scale, the speakers and clips of the keyword-spotting separate "
                              "test set and the speakers and utterances of the intent-classification test split, by "
                              "adding new speakers (and `_silence_` clips); every file of test_scale 1 stays "
                              "byte-identical but test_data.csv and manifest.json. ASR is not scaled", 1.0)

    def scaled(self) -> "Sizes":
        """The counts multiplied by ``scale`` (at least 1 each), ``scale`` reset to 1."""
        def up(value: int) -> int:
            return max(1, round(value * self.scale))

        counts = {f.name: tuple(up(v) for v in getattr(self, f.name)) for f in dataclasses.fields(self)
                  if isinstance(f.default, tuple)}
        return dataclasses.replace(self, scale=1.0, ks_silence=up(self.ks_silence), **counts)

    def test_extra(self) -> dict[str, int]:
        """What ``test_scale`` adds to the counts as they stand (call it on `scaled` sizes): ``ks_speakers`` and
        ``ks_silence`` to the keyword-spotting separate test set, ``ic_speakers`` and ``ic_utterances`` to the
        intent-classification test split (at least one speaker when any utterance is added)."""
        def more(value: int) -> int:
            return round((self.test_scale - 1) * value)

        ic_utterances = more(self.ic_utterances[2])
        return {"ks_speakers": more(self.ks_speakers[2]), "ks_silence": more(self.ks_silence),
                "ic_speakers": max(more(self.ic_speakers[2]), min(1, ic_utterances)), "ic_utterances": ic_utterances}


def _check(sizes: Sizes) -> Sizes:
    for name in ("ic", "asr"):
        speakers, utterances = getattr(sizes, f"{name}_speakers"), getattr(sizes, f"{name}_utterances")
        if any(u < s for s, u in zip(speakers, utterances, strict=True)):
            raise ValueError(f"{name}_utterances {utterances} must be at least {name}_speakers {speakers} per split")
    if sizes.ic_utterances[0] < len(INTENTS):
        raise ValueError(f"ic_utterances {sizes.ic_utterances}: training needs all {len(INTENTS)} intents")
    if min(sizes.ic_utterances) < len(INTENTS):
        logger.warning("ic_utterances %s: dev/test splits under %d hold only some intents", sizes.ic_utterances,
                       len(INTENTS))
    if sizes.ks_background_seconds < 5:
        logger.warning("`_background_noise_` files under 5 s are too short for 80/20 train/dev silence crops")
    if sizes.ks_unknown > len(UNKNOWN_WORDS) or sizes.ks_unknown < 1:
        raise ValueError(f"ks_unknown must be within 1..{len(UNKNOWN_WORDS)}")
    if sizes.corpus_hours < 0 or sizes.corpus_speaker_minutes <= 0:
        raise ValueError("corpus_hours must be >= 0 and corpus_speaker_minutes > 0")
    if sizes.ks_background_seconds < 1 or sizes.noise_seconds <= 0:
        raise ValueError("background and noise clips need at least 1 s")
    if sizes.test_scale < 1:
        raise ValueError(f"test_scale {sizes.test_scale} must be at least 1 (it only adds test items)")
    return sizes


# ------------------------------------------------------------------------------------------- keyword spotting
def _keyword_spotting(out: Path, speakers: dict[str, list[Speaker]], added: list[Speaker], sizes: Sizes,
                      seed: int) -> dict:
    """``added``: the new speakers of ``test_scale``, who speak only in the separate test set."""
    rng, np_rng = _rng(seed, "ks"), _np_rng(seed, "ks")
    root, test_root = out / KS_ROOT, out / KS_TEST_ROOT
    segments: dict[tuple[Speaker, str], np.ndarray] = {}

    def segment(speaker: Speaker, word: str) -> np.ndarray:
        if (speaker, word) not in segments:
            segments[speaker, word] = keyword_segment(speaker, word)
        return segments[speaker, word]

    def write_clip(path: Path, speaker: Speaker, word: str, draw: random.Random = rng) -> None:
        audio = segment(speaker, word)
        _write(path, place_in_second(audio, draw.randrange(SAMPLE_RATE - audio.size + 1)))  # random placement

    splits = {}
    for split in SPLITS:  # the main folder: every split's speakers, told apart by the two lists
        files, words = [], Counter()
        for speaker in speakers[split]:
            for word in (*COMMANDS, *rng.sample(UNKNOWN_WORDS, sizes.ks_unknown)):
                for n in range(sizes.ks_repeats):
                    relative = f"{word}/{speaker.ks_id}_nohash_{n}.wav"
                    write_clip(root / relative, speaker, word)
                    files.append(relative)
                    words[word] += 1
        if split in KS_LIST_FILES:
            _write_text(root / KS_LIST_FILES[split], sorted(files))
        labels = Counter(w if w in COMMANDS else "_unknown_" for w in words.elements())
        splits[split] = {"files": len(files), "words": dict(sorted(words.items())),
                         "labels": dict(sorted(labels.items())),
                         "speakers": {s.ks_id: s.as_dict() for s in speakers[split]},
                         **({"list": KS_LIST_FILES[split]} if split in KS_LIST_FILES else {})}

    length = int(sizes.ks_background_seconds * SAMPLE_RATE)  # `_background_noise_`, cut into train/dev silence
    background = []
    for kind in BACKGROUND_KINDS:
        _write(root / "_background_noise_" / f"{kind}.wav", _noise_level(noise_clip(kind, length, rng, np_rng)))
        background.append(f"{kind}.wav")

    labels = Counter()  # the separate test set: the test speakers again (new placements) and fresh silence

    def test_speaker(speaker: Speaker, draw: random.Random) -> None:
        unknown = 0
        for word in (*COMMANDS, *draw.sample(UNKNOWN_WORDS, sizes.ks_unknown)):
            for n in range(sizes.ks_repeats):
                label = word if word in COMMANDS else "_unknown_"
                index = n if word in COMMANDS else unknown  # `_unknown_` holds several words per speaker
                unknown += word not in COMMANDS
                write_clip(test_root / label / f"{speaker.ks_id}_nohash_{index}.wav", speaker, word, draw)
                labels[label] += 1

    def silence(index: int, draw: random.Random, np_draw: np.random.Generator) -> None:
        kind = SILENCE_KINDS[index % len(SILENCE_KINDS)]  # a 1-s crop of a clip not in `_background_noise_`
        source = noise_clip(kind, 2 * SAMPLE_RATE, draw, np_draw)
        start = draw.randrange(source.size - SAMPLE_RATE + 1)
        rms = 10 ** draw.uniform(-4, -3) if index % 3 == 0 else 10 ** draw.uniform(-2.5, -1.5)  # near-silent or low
        _write(test_root / "_silence_" / f"{kind}_{index:03d}_nohash_0.wav", rms * source[start : start + SAMPLE_RATE])
        labels["_silence_"] += 1

    for speaker in speakers["test"]:
        test_speaker(speaker, rng)
    for index in range(sizes.ks_silence):
        silence(index, rng, np_rng)
    # test_scale's additions, from streams of their own so that every draw above stays where it was
    extra_rng, extra_np_rng = _rng(seed, "ks-test-extra"), _np_rng(seed, "ks-test-extra")
    for speaker in added:
        test_speaker(speaker, extra_rng)
    extra_silence = sizes.test_extra()["ks_silence"]
    for index in range(sizes.ks_silence, sizes.ks_silence + extra_silence):
        silence(index, extra_rng, extra_np_rng)
    splits["test_set"] = {"files": sum(labels.values()), "labels": dict(sorted(labels.items())),
                          "speakers": {**splits["test"]["speakers"], **{s.ks_id: s.as_dict() for s in added}}}
    if added or extra_silence:
        splits["test_set"]["added"] = {"speakers": [s.ks_id for s in added], "silence": extra_silence}
    return {"root": KS_ROOT, "test_root": KS_TEST_ROOT, "background_noise": background, "splits": splits}


# -------------------------------------------------------------------------------------- intent classification
def _intent_classification(out: Path, speakers: dict[str, list[Speaker]], added: list[Speaker], sizes: Sizes,
                           seed: int) -> dict:
    """``added``: the new speakers of ``test_scale``, who speak the added test utterances."""
    rng = _rng(seed, "ic")
    root = out / IC_ROOT
    intents = sorted(INTENTS)

    def utterances(split: str, group: list[Speaker], count: int, first: int, draw: random.Random) -> list[tuple]:
        """``count`` rows numbered from ``first``: every intent once (a random subset when fewer utterances), then
        random ones; the speakers of ``group`` in turn."""
        plan = draw.sample(intents, min(count, len(intents)))
        plan += [draw.choice(intents) for _ in range(count - len(plan))]
        draw.shuffle(plan)
        said: set[tuple[Speaker, str]] = set()
        rows = []
        for index, intent in enumerate(plan, start=first):
            speaker = group[(index - first) % len(group)]
            phrases = [p[0].upper() + p[1:] for p in INTENTS[intent]]  # FSC transcriptions start with a capital
            fresh = [p for p in phrases if (speaker, p) not in said] or phrases
            text = draw.choice(fresh)
            said.add((speaker, text))
            digest = hashlib.sha1(f"{seed}/{split}/{index}/{speaker.name}/{text}".encode()).digest()
            path = f"wavs/speakers/{speaker.fsc_id}/{uuid.UUID(bytes=digest[:16])}.wav"
            _write(root / path, utterance_audio(speaker, text))
            rows.append((path, speaker.fsc_id, text, *intent))
        return rows

    splits = {}
    extra = sizes.test_extra()["ic_utterances"]
    for split, count in zip(SPLITS, sizes.ic_utterances, strict=True):
        rows = utterances(split, speakers[split], count, 0, rng)
        group = speakers[split]
        if split == "test" and extra:  # test_scale's additions, from a stream of their own
            rows += utterances(split, added, extra, count, _rng(seed, "ic-test-extra"))
            group = [*group, *added]
        rows.sort()
        table = root / "data" / IC_CSV[split]
        table.parent.mkdir(parents=True, exist_ok=True)
        with open(table, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(IC_HEADER)
            writer.writerows((index, *row) for index, row in enumerate(rows))
        used = Counter("|".join(row[3:]) for row in rows)
        splits[split] = {"csv": f"data/{IC_CSV[split]}", "files": len(rows), "intents": dict(sorted(used.items())),
                         "speakers": {s.fsc_id: s.as_dict() for s in group}}
        if split == "test" and extra:
            splits[split]["added"] = {"speakers": [s.fsc_id for s in added], "files": extra}
    return {"root": IC_ROOT, "splits": splits}


# ---------------------------------------------------------------------------------------------------------- ASR
def make_sentence(rng: random.Random) -> str:
    """A lower-case sentence of 4 to 12 words from the grammar (half of the unlabelled corpus)."""
    words = []
    for slot in rng.choice(TEMPLATES):
        if slot in ("NP", "NPA", "POSS"):
            words.append(rng.choice(DETERMINERS))
            if slot == "NPA":
                words.append(rng.choice(ADJECTIVES))
            words.append(rng.choice(NOUNS) + ("'s" if slot == "POSS" else ""))
            if slot == "POSS":
                words.append(rng.choice(NOUNS))
        else:
            words.append(rng.choice({"V": VERBS, "ADV": ADVERBS, "P": PREPOSITIONS}[slot]))
    for i in range(len(words) - 1):  # a -> an before a vowel
        if words[i] == "a" and words[i + 1][0] in "aeiou":
            words[i] = "an"
    return " ".join(words)


def make_asr_sentence(rng: random.Random) -> str:
    """A lower-case string of 3 to 5 words of ``ASR_WORDS``, no word twice in a row."""
    words = [rng.choice(ASR_WORDS)]
    for _ in range(rng.randint(*ASR_WORD_COUNTS) - 1):
        words.append(rng.choice([w for w in ASR_WORDS if w != words[-1]]))
    return " ".join(words)


def _asr(out: Path, speakers: dict[str, list[Speaker]], sizes: Sizes, seed: int) -> dict:
    rng = _rng(seed, "asr")
    root = out / ASR_ROOT
    everyone = [s for split in SPLITS for s in speakers[split]]
    ids = rng.sample(range(10, 9000), len(everyone))  # LibriSpeech-like integer speaker and chapter ids
    chapters = rng.sample(range(100, 200000), len(everyone))
    numbers = {s: (i, c) for s, i, c in zip(everyone, ids, chapters, strict=True)}
    sentences: set[str] = set()  # no sentence twice, so dev and test sentences are new
    splits = {}
    for split, count in zip(SPLITS, sizes.asr_utterances, strict=True):
        transcripts: dict[tuple[int, int], list[str]] = {}
        for index in range(count):
            speaker = speakers[split][index % len(speakers[split])]
            text = make_asr_sentence(rng)
            while text in sentences:
                text = make_asr_sentence(rng)
            audio = utterance_audio(speaker, text)
            sentences.add(text)
            number, chapter = numbers[speaker]
            lines = transcripts.setdefault((number, chapter), [])
            utterance = f"{number}-{chapter}-{len(lines):04d}"
            _write(root / ASR_FOLDERS[split] / str(number) / str(chapter) / f"{utterance}.flac", audio)
            lines.append(f"{utterance} {text.upper()}")
        for (number, chapter), lines in sorted(transcripts.items()):
            folder = root / ASR_FOLDERS[split] / str(number) / str(chapter)
            _write_text(folder / f"{number}-{chapter}.trans.txt", lines)
        splits[split] = {"folder": ASR_FOLDERS[split], "files": count,
                         "speakers": {str(numbers[s][0]): {**s.as_dict(), "chapter": numbers[s][1]}
                                      for s in speakers[split]}}
    return {"root": ASR_ROOT, "splits": splits}


# ------------------------------------------------------------------------------------------------- noise bank
def _noise_bank(out: Path, sizes: Sizes, seed: int) -> dict:
    rng, np_rng = _rng(seed, "noise"), _np_rng(seed, "noise")
    length = int(sizes.noise_seconds * SAMPLE_RATE)
    bank: dict[str, dict[str, list[str]]] = {}
    for split, count, categories in (("train", sizes.noise_clips[0], SEEN_NOISE),
                                     ("test", sizes.noise_clips[1], SEEN_NOISE),
                                     ("unseen", sizes.noise_clips[2], UNSEEN_NOISE)):
        bank[split] = {}
        for category in categories:
            files = []
            for index in range(count):
                kind = category
                if category == "noise":  # white, pink, brown in turn; test starts one further along
                    kind = ("white_noise", "pink_noise", "brown_noise")[(index + (split == "test")) % 3]
                relative = f"{NOISE_ROOT}/{split}/{category}/{category}-{split}-{index}.flac"
                _write(out / relative, _noise_level(noise_clip(kind, length, rng, np_rng)))  # a fresh clip each time
                files.append(relative)
            bank[split][category] = files
    return bank


# ---------------------------------------------------------------------------------------------------- corpus
def corpus_vocabulary() -> tuple[str, ...]:
    """Every word of every task (and the demo's), so that pre-training hears the phones the tasks need."""
    words = {*COMMANDS, *UNKNOWN_WORDS, *DETERMINERS, *ADJECTIVES, *NOUNS, *VERBS, *ADVERBS, *PREPOSITIONS, *WORDS}
    words |= {w.lower() for phrases in INTENTS.values() for phrase in phrases for w in phrase.split()}
    return tuple(sorted(words))


def corpus_text(rng: random.Random, vocabulary: tuple[str, ...]) -> str:
    """A grammar sentence or a string of 4-9 words from the whole vocabulary, one half each."""
    if rng.random() < 0.5:
        return make_sentence(rng)
    return " ".join(rng.choice(vocabulary) for _ in range(rng.randint(4, 9)))


def _corpus_counts(sizes: Sizes) -> dict[str, tuple[int, int]]:
    """(speakers, utterances) per corpus split; empty when ``corpus_hours`` is 0."""
    if sizes.corpus_hours == 0:
        return {}
    utterances = max(2, round(sizes.corpus_hours * 3600 / CORPUS_UTTERANCE_SECONDS))
    validation = max(1, round(utterances * CORPUS_VALIDATION_SHARE))
    per_speaker = max(1, round(sizes.corpus_speaker_minutes * 60 / CORPUS_UTTERANCE_SECONDS))
    return {split: (max(1, round(n / per_speaker)), n)
            for split, n in zip(CORPUS_SPLITS, (utterances - validation, validation), strict=True)}


def _corpus(out: Path, speakers: dict[str, list[Speaker]], counts: dict[str, tuple[int, int]], seed: int) -> dict:
    """``corpus/{train,validation}/<speaker>-<n>.flac``: unlabelled speech, speakers found in no task."""
    rng, vocabulary = _rng(seed, "corpus"), corpus_vocabulary()
    splits = {}
    for split, (_, count) in counts.items():
        samples = 0
        for index in range(count):
            speaker = speakers[split][index % len(speakers[split])]
            audio = utterance_audio(speaker, corpus_text(rng, vocabulary))
            _write(out / CORPUS_ROOT / split / f"{speaker.ks_id}-{index // len(speakers[split]):04d}.flac", audio)
            samples += audio.size
        splits[split] = {"files": count, "hours": samples / SAMPLE_RATE / 3600,
                         "speakers": {s.ks_id: s.as_dict() for s in speakers[split]}}
    return {"splits": splits}


# ------------------------------------------------------------------------------------------------------ main
def _espeak_version() -> str:
    output = subprocess.run(["espeak-ng", "--version"], check=True, capture_output=True, text=True).stdout
    match = re.search(r"text-to-speech:\s*(\S+)", output)
    return match.group(1) if match else output.strip()


def _prepare(output: Path) -> None:
    """Remove an earlier generation's folders; refuse to touch a folder with corpora of another origin."""
    present = [name for name in OWNED if (output / name).exists()]
    if not present:
        return
    manifest = output / "manifest.json"
    if not manifest.exists() or json.loads(manifest.read_text()).get("generator") != GENERATOR:
        raise FileExistsError(f"{output} already holds {present}, not written by {GENERATOR}; choose another folder")
    for name in present:
        target = output / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()


def generate(output: Path, seed: int = 0, **sizes) -> dict:
    """Write every task under ``output`` and return the manifest (also written as ``output/manifest.json``).

    ``sizes`` are the fields of `Sizes` (defaults: the shipped tiny set).
    """
    requested = Sizes(**{k: tuple(v) if isinstance(v, list) else v for k, v in sizes.items()})
    effective = _check(requested.scaled())
    output = Path(output)
    _prepare(output)
    output.mkdir(parents=True, exist_ok=True)
    # one pool of distinct speakers, cut into disjoint (task, split) groups in a fixed order
    # (make_speakers is prefix-stable: the corpus's speakers come after the tasks', and test_scale's new test
    # speakers last, so neither changes the sets before them)
    counts = {task: getattr(effective, f"{task}_speakers") for task in ("ks", "ic", "asr")}
    corpus_counts = _corpus_counts(effective)
    extra = effective.test_extra()
    total = sum(sum(c) for c in counts.values()) + sum(s for s, _ in corpus_counts.values())
    pool = iter(make_speakers(total + extra["ks_speakers"] + extra["ic_speakers"], seed))
    groups = {task: {split: [next(pool) for _ in range(n)] for split, n in zip(SPLITS, c, strict=True)}
              for task, c in counts.items()}
    corpus_speakers = {split: [next(pool) for _ in range(n)] for split, (n, _) in corpus_counts.items()}
    added = {task: [next(pool) for _ in range(extra[f"{task}_speakers"])] for task in ("ks", "ic")}
    manifest = {
        "generator": GENERATOR,
        "seed": seed,
        "sizes": dataclasses.asdict(effective),
        "scale": requested.scale,
        "sample_rate": SAMPLE_RATE,
        "espeak_ng": _espeak_version(),
        "keyword_spotting": _keyword_spotting(output, groups["ks"], added["ks"], effective, seed),
        "intent_classification": _intent_classification(output, groups["ic"], added["ic"], effective, seed),
        "asr": _asr(output, groups["asr"], effective, seed),
        "noise": _noise_bank(output, effective, seed),
        "corpus": _corpus(output, corpus_speakers, corpus_counts, seed),
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (output / "manifest.json").write_text(text, newline="\n")
    manifest = json.loads(text)  # as read back from the file (lists, not tuples)
    _log_summary(output, manifest)
    return manifest


def _log_summary(output: Path, manifest: dict) -> None:
    for task in ("keyword_spotting", "intent_classification", "asr", "corpus"):
        splits = manifest[task]["splits"]
        logger.info("%s: %s", task, ", ".join(f"{name} {splits[name]['files']} files / "
                                             f"{len(splits[name]['speakers'])} speakers"
                                             for name in dict.fromkeys((*SPLITS, *CORPUS_SPLITS, "test_set"))
                                             if name in splits))
    noise = manifest["noise"]
    logger.info("noise: %s", ", ".join(f"{split} {sum(len(f) for f in cats.values())} files ({', '.join(cats)})"
                                       for split, cats in noise.items()))
    files = [p for p in output.rglob("*") if p.is_file()]
    logger.info("wrote %d files, %.2f MB, under %s", len(files), sum(p.stat().st_size for p in files) / 1e6, output)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True, help="folder to write into")
    parser.add_argument("--seed", type=int, default=0, help="everything random derives from it (default: 0)")
    for f in dataclasses.fields(Sizes):
        if isinstance(f.default, tuple):
            parser.add_argument(f"--{f.name}", type=int, nargs=3, default=f.default, metavar=f.metadata["metavar"],
                                help=f"{f.metadata['help']} (default: %(default)s)")
        else:
            parser.add_argument(f"--{f.name}", type=type(f.default), default=f.default,
                                help=f"{f.metadata['help']} (default: %(default)s)")
    args = vars(parser.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    generate(args.pop("output"), args.pop("seed"), **args)


if __name__ == "__main__":
    main()
