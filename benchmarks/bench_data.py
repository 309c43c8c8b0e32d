"""Real-time factor of the data pipeline per DataLoader worker: decode, crop and two distorted views, for the
distortion chain as it was (the reference: audiomentations' `PitchShift` with the signalsmith stretcher's cheaper
preset) and as it is now (`views.pitch_shift`, a vectorised phase vocoder), side by side.

    python benchmarks/bench_data.py               # 15.6 s clips, huang2022, Setup 2, 7 interleaved repeats
    python benchmarks/bench_data.py --tiny        # a seconds-long smoke run

Clips are made by joining the demo utterances into 15.6 s FLAC files; noise comes from the demo noise bank. The
work runs in one process with one thread, as in one DataLoader worker on one core. Each repeat makes one pass over
the clips with each chain, the order alternating; the real-time factor is audio seconds delivered per second of
the process's CPU time (wall time is shown too; on a shared machine it also counts waiting for a core). The cost per
training step is the worker CPU time of one batch of ``--batch`` clips; workers needed = steps/s x that cost.
"""

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one worker, one core
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from hf_corrdistill.data.crops import CroppedAudioDataset  # noqa: E402
from hf_corrdistill.data.sources import SAMPLE_RATE, decode_audio, load_audio_source  # noqa: E402
from hf_corrdistill.data.views import (  # noqa: E402
    PRESET_BUILDERS,
    Distorter,
    NoiseBank,
    ViewMaker,
    _seeded_globals,
    only_kind,
)

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo_data"
CLIP = 250_000  # 15.6 s
GPU_STEPS_PER_SECOND = 9.20  # one H200 at the paper's shapes (benchmarks/RESULTS.md)


def cheaper_pitch_shift(min_semitones: float = -4.0, max_semitones: float = 4.0):
    """The reference pitch shift, as the library had it: audiomentations' `PitchShift` with the signalsmith
    stretcher's cheaper preset (audiomentations draws the shift)."""
    import python_stretch
    from audiomentations import PitchShift

    class CheaperPitchShift(PitchShift):
        def apply(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
            stretch = python_stretch.Signalsmith.Stretch()
            stretch.preset(1, sample_rate, True)
            stretch.setTransposeSemitones(self.parameters["num_semitones"])
            return stretch.process(np.ascontiguousarray(samples[None, :], dtype=np.float32))[0]

    return CheaperPitchShift(min_semitones=min_semitones, max_semitones=max_semitones, p=1.0)


class ReferenceDistorter(Distorter):
    """The distortion chain as it was: only the pitch shift differs from `Distorter`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pitch = cheaper_pitch_shift()

    def _non_additive(self, kind: str, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if kind == "pitch":
            with _seeded_globals(rng):
                return self.pitch(samples=audio, sample_rate=SAMPLE_RATE).astype(np.float32)
        return super()._non_additive(kind, audio, rng)


CHAINS = {"reference": ReferenceDistorter, "now": Distorter}


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


def _stage_cost(work, repeats: int) -> float:
    """Median CPU seconds of ``work(seed)`` over ``repeats`` seeds."""
    return statistics.median(_timed(lambda s=seed: work(s))[0] for seed in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="short clips, few clips and repeats")
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved passes per chain")
    parser.add_argument("--batch", type=int, default=24, help="clips per training step (the paper: 24)")
    parser.add_argument("--steps_per_second", type=float, default=GPU_STEPS_PER_SECOND)
    parser.add_argument("--preset", default="huang2022", choices=sorted(PRESET_BUILDERS))
    parser.add_argument("--views", default="setup2", choices=["setup1", "setup2"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    length = 16_000 if args.tiny else CLIP
    clips, repeats = (4, 2) if args.tiny else (args.clips, args.repeats)
    bank = NoiseBank([str(DEMO / "noise" / "train")])
    preset = PRESET_BUILDERS[args.preset]()
    seconds = length / SAMPLE_RATE
    with tempfile.TemporaryDirectory() as scratch:
        make_clips(Path(scratch), clips, length)
        source = load_audio_source(scratch)
        datasets = {name: CroppedAudioDataset(source, "audio", max_length=length, min_length=8000, seed=0,
                                              views=ViewMaker(args.views, chain(preset, bank)))
                    for name, chain in CHAINS.items()}
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
        costs = {"decode + crop": {name: _stage_cost(lambda s, d=datasets[name]: d._crop(source[0]["audio"], s),
                                                     stage_repeats) for name in CHAINS}}
        for additive, non_additive in (("none", "reverb"), ("none", "bandstop"), ("none", "pitch"),
                                       ("noise", "none")):
            label = non_additive if additive == "none" else "added noise"
            costs[label] = {}
            for name, chain in CHAINS.items():
                distorter = chain(only_kind(additive, non_additive, preset), bank)
                costs[label][name] = _stage_cost(lambda s, d=distorter: d(audio, np.random.default_rng(s)),
                                                 stage_repeats)

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
    print("CPU cost of each stage on one clip (median), and as a real-time factor of that stage alone:")
    for label, by_chain in costs.items():
        cells = "".join(f"{by_chain[name] * 1000:9.1f} ms {seconds / by_chain[name]:7.0f}x" for name in CHAINS)
        print(f"  {label:<16}{cells}")


if __name__ == "__main__":
    main()
