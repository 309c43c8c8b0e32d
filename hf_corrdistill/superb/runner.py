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

from ..data.sources import SAMPLE_RATE
from ..data.views import NoiseBank
from .arguments import EvalArguments
from .cache import FeatureCache, cache_key
from .conditions import Condition, NoisyCopies, content_hashes
from .downstream import Features, train_head
from .report import write
from .tasks import Item, TaskData, fluent_speech_commands, from_datasets, librispeech, read_audio, speech_commands
from .upstream import check_upstream, describe_upstream, load_upstream, parse_upstream, upstream_training_noise

logger = logging.getLogger(__name__)

OFFICIAL = {"ks": "speech_commands_v0.01", "ks_test": "speech_commands_test_set_v0.01",
            "ic": "fluent_speech_commands_dataset", "asr": "LibriSpeech"}


def _source(args: EvalArguments, name: str) -> Path | str:
    given = getattr(args, f"{name}_data")
    if given is not None:
        return given
    if args.data is None:
        raise ValueError(f"no data for {name.replace('_', ' ')}: give --data (a folder holding {OFFICIAL[name]}) "
                         f"or --{name}_data")
    return Path(args.data) / OFFICIAL[name]


def load_task(args: EvalArguments, task: str) -> TaskData:
    """The task's train/dev/test items, from its official folder layout or from a `datasets` source."""
    source = _source(args, task)
    folder = Path(source)
    shared = {"config_name": args.dataset_config, "audio_column": args.audio_column}
    if task == "ks":
        if (folder / "validation_list.txt").is_file():
            return speech_commands(folder, Path(_source(args, "ks_test")), seed=args.seed)
        return from_datasets("ks", str(source), tuple(args.dataset_splits), label_columns=(args.ks_label_column,),
                             **shared)
    if task == "ic":
        if (folder / "data" / "train_data.csv").is_file():
            return fluent_speech_commands(folder)
        return from_datasets("ic", str(source), tuple(args.dataset_splits), label_columns=tuple(args.ic_label_columns),
                             **shared)
    if (folder / args.asr_splits[0]).is_dir():
        return librispeech(folder, tuple(args.asr_splits))
    return from_datasets("asr", str(source), tuple(args.dataset_splits), text_column=args.text_column, **shared)


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


def check_cache_room(cache: FeatureCache, upstream, layer: int | None, jobs: list[tuple[str, list[Item]]]) -> None:
    """Refuse to start features that cannot fit on the cache's disk (float16, every layer unless one is chosen)."""
    frames = 0
    for key, items in jobs:
        if cache.is_complete(key):
            continue
        for item in items:
            samples = item.frames if item.frames >= 0 else (
                sf.info(item.audio["path"]).frames if item.audio.get("path") else SAMPLE_RATE * 10)
            frames += upstream.frames(samples)
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
    """Everything `eval_superb.py` does; returns the results it writes. Every check runs before any features."""
    started = time.time()
    specs = [parse_upstream(spec) for spec in args.upstream]
    names = [name for name, _ in specs]
    if len(set(names)) < len(names):
        raise ValueError(f"upstream names must differ: {names}; name them NAME=PATH")
    for name, spec in specs:
        check_upstream(name, spec, args.trust_remote_code)
    tasks = {task: load_task(args, task) for task in args.tasks}
    banks = {"seen": NoiseBank(args.noise, args.noise_cache_dir)} if args.noise else {}
    if args.unseen_noise:
        banks["unseen"] = NoiseBank(args.unseen_noise, args.noise_cache_dir)
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
        check_cache_room(cache, upstream, layer, [(key, items) for *_, items, key in jobs])
        for task, split, condition, items, key in jobs:

            def audio(item, condition=condition):
                return noisy(read_audio(item), item.key, condition)

            features[name, task, split, condition.name] = cache.ensure(
                key, items, audio, upstream, layer, args.upstream_batch_size,
                label=f"{name}/{task}/{split}/{condition.name}")
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
            identity = _digest({"features": [str(f.features.folder.name) for f in (*splits.values(), *tests.values())],
                                "settings": asdict(settings), "seed": args.seed, "layer_norm": args.layer_norm,
                                "asr_size": args.asr_size, "labels": data.label_names})
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
        "features": {"computed_utterances": cache.computed},
        "seconds": round(time.time() - started, 1),
    }
    for path in write(report, output):
        logger.info("wrote %s", path)
    return report
