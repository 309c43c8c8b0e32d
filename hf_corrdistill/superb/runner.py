"""`eval_superb.py`: features once per (upstream, split, condition), cached; then one head per (task, upstream)."""

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import soundfile as sf
import torch

from ..data.views import NoiseBank
from .arguments import EvalArguments
from .cache import FeatureCache, cache_key
from .conditions import Condition, NoisyCopies, content_hashes
from .downstream import Features, train_head
from .registry import TASKS, Option
from .report import write
from .tasks import (
    Item,
    TaskData,
    TaskDataError,
    UnusableAudio,
    audio_headers,
    decode_problems,
    file_name,
    from_datasets,
    read_audio,
)
from .upstream import check_upstream, describe_upstream, load_upstream, parse_upstream, upstream_training_noise

logger = logging.getLogger(__name__)

def _source(args: EvalArguments, option: Option) -> Path | str:
    given = getattr(args, option.name)
    if given is not None:
        return given
    if args.data is None:
        what = option.name.removesuffix("_data").replace("_", " ")
        raise ValueError(f"no data for {what}: give --data (a folder holding {option.folder}) or --{option.name}")
    return Path(args.data) / option.folder


def load_task(args: EvalArguments, task: str) -> TaskData:
    """The task's train/dev/test items, from its official folder layout or from a `datasets` source."""
    spec = TASKS[task]
    source = _source(args, spec.data[0])
    if spec.is_official(Path(source), args):
        return spec.official([Path(source)] + [Path(_source(args, option)) for option in spec.data[1:]], args)
    return from_datasets(task, str(source), tuple(args.dataset_splits), config_name=args.dataset_config,
                         audio_column=args.audio_column, **spec.dataset_columns(args))


def _items(tasks: dict[str, TaskData]) -> list[Item]:
    return [item for data in tasks.values() for split in data.splits.values() for item in split]


def check_audio(tasks: dict[str, TaskData]) -> dict[str, int]:
    """Every file's frame count from its header; files that cannot be used are one `UnusableAudio` naming all of
    them: when a header shows one, every other file is decoded too, so that one run lists them all."""
    items = _items(tasks)
    frames, problems = audio_headers(items)
    if problems:
        logger.info("%d file(s) with unusable headers; decoding the others to list every file that cannot be used",
                    len(problems))
        raise UnusableAudio({**problems, **decode_problems(items, skip=problems)})
    return frames


def _all_unusable(tasks: dict[str, TaskData], first: UnusableAudio) -> UnusableAudio:
    """``first`` (met in the feature pass) and every other file that cannot be decoded."""
    logger.info("%s; decoding every file to list all that cannot be used", first)
    return UnusableAudio({**first.problems, **decode_problems(_items(tasks), skip=first.problems)})


def _noise_bank(sources: list[str], cache_dir: str | None) -> NoiseBank:
    """The noise of ``sources``; a noise file soundfile cannot open is one line naming it."""
    try:
        return NoiseBank(sources, cache_dir)
    except sf.SoundFileError as error:
        raise TaskDataError(f"noise {', '.join(sources)}: {error}") from error


def check_noise_disjoint(banks: dict[str, NoiseBank], upstream_specs: list[tuple[str, str]],
                         noise_cache_dir: str | None) -> None:
    """Refuse test noise that a student of ours heard in distillation (its run_config.json names its noise)."""
    test = {}
    for bank in banks.values():
        test.update(content_hashes(bank))
    for name, spec in upstream_specs:
        sources = upstream_training_noise(spec)
        present = [s for s in sources if Path(s).exists()]
        if len(present) < len(sources):
            logger.warning("upstream %s was trained with noise %s, not found here: test-noise disjointness unchecked",
                           name, sorted(set(sources) - set(present)))
        if not present:
            continue
        shared = sorted(path for digest, path in test.items()
                        if digest in content_hashes(NoiseBank(present, noise_cache_dir)))
        if shared:
            raise ValueError(f"test noise {', '.join(shared[:3])} was used to distil upstream {name} "
                             f"({', '.join(present)}): choose test noise disjoint from training noise")


def check_cache_room(cache: FeatureCache, upstream, layer: int | None, jobs: list[tuple[str, list[Item]]],
                     file_frames: dict[str, int]) -> None:
    """Refuse to start features that cannot fit on the cache's disk (float16, every layer unless one is chosen).
    ``file_frames``: each file's frame count, from `check_audio`."""
    frames = 0
    for key, items in jobs:
        if cache.is_complete(key):
            continue
        for item in items:
            frames += upstream.frames(item.frames if item.frames >= 0 else file_frames[file_name(item)])
    needed = frames * (upstream.num_layers if layer is None else 1) * upstream.hidden_size * 2
    cache.root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache.root).free
    if needed > 0.95 * free:
        raise ValueError(f"the feature cache of upstream {upstream.name} needs about {needed / 1e9:.1f} GB, "
                         f"{free / 1e9:.1f} GB are free in {cache.root}: use --cache_dir on a larger disk, "
                         "--layer last (one layer instead of all), or fewer --snrs")
    logger.info("upstream %s: about %.2f GB of features to compute", upstream.name, needed / 1e9)


def _device(args: EvalArguments) -> torch.device:
    return torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:20]


def run(args: EvalArguments) -> dict:
    """Everything `eval_superb.py` does; returns the results it writes. Every check runs before any features,
    audio that fails to decode stops the feature pass with one error naming every such file."""
    started = time.time()
    specs = [parse_upstream(spec) for spec in args.upstream]
    names = [name for name, _ in specs]
    if len(set(names)) < len(names):
        raise ValueError(f"upstream names must differ: {names}; name them NAME=PATH")
    for name, spec in specs:
        check_upstream(name, spec, args.trust_remote_code)
    tasks = {task: load_task(args, task) for task in args.tasks}
    file_frames = check_audio(tasks)
    banks = {"seen": _noise_bank(args.noise, args.noise_cache_dir)} if args.noise else {}
    if args.unseen_noise:
        banks["unseen"] = _noise_bank(args.unseen_noise, args.noise_cache_dir)
    check_noise_disjoint(banks, specs, args.noise_cache_dir)
    noisy = NoisyCopies(banks, args.seed)
    output = Path(args.output_dir)
    cache = FeatureCache(Path(args.cache_dir) if args.cache_dir else output / "cache")
    device = _device(args)

    features, described = {}, {}
    for name, spec in specs:  # one upstream in memory at a time
        upstream = load_upstream(name, spec, device, args.trust_remote_code)
        described[name] = describe_upstream(upstream)
        layer = None if args.layer == "weighted" else (upstream.num_layers - 1 if args.layer == "last"
                                                      else int(args.layer) % upstream.num_layers)
        described[name]["layer"] = "weighted" if layer is None else layer
        jobs = []
        for task, data in tasks.items():
            needed = [("train", Condition()), ("dev", Condition())] + [("test", c) for c in args.conditions]
            for split, condition in needed:
                items = data.splits[split]
                key = cache_key({"upstream": described[name], "task": task, "split": split,
                                 **noisy.fingerprint(condition)}, items)
                jobs.append((task, split, condition, items, key))
        check_cache_room(cache, upstream, layer, [(key, items) for *_, items, key in jobs], file_frames)
        for task, split, condition, items, key in jobs:

            def audio(item, condition=condition):
                return noisy(read_audio(item), item.key, condition)

            try:
                features[name, task, split, condition.name] = cache.ensure(
                    key, items, audio, upstream, layer, args.upstream_batch_size,
                    label=f"{name}/{task}/{split}/{condition.name}")
            except UnusableAudio as error:
                raise _all_unusable(tasks, error) from None
        del upstream

    results: dict[str, dict] = {}
    for task, data in tasks.items():
        results[task] = {}
        for name, _ in specs:
            settings = args.head_settings[task]
            splits = {s: Features(features[name, task, s, "clean"], data.splits[s]) for s in ("train", "dev")}
            tests = {c.name: Features(features[name, task, "test", c.name], data.splits["test"])
                     for c in args.conditions}
            layers = 1 if described[name]["layer"] != "weighted" else described[name]["layers"]
            # "records": what a head's result holds besides the metrics; heads written before per-item test outcomes
            # were recorded have another identity, so they are trained again rather than reused without them
            identity = _digest({"features": [str(f.features.folder.name) for f in (*splits.values(), *tests.values())],
                                "settings": asdict(settings), "seed": args.seed, "layer_norm": args.layer_norm,
                                "asr_size": args.asr_size, "labels": data.label_names, "records": "test_items"})
            done = output / "heads" / f"{task}-{name}.json"
            if done.exists() and json.loads(done.read_text()).get("identity") == identity:
                logger.info("%s / %s: head already trained in an earlier run, reusing %s", task, name, done)
                results[task][name] = json.loads(done.read_text())["result"]
                continue
            logger.info("%s / %s: training the head for %d steps", task, name, settings.steps)
            result = train_head(data, splits["train"], splits["dev"], tests, settings, layers,
                                described[name]["hidden_size"], layer_norm=args.layer_norm, asr_size=args.asr_size,
                                seed=args.seed, device=device)
            result["sizes"] = {split: len(items) for split, items in data.splits.items()}
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text(json.dumps({"identity": identity, "result": result}, indent=2) + "\n")
            results[task][name] = result

    report = {
        "config": {**args.public(), "cache_dir": str(cache.root)},
        "seeds": {"noise": args.seed, "heads": args.seed, "silence_crops": args.seed},
        "conditions": [c.name for c in args.conditions],
        "condition_specs": [asdict(c) for c in args.conditions],
        "upstreams": described,
        "data": {task: data.source for task, data in tasks.items()},
        "results": results,
        # the test items in the order of every head's "test_items": pairs two upstreams' outcomes item by item
        "test_keys": {task: [item.key for item in data.splits["test"]] for task, data in tasks.items()},
        "features": {"computed_utterances": cache.computed},
        "seconds": round(time.time() - started, 1),
    }
    for path in write(report, output):
        logger.info("wrote %s", path)
    return report
