"""Distorted views of an utterance for the teacher and the student (METHOD.md section 4).

Each view draws its own distortion: a non-additive one (reverberation, band-stop filter, pitch shift, or none)
is applied first, then additive noise (a noise-bank file or Gaussian noise, or none) is mixed at an integer SNR
relative to that signal. The SNR actually applied travels with the view (+inf when no noise was added).
"""

import hashlib
import logging
import random
import re
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import soxr

from .sources import AUDIO_SUFFIXES, SAMPLE_RATE, audio_files_under, decode_audio, is_saved_dataset, load_audio_source

logger = logging.getLogger(__name__)

Setup = Literal["clean", "setup1", "setup2"]
SETUPS: tuple[str, ...] = ("clean", "setup1", "setup2")
PRESETS: tuple[str, ...] = ("huang2022", "robustdistiller")
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


@dataclass(frozen=True)
class DistortionPreset:
    """A joint distribution over (additive, non-additive) distortions, and the SNR range of additive noise.

    ``combos`` lists (probability, additive, non_additive) with additive in {"noise", "none"} and non_additive in
    {"reverb", "bandstop", "pitch", "none"}; "noise" is a noise-bank file with probability ``file_noise_share``
    and Gaussian noise otherwise. SNRs are integers drawn uniformly in [snr_low, snr_high].
    """

    combos: tuple[tuple[float, str, str], ...]
    snr_low: int
    snr_high: int
    file_noise_share: float


def huang2022() -> DistortionPreset:
    """Huang et al., SLT 2022: additive (noise file, Gaussian, or none) x non-additive (reverb, band-stop, pitch,
    or none), drawn independently and uniformly (the uniform choice is ours); SNR an integer in 10..19 dB."""
    additive = (("noise", 2 / 3), ("none", 1 / 3))  # noise = a file or Gaussian, half each: 1/3 file, 1/3 Gaussian
    non_additive = ("reverb", "bandstop", "pitch", "none")
    combos = tuple((p / len(non_additive), a, n) for a, p in additive for n in non_additive)
    return DistortionPreset(combos=combos, snr_low=10, snr_high=19, file_noise_share=0.5)


def robustdistiller() -> DistortionPreset:
    """Guimaraes et al., ICASSP 2023: one of noise, reverb, noise + reverb, clean with equal probability; SNR an
    integer in 0..20 dB; 70 % noise files, 30 % Gaussian."""
    combos = ((0.25, "noise", "none"), (0.25, "none", "reverb"), (0.25, "noise", "reverb"), (0.25, "none", "none"))
    return DistortionPreset(combos=combos, snr_low=0, snr_high=20, file_noise_share=0.7)


PRESET_BUILDERS = {"huang2022": huang2022, "robustdistiller": robustdistiller}


def only_kind(additive: str, non_additive: str, preset: DistortionPreset) -> DistortionPreset:
    """``preset`` restricted to one (additive, non-additive) pair, for measuring or testing one distortion."""
    return DistortionPreset(combos=((1.0, additive, non_additive),), snr_low=preset.snr_low,
                            snr_high=preset.snr_high, file_noise_share=preset.file_noise_share)


def rms_power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """signal + g * noise with g chosen so that power(signal) / power(g * noise) = 10^(snr_db / 10) exactly."""
    gain = np.sqrt(rms_power(signal) / (max(rms_power(noise), 1e-20) * 10 ** (snr_db / 10)))
    return (signal + gain * noise).astype(np.float32)


class NoiseBank:
    """Noise audio read by random segments at 16 kHz, from folders of files or from `datasets` sources.

    A folder's files at another rate or with several channels are converted once into ``cache_dir``; a dataset
    (a `save_to_disk` folder, parquet files or a Hub id, with an ``audio`` column) is written there once as 16 kHz
    FLAC files. A missing or empty source is an error at construction, naming it.
    """

    def __init__(self, sources: Sequence[str], cache_dir: str | None = None):
        if not sources:
            raise ValueError("no noise sources given")
        self.files: list[str] = []
        cache = Path(cache_dir or Path.home() / ".cache" / "hf_corrdistill" / "noise16k")
        for source in sources:
            root = Path(source)
            if root.is_dir() and not is_saved_dataset(root):
                found = sorted(audio_files_under(root))
                if not found:
                    raise FileNotFoundError(f"noise folder {source} holds no {'/'.join(AUDIO_SUFFIXES)} files")
                self.files.extend(self._at_16k(path, cache) for path in found)
            elif root.exists() or HUB_ID.fullmatch(source):
                self.files.extend(self._from_dataset(source, cache))
            else:
                raise FileNotFoundError(f"noise source {source} does not exist (nor is it a Hub id ORG/NAME)")
        self.frames = [sf.info(path).frames for path in self.files]
        empty = [path for path, frames in zip(self.files, self.frames, strict=True) if frames == 0]
        if empty:
            raise ValueError(f"empty noise file(s): {', '.join(empty[:5])}")

    @staticmethod
    def _at_16k(path: Path, cache: Path) -> str:
        info = sf.info(path)
        if info.samplerate == SAMPLE_RATE and info.channels == 1:
            return str(path)
        stat = path.stat()
        key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        target = cache / f"{path.stem}-{key}.flac"
        if not target.exists():
            samples, rate = sf.read(path, dtype="float32", always_2d=True)
            cache.mkdir(parents=True, exist_ok=True)
            converted = soxr.resample(samples.mean(axis=1), rate, SAMPLE_RATE)
            sf.write(target, converted, SAMPLE_RATE, subtype="PCM_16")
            logger.info("converted noise %s to 16 kHz mono in %s", path, target)
        return str(target)

    @staticmethod
    def _from_dataset(source: str, cache: Path) -> list[str]:
        folder = cache / f"dataset-{hashlib.sha1(source.encode()).hexdigest()[:16]}"
        done = folder / "complete"
        if not done.exists():
            dataset = load_audio_source(source)
            folder.mkdir(parents=True, exist_ok=True)
            for index, row in enumerate(dataset):
                sf.write(folder / f"{index:06d}.flac", decode_audio(row["audio"]), SAMPLE_RATE, subtype="PCM_16")
            done.write_text(source + "\n")
            logger.info("wrote %d noise files of %s to %s", len(dataset), source, folder)
        files = sorted(str(p) for p in folder.glob("*.flac") if p.is_file())
        if not files:
            raise FileNotFoundError(f"noise dataset {source} holds no audio")
        return files

    def __len__(self) -> int:
        return len(self.files)

    def segment(self, length: int, rng: np.random.Generator) -> np.ndarray:
        """A random ``length``-sample stretch of a random file (looped when the file is shorter)."""
        index = int(rng.integers(len(self.files)))
        total = self.frames[index]
        if total >= length:
            start = int(rng.integers(0, total - length + 1))
            return sf.read(self.files[index], start=start, frames=length, dtype="float32")[0]
        samples = sf.read(self.files[index], dtype="float32")[0]
        return np.tile(samples, -(-length // total))[:length]


def simulated_room(rng: np.random.Generator, rt60_range: tuple[float, float] = (0.2, 0.8)) -> np.ndarray:
    """An impulse response of a simulated room: a direct path, then exponentially decaying diffuse noise."""
    rt60 = rng.uniform(*rt60_range)
    length = int(rt60 * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    response = rng.standard_normal(length) * np.exp(-6.9078 * t / rt60)  # -60 dB at rt60
    response[: int(0.002 * SAMPLE_RATE)] = 0.0  # the first reflections arrive after the direct sound
    response[0] = 1.0
    return (response / np.sqrt(np.sum(response**2))).astype(np.float32)


def load_impulse_responses(folder: str) -> list[np.ndarray]:
    """Every audio file of ``folder`` as a 16 kHz impulse response of unit energy."""
    paths = sorted(audio_files_under(Path(folder)))
    if not paths:
        raise FileNotFoundError(f"impulse-response folder {folder} holds no {'/'.join(AUDIO_SUFFIXES)} files")
    responses = [decode_audio({"path": str(p), "bytes": None}) for p in paths]
    return [(r / np.sqrt(np.sum(np.square(r)))).astype(np.float32) for r in responses]


PITCH_SEMITONES = (-4.0, 4.0)  # the range of audiomentations' `PitchShift`, which drew the shift before
PITCH_FFT, PITCH_HOP = 1024, 256  # 64 ms frames every 16 ms at 16 kHz


def draw_semitones(rng: np.random.Generator, semitones: tuple[float, float] = PITCH_SEMITONES) -> float:
    """A pitch-shifted view's shift, uniform in the ``semitones`` range: the value audiomentations'
    `PitchShift(p=1.0)` draws from the global generators seeded by `_seeded_globals(rng)`, without touching them."""
    draws = random.Random(int(rng.integers(2**31)))
    draws.random()  # PitchShift's should-apply draw
    return draws.uniform(*semitones)


def _phase_vocoder_stretch(samples: np.ndarray, rate: float, n_fft: int, hop: int, block: int = 64) -> np.ndarray:
    """``samples`` (float32) played ``rate`` times faster at the same pitch: librosa's `phase_vocoder` (centred,
    zero-padded Hann STFT; magnitudes interpolated between frames; phase advances accumulated), ``block`` frames
    at a time so that the work stays in cache.

    librosa wraps each frame's phase advance around the bin's expected advance before accumulating it; that changes
    the accumulated phase by whole turns only, so the raw differences are accumulated here (the same phasors).
    """
    import scipy.fft

    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)  # periodic Hann
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(samples, n_fft // 2), n_fft)[::hop]  # (T, n_fft)
    count, bins = frames.shape[0], n_fft // 2 + 1
    magnitude = np.zeros((count + 2, bins), np.float32)  # two zero frames past the end, as librosa
    phase = np.zeros((count + 2, bins), np.float32)
    for start in range(0, count, block):
        stop = min(start + block, count)
        spectrum = scipy.fft.rfft(frames[start:stop] * window, axis=1, overwrite_x=True)  # complex64
        np.abs(spectrum, out=magnitude[start:stop])
        np.arctan2(spectrum.imag, spectrum.real, out=phase[start:stop])
    steps = np.arange(0, count, rate)  # the input position of each output frame
    first = steps.astype(np.int64)
    alpha = (steps - first).astype(np.float32)[:, None]
    shifts = n_fft // hop
    signal = np.zeros(n_fft * (first.size // shifts + 2), np.float32)
    accumulated = phase[0].copy()  # the phase of the next output frame
    for start in range(0, first.size, block):
        rows = first[start : start + block]
        advance = phase[rows + 1] - phase[rows]  # (b, F)
        running = np.empty_like(advance)
        running[0] = accumulated
        for row in range(1, rows.size):  # a running sum by rows: much faster than cumsum over axis 0
            np.add(running[row - 1], advance[row - 1], out=running[row])
        accumulated = running[-1] + advance[-1]
        stretched = magnitude[rows + 1] - magnitude[rows]
        stretched *= alpha[start : start + block]
        stretched += magnitude[rows]  # (b, F)
        spectrum = np.empty(running.shape, np.complex64)
        parts = spectrum.view(np.float32).reshape(*running.shape, 2)
        np.cos(running, out=parts[..., 0])
        np.sin(running, out=parts[..., 1])
        parts *= stretched[..., None]
        chunk = scipy.fft.irfft(spectrum, n=n_fft, axis=1, overwrite_x=True)  # (b, n_fft)
        chunk *= window
        for offset in range(shifts):  # frames offset, offset + shifts, ... do not overlap: add them as one block
            group = chunk[offset::shifts]
            at = (start + offset) * hop
            signal[at : at + group.size].reshape(group.shape)[:] += group
    return _normalise_overlap_add(signal, window, hop, first.size, round(samples.size / rate))


def _normalise_overlap_add(signal: np.ndarray, window: np.ndarray, hop: int, count: int, length: int) -> np.ndarray:
    """The inverse of the centred STFT from ``count`` windowed frames overlap-added into ``signal``: divided by the
    summed squared window, the first ``n_fft // 2`` samples dropped, the rest cut or zero-padded to ``length``."""
    n_fft = window.size
    shifts = n_fft // hop
    squared = np.square(window)
    weight = np.resize(squared.reshape(shifts, hop).sum(axis=0), signal.size)  # every shift of the window adds
    end = n_fft + hop * (count - 1)
    for missing in range(1, shifts):  # less overlap near both ends: no frames start before 0 or after the last
        weight[: (shifts - missing) * hop] -= squared[missing * hop :]
        weight[end - (shifts - missing) * hop : end] -= squared[: (shifts - missing) * hop]
    weight[end:] = 0
    signal, weight = signal[n_fft // 2 : n_fft // 2 + length], weight[n_fft // 2 : n_fft // 2 + length]
    signal /= np.where(weight > np.finfo(np.float32).tiny, weight, 1)
    return np.pad(signal, (0, length - signal.size))


def pitch_shift(samples: np.ndarray, semitones: float, sample_rate: int = SAMPLE_RATE, n_fft: int = PITCH_FFT,
                hop: int = PITCH_HOP) -> np.ndarray:
    """``samples`` shifted by ``semitones`` at the same length and tempo, as float32: a phase-vocoder time-stretch
    by 2^(semitones / 12), then soxr resampling back to the original length (the method of librosa's
    `effects.pitch_shift`, vectorised). ``n_fft`` must be a multiple of ``hop``."""
    if n_fft % hop:
        raise ValueError(f"n_fft ({n_fft}) must be a multiple of hop ({hop})")
    rate = 2.0 ** (-semitones / 12)
    audio = np.asarray(samples, dtype=np.float32)
    stretched = _phase_vocoder_stretch(np.pad(audio, (0, max(0, n_fft - audio.size))), rate, n_fft, hop)
    shifted = soxr.resample(stretched, sample_rate / rate, sample_rate)[: audio.size]
    return np.pad(shifted, (0, audio.size - shifted.size)).astype(np.float32, copy=False)


@contextmanager
def _seeded_globals(rng: np.random.Generator):
    """audiomentations draws from the global `random` and NumPy generators: seed them from ``rng``, then restore."""
    py_state, np_state = random.getstate(), np.random.get_state()
    seed = int(rng.integers(2**31))
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class Distorter:
    """Draws and applies one view's distortion; returns the view and the SNR applied (+inf for none)."""

    def __init__(
        self,
        preset: DistortionPreset,
        noise_bank: NoiseBank | None,
        impulse_responses: Sequence[np.ndarray] | None = None,
        clean_probability: float = 0.0,
    ):
        needs_files = preset.file_noise_share > 0 and any(a == "noise" for _, a, _ in preset.combos)
        if needs_files and noise_bank is None:
            raise ValueError("this distortion preset mixes noise files: give a noise source")
        self.preset, self.noise_bank = preset, noise_bank
        self.impulse_responses = list(impulse_responses or [])
        self.clean_probability = clean_probability
        self.probabilities = np.array([p for p, _, _ in preset.combos]) / sum(p for p, _, _ in preset.combos)
        from audiomentations import BandStopFilter

        self.bandstop = BandStopFilter(p=1.0)

    def _non_additive(self, kind: str, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if kind == "reverb":
            from scipy.signal import fftconvolve

            response = (self.impulse_responses[int(rng.integers(len(self.impulse_responses)))]
                        if self.impulse_responses else simulated_room(rng))
            wet = fftconvolve(audio, response)[: audio.size]
            return (wet * np.sqrt(rms_power(audio) / max(rms_power(wet), 1e-20))).astype(np.float32)
        if kind == "bandstop":
            with _seeded_globals(rng):
                return self.bandstop(samples=audio, sample_rate=SAMPLE_RATE).astype(np.float32)
        if kind == "pitch":
            return pitch_shift(audio, draw_semitones(rng))
        return audio

    def __call__(self, audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        if self.clean_probability and rng.random() < self.clean_probability:
            return audio, float("inf")
        _, additive, non_additive = self.preset.combos[int(rng.choice(len(self.probabilities), p=self.probabilities))]
        view = self._non_additive(non_additive, audio, rng)
        if additive == "none":
            return view, float("inf")
        snr = float(rng.integers(self.preset.snr_low, self.preset.snr_high + 1))
        if self.noise_bank is not None and rng.random() < self.preset.file_noise_share:
            noise = self.noise_bank.segment(view.size, rng)
        else:
            noise = rng.standard_normal(view.size).astype(np.float32)
        return mix_at_snr(view, noise, snr), snr


class ViewMaker:
    """Turns a cropped utterance into the model inputs of one training example.

    ``clean``: both models hear the utterance. ``setup1``: the teacher hears it clean, the student a distorted
    view. ``setup2``: each hears its own, independently drawn distorted view. With ``keep_clean`` the utterance
    itself comes along as "clean_input_values" (the enhancement term's target) whenever the student's view is not it.
    """

    def __init__(self, setup: Setup, distorter: Distorter | None, keep_clean: bool = False):
        if setup not in SETUPS:
            raise ValueError(f"views must be one of {SETUPS}, got {setup!r}")
        if setup != "clean" and distorter is None:
            raise ValueError(f"views={setup!r} needs a distortion")
        self.setup, self.distorter, self.keep_clean = setup, distorter, keep_clean

    def __call__(self, audio: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray | float]:
        if self.setup == "clean":
            return {"input_values": audio}
        teacher_rng, student_rng = rng.spawn(2)  # independent streams: the two draws never share a choice
        student, student_snr = self.distorter(audio, student_rng)
        if self.setup == "setup1":
            teacher, teacher_snr = audio, float("inf")
        else:
            teacher, teacher_snr = self.distorter(audio, teacher_rng)
        example = {"input_values": student, "teacher_input_values": teacher, "student_snr": student_snr,
                   "teacher_snr": teacher_snr}
        if self.keep_clean:
            example["clean_input_values"] = audio
        return example
