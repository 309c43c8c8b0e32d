"""The SUPERB task registry: every module reads its tasks from it, and it stays light to import."""

import ast
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from hf_corrdistill.superb import registry, runner
from hf_corrdistill.superb.arguments import TASKS, EvalArguments, parse
from hf_corrdistill.superb.registry import HeadSettings, TaskSpec
from hf_corrdistill.superb.report import TITLES

ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / "demo_data" / "superb_mini"


def test_the_registry_imports_only_the_standard_library():
    tree = ast.parse(Path(registry.__file__).read_text())
    top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    modules = [alias.name for node in top_level if isinstance(node, ast.Import) for alias in node.names]
    modules += [node.module for node in top_level if isinstance(node, ast.ImportFrom)]
    assert all(node.level == 0 for node in top_level if isinstance(node, ast.ImportFrom))
    assert modules and all(name.split(".")[0] in sys.stdlib_module_names for name in modules), modules


def test_every_task_comes_from_the_registry():
    assert TASKS == tuple(registry.TASKS) == ("ks", "ic", "asr")
    assert TITLES == {name: spec.title for name, spec in registry.TASKS.items()}
    flags = {f.name for f in fields(EvalArguments)}
    for spec in registry.TASKS.values():
        assert {option.name for option in (*spec.data, *spec.options)} <= flags
        assert spec.data[0].folder and set(spec.profiles) == set(registry.PROFILE_NAMES)
    args = parse(["--upstream", "fbank", "--snrs", "clean", "--quick"])
    assert {task: s.steps for task, s in args.head_settings.items()} == {"ks": 600, "ic": 600, "asr": 300}
    assert args.public()["ic_label_columns"] == ["action", "object", "location"]
    assert args.public()["asr_splits"] == ["train-clean-100", "dev-clean", "test-clean"]
    with pytest.raises(ValueError, match="--asr_splits and --dataset_splits take three names"):
        parse(["--upstream", "fbank", "--snrs", "clean", "--asr_splits", "a", "b"])


def test_hub_task_types_and_names():
    assert registry.hub_task("ks") == ("audio-classification", "Keyword spotting (SUPERB KS protocol)")
    assert registry.hub_task("ic") == ("audio-classification", "Intent classification (SUPERB IC protocol)")
    assert registry.hub_task("asr") == ("automatic-speech-recognition", "Speech recognition (SUPERB ASR protocol)")
    assert registry.hub_task("sid") is None


def test_official_layouts_are_recognised_and_loaded():
    args = parse(["--upstream", "fbank", "--data", str(MINI), "--snrs", "clean"])
    for name, spec in registry.TASKS.items():
        folder = MINI / spec.data[0].folder
        assert spec.is_official(folder, args) and not spec.is_official(MINI, args)
        data = runner.load_task(args, name)
        assert data.name == name and all(data.splits[split] for split in ("train", "dev", "test"))
        assert bool(data.label_names) == (spec.head == "utterance")
    assert registry.TASKS["ks"].sampler == "class_balanced"
    assert runner.load_task(args, "ks").label_names == (registry.KS_CLASSES,)


def test_a_missing_folder_names_its_flag():
    args = parse(["--upstream", "fbank", "--ks_data", str(MINI / "speech_commands_v0.01"), "--snrs", "clean"])
    with pytest.raises(ValueError, match=r"no data for ks test: .*speech_commands_test_set_v0.01\) or --ks_test_data"):
        runner.load_task(args, "ks")


def test_a_malformed_entry_is_refused():
    ks = registry.TASKS["ks"]
    with pytest.raises(ValueError, match="head in"):
        TaskSpec(**{**{f.name: getattr(ks, f.name) for f in fields(ks)}, "head": "seq2seq"})
    with pytest.raises(ValueError, match="profiles"):
        TaskSpec(**{**{f.name: getattr(ks, f.name) for f in fields(ks)}, "profiles": {"superb": HeadSettings(1, 1)}})
