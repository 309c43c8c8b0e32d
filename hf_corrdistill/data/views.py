"""Distorted views of an utterance for the teacher and the student (METHOD.md section 4).

Each view draws its own distortion: a non-additive one (reverberation, band-stop filter, pitch shift, or none)
is applied first, then additive noise (a noise-bank file or Gaussian noise, or none) is mixed at an integer SNR
relative to that signal. The SNR actually applied travels with the view (+inf when no noise was added).
"""

import functools
import hashlib
import logging
import math
import random
import re
from collections.abc import Sequence
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
    """The mean square of ``x``, summed pairwise in its own precision (for float32 audio, within about 1e-7 of the
    float64 sum)."""
    return float(np.square(x).sum()) / max(x.size, 1)


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float, out: np.ndarray | None = None) -> np.ndarray:
    """signal + g * noise with g chosen so that power(signal) / power(g * noise) = 10^(snr_db / 10) exactly; computed
    in float32 (within one float32 rounding of the float64 sum), into ``out`` when given (``noise`` itself may be)."""
    gain = np.sqrt(rms_power(signal) / (max(rms_power(noise), 1e-20) * 10 ** (snr_db / 10)))
    mixed = np.multiply(noise, np.float32(gain), out=out, dtype=np.float32)
    mixed += signal
    return mixed


def gaussian_noise(size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` independent standard normal samples (float32) from ``rng``, by the Box-Muller transform of float32
    uniforms: a third of the cost of ``rng.standard_normal`` for a 15.6 s crop. The same distribution, other values
    than ``rng.standard_normal`` draws; the tails end at 5.8 standard deviations (float32 uniforms)."""
    half = -(-size // 2)
    uniform = rng.random(2 * half, dtype=np.float32)  # [0, 1)
    radius = np.log1p(-uniform[:half])  # log of a uniform in (0, 1]
    radius *= -2
    np.sqrt(radius, out=radius)
    angle = uniform[half:]
    angle *= np.float32(2 * np.pi)
    noise = np.empty(2 * half, np.float32)
    np.multiply(np.cos(angle), radius, out=noise[:half])
    np.multiply(np.sin(angle, out=angle), radius, out=noise[half:])
    return noise[:size]


class NoiseBank:
    """Noise audio read by random segments at 16 kHz, from folders of files or from `datasets` sources.

    A folder's files at another rate or with several channels are converted once into ``cache_dir``; a dataset
    (a `save_to_disk` folder, parquet files or a Hub id, with an ``audio`` column) is written there once as 16 kHz
    FLAC files. A missing or empty source is an error at construction, naming it.

    A file shorter than a requested segment is read whole and looped. Such files are kept decoded, up to
    ``keep_short_mb`` of them per process (each DataLoader worker keeps its own), so that a bank of short clips is
    decoded once rather than at every segment; longer files are read segment by segment as before.
    """

    def __init__(self, sources: Sequence[str], cache_dir: str | None = None, keep_short_mb: float = 64.0):
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
        self._short: dict[int, np.ndarray] = {}  # decoded files that were shorter than a segment
        self._short_room = int(keep_short_mb * 2**20) // np.dtype(np.float32).itemsize  # samples left to keep

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
        samples = self._short.get(index)
        if samples is None:
            samples = sf.read(self.files[index], dtype="float32")[0]
            if samples.size <= self._short_room:
                self._short[index] = samples
                self._short_room -= samples.size
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


def _rfft(rows: np.ndarray, n: int | None = None) -> np.ndarray:
    """The real FFTs of the rows of a float32 array (complex64)."""
    import scipy.fft

    return scipy.fft.rfft(rows, n, axis=-1)


def _irfft(spectra: np.ndarray, n: int) -> np.ndarray:
    """The inverse of `_rfft` for ``n``-sample rows."""
    import scipy.fft

    return scipy.fft.irfft(spectra, n, axis=-1, overwrite_x=True)


def convolve_head(audio: np.ndarray, response: np.ndarray) -> np.ndarray:
    """The first ``audio.size`` samples of the linear convolution of ``audio`` with ``response``, in float32, by
    overlap-save: FFT blocks of 16384 samples (32768 for responses longer than about 0.6 s at 16 kHz), four blocks per
    FFT call (the FFT then works on four rows at once, and they stay in cache). For a room response of 0.2-0.8 s and a
    15.6 s crop that is a third to a half of the cost of one FFT over the whole crop. It agrees with
    `scipy.signal.fftconvolve` to float32 rounding (about 1e-6 of the peak)."""
    audio = np.asarray(audio, dtype=np.float32)
    response = np.asarray(response, dtype=np.float32)
    taps = response.size
    if audio.size == 0 or taps == 0:
        return np.zeros(audio.size, np.float32)
    n_fft = 1 << max(14, math.ceil(math.log2(1.7 * taps)))  # blocks give at least 0.4 n_fft new samples each
    n_fft = min(n_fft, 1 << (audio.size + taps - 2).bit_length())  # one block when it all fits in a smaller one
    step = n_fft - taps + 1  # output samples per block
    blocks = -(-audio.size // step)
    padded = np.zeros((blocks - 1) * step + n_fft, np.float32)  # taps - 1 zeros of history, then the audio
    padded[taps - 1 : taps - 1 + audio.size] = audio
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::step]  # (blocks, n_fft)
    spectrum = _rfft(response, n_fft)
    out = np.empty(blocks * step, np.float32)
    for first in range(0, blocks, 4):
        chunk = _rfft(frames[first : first + 4])
        chunk *= spectrum
        wet = _irfft(chunk, n_fft)[:, taps - 1 :]  # the circular wrap dropped
        out[first * step : first * step + wet.size] = wet.ravel()
    return out[: audio.size]


BANDSTOP_CENTER_HZ = (200.0, 4000.0)  # audiomentations' `BandStopFilter` defaults, which drew the filter before
BANDSTOP_BANDWIDTH_FRACTION = (0.5, 1.99)
BANDSTOP_ROLLOFF_DB = (12, 24)  # per octave, in steps of 6 dB: Butterworth orders 2 to 4


def _hz_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: float) -> float:
    return 700.0 * (10 ** (mel / 2595.0) - 1.0)


def draw_bandstop(rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> tuple[int, float, float]:
    """A band-stop view's Butterworth filter as (order, low Hz, high Hz), drawn as audiomentations'
    `BandStopFilter(p=1.0)` drew it when the views seeded Python's and NumPy's global generators from one
    ``rng.integers(2**31)``: a centre uniform in mel, a bandwidth a uniform fraction of the centre. The same values
    from the same ``rng``; the global generators are not touched."""
    seed = int(rng.integers(2**31))
    draws, legacy = random.Random(seed), np.random.RandomState(seed)
    draws.random()  # BandStopFilter's should-apply draw
    order = draws.randint(BANDSTOP_ROLLOFF_DB[0] // 6, BANDSTOP_ROLLOFF_DB[1] // 6)
    center = _mel_to_hz(legacy.uniform(low=_hz_to_mel(BANDSTOP_CENTER_HZ[0]), high=_hz_to_mel(BANDSTOP_CENTER_HZ[1])))
    bandwidth = center * legacy.uniform(low=BANDSTOP_BANDWIDTH_FRACTION[0], high=BANDSTOP_BANDWIDTH_FRACTION[1])
    high = center + bandwidth / 2
    if high > sample_rate // 2:  # kept below Nyquist, as audiomentations does
        high = sample_rate // 2 * 0.9999
    return order, center - bandwidth / 2, high


def butterworth_bandstop(order: int, low: float, high: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The second-order sections (``order`` rows of b0 b1 b2 1 a1 a2) of the digital Butterworth band-stop filter of
    ``scipy.signal.butter(order, [low, high], "bandstop", fs=sample_rate, output="sos")``, by the same steps (analog
    prototype, band-stop transform of prewarped edges, bilinear transform) written out for this one case: a tenth of
    `butter`'s cost, the same filter to float64 rounding. Every section has the two zeros on the unit circle at the
    stop band's centre; the poles are paired complex conjugates (or two real poles), closest to the circle last, and
    the gain is in the first section, as `scipy.signal.zpk2sos` arranges them."""
    prototype = -np.exp(1j * np.pi * np.arange(-order + 1, order, 2) / (2 * order))  # unit cutoff, left half plane
    edges = 4.0 * np.tan(np.pi * np.array([low, high]) / sample_rate)  # prewarped for the bilinear transform, fs = 2
    centre, width = np.sqrt(edges[0] * edges[1]), edges[1] - edges[0]
    half = (width / 2) / prototype
    root = np.sqrt(half**2 - centre**2)
    analog = np.concatenate([half + root, half - root])  # band-stop poles; zeros at +-j centre, order times each
    poles = (4.0 + analog) / (4.0 - analog)
    zero = (4.0 + 1j * centre) / (4.0 - 1j * centre)
    gain = np.real((16.0 + centre**2) ** order / np.prod(4.0 - analog))  # the bilinear transform's (prototype: 1)
    real = np.abs(poles.imag) <= 1e-12 * np.abs(poles)
    pairs = [(p, np.conj(p)) for p in poles[~real & (poles.imag > 0)]]
    reals = np.sort(poles[real].real)
    pairs += [(reals[k], reals[k + 1]) for k in range(0, reals.size - 1, 2)]
    pairs.sort(key=lambda pair: max(abs(pair[0]), abs(pair[1])))
    sos = np.zeros((len(pairs), 6))
    sos[:, :3] = [1.0, -2.0 * zero.real, 1.0]
    for row, (first, second) in enumerate(pairs):
        sos[row, 3:] = [1.0, -np.real(first + second), np.real(first * second)]
    sos[0, :3] *= gain
    return sos


def _steady_state(sos: np.ndarray) -> np.ndarray:
    """The initial states of `scipy.signal.sosfilt` for a constant input of 1 (`scipy.signal.sosfilt_zi`), from each
    section's DC gain: a transposed direct form II section with gain g holds b1 + b2 - (a1 + a2) g and b2 - a2 g."""
    b, a = sos[:, :3], sos[:, 3:]
    gain = b.sum(axis=1) / a.sum(axis=1)
    scale = np.concatenate([[1.0], np.cumprod(gain)[:-1]])  # each section's input: the DC gain before it
    state = np.stack([b[:, 1] + b[:, 2] - (a[:, 1] + a[:, 2]) * gain, b[:, 2] - a[:, 2] * gain], axis=1)
    return state * scale[:, None]


def bandstop(samples: np.ndarray, order: int, low: float, high: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``samples`` through the digital Butterworth band-stop filter of `butterworth_bandstop` (second-order sections,
    float64, the state started at the steady state of the first sample), as float32: the computation of
    audiomentations' `BandStopFilter`."""
    from scipy.signal import sosfilt

    if samples.size == 0:
        return np.asarray(samples, dtype=np.float32)
    sos = butterworth_bandstop(order, low, high, sample_rate)
    filtered, _ = sosfilt(sos, samples, zi=_steady_state(sos) * samples[0])
    return filtered.astype(np.float32)


PITCH_SEMITONES = (-4.0, 4.0)  # the range of audiomentations' `PitchShift`, which drew the shift before
PITCH_FFT, PITCH_HOP = 1024, 256  # 64 ms frames every 16 ms at 16 kHz


def draw_semitones(rng: np.random.Generator, semitones: tuple[float, float] = PITCH_SEMITONES) -> float:
    """A pitch-shifted view's shift, uniform in the ``semitones`` range: the value audiomentations' `PitchShift(p=1.0)`
    drew when the views seeded the global generators from one ``rng.integers(2**31)``, without touching them."""
    draws = random.Random(int(rng.integers(2**31)))
    draws.random()  # PitchShift's should-apply draw
    return draws.uniform(*semitones)


@functools.lru_cache(maxsize=4)
def _periodic_hann(n_fft: int) -> np.ndarray:
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    window.flags.writeable = False
    return window


@functools.lru_cache(maxsize=4)
def _overlap_weights(n_fft: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """(pieces, full): the squared Hann window cut into ``n_fft // hop`` pieces of ``hop`` samples, (shifts, hop), and
    their sum, (hop,): the summed squared windows wherever every shift of the window overlaps (1 where that is 0:
    librosa divides only where the sum exceeds float32's smallest normal number)."""
    pieces = np.square(_periodic_hann(n_fft)).reshape(n_fft // hop, hop)
    full = pieces.sum(axis=0)
    full[full <= np.finfo(np.float32).tiny] = 1
    pieces.flags.writeable = full.flags.writeable = False
    return pieces, full


def _phase_vocoder_stretch(samples: np.ndarray, rate: float, n_fft: int, hop: int, block: int = 64) -> np.ndarray:
    """``samples`` (float32) played ``rate`` times faster at the same pitch: librosa's `phase_vocoder` (centred,
    zero-padded Hann STFT; magnitudes interpolated between frames; phase advances accumulated), ``block`` output
    frames at a time, each block analysing only the input frames it reads, so that the work stays in cache.

    librosa wraps each frame's phase advance around the bin's expected advance before accumulating it; that changes
    the accumulated phase by whole turns only, so the raw differences are accumulated here (the same phasors), and
    whole turns are dropped between blocks so that float32 keeps the fraction of a turn.
    """
    window = _periodic_hann(n_fft)
    shifts = n_fft // hop
    synthesis = window / np.tile(_overlap_weights(n_fft, hop)[1], shifts)  # the inverse STFT's division, folded in
    padded = np.zeros(samples.size + n_fft, np.float32)
    padded[n_fft // 2 : n_fft // 2 + samples.size] = samples
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]  # (T, n_fft), centred frames
    count, bins = frames.shape[0], n_fft // 2 + 1
    steps = np.arange(0, count, rate)  # the input position of each output frame
    first = steps.astype(np.int64)
    alpha = (steps - first).astype(np.float32)[:, None]
    signal = np.zeros(n_fft + hop * (first.size - 1), np.float32)
    accumulated = None  # the phase of the next output frame
    turn = np.float32(2 * np.pi)
    for start in range(0, first.size, block):
        rows = first[start : start + block]
        low, high = int(rows[0]), int(rows[-1]) + 2  # the input frames this block reads
        spectrum = _rfft(frames[low : min(high, count)] * window)  # complex64
        spectrum.real += 0  # -0.0 becomes +0.0: a silent bin's phase is 0, as in librosa, not atan2(+-0, -0) = +-pi
        if high > count:  # past the end, librosa's frames are silent
            spectrum = np.concatenate([spectrum, np.zeros((high - count, bins), np.complex64)])
        magnitude = np.abs(spectrum)
        phase = np.arctan2(spectrum.imag, spectrum.real)
        here, after = rows - low, rows - low + 1
        if accumulated is None:
            accumulated = phase[0].copy()
        advance = phase[after]
        advance -= phase[here]  # (b, F)
        running = np.empty_like(advance)
        running[0] = accumulated
        for row in range(1, rows.size):  # a running sum by rows: much faster than cumsum over axis 0
            np.add(running[row - 1], advance[row - 1], out=running[row])
        accumulated = running[-1] + advance[-1]
        accumulated -= turn * np.rint(accumulated / turn)
        level = magnitude[after]
        level -= magnitude[here]
        level *= alpha[start : start + block]
        level += magnitude[here]  # (b, F)
        spectrum = np.empty(running.shape, np.complex64)
        parts = spectrum.view(np.float32).reshape(*running.shape, 2)
        np.multiply(np.cos(running), level, out=parts[..., 0])
        np.multiply(np.sin(running, out=running), level, out=parts[..., 1])
        chunk = _irfft(spectrum, n_fft)  # (b, n_fft)
        chunk *= synthesis
        for offset in range(shifts):  # frames offset, offset + shifts, ... do not overlap: add them as one block
            group = chunk[offset::shifts]
            at = (start + offset) * hop
            signal[at : at + group.size].reshape(group.shape)[:] += group
    return _normalise_overlap_add(signal, n_fft, hop, first.size, round(samples.size / rate))


def _normalise_overlap_add(signal: np.ndarray, n_fft: int, hop: int, count: int, length: int) -> np.ndarray:
    """The inverse of the centred STFT from ``count`` frames overlap-added into ``signal`` (``n_fft + hop * (count -
    1)`` samples), each already multiplied by the window over the full overlap's summed squared windows: the rows of
    ``hop`` samples near the ends, which fewer frames overlap, rescaled to their own sum (left as they are where it
    is 0, as librosa does); the first ``n_fft // 2`` samples dropped, the rest cut or zero-padded to ``length``."""
    shifts = n_fft // hop
    pieces, full = _overlap_weights(n_fft, hop)
    rows = signal.reshape(-1, hop)  # row r holds pieces r - j of frames j, for 0 <= j < count and 0 <= r - j < shifts
    tiny = np.finfo(np.float32).tiny
    for row in (*range(min(shifts - 1, rows.shape[0])), *range(max(count, shifts - 1), rows.shape[0])):
        weight = pieces[max(0, row - count + 1) : min(row, shifts - 1) + 1].sum(axis=0)
        rows[row] *= full / np.where(weight > tiny, weight, 1)
    kept = signal[n_fft // 2 : n_fft // 2 + length]
    return kept if kept.size == length else np.pad(kept, (0, length - kept.size))


def pitch_shift(samples: np.ndarray, semitones: float, sample_rate: int = SAMPLE_RATE, n_fft: int = PITCH_FFT,
                hop: int = PITCH_HOP) -> np.ndarray:
    """``samples`` shifted by ``semitones`` at the same length and tempo, as float32: a phase-vocoder time-stretch
    by 2^(semitones / 12), then soxr resampling back to the original length (the method of librosa's
    `effects.pitch_shift`, vectorised). ``n_fft`` must be a multiple of ``hop``."""
    if n_fft % hop:
        raise ValueError(f"n_fft ({n_fft}) must be a multiple of hop ({hop})")
    rate = 2.0 ** (-semitones / 12)
    audio = np.asarray(samples, dtype=np.float32)
    length = audio.size
    if length < n_fft:
        audio = np.pad(audio, (0, n_fft - length))
    shifted = soxr.resample(_phase_vocoder_stretch(audio, rate, n_fft, hop), sample_rate / rate, sample_rate)
    return shifted[:length] if shifted.size >= length else np.pad(shifted, (0, length - shifted.size))


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

    def _non_additive(self, kind: str, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if kind == "reverb":
            response = (self.impulse_responses[int(rng.integers(len(self.impulse_responses)))]
                        if self.impulse_responses else simulated_room(rng))
            wet = convolve_head(audio, response)
            wet *= np.float32(np.sqrt(rms_power(audio) / max(rms_power(wet), 1e-20)))
            return wet
        if kind == "bandstop":
            return bandstop(audio, *draw_bandstop(rng))
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
            noise = gaussian_noise(view.size, rng)
        return mix_at_snr(view, noise, snr, out=noise), snr  # the noise is this view's own: mixed in place


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
