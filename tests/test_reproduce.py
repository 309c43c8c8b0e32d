"""benchmarks/reproduce.py end to end with tiny settings: nine students, two seeds, one task, results that add up; the
paired bootstrap against plain references."""

import importlib.util
import json
import statistics
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "benchmarks" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_argv(demo_data: Path, output: Path, *flags: str) -> list[str]:
    """The shipped tiny teacher, corpus and sets, 2 distillation steps, then ``flags``."""
    return ["--data", str(demo_data / "superb_mini"), "--corpus", str(demo_data / "speech"),
            "--teacher", str(demo_data / "tiny_teacher"), "--config", str(ROOT / "configs" / "tiny.yaml"),
            "--output", str(output), "--steps", "2", *flags,
            "--train_flags", "--per_device_train_batch_size", "4", "--max_length", "16000"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, demo_data):
    reproduce = load_reproduce()
    output = tmp_path_factory.mktemp("reproduce")
    argv = tiny_argv(demo_data, output, "--seeds", "0", "1", "--tasks", "ks", "--snrs", "clean", "5", "--head_steps",
                     "ks=6", "--students", *"abcdefghi", "--resamples", "500")
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
    assert saved["steps"] == 2 and len(saved["distillation_seconds"]) == 18
    assert set(saved["evaluation_seconds"]) == {"eval-seed0", "eval-seed1"} and saved["compute_seconds"] > 0
    text = (output / "results.json").read_text()
    assert f"{ROOT}/" not in text and '"demo_data/tiny_teacher"' in text  # paths in the checkout: relative to it
    assert f"{ROOT}/" not in markdown


def test_students_differ_only_in_their_objective_and_views(smoke):
    reproduce, _, argv, _ = smoke
    configs = {name: json.loads((reproduce.student_folder(reproduce.parse(argv), name, 1) / "run_config.json")
                                .read_text()) for name in "abcdefghi"}
    assert configs["a"]["loss"] == "distilhubert" and configs["a"]["data.views"] == "clean"
    assert configs["b"]["loss"] == "distilhubert" and configs["b"]["data.views"] == "setup2"
    assert configs["d"]["weighting"] == "snr" and configs["e"]["lambda_self"] == 0
    assert configs["f"]["correlation_style"] == "frames" and configs["c"]["correlation_style"] == "batch"
    assert configs["g"]["lambda_cross"] == pytest.approx(100 * configs["c"]["lambda_cross"])
    assert configs["g"]["lambda_self"] == pytest.approx(1e5 * configs["c"]["lambda_self"])
    assert configs["h"]["enhancement_weight"] == configs["i"]["enhancement_weight"] == reproduce.ENHANCEMENT_WEIGHT
    def but_the_term(config: dict) -> dict:
        return {k: v for k, v in config.items() if k != "enhancement_weight"}

    assert but_the_term(configs["h"]) == but_the_term(configs["c"])
    assert but_the_term(configs["i"]) == but_the_term(configs["b"])
    differing = {key for key in configs["a"] if len({json.dumps(c[key]) for c in configs.values()}) > 1}
    assert differing == {"loss", "data.views", "weighting", "lambda_cross", "lambda_self", "correlation_style",
                         "enhancement_weight"}
    assert all(c["seed"] == 1 and c["data.noise_sources"] == configs["b"]["data.noise_sources"]
               for c in configs.values())


def test_distil_only_trains_the_missing_students_and_scores_nothing(tmp_path, demo_data):
    reproduce = load_reproduce()
    done = reproduce.main(tiny_argv(demo_data, tmp_path, "--students", "a", "--seeds", "3", "--distil_only"))
    assert list(done["distillation_seconds"]) == ["a-seed3"]
    assert (tmp_path / "work" / "students" / "a-seed3" / "model.safetensors").exists()
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "work" / "eval-seed3").exists()


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


def test_differences_are_the_per_seed_metrics_paired(smoke):
    _, _, _, summary = smoke
    table = summary["differences"]["ks"]
    assert set(table) == {"teacher", "fbank", *"acdefghi"}  # every model but the reference, b
    for model, cells in table.items():
        assert set(cells) == {"clean", "seen@5dB", "unseen@5dB"}, model
        for condition, cell in cells.items():
            expected = statistics.fmean(run["results"]["ks"][model]["test"][condition]
                                        - run["results"]["ks"]["b"]["test"][condition]
                                        for run in summary["runs"].values())
            assert cell["difference"] == pytest.approx(expected, abs=1e-12), (model, condition)
            assert cell["low"] <= cell["high"] and cell["resolved"] == (cell["low"] > 0 or cell["high"] < 0)
    assert "difference against b: L_KD, Setup 2" in (smoke[1] / "results.md").read_text()


def _runs(outcomes: dict[str, np.ndarray], keys: list[str]) -> dict[int, dict]:
    """Evaluation reports of len(seeds) seeds holding only what paired_differences reads."""
    seeds = next(iter(outcomes.values())).shape[0]
    return {seed: {"test_keys": {"asr" if values.ndim == 3 else "ks": keys for values in outcomes.values()},
                   "results": {"asr" if next(iter(outcomes.values())).ndim == 3 else "ks": {
                       name: {"test_items": {"clean": values[seed].tolist()}} for name, values in outcomes.items()}}}
            for seed in range(seeds)}


def _plain_bootstrap(ours, theirs, words, resamples, rng) -> tuple[float, float]:
    """Index resampling, a loop per draw: seeds, then items, each with replacement."""
    seeds, items = ours.shape
    draws = []
    for _ in range(resamples):
        chosen, picked = rng.integers(0, seeds, seeds), rng.integers(0, items, items)
        draws.append(np.mean([(ours[s, picked].sum() - theirs[s, picked].sum()) / words[picked].sum()
                              for s in chosen]))
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


def test_paired_bootstrap_of_accuracy_matches_a_plain_one():
    reproduce, rng = load_reproduce(), np.random.default_rng(3)
    reference = rng.integers(0, 2, (3, 80))  # (S, N) right or wrong
    better = np.where(rng.random((3, 80)) < 0.3, 1, reference)  # puts right about 30 % of the items
    runs = _runs({"b": reference, "x": better, "same": reference.copy()}, [f"k{i}" for i in range(80)])
    table = reproduce.paired_differences(runs, "b", 20000)["ks"]
    assert table["x"]["clean"]["difference"] == pytest.approx((better - reference).mean(), abs=1e-12)
    low, high = _plain_bootstrap(better, reference, np.ones(80), 20000, rng)
    assert table["x"]["clean"]["low"] == pytest.approx(low, abs=0.01)
    assert table["x"]["clean"]["high"] == pytest.approx(high, abs=0.01)
    assert table["x"]["clean"]["resolved"] and table["x"]["clean"]["low"] > 0
    assert table["same"]["clean"] == {"difference": 0.0, "low": 0.0, "high": 0.0, "resolved": False}
    runs[1]["test_keys"]["ks"] = runs[1]["test_keys"]["ks"][::-1]
    with pytest.raises(ValueError, match="different test items"):
        reproduce.paired_differences(runs, "b", 10)
    with pytest.raises(ValueError, match="--reference z"):
        reproduce.paired_differences(_runs({"b": reference}, [f"k{i}" for i in range(80)]), "z", 10)


def test_paired_bootstrap_of_wer_weights_items_by_their_words():
    reproduce, rng = load_reproduce(), np.random.default_rng(4)
    words = rng.integers(1, 9, 50)  # (N,) reference words per utterance
    errors_b = rng.binomial(words, 0.4, (2, 50))  # (S, N)
    errors_x = rng.binomial(words, 0.5, (2, 50))
    pack = lambda errors: np.stack([errors, np.broadcast_to(words, errors.shape)], axis=-1)  # noqa: E731
    table = reproduce.paired_differences(_runs({"b": pack(errors_b), "x": pack(errors_x)},
                                               [f"u{i}" for i in range(50)]), "b", 20000)["asr"]
    cell = table["x"]["clean"]
    expected = np.mean([(errors_x[s].sum() - errors_b[s].sum()) / words.sum() for s in range(2)])
    assert cell["difference"] == pytest.approx(expected, abs=1e-12)
    low, high = _plain_bootstrap(errors_x, errors_b, words, 20000, rng)
    assert cell["low"] == pytest.approx(low, abs=0.01) and cell["high"] == pytest.approx(high, abs=0.01)
