"""Real-time factor of the data pipeline per DataLoader worker: decode, crop and two distorted views.

    python benchmarks/bench_data.py            # 15.6 s clips, the default chain (huang2022, Setup 2)
    python benchmarks/bench_data.py --tiny     # a seconds-long smoke run

Clips are made by joining the demo utterances into 15.6 s FLAC files; noise comes from the demo noise bank. The
work runs in one process with one thread, as in one DataLoader worker on one core. The real-time factor is audio
seconds delivered per second of work (median over repeated passes); the per-stage costs show where it goes.
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
from hf_corrdistill.data.views import PRESET_BUILDERS, Distorter, NoiseBank, ViewMaker, only_kind  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo_data"
CLIP = 250_000  # 15.6 s


def make_clips(folder: Path, count: int, length: int) -> None:
    speech = [decode_audio({"path": str(p)}) for p in sorted((DEMO / "speech" / "train").glob("*.flac"))]
    joined = np.concatenate(speech)
    for index in range(count):
        start = (index * length // 3) % (joined.size - length)
        sf.write(folder / f"clip-{index:03d}.flac", joined[start : start + length], SAMPLE_RATE, subtype="PCM_16")


def _median_time(work, tiny: bool) -> float:
    times = []
    for seed in range(3 if tiny else 8):
        started = time.perf_counter()
        work(seed)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="short clips and few passes")
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--preset", default="huang2022", choices=sorted(PRESET_BUILDERS))
    parser.add_argument("--views", default="setup2", choices=["setup1", "setup2"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    length = 16_000 if args.tiny else CLIP
    clips, passes = (4, 1) if args.tiny else (args.clips, args.passes)
    bank = NoiseBank([str(DEMO / "noise" / "train")])
    preset = PRESET_BUILDERS[args.preset]()
    with tempfile.TemporaryDirectory() as scratch:
        make_clips(Path(scratch), clips, length)
        source = load_audio_source(scratch)
        views = ViewMaker(args.views, Distorter(preset, bank))
        dataset = CroppedAudioDataset(source, "audio", max_length=length, min_length=8000, seed=0, views=views)
        rates = []
        for epoch in range(passes):
            dataset.set_epoch(epoch)
            started = time.perf_counter()
            for index in range(len(dataset)):
                dataset[index]
            rates.append(clips * length / SAMPLE_RATE / (time.perf_counter() - started))

        audio = decode_audio(source[0]["audio"])
        costs = {"decode + crop": _median_time(lambda seed: dataset._crop(source[0]["audio"], seed), args.tiny)}
        for additive, non_additive in (("none", "reverb"), ("none", "bandstop"), ("none", "pitch"),
                                       ("noise", "none")):
            distorter = Distorter(only_kind(additive, non_additive, preset), bank)
            name = non_additive if additive == "none" else "added noise"
            costs[name] = _median_time(lambda seed, d=distorter: d(audio, np.random.default_rng(seed)), args.tiny)

    seconds = length / SAMPLE_RATE
    print(f"data pipeline, {args.preset} {args.views}, {seconds:.1f} s clips, one process, one thread")
    print(f"real-time factor per worker: {statistics.median(rates):.0f}x (median of {passes} passes over {clips} "
          f"clips; each clip yields a teacher and a student view)")
    print("cost of each stage on one clip (median), as a real-time factor of that stage alone:")
    for name, cost in costs.items():
        print(f"  {name:<22} {cost * 1000:8.1f} ms  {seconds / cost:8.0f}x")


if __name__ == "__main__":
    main()
