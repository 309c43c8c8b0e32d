"""The settings layer: loss fields from the registry, renamed settings, run records, and where each check lives."""

import dataclasses
import json
from types import SimpleNamespace

import pytest
from conftest import ROOT

from hf_corrdistill import CorrDistillConfig
from hf_corrdistill.losses import LOSSES, loss_field_defaults
from hf_corrdistill.training.arguments import (
    OPTIMISATION_FIELDS,
    RENAMED_FIELDS,
    ConfigError,
    DataArguments,
    DistillationConfig,
)
from hf_corrdistill.training.run_record import RUN_CONFIG, check_output_dir, read_run_record, run_identity
from hf_corrdistill.training.train_cli import main, parse_args, preview_args, read_config

TINY_CONFIG = str(ROOT / "configs" / "tiny.yaml")

# run_config.json as the version before the renames wrote it for configs/tiny.yaml, with the four renamed settings
# away from their defaults (a key left untranslated would then differ).
OLD_RECORD = {
    "adam_beta1": 0.9, "adam_beta2": 0.98, "adam_epsilon": 1e-06, "bf16": False, "correlation_style": "batch",
    "correlation_sync": "local", "cosine_weight": 1.0, "cross_scale": 100.0, "data.audio_column": "audio",
    "data.clean_probability": 0.0, "data.data_config_name": None, "data.distortion": "huang2022",
    "data.impulse_response_dir": None, "data.length_group_batches": 32, "data.max_eval_samples": None,
    "data.max_length": 48000, "data.min_length": 8000, "data.noise_cache_dir": None,
    "data.noise_sources": ["demo_data/noise/train"], "data.shuffle_buffer": 1000, "data.snr_max": 18,
    "data.snr_min": 12, "data.streaming": False, "data.train_data": "demo_data/speech", "data.train_split": "train",
    "data.views": "setup2", "diag_scale": 10.0, "fp16": False, "gradient_accumulation_steps": 1,
    "init_from_teacher": True, "lambda_cross": 5e-05, "lambda_self": 5e-06, "learning_rate": 0.0002,
    "loss": "correlation", "lr_scheduler_type": "linear", "max_grad_norm": 5.0, "per_device_train_batch_size": 8,
    "pool_positions": 50, "pred_layers": [2, 3, 4], "seed": 0, "self_scale": 50000.0, "snr_high": 21.0,
    "snr_low": 11.0, "student_config": None,
    "student_overrides": {"conv_dim": [64, 64, 64, 64, 64, 64, 64], "hidden_size": 64, "intermediate_size": 256,
                          "num_attention_heads": 4, "num_conv_pos_embedding_groups": 4,
                          "num_conv_pos_embeddings": 32},
    "teacher_attention_mask": True, "teacher_dtype": "float32", "teacher_name_or_path": "demo_data/tiny_teacher",
    "warmup_steps": 8, "weight_decay": 0.01, "weighting": "fixed",
}
SAME_RUN = ["--weighting_snr_low", "11", "--weighting_snr_high", "21", "--view_snr_min", "12", "--view_snr_max", "18"]


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs name demo_data/ relative to the repository


def _field(name):
    return next(f for f in dataclasses.fields(DistillationConfig) if f.name == name)


# ---------------------------------------------------------------- the loss registry is the one list
# The defaults as docs/method.md's table of constants states them, written here rather than read from the code.
DOCUMENTED_DEFAULTS = {
    "correlation_style": "batch", "pool_positions": 150, "lambda_cross": 5e-5, "lambda_self": 5e-6,
    "diag_scale": 10.0, "cross_scale": 100.0, "self_scale": 50000.0, "cosine_weight": 1.0, "weighting": "fixed",
    "weighting_snr_low": 10.0, "weighting_snr_high": 20.0,
}


def test_loss_choices_and_field_defaults_come_from_the_registry():
    assert _field("loss").type.__args__ == tuple(LOSSES)
    assert loss_field_defaults() == DOCUMENTED_DEFAULTS  # the functions' defaults are the documented constants
    for name, default in DOCUMENTED_DEFAULTS.items():  # and the config's fields take them
        assert _field(name).default == default, name
    assert not hasattr(DistillationConfig, "loss_kwargs")  # the trainer asks LOSSES[loss].kwargs(config)


def test_each_loss_field_reaches_its_own_keyword():
    """Every field given a distinct value arrives under the keyword of the same meaning (a swap is caught)."""
    keyword = {"correlation_style": "style", "weighting_snr_low": "snr_low", "weighting_snr_high": "snr_high"}
    for name, spec in LOSSES.items():
        values = {field: f"value of {field}" for field in spec.fields}
        expected = {keyword.get(field, field): value for field, value in values.items()}
        assert spec.kwargs(SimpleNamespace(**values)) == expected, name


def test_batches_of_one_are_refused_only_for_losses_that_need_pairs(tmp_path):
    with pytest.raises(ConfigError, match="batch_size >= 2"):
        parse_args([TINY_CONFIG, "--output_dir", str(tmp_path), "--per_device_train_batch_size", "1"])
    args, _ = parse_args([TINY_CONFIG, "--output_dir", str(tmp_path), "--per_device_train_batch_size", "1",
                          "--loss", "distilhubert"])
    assert not LOSSES[args.loss].needs_pairs and args.per_device_train_batch_size == 1


# ---------------------------------------------------------------- renamed settings
@pytest.mark.parametrize("old", sorted(RENAMED_FIELDS))
def test_an_old_name_as_a_flag_fails_with_one_line(old, tmp_path):
    with pytest.raises(SystemExit) as failure:
        main([TINY_CONFIG, "--output_dir", str(tmp_path), f"--{old}", "12"])
    assert str(failure.value) == f"configuration error: {old} was renamed {RENAMED_FIELDS[old]}"
    with pytest.raises(SystemExit, match=f"^configuration error: {old} was renamed {RENAMED_FIELDS[old]}$"):
        main([TINY_CONFIG, "--output_dir", str(tmp_path), f"--{old}=12"])


def test_an_old_name_in_a_yaml_file_fails_with_one_line(tmp_path):
    config = tmp_path / "old.yaml"
    config.write_text((ROOT / "configs" / "tiny.yaml").read_text() + "snr_low: 5\n")
    with pytest.raises(SystemExit) as failure:
        main([str(config), "--output_dir", str(tmp_path / "run")])
    assert str(failure.value) == "configuration error: snr_low was renamed weighting_snr_low"
    assert not (tmp_path / "run").exists()


def test_a_record_of_the_previous_version_is_the_same_run(tmp_path):
    (tmp_path / RUN_CONFIG).write_text(json.dumps(OLD_RECORD, indent=2, sort_keys=True))
    settings, data = preview_args(read_config([TINY_CONFIG, "--output_dir", str(tmp_path), *SAME_RUN]))
    assert check_output_dir(settings, data) is None  # the same run, nothing to resume
    added = {"enhancement_weight", "enhancement_bins"}  # settings added since that version, read as their defaults
    identity = run_identity(settings, data)
    assert read_run_record(tmp_path / RUN_CONFIG) == {k: v for k, v in identity.items() if k not in added}
    for flag, value in (("--weighting_snr_low", "12"), ("--view_snr_max", "19")):
        changed = [*SAME_RUN, flag, value]
        settings, data = preview_args(read_config([TINY_CONFIG, "--output_dir", str(tmp_path), *changed]))
        with pytest.raises(ConfigError, match=f"differs in {flag.removeprefix('--').replace('view', 'data.view')}"):
            check_output_dir(settings, data)


def test_read_run_record_names_settings_as_this_version_does(tmp_path):
    record = tmp_path / RUN_CONFIG
    record.write_text(json.dumps({"snr_low": 1.0, "data.snr_max": 9, "seed": 3, "weighting_snr_high": 30.0}))
    assert read_run_record(record) == {"weighting_snr_low": 1.0, "data.view_snr_max": 9, "seed": 3,
                                       "weighting_snr_high": 30.0}
    record.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a run record"):
        read_run_record(record)
    with pytest.raises(ConfigError, match="cannot read"):
        check_output_dir(*preview_args(read_config([TINY_CONFIG, "--output_dir", str(tmp_path)])))


def test_the_run_identity_holds_every_optimisation_field(tmp_path):
    identity = run_identity(*parse_args([TINY_CONFIG, "--output_dir", str(tmp_path)]))
    assert set(OPTIMISATION_FIELDS) <= set(identity)
    assert {"weighting_snr_low", "weighting_snr_high", "data.view_snr_min", "data.view_snr_max"} <= set(identity)
    assert not set(RENAMED_FIELDS) & {key.removeprefix("data.") for key in identity}


# ---------------------------------------------------------------- each check in one place
@pytest.mark.parametrize("value", ["none", "None", "NONE", ""])
def test_eval_split_none_means_no_evaluation(value, tmp_path):
    args, data = parse_args([TINY_CONFIG, "--output_dir", str(tmp_path), "--eval_split", value])
    assert data.eval_split is None and args.eval_strategy == "no"  # tiny.yaml says "steps"


def test_teacher_layers_start_at_1_for_the_arguments_and_the_student_config(tmp_path):
    with pytest.raises(ConfigError, match="pred_layers must be .* >= 1"):
        parse_args([TINY_CONFIG, "--output_dir", str(tmp_path), "--pred_layers", "0", "2"])
    with pytest.raises(ValueError, match="pred_layer_ids must be .* >= 1"):
        CorrDistillConfig(pred_layer_ids=(0, 4))
    assert CorrDistillConfig(pred_layer_ids=(1, 4)).pred_layer_ids == (1, 4)


def test_the_views_snr_range_is_checked_with_the_presets_bounds():
    with pytest.raises(ValueError, match=r"inverted SNR range: view_snr_min \(25\) > view_snr_max \(19\)"):
        DataArguments(train_data="x", views="setup1", noise_sources=["n"], view_snr_min=25)
    assert DataArguments(train_data="x", distortion="robustdistiller", view_snr_max=5).view_snr_range() == (0, 5)


@pytest.mark.parametrize("extra,message", [
    (["--weighting", "snr", "--views", "clean"], "needs the SNRs of distorted views"),
    (["--weighting", "snr-reference", "--view_snr_min", "5"], "raise view_snr_min to 10"),
    (["--views", "setup3"], "invalid choice"),
])
def test_settings_mistakes_fail_before_the_teacher_is_read(extra, message, tmp_path):
    """preview_args runs every check of ours; the teacher named here does not exist, and is never looked at."""
    with pytest.raises(ConfigError, match=message):
        preview_args(read_config([TINY_CONFIG, "--output_dir", str(tmp_path), "--teacher_name_or_path",
                                  str(tmp_path / "no-teacher"), *extra]))


def test_yaml_choices_are_checked_like_flags(tmp_path):
    config = tmp_path / "bad.yaml"
    for line, message in (("loss: l2", "loss must be one of"), ("views: setup3", "views must be one of")):
        config.write_text(f"teacher_name_or_path: t\ntrain_data: d\n{line}\n")
        with pytest.raises(ConfigError, match=message):
            preview_args(read_config([str(config)]))
