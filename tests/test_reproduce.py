"""benchmarks/reproduce.py end to end with tiny settings: seven students, two seeds, one task, results that add up."""

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "benchmarks" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, demo_data):
    reproduce = load_reproduce()
    output = tmp_path_factory.mktemp("reproduce")
    argv = ["--data", str(demo_data / "superb_mini"), "--corpus", str(demo_data / "speech"),
            "--teacher", str(demo_data / "tiny_teacher"), "--config", str(ROOT / "configs" / "tiny.yaml"),
            "--output", str(output), "--seeds", "0", "1", "--steps", "2", "--tasks", "ks", "--snrs", "clean", "5",
            "--head_steps", "ks=6", "--train_flags", "--per_device_train_batch_size", "4", "--max_length", "16000"]
    return reproduce, output, argv, reproduce.main(argv)


def test_every_student_seed_and_condition_is_scored(smoke):
    reproduce, output, _, summary = smoke
    assert {p.name for p in output.iterdir()} >= {"results.json", "results.md", "results.png", "work"}
    saved = json.loads((output / "results.json").read_text())
    table = saved["results"]["ks"]
    assert set(table) == {"teacher", "fbank", *reproduce.STUDENTS}
    for model, cells in table.items():
        assert set(cells) == {"dev", "clean", "seen@5dB", "unseen@5dB"}, model
        for cell in cells.values():
            assert len(cell["values"]) == 2  # one per seed
            assert cell["mean"] == pytest.approx(statistics.fmean(cell["values"]))
            assert cell["std"] == pytest.approx(statistics.stdev(cell["values"]))
    # the table is the per-seed eval_superb results, regrouped
    for seed, run in saved["runs"].items():
        for model, result in run["results"]["ks"].items():
            assert table[model]["clean"]["values"][saved["seeds"].index(int(seed))] == result["test"]["clean"]
    markdown = (output / "results.md").read_text()
    assert "e: L_CL no self-corr., Setup 2" in markdown and "+-" in markdown
    assert saved["steps"] == 2 and len(saved["distillation_seconds"]) == 14
    assert set(saved["evaluation_seconds"]) == {"eval-seed0", "eval-seed1"} and saved["compute_seconds"] > 0
    text = (output / "results.json").read_text()
    assert f"{ROOT}/" not in text and '"demo_data/tiny_teacher"' in text  # paths in the checkout: relative to it


def test_students_differ_only_in_their_objective_and_views(smoke):
    _, output, _, _ = smoke
    configs = {name: json.loads((output / "work" / "students" / f"{name}-seed1" / "run_config.json").read_text())
               for name in "abcdefg"}
    assert configs["a"]["loss"] == "distilhubert" and configs["a"]["data.views"] == "clean"
    assert configs["b"]["loss"] == "distilhubert" and configs["b"]["data.views"] == "setup2"
    assert configs["d"]["weighting"] == "snr" and configs["e"]["lambda_self"] == 0
    assert configs["f"]["correlation_style"] == "frames" and configs["c"]["correlation_style"] == "batch"
    assert configs["g"]["lambda_cross"] == pytest.approx(100 * configs["c"]["lambda_cross"])
    assert configs["g"]["lambda_self"] == pytest.approx(1e5 * configs["c"]["lambda_self"])
    differing = {key for key in configs["a"] if len({json.dumps(c[key]) for c in configs.values()}) > 1}
    assert differing == {"loss", "data.views", "weighting", "lambda_cross", "lambda_self", "correlation_style"}
    assert all(c["seed"] == 1 and c["data.noise_sources"] == configs["b"]["data.noise_sources"]
               for c in configs.values())


def test_a_second_run_reuses_students_and_heads(smoke, caplog):
    reproduce, output, argv, first = smoke
    weights = output / "work" / "students" / "c-seed0" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    with caplog.at_level("INFO"):
        again = reproduce.main(argv)
    assert weights.stat().st_mtime_ns == stamp
    reused = sum("reusing" in r.getMessage() for r in caplog.records if r.name == "reproduce")
    assert reused == 2 * len(reproduce.STUDENTS)  # every student of both seeds
    assert again["results"] == first["results"]
    assert again["evaluation_seconds"]["eval-seed0"] > first["evaluation_seconds"]["eval-seed0"]  # summed over runs
