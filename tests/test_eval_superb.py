"""eval_superb.py end to end on the shipped SUPERB-mini sets: outputs, cache reuse, resume, errors."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hf_corrdistill.superb import runner
from hf_corrdistill.superb.arguments import parse
from hf_corrdistill.superb.downstream import Features, HeadSettings, train_head
from hf_corrdistill.superb.eval_cli import main

ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / "demo_data" / "superb_mini"
pytestmark = pytest.mark.slow


def _argv(output: Path, *extra: str, upstreams=("teacher=demo_data/tiny_teacher", "fbank")) -> list[str]:
    argv = [f"--upstream={u}" for u in upstreams]
    return argv + ["--tasks", "ks", "ic", "asr", "--data", str(MINI), "--noise", str(MINI / "noise" / "test"),
                   "--unseen_noise", str(MINI / "noise" / "unseen"), "--snrs", "clean", "10", "0", "--quick",
                   "--steps", "ks=40", "ic=40", "asr=6", "--eval_steps", "20", "--output_dir", str(output), *extra]


class _Recorder:
    """Wraps an upstream and records a digest of every waveform it is given."""

    def __init__(self, upstream, log: list):
        self.upstream, self.log = upstream, log

    def __getattr__(self, name):
        return getattr(self.upstream, name)

    def __call__(self, waves):
        self.log += [hashlib.sha1(w.tobytes()).hexdigest() for w in waves]
        return self.upstream(waves)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, demo_data):
    output = tmp_path_factory.mktemp("superb")
    heard: dict[str, list] = {}
    original = runner.load_upstream

    def recording(name, spec, device, trust_remote_code=False):
        return _Recorder(original(name, spec, device, trust_remote_code), heard.setdefault(name, []))

    runner.load_upstream = recording
    try:
        results = runner.run(parse(_argv(output)))
    finally:
        runner.load_upstream = original
    return output, results, heard


def test_writes_every_result_table_and_plot(first_run):
    output, results, _ = first_run
    for name in ("results.json", "results.md", "ks.png", "ic.png", "asr.png"):
        assert (output / name).stat().st_size > 0, name
    saved = json.loads((output / "results.json").read_text())
    conditions = ["clean", "seen@10dB", "seen@0dB", "unseen@10dB", "unseen@0dB"]
    assert saved["conditions"] == conditions
    for task, metric in (("ks", "accuracy"), ("ic", "accuracy"), ("asr", "wer")):
        for upstream in ("teacher", "fbank"):
            result = saved["results"][task][upstream]
            assert result["metric"] == metric and sorted(result["test"]) == sorted(conditions)
            assert all(0 <= value <= (1 if metric == "accuracy" else 10) for value in result["test"].values())
    assert saved["config"]["seed"] == 0 and saved["seeds"]["noise"] == 0
    markdown = (output / "results.md").read_text()
    assert "| teacher |" in markdown and "unseen@0dB" in markdown
    assert "test_items" not in markdown and "[" not in markdown  # per-item outcomes only in results.json


def test_per_item_outcomes_in_test_order(first_run):
    saved = json.loads((first_run[0] / "results.json").read_text())
    args = parse(_argv(first_run[0]))
    for task in ("ks", "ic", "asr"):
        keys = saved["test_keys"][task]
        assert keys == [item.key for item in runner.load_task(args, task).splits["test"]]
        assert len(set(keys)) == len(keys)
        for upstream in ("teacher", "fbank"):
            result = saved["results"][task][upstream]
            assert sorted(result["test_items"]) == sorted(result["test"]) and result["sizes"]["test"] == len(keys)
            for condition, outcomes in result["test_items"].items():
                assert len(outcomes) == len(keys)
                if task == "asr":  # [word errors, reference words] per utterance
                    assert sum(e for e, _ in outcomes) / sum(w for _, w in outcomes) == result["test"][condition]
                else:  # 1 when every output is right
                    assert set(outcomes) <= {0, 1}
                    assert sum(outcomes) / len(outcomes) == result["test"][condition]


def test_a_head_written_without_per_item_outcomes_is_trained_again(tmp_path, monkeypatch):
    argv = ["--upstream=fbank", "--tasks", "ks", "--data", str(MINI), "--snrs", "clean", "--quick", "--steps", "ks=4",
            "--eval_steps", "2", "--output_dir", str(tmp_path)]
    described, trained = [], []
    digest = runner._digest
    monkeypatch.setattr(runner, "_digest", lambda value: described.append(value) or digest(value))
    monkeypatch.setattr(runner, "train_head", lambda *a, **k: trained.append(1) or train_head(*a, **k))
    first = runner.run(parse(argv))["results"]["ks"]["fbank"]
    assert trained == [1] and len(first["test_items"]["clean"]) == first["sizes"]["test"]
    # what the head file looked like before outcomes were recorded: no "records" in the identity, no test_items
    head = tmp_path / "heads" / "ks-fbank.json"
    before = {key: value for key, value in described[-1].items() if key != "records"}
    result = {key: value for key, value in first.items() if key != "test_items"}
    head.write_text(json.dumps({"identity": digest(before), "result": {**result, "test": {"clean": -1.0}}}))
    again = runner.run(parse(argv))["results"]["ks"]["fbank"]
    assert trained == [1, 1] and again == first
    assert json.loads(head.read_text())["result"]["test_items"] == first["test_items"]
    assert runner.run(parse(argv))["results"]["ks"]["fbank"] == first and trained == [1, 1]  # now reused


def test_weighted_sum_starts_uniform_and_is_reported(first_run):
    saved = json.loads((first_run[0] / "results.json").read_text())
    weights = saved["results"]["ks"]["teacher"]["layer_weights"]
    assert weights["initial"] == pytest.approx([0.2] * 5)  # the demo teacher: 4 layers + the encoder input
    assert sum(weights["final"]) == pytest.approx(1.0) and weights["final"] != weights["initial"]
    assert "layer_weights" not in saved["results"]["ks"]["fbank"]  # a single "layer": nothing to weigh


def test_every_upstream_hears_the_same_noisy_audio(first_run):
    _, _, heard = first_run
    assert sorted(heard["teacher"]) == sorted(heard["fbank"])
    assert len(set(heard["teacher"])) > 100  # clean and noisy copies of three tasks' splits


def test_second_run_computes_no_features(first_run):
    output, results, _ = first_run
    again = runner.run(parse(_argv(output)))
    assert again["features"]["computed_utterances"] == 0
    assert again["results"] == results["results"]


def test_interrupted_run_resumes_from_its_cache(first_run, tmp_path, monkeypatch):
    _, results, _ = first_run
    calls = {"n": 0}
    original = runner.load_upstream

    def failing(name, spec, device, trust_remote_code=False):
        upstream = original(name, spec, device, trust_remote_code)
        if name != "fbank":
            return upstream

        class Dies(_Recorder):
            def __call__(self, waves):
                calls["n"] += 1
                if calls["n"] > 10:
                    raise KeyboardInterrupt("killed")
                return self.upstream(waves)

        return Dies(upstream, [])

    monkeypatch.setattr(runner, "load_upstream", failing)
    with pytest.raises(KeyboardInterrupt):
        runner.run(parse(_argv(tmp_path)))
    monkeypatch.setattr(runner, "load_upstream", original)
    resumed = runner.run(parse(_argv(tmp_path)))
    assert resumed["results"] == results["results"]
    complete = sum(1 for _ in (tmp_path / "cache").glob("*/complete.json"))
    assert complete == 2 * 3 * 7  # upstreams x tasks x (train, dev, 5 test conditions)
    assert 0 < resumed["features"]["computed_utterances"] < results["features"]["computed_utterances"]


def test_a_head_fits_the_keyword_training_set(first_run):
    """Sanity: on the KS-mini training set, a head on the teacher's cached features reaches ~100 %."""
    args = parse(_argv(first_run[0]))
    data = runner.load_task(args, "ks")
    folder = next(p.parent for p in (first_run[0] / "cache").glob("*/complete.json")
                  if json.loads(p.read_text())["label"] == "teacher/ks/train/clean")
    from hf_corrdistill.superb.cache import CachedFeatures

    train = Features(CachedFeatures(folder, len(data.splits["train"])), data.splits["train"])
    result = train_head(data, train, train, {"train": train}, HeadSettings(300, 100, 32, 1e-3), num_layers=5, dim=64)
    assert result["test"]["train"] >= 0.95


def _exit_message(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    return capsys.readouterr().err


def test_corrupt_upstream_is_one_clear_error(tmp_path, capsys, demo_data):
    broken = tmp_path / "broken"
    shutil.copytree(demo_data / "tiny_teacher", broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    message = _exit_message(["--upstream", "fbank", "--upstream", str(broken), "--tasks", "ks", "--data", str(MINI),
                             "--snrs", "clean", "--output_dir", str(tmp_path / "out")], capsys)
    assert "upstream broken" in message and str(broken) in message
    assert not list(tmp_path.glob("out/cache/*/complete.json"))  # found before the first upstream's features
    (broken / "config.json").unlink()
    assert "no config.json" in _exit_message(["--upstream", str(broken), "--tasks", "ks", "--data", str(MINI),
                                              "--snrs", "clean", "--output_dir", str(tmp_path / "o")], capsys)


def test_missing_split_is_one_clear_error(tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(MINI / "LibriSpeech", data / "LibriSpeech")
    shutil.rmtree(data / "LibriSpeech" / "dev-clean")
    message = _exit_message(["--upstream", "fbank", "--tasks", "asr", "--data", str(data), "--snrs", "clean",
                             "--output_dir", str(tmp_path / "out")], capsys)
    assert "dev-clean" in message and "not found" in message
    message = _exit_message(["--upstream", "fbank", "--tasks", "ic", "--data", str(data), "--snrs", "clean",
                             "--output_dir", str(tmp_path / "out")], capsys)
    assert "fluent_speech_commands_dataset" in message


def test_test_noise_heard_in_distillation_is_refused(tmp_path, capsys, demo_data):
    student = tmp_path / "student"
    shutil.copytree(demo_data / "tiny_teacher", student)
    noise = tmp_path / "noise"
    shutil.copytree(MINI / "noise" / "test", noise)
    (student / "run_config.json").write_text(json.dumps({"data.noise_sources": [str(noise)]}))
    message = _exit_message(["--upstream", str(student), "--tasks", "ks", "--data", str(MINI), "--noise",
                             str(MINI / "noise" / "test"), "--snrs", "clean", "10", "--output_dir",
                             str(tmp_path / "out")], capsys)
    assert "was used to distil upstream student" in message


def test_the_script_runs(tmp_path):
    """The documented entry point, in a fresh process (clean condition, a few steps)."""
    result = subprocess.run(
        [sys.executable, "eval_superb.py", "--upstream", "fbank", "--tasks", "ks", "--data", str(MINI), "--snrs",
         "clean", "--steps", "5", "--output_dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    result = json.loads((tmp_path / "results.json").read_text())["results"]["ks"]["fbank"]
    assert result["settings"]["steps"] == 5 and 0 <= result["test"]["clean"] <= 1


def test_a_cache_that_cannot_fit_fails_before_any_feature(tmp_path, capsys, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(runner.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    message = _exit_message(["--upstream", "teacher=demo_data/tiny_teacher", "--tasks", "ks", "--data", str(MINI),
                             "--snrs", "clean", "--output_dir", str(tmp_path)], capsys)
    assert "feature cache of upstream teacher needs about" in message and "--layer last" in message
    assert not list((tmp_path / "cache").glob("*"))


def test_one_chosen_layer(tmp_path):
    results = runner.run(parse(["--upstream", "teacher=demo_data/tiny_teacher", "--tasks", "ks", "--data", str(MINI),
                                "--snrs", "clean", "--layer", "last", "--steps", "5", "--output_dir", str(tmp_path)]))
    assert results["upstreams"]["teacher"]["layer"] == 4 and "layer_weights" not in results["results"]["ks"]["teacher"]
    cached = next((tmp_path / "cache").glob("*/shard-00000.safetensors"))
    from safetensors import safe_open

    with safe_open(str(cached), framework="pt") as shard:
        assert shard.get_tensor("0").shape[0] == 1 and shard.get_tensor("0").dtype.is_floating_point


def test_tasks_from_datasets_sources(tmp_path):
    """Each task read from a `save_to_disk` DatasetDict (audio + labels / text, train/validation/test splits)."""
    import datasets

    folders = parse(["--upstream", "fbank", "--data", str(MINI), "--snrs", "clean"])
    official = {task: runner.load_task(folders, task) for task in ("ks", "ic", "asr")}
    for task, data in official.items():
        splits = {}
        for split, name in (("train", "train"), ("dev", "validation"), ("test", "test")):
            items = [i for i in data.splits[split] if i.frames < 0]  # the silence crops are cut by the KS loader
            rows = {"audio": [{"path": i.audio["path"], "bytes": None} for i in items]}
            if task == "ks":
                rows["label"] = [data.label_names[0][i.labels[0]] for i in items]
            elif task == "ic":
                for k, column in enumerate(("action", "object", "location")):
                    rows[column] = [data.label_names[k][i.labels[k]] for i in items]
            else:
                rows["text"] = [i.text.lower() for i in items]
            splits[name] = datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio(decode=False))
        datasets.DatasetDict(splits).save_to_disk(tmp_path / task)
    args = parse(["--upstream", "fbank", "--ks_data", str(tmp_path / "ks"), "--ic_data", str(tmp_path / "ic"),
                  "--asr_data", str(tmp_path / "asr"), "--snrs", "clean"])
    for task, data in official.items():
        loaded = runner.load_task(args, task)
        assert loaded.label_names == data.label_names
        for split in ("train", "dev", "test"):
            expected = [i for i in data.splits[split] if i.frames < 0]
            assert [i.labels for i in loaded.splits[split]] == [i.labels for i in expected]
            assert [i.text for i in loaded.splits[split]] == [i.text if task == "asr" else "" for i in expected]
