"""Real-time factor of the data pipeline per DataLoader worker: decode, crop and two distorted views, for the
distortion chain as it was before the throughput work (the reference, kept below as it was) and as it is now,
side by side.

    python benchmarks/bench_data.py               # 15.6 s clips, huang2022, Setup 2, 15 interleaved repeats
    python benchmarks/bench_data.py --tiny        # a seconds-long smoke run

The reference is the former code: decoding to (T, channels) then averaging; reverb by `scipy.signal.fftconvolve`
with float64 powers; audiomentations' `BandStopFilter` and its `PitchShift` with the signalsmith stretcher's cheaper
preset, under seeded global generators; Gaussian noise from `Generator.standard_normal`; noise files shorter than a
segment decoded at every segment; mixing in float64. Both chains draw the same crops, distortions, parameters and
SNRs from the same generators (tests/test_views_equivalence.py and tests/test_pitch_shift.py compare the outputs).

Clips are made by joining the demo utterances into 15.6 s FLAC files; noise comes from the demo noise bank (4 s
files, looped to the crop's length). The work runs in one process with one thread, as in one DataLoader worker on
one core. Each repeat makes one pass over the clips with each chain, the order alternating; the real-time factor is
audio seconds delivered per second of the process's CPU time (wall time is shown too; on a shared machine it also
counts waiting for a core). The cost per training step is the worker CPU time of one batch of ``--batch`` clips;
workers needed = steps/s x that cost.
"""

import argparse
import io
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one worker, one core
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import random  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import soxr  # noqa: E402
import torch  # noqa: E402

from hf_corrdistill.data.crops import CroppedAudioDataset  # noqa: E402
from hf_corrdistill.data.sources import SAMPLE_RATE, AudioDecodeError, decode_audio, describe, load_audio_source  # noqa: E402
from hf_corrdistill.data.views import (  # noqa: E402
    PRESET_BUILDERS,
    Distorter,
    DistortionPreset,
    NoiseBank,
    ViewMaker,
    only_kind,
    simulated_room,
)

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo_data"
CLIP = 250_000  # 15.6 s
GPU_STEPS_PER_SECOND = 9.20  # one H200 at the paper's shapes (benchmarks/RESULTS.md)


# The reference chain: the former code, kept as it was.


def reference_decode_audio(value: dict[str, Any]) -> np.ndarray:
    """The former `sources.decode_audio`: always (T, channels), then the mean over channels."""
    name = describe(value)
    try:
        source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
        samples, rate = sf.read(source, dtype="float32", always_2d=True)
    except Exception as error:
        raise AudioDecodeError(f"cannot decode {name}: {error}", "undecodable") from error
    samples = samples.mean(axis=1)
    if samples.size == 0:
        raise AudioDecodeError(f"{name} holds no samples", "empty")
    if not np.isfinite(samples).all():
        raise AudioDecodeError(f"{name} contains NaN or inf samples", "non_finite")
    if not np.any(samples):
        raise AudioDecodeError(f"{name} is all zeros", "silent")
    if rate != SAMPLE_RATE:
        samples = soxr.resample(samples, rate, SAMPLE_RATE).astype(np.float32)
    return samples


def reference_rms_power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def reference_mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    gain = np.sqrt(reference_rms_power(signal) / (max(reference_rms_power(noise), 1e-20) * 10 ** (snr_db / 10)))
    return (signal + gain * noise).astype(np.float32)


def cheaper_pitch_shift(min_semitones: float = -4.0, max_semitones: float = 4.0):
    """audiomentations' `PitchShift` with the signalsmith stretcher's cheaper preset (audiomentations draws the
    shift)."""
    import python_stretch
    from audiomentations import PitchShift

    class CheaperPitchShift(PitchShift):
        def apply(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
            stretch = python_stretch.Signalsmith.Stretch()
            stretch.preset(1, sample_rate, True)
            stretch.setTransposeSemitones(self.parameters["num_semitones"])
            return stretch.process(np.ascontiguousarray(samples[None, :], dtype=np.float32))[0]

    return CheaperPitchShift(min_semitones=min_semitones, max_semitones=max_semitones, p=1.0)


@contextmanager
def seeded_globals(rng: np.random.Generator):
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


class ReferenceDistorter(Distorter):
    """The former `views.Distorter`: the same draws, the former implementations."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from audiomentations import BandStopFilter

        self.bandstop = BandStopFilter(p=1.0)
        self.pitch = cheaper_pitch_shift()

    def _non_additive(self, kind: str, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if kind == "reverb":
            from scipy.signal import fftconvolve

            response = (self.impulse_responses[int(rng.integers(len(self.impulse_responses)))]
                        if self.impulse_responses else simulated_room(rng))
            wet = fftconvolve(audio, response)[: audio.size]
            return (wet * np.sqrt(reference_rms_power(audio) / max(reference_rms_power(wet), 1e-20))).astype(
                np.float32)
        if kind in ("bandstop", "pitch"):
            transform = self.bandstop if kind == "bandstop" else self.pitch
            with seeded_globals(rng):
                return transform(samples=audio, sample_rate=SAMPLE_RATE).astype(np.float32)
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
        return reference_mix_at_snr(view, noise, snr), snr


class ReferenceNoiseBank(NoiseBank):
    """The former `views.NoiseBank.segment`: a file shorter than the segment is decoded again at every segment."""

    def segment(self, length: int, rng: np.random.Generator) -> np.ndarray:
        index = int(rng.integers(len(self.files)))
        total = self.frames[index]
        if total >= length:
            start = int(rng.integers(0, total - length + 1))
            return sf.read(self.files[index], start=start, frames=length, dtype="float32")[0]
        samples = sf.read(self.files[index], dtype="float32")[0]
        return np.tile(samples, -(-length // total))[:length]


class ReferenceCrops(CroppedAudioDataset):
    """`CroppedAudioDataset` decoding with the former `decode_audio`."""

    def _crop(self, value: dict[str, Any], key: int, report: bool = True) -> np.ndarray | None:
        try:
            samples = reference_decode_audio(value)
        except AudioDecodeError as error:
            self._skip(error.reason, str(error), report)
            return None
        if samples.size < self.min_length:
            self._skip("too_short", f"{describe(value)} has {samples.size} samples, fewer than min_length", report)
            return None
        if samples.size > self.max_length:
            rng = np.random.default_rng((self.seed, self.epoch, key))
            start = rng.integers(0, samples.size - self.max_length + 1)
            samples = samples[start : start + self.max_length]
        return samples


CHAINS = {"reference": (ReferenceCrops, ReferenceDistorter, ReferenceNoiseBank),
          "now": (CroppedAudioDataset, Distorter, NoiseBank)}


def make_clips(folder: Path, count: int, length: int) -> None:
    speech = [decode_audio({"path": str(p)}) for p in sorted((DEMO / "speech" / "train").glob("*.flac"))]
    joined = np.concatenate(speech)
    for index in range(count):
        start = (index * length // 3) % (joined.size - length)
        sf.write(folder / f"clip-{index:03d}.flac", joined[start : start + length], SAMPLE_RATE, subtype="PCM_16")


def _timed(work) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``work()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    return time.process_time() - cpu, time.perf_counter() - wall


def _stage_costs(works: dict, repeats: int) -> dict[str, float]:
    """Median CPU seconds of each ``works[name](seed)`` over ``repeats`` seeds, the chains interleaved."""
    spent = {name: [] for name in works}
    for seed in range(repeats):
        for name, work in works.items():
            spent[name].append(_timed(lambda w=work, s=seed: w(s))[0])
    return {name: statistics.median(times) for name, times in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="short clips, few clips and repeats")
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=15, help="interleaved passes per chain")
    parser.add_argument("--batch", type=int, default=24, help="clips per training step (the paper: 24)")
    parser.add_argument("--steps_per_second", type=float, default=GPU_STEPS_PER_SECOND)
    parser.add_argument("--preset", default="huang2022", choices=sorted(PRESET_BUILDERS))
    parser.add_argument("--views", default="setup2", choices=["setup1", "setup2"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    length = 16_000 if args.tiny else CLIP
    clips, repeats = (4, 2) if args.tiny else (args.clips, args.repeats)
    banks = {name: bank([str(DEMO / "noise" / "train")]) for name, (_, _, bank) in CHAINS.items()}
    preset = PRESET_BUILDERS[args.preset]()
    seconds = length / SAMPLE_RATE
    with tempfile.TemporaryDirectory() as scratch:
        make_clips(Path(scratch), clips, length)
        source = load_audio_source(scratch)
        datasets = {name: crops(source, "audio", max_length=length, min_length=8000, seed=0,
                                views=ViewMaker(args.views, chain(preset, banks[name])))
                    for name, (crops, chain, _) in CHAINS.items()}
        for dataset in datasets.values():  # warm-up: imports, caches
            dataset[0]
        cpu = {name: [] for name in CHAINS}
        wall = {name: [] for name in CHAINS}
        for repeat in range(repeats):
            order = list(CHAINS) if repeat % 2 == 0 else list(reversed(CHAINS))
            for name in order:
                datasets[name].set_epoch(repeat)  # both chains draw the same crops and distortions
                spent = _timed(lambda d=datasets[name]: [d[index] for index in range(len(d))])
                cpu[name].append(spent[0])
                wall[name].append(spent[1])

        audio = decode_audio(source[0]["audio"])
        stage_repeats = 3 if args.tiny else 9
        costs = {"decode + crop": _stage_costs(
            {name: lambda s, d=datasets[name]: d._crop(source[0]["audio"], s) for name in CHAINS}, stage_repeats)}
        stages = {"reverb": ("none", "reverb", 0.0), "bandstop": ("none", "bandstop", 0.0),
                  "pitch": ("none", "pitch", 0.0), "noise file": ("noise", "none", 1.0),
                  "Gaussian noise": ("noise", "none", 0.0)}
        for label, (additive, non_additive, file_share) in stages.items():
            only = only_kind(additive, non_additive, DistortionPreset((), preset.snr_low, preset.snr_high, file_share))
            chains = {name: chain(only, banks[name]) for name, (_, chain, _) in CHAINS.items()}
            works = {name: lambda s, d=distorter: d(audio, np.random.default_rng(s))
                     for name, distorter in chains.items()}
            costs[label] = _stage_costs(works, stage_repeats)

    audio_seconds = clips * seconds
    rate = {name: audio_seconds / statistics.median(cpu[name]) for name in CHAINS}
    wall_rate = {name: audio_seconds / statistics.median(wall[name]) for name in CHAINS}
    ratios = [r / n for r, n in zip(cpu["reference"], cpu["now"], strict=True)]
    print(f"data pipeline, {args.preset} {args.views}, {seconds:.1f} s clips, one process, one thread; "
          f"{repeats} interleaved passes over {clips} clips per chain (each clip: a teacher and a student view)")
    print(f"{'':34}{'reference':>12}{'now':>12}{'ratio':>9}")
    print(f"{'real-time factor per worker (CPU)':34}{rate['reference']:>11.0f}x{rate['now']:>11.0f}x"
          f"{rate['now'] / rate['reference']:>8.2f}x")
    print(f"{'real-time factor per worker (wall)':34}{wall_rate['reference']:>11.0f}x{wall_rate['now']:>11.0f}x"
          f"{wall_rate['now'] / wall_rate['reference']:>8.2f}x")
    print(f"speed-up per pass (reference CPU / now CPU): median {statistics.median(ratios):.2f}x, "
          f"range {min(ratios):.2f}x to {max(ratios):.2f}x over {repeats} passes")
    step = {name: args.batch * seconds / rate[name] for name in CHAINS}
    print(f"worker CPU per training step ({args.batch} x {seconds:.1f} s, {args.views}): reference "
          f"{step['reference']:.2f} s, now {step['now']:.2f} s; workers to feed {args.steps_per_second:.2f} steps/s: "
          f"reference {step['reference'] * args.steps_per_second:.1f}, now {step['now'] * args.steps_per_second:.1f}")
    print(f"CPU cost of each stage on one clip (median of {stage_repeats}), as a real-time factor of that stage "
          "alone, and the ratio:")
    for label, by_chain in costs.items():
        cells = "".join(f"{by_chain[name] * 1000:9.1f} ms {seconds / by_chain[name]:7.0f}x" for name in CHAINS)
        print(f"  {label:<16}{cells}{by_chain['reference'] / by_chain['now']:8.2f}x")


if __name__ == "__main__":
    main()
