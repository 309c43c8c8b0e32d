"""train.py end to end: configuration parsing, the Trainer's loss, accumulation, precision, resume and DDP."""

import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from conftest import ROOT, remote_hidden_states, tiny_student_config, tiny_teacher
from safetensors import safe_open
from transformers import AutoModel

from hf_corrdistill import CorrDistillForPreTraining
from hf_corrdistill.data.crops import AudioCollator, CroppedAudioDataset
from hf_corrdistill.data.sources import AudioDecodeError, load_audio_source
from hf_corrdistill.losses import correlation_loss
from hf_corrdistill.training.arguments import DistillationConfig
from hf_corrdistill.training.run_record import complete_checkpoint
from hf_corrdistill.training.teacher import teacher_targets
from hf_corrdistill.training.train_cli import ConfigError, _warn_single_cpu_process, main, parse_args
from hf_corrdistill.training.trainer import DistillationTrainer

TINY_CONFIG = str(ROOT / "configs" / "tiny.yaml")
TERMS = ("on_diagonal", "off_diagonal_cross", "off_diagonal_self", "cosine")
# Subprocesses that must not reach the Hub: its endpoint is a closed local port (refused at once, no DNS), so they
# behave alike with or without internet.
NO_HUB_ENV = {**{k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}, "HF_ENDPOINT": "http://127.0.0.1:9"}


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the demo config names demo_data/ relative to the repository


# ---------------------------------------------------------------- configuration
def test_yaml_gives_defaults_and_flags_override(tmp_path, demo_data):
    args, data = parse_args([TINY_CONFIG, "--lambda_cross", "0.001", "--output_dir", str(tmp_path),
                             "--student_overrides", '{"hidden_size": 64, "num_attention_heads": 8}'])
    assert args.lambda_cross == 0.001
    assert args.pool_positions == 50  # from the YAML
    assert args.lambda_self == 5e-6  # the loss function's own default
    assert args.student_overrides == {"hidden_size": 64, "num_attention_heads": 8}
    assert data.train_data == "demo_data/speech"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--no_such_flag", "1"], "unknown argument"),
        (["--weighting", "auto"], "weighting"),
        (["--weighting_snr_low", "25"], "weighting_snr_high"),
        (["--snr_low", "25"], "^snr_low was renamed weighting_snr_low$"),
        (["--view_snr_min", "25"], "inverted SNR range"),  # above the preset's highest SNR, 19 dB
        (["--per_device_train_batch_size", "1"], "batch_size >= 2"),
        (["--per_device_eval_batch_size", "1"], "batch_size >= 2"),
        (["--eval_data", "demo_data/speech", "--eval_split", ""], "name the split"),
    ],
)
def test_configuration_mistakes_fail_at_parse_time(extra, message, tmp_path):
    with pytest.raises((ConfigError, SystemExit), match=message):
        parse_args([TINY_CONFIG, "--output_dir", str(tmp_path), *extra])


def test_unknown_yaml_key_is_named(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("teacher_name_or_path: x\ntrain_data: y\nlamda_cross: 1.0\n")
    with pytest.raises(ConfigError, match="lamda_cross"):
        parse_args([str(config)])


def test_unknown_student_field_and_incompatible_teacher_fail_before_training(tmp_path, demo_data):
    with pytest.raises(SystemExit, match="student_overrides has unknown field"):
        main([TINY_CONFIG, "--output_dir", str(tmp_path), "--student_overrides", '{"hiden_size": 3}'])
    with pytest.raises(SystemExit, match="exceed the depth"):
        main([TINY_CONFIG, "--output_dir", str(tmp_path), "--pred_layers", "2", "9"])


def test_demo_config_starts_its_student_from_the_trained_teacher(tmp_path):
    """configs/demo.yaml against the committed teacher: compatible, the student initialised from its first layers."""
    from hf_corrdistill.training.teacher import (
        check_compatible,
        init_student_from_teacher,
        load_teacher,
        load_teacher_config,
    )
    from hf_corrdistill.training.train_cli import build_student_config

    record = json.loads((ROOT / "demo_data" / "teacher" / "pretraining.json").read_text())
    assert record["steps_done"] >= 1000 and record["size_mb"] <= 10  # a really pre-trained teacher, small enough
    args, data = parse_args([str(ROOT / "configs" / "demo.yaml"), "--output_dir", str(tmp_path)])
    teacher_config = load_teacher_config(args.teacher_name_or_path)
    student_config = build_student_config(args, teacher_config)
    check_compatible(student_config, teacher_config, args.teacher_name_or_path)
    student = CorrDistillForPreTraining(student_config)
    teacher = load_teacher(args.teacher_name_or_path, torch.float32)
    init_student_from_teacher(student, teacher)
    first = teacher.encoder.layers[0].attention.q_proj.weight
    assert torch.equal(student.corrdistill.encoder.layers[0].attention.q_proj.weight, first)
    assert list(student_config.pred_layer_ids) == args.pred_layers and data.views == "setup2"


def test_paper_config_fails_at_start_up_without_the_hub():
    """One line naming the teacher, before any model loads (what runs before that line is checked by the next
    test; how long it takes is measured by benchmarks/bench_startup.py, not asserted here)."""
    result = subprocess.run([sys.executable, "train.py", "configs/distilhubert-hubert-base.yaml"], cwd=ROOT,
                            capture_output=True, text=True, env=NO_HUB_ENV, timeout=300)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("configuration error:") and "facebook/hubert-base-ls960" in last and "Hub" in last
    assert "Traceback" not in result.stderr


MISTAKES = {  # issue-listed configuration mistakes: train.py arguments -> the one line it must print
    "inverted SNR range": ["configs/tiny.yaml", "--view_snr_min", "10", "--view_snr_max", "0"],
    "exceed the depth": ["configs/demo.yaml", "--pred_layers", "2", "9"],
    "frame rates differ": ["configs/tiny.yaml", "--student_overrides", '{"conv_stride": [5, 2, 2, 2, 2, 2, 1]}'],
    "noise source no/such/folder does not exist": ["configs/tiny.yaml", "--noise_sources", "no/such/folder"],
    "holds a different run": ["configs/tiny.yaml"],  # OUTPUT holds the record of another run
    "Couldn't find any data file": ["configs/tiny.yaml", "--train_data", "no/such/data"],
    "HF_HUB_OFFLINE": ["configs/distilhubert-hubert-base.yaml"],  # a Hub teacher with the Hub out of reach
}


def test_train_py_checks_its_configuration_before_loading_the_model_code(tmp_path):
    """train.py runs every check of ours before building TrainingArguments (which imports transformers' modeling
    code) and before the model code (processors, Trainer, our modeling), so a mistake costs only the imports of
    torch, transformers' argument classes and datasets; the Auto classes are registered once the checks pass."""
    for index in range(len(MISTAKES)):
        (tmp_path / str(index)).mkdir()
    (tmp_path / str(list(MISTAKES).index("holds a different run")) / "run_config.json").write_text('{"seed": -1}')
    probe = textwrap.dedent(f"""
        import os, sys
        os.environ["HF_CORRDISTILL_DEFER_MODELS"] = "1"
        from hf_corrdistill.training.train_cli import main
        for index, argv in enumerate({list(MISTAKES.values())!r}):
            try:
                main([*argv, "--output_dir", os.path.join({str(tmp_path)!r}, str(index))])
            except SystemExit as error:
                print("exit:", error)
        heavy = ["hf_corrdistill.models.corrdistill.modeling_corrdistill", "transformers.processing_utils",
                 "transformers.trainer", "transformers.modeling_utils", "transformers.integrations.integration_utils"]
        print("loaded:", [name for name in heavy if name in sys.modules])
        import hf_corrdistill
        from transformers import AutoModel
        hf_corrdistill.register_auto_classes()
        hf_corrdistill.register_auto_classes()  # twice is fine
        print("registered:", AutoModel._model_mapping[hf_corrdistill.CorrDistillConfig].__name__)
    """)
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=NO_HUB_ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == len(MISTAKES) + 2, result.stdout
    for line, message in zip(lines, MISTAKES, strict=False):
        assert line.startswith("exit: configuration error:") and message in line, (message, line)
    # a run that never started leaves no record: its folder stays free for the corrected command
    assert not list(tmp_path.glob("*/checkpoint-*")) and len(list(tmp_path.glob("*/run_config.json"))) == 1
    assert lines[-2] == "loaded: []"
    assert lines[-1] == "registered: CorrDistillModel"


def test_preview_has_the_settings_of_the_built_config(tmp_path):
    """The checks before TrainingArguments run on a preview: it must describe the same run as the config."""
    from hf_corrdistill.training.train_cli import build_args, preview_args, read_config, run_identity

    for argv in ([TINY_CONFIG, "--student_overrides", '{"hidden_size": 64, "num_attention_heads": 8}',
                  "--learning_rate", "3e-4", "--lr_scheduler_type", "cosine", "--bf16", "false", "--seed", "7"],
                 [str(ROOT / "configs" / "demo.yaml"), "--views", "setup1", "--pred_layers", "1", "3"]):
        values = read_config([*argv, "--output_dir", str(tmp_path)])
        (preview, data), (args, built) = preview_args(values), build_args(values)
        assert run_identity(preview, data) == run_identity(args, built)
        assert preview.student_overrides == args.student_overrides and preview.output_dir == args.output_dir


# ---------------------------------------------------------------- the Trainer
def tiny_trainer(tmp_path, demo_data, **overrides) -> DistillationTrainer:
    values = dict(teacher_name_or_path="tiny", output_dir=str(tmp_path), per_device_train_batch_size=4,
                  report_to="none", max_steps=2, dataloader_pin_memory=False, pool_positions=10, seed=0,
                  lambda_cross=0.1, lambda_self=0.02, self_scale=1.0)
    values.update(overrides)
    args = DistillationConfig(**values)
    source = load_audio_source(str(demo_data / "speech"), "train")
    dataset = CroppedAudioDataset(source, "audio", max_length=16000, min_length=8000, seed=0)
    config = tiny_student_config(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    return DistillationTrainer(model=CorrDistillForPreTraining(config), teacher=tiny_teacher(), args=args,
                               train_dataset=dataset, data_collator=AudioCollator(320))


def test_compute_loss_is_the_correlation_loss_on_teacher_targets(tmp_path, demo_data):
    trainer = tiny_trainer(tmp_path, demo_data)
    batch = next(iter(trainer.get_train_dataloader()))
    loss, out = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    with torch.no_grad():
        targets = teacher_targets(trainer.teacher, batch["input_values"], batch["attention_mask"], (1, 2, 3))
    torch.testing.assert_close(out.targets, targets)
    args = trainer.args  # the keywords written out, not read from the registry under test
    expected = correlation_loss(out.predictions, targets, out.frame_mask, style=args.correlation_style,
                                pool_positions=args.pool_positions, lambda_cross=args.lambda_cross,
                                lambda_self=args.lambda_self, self_scale=args.self_scale)
    torch.testing.assert_close(loss, expected.loss)
    assert set(out.terms) == set(TERMS)


def test_teacher_is_frozen_and_outside_the_optimizer(tmp_path, demo_data):
    trainer = tiny_trainer(tmp_path, demo_data)
    trainer.create_optimizer()
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in trainer.teacher.parameters()}
    assert not any(p.requires_grad for p in trainer.teacher.parameters())
    trainer.train()
    assert not trainer.teacher.training


def test_half_precision_teacher_takes_float32_audio():
    teacher = tiny_teacher().to(torch.bfloat16)
    targets = teacher_targets(teacher, torch.randn(2, 8000), None, (1, 3))
    assert targets.dtype == torch.bfloat16 and targets.shape == (2, 2, 24, 32)


def test_gradient_accumulation_averages_micro_batches(tmp_path, demo_data):
    trainer = tiny_trainer(tmp_path, demo_data, gradient_accumulation_steps=2)
    trainer.current_gradient_accumulation_steps = 2
    loader = iter(trainer.get_train_dataloader())
    batches = [next(loader), next(loader)]
    model = trainer.model.train()
    reported = sum(trainer.training_step(model, batch) for batch in batches)
    accumulated = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    manual = sum(trainer.compute_loss(model, batch) for batch in batches) / 2
    manual.backward()
    torch.testing.assert_close(reported, manual.detach())
    for got, want in zip(accumulated, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(got, want)


def test_bf16_autocast_keeps_the_loss_in_float32(tmp_path, demo_data):
    trainer = tiny_trainer(tmp_path, demo_data, bf16=True, use_cpu=True)
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what accelerate wraps the forward passes in
        loss, out = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    assert out.predictions.dtype == torch.bfloat16  # the network ran under autocast
    assert out.targets.dtype == torch.float32  # the teacher did not: it keeps its own precision
    with torch.no_grad():
        plain = teacher_targets(trainer.teacher, batch["input_values"], batch["attention_mask"], (1, 2, 3))
    assert torch.equal(out.targets, plain)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    trainer.train()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


# ---------------------------------------------------------------- train.py end to end
def _log(folder):
    return json.loads((folder / "trainer_state.json").read_text())["log_history"]


@pytest.mark.slow
def test_demo_run_logs_terms_evaluates_and_saves_a_loadable_student(tmp_path, demo_data):
    out = tmp_path / "run"
    main([TINY_CONFIG, "--output_dir", str(out), "--max_steps", "6", "--logging_steps", "2", "--eval_steps", "3",
          "--save_steps", "3"])
    history = _log(out)
    train_logs = [h for h in history if "loss" in h]
    assert len(train_logs) == 3 and all(all(term in h for term in TERMS) for h in train_logs)
    assert any("eval_loss" in h and all(f"eval_{term}" in h for term in TERMS) for h in history)
    student = AutoModel.from_pretrained(out).eval()
    assert type(student).__name__ == "CorrDistillModel"
    audio = torch.randn(2, 20000)
    with torch.no_grad():
        ours = torch.stack(student(audio, output_hidden_states=True).hidden_states)
    torch.testing.assert_close(remote_hidden_states(out, audio, tmp_path), ours, rtol=0, atol=0)
    assert (out / "preprocessor_config.json").exists() and (out / "checkpoint-6").is_dir()
    with safe_open(out / "model.safetensors", "pt") as weights:  # the student only, never the teacher
        assert all(k.startswith(("corrdistill.", "prediction_heads.")) for k in weights.keys())
    results = json.loads((out / "distillation_results.json").read_text())
    assert results["eval_loss"] > 0


@pytest.mark.slow
def test_resume_from_checkpoint_continues_the_same_run(tmp_path, demo_data):
    flags = ["--max_steps", "6", "--logging_steps", "1", "--save_steps", "3", "--eval_strategy", "no"]
    main([TINY_CONFIG, "--output_dir", str(tmp_path / "full"), *flags])
    main([TINY_CONFIG, "--output_dir", str(tmp_path / "cut"), *flags, "--max_steps", "3"])
    main([TINY_CONFIG, "--output_dir", str(tmp_path / "cut"), *flags,
          "--resume_from_checkpoint", str(tmp_path / "cut" / "checkpoint-3")])
    full = {h["step"]: h["loss"] for h in _log(tmp_path / "full") if "loss" in h}
    resumed = {h["step"]: h["loss"] for h in _log(tmp_path / "cut") if "loss" in h}
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        assert resumed[step] == pytest.approx(full[step], rel=1e-5), step


def _stress_ddp():
    """benchmarks/stress_ddp.py, whose launch command, cases and failing entry point the multi-process tests run."""
    spec = importlib.util.spec_from_file_location("stress_ddp", ROOT / "benchmarks" / "stress_ddp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("case", ["local", "global", "global, layerdrop 0.5"])
def test_ddp_two_cpu_processes(tmp_path, demo_data, case):
    """Two processes over gloo, each correlating its own batch or (global) the gathered batch of both; with layerdrop
    the processes skip different layers (DDP then looks for unused parameters). Every process exits with 0."""
    stress = _stress_ddp()
    out = tmp_path / "ddp"
    result = stress.run_once(stress.launch_command("train.py", stress.case_config(case, tmp_path), out),
                             hang_after=600)
    assert result["outcome"] == "ok" and result["exit_code"] == 0, result["stderr"][-4000:]
    assert result["stderr"].count("student written to") == 1  # rank 0 only
    history = _log(out)
    assert history[-1]["epoch"] == 1.0  # 4 steps x 8 utterances x 2 processes = the 60-utterance corpus, once
    assert any("eval_loss" in h for h in history) and any("on_diagonal" in h for h in history)
    assert AutoModel.from_pretrained(out).config.layerdrop == stress.CASES[case][1]


def _write_paired_bad_stream(folder, good_per_process: int) -> dict[str, int]:
    """Pairs of files named so that, streamed unshuffled by two processes, file 2i goes to process 0 and 2i+1 to
    process 1 (one shard per file, whole shards per process): each process gets ``good_per_process`` good files and
    one file of each bad kind; returns the skip counts of one pass of both."""
    import numpy as np
    import soundfile as sf

    folder.mkdir()
    speech = sorted((ROOT / "demo_data" / "speech" / "train").glob("*.flac"))
    for index in range(2 * good_per_process):
        shutil.copy(speech[index], folder / f"{index // 2:02d}-{index % 2}.flac")
    bad = {  # reason -> (suffix, writer)
        "undecodable": (".flac", lambda path: path.write_bytes(speech[0].read_bytes()[:300])),
        "empty": (".wav", lambda path: sf.write(path, np.zeros(0, dtype=np.float32), 16000)),
        "non_finite": (".wav", lambda path: sf.write(path, np.full(16000, np.nan, dtype=np.float32), 16000,
                                                     subtype="FLOAT")),
        "silent": (".wav", lambda path: sf.write(path, np.zeros(16000, dtype=np.float32), 16000)),
        "too_short": (".wav", lambda path: sf.write(path, np.full(800, 0.1, dtype=np.float32), 16000)),
    }
    for pair, (suffix, writer) in enumerate(bad.values(), start=good_per_process):
        for process in (0, 1):
            writer(folder / f"{pair:02d}-{process}{suffix}")
    return dict.fromkeys(bad, 2)


def _streamed_launch(stress, folder, out, *extra) -> list[str]:
    """stress_ddp's two-process launch of configs/tiny.yaml, streaming ``folder`` unshuffled in batches of 4."""
    return [*stress.launch_command("train.py", TINY_CONFIG, out), "--train_data", str(folder), "--streaming", "true",
            "--shuffle_buffer", "0", "--eval_data", "demo_data/speech", "--max_eval_samples", "8",
            "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--max_length", "16000",
            "--pool_positions", "20", "--logging_steps", "1", *extra]


@pytest.mark.slow
def test_streamed_two_processes_read_their_own_shares_and_resume_after_kill_9(tmp_path, demo_data):
    """Two processes stream a folder with bad files, each its own share (12 good files and one of each bad kind:
    a pass is 3 steps), evaluate, and cycle on to step 8. Both count what they skip: after the first pass the
    logged counters are both processes' sums. A copy killed (-9) after its checkpoint at step 4, mid-pass, and
    resumed gives the same losses and counters from step 5 on."""
    stress = _stress_ddp()
    expected = _write_paired_bad_stream(tmp_path / "bad", good_per_process=12)
    flags = ["--max_steps", "8", "--save_steps", "4", "--save_total_limit", "5", "--eval_steps", "8"]
    whole = stress.run_once(_streamed_launch(stress, tmp_path / "bad", tmp_path / "whole", *flags), hang_after=600)
    assert whole["outcome"] == "ok" and whole["exit_code"] == 0, whole["stderr"][-4000:]
    for rank in (0, 1):
        assert f"process {rank} of 2 streams its own share of the data: 17 of its 34 shards" in whole["stderr"]
    logged = {h["step"]: h for h in _log(tmp_path / "whole") if "loss" in h}
    assert sorted(logged) == list(range(1, 9))
    assert {reason: logged[3][f"skipped_{reason}"] for reason in expected} == expected  # one pass of each process
    assert any("eval_loss" in h for h in _log(tmp_path / "whole"))

    out = tmp_path / "killed"
    process = subprocess.Popen(_streamed_launch(stress, tmp_path / "bad", out, *flags), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not complete_checkpoint(out / "checkpoint-4") and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and both processes, no clean-up of any kind
    process.wait()
    assert complete_checkpoint(out / "checkpoint-4") and not (out / "checkpoint-8").exists()
    resumed = stress.run_once(_streamed_launch(stress, tmp_path / "bad", out, *flags, "--resume_from_checkpoint",
                                               "last"), hang_after=600)
    assert resumed["outcome"] == "ok", resumed["stderr"][-4000:]
    again = {h["step"]: h for h in _log(out) if "loss" in h}
    for step in range(5, 9):
        assert again[step]["loss"] == pytest.approx(logged[step]["loss"], rel=1e-5, abs=1e-6), step
        assert all(again[step][f"skipped_{r}"] == logged[step][f"skipped_{r}"] for r in expected), step


@pytest.mark.slow
def test_streamed_two_processes_global_correlations_with_accumulation(tmp_path, demo_data):
    """correlation_sync global and 3 accumulated batches per step on a stream: one step is one pass of each
    process's share, so the counters are exactly both processes' bad files."""
    stress = _stress_ddp()
    expected = _write_paired_bad_stream(tmp_path / "bad", good_per_process=12)
    result = stress.run_once(_streamed_launch(stress, tmp_path / "bad", tmp_path / "run", "--max_steps", "2",
                                              "--gradient_accumulation_steps", "3", "--correlation_sync", "global",
                                              "--eval_steps", "2", "--save_steps", "2"), hang_after=600)
    assert result["outcome"] == "ok" and result["exit_code"] == 0, result["stderr"][-4000:]
    logged = {h["step"]: h for h in _log(tmp_path / "run") if "loss" in h}
    assert sorted(logged) == [1, 2] and all(math.isfinite(h["loss"]) for h in logged.values())
    assert {reason: logged[1][f"skipped_{reason}"] for reason in expected} == expected
    assert any("eval_loss" in h for h in _log(tmp_path / "run"))


@pytest.mark.slow
def test_a_failing_rank_ends_the_launch_with_an_error(tmp_path, demo_data):
    """Rank 1 raises at its second step while rank 0 waits for it at a collective: the launcher stops both and
    exits non-zero, with the error in the log, rather than hanging."""
    stress = _stress_ddp()
    entry = tmp_path / "failing_train.py"
    entry.write_text(stress.FAILING_ENTRY.format(root=str(ROOT)))
    result = stress.run_once(stress.launch_command(str(entry), stress.case_config("global", tmp_path), tmp_path / "o"),
                             hang_after=600)
    assert result["outcome"] == "failed" and result["exit_code"] != 0
    assert "rank 1 fails on purpose" in result["stderr"]


def test_single_process_cpu_launch_is_reported(monkeypatch, caplog):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with caplog.at_level("WARNING"):
        _warn_single_cpu_process()
    assert "--multi_gpu --num_processes N" in caplog.text


@pytest.mark.slow
def test_streamed_source_with_views_feeds_the_trainer(tmp_path, demo_data):
    out = tmp_path / "stream"
    main([TINY_CONFIG, "--output_dir", str(out), "--streaming", "true", "--max_steps", "4", "--logging_steps", "2",
          "--eval_strategy", "no", "--save_strategy", "no", "--dataloader_num_workers", "2"])
    history = _log(out)
    logged = [h for h in history if "loss" in h]
    assert len(logged) == 2
    for entry in logged:
        assert all(term in entry for term in TERMS)
        assert 0 < entry["student_snr_noisy_fraction"] <= 1 and 10 <= entry["teacher_snr_db"] <= 19


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--noise_sources", "no/such/folder"], "noise source no/such/folder does not exist"),
        (["--view_snr_min", "15", "--view_snr_max", "5"], "inverted SNR range"),
        (["--weighting", "snr-reference", "--distortion", "robustdistiller"], "not positive below 10 dB"),
        (["--weighting", "snr", "--views", "clean"], "needs the SNRs of distorted views"),
    ],
)
def test_noise_configuration_mistakes_fail_at_start(tmp_path, demo_data, extra, message):
    with pytest.raises(SystemExit, match=message):
        main([TINY_CONFIG, "--output_dir", str(tmp_path), *extra])


def _write_bad_stream(folder, good):
    """Good utterances plus one file of each bad kind; returns the expected skip counts."""
    import numpy as np
    import soundfile as sf

    folder.mkdir()
    speech = sorted((ROOT / "demo_data" / "speech" / "train").glob("*.flac"))[:good]
    for path in speech:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "truncated.flac").write_bytes(speech[0].read_bytes()[:300])
    sf.write(folder / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    sf.write(folder / "nan.wav", np.full(16000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    sf.write(folder / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    sf.write(folder / "click.wav", np.full(800, 0.1, dtype=np.float32), 16000)  # 50 ms
    stereo_8k = np.random.default_rng(0).standard_normal((16000, 2)).astype(np.float32) * 0.05
    sf.write(folder / "stereo-8k.wav", stereo_8k, 8000)  # usable: mixed down and resampled
    return {"undecodable": 1, "empty": 1, "non_finite": 1, "silent": 1, "too_short": 1}


@pytest.mark.slow
def test_stream_with_bad_files_completes_and_counts_them(tmp_path, demo_data):
    expected = _write_bad_stream(tmp_path / "bad", good=11)  # 11 + 1 resampled = 12 usable: one pass, 3 batches
    out = tmp_path / "run"
    with pytest.warns(UserWarning):
        main([TINY_CONFIG, "--output_dir", str(out), "--train_data", str(tmp_path / "bad"), "--streaming", "true",
              "--eval_data", "demo_data/speech",
              "--per_device_train_batch_size", "4", "--max_steps", "3", "--logging_steps", "3",
              "--eval_strategy", "no", "--save_strategy", "no"])
    logged = [h for h in _log(out) if "loss" in h][-1]
    assert {reason: logged[f"skipped_{reason}"] for reason in expected} == expected
    assert 0 < logged["padded_fraction"] < 1


@pytest.mark.slow
def test_a_stream_without_usable_audio_in_any_worker_is_an_error(tmp_path, demo_data):
    """Each of two DataLoader workers reads only silent files and stops: the process's stream has ended, which is
    an error naming the process rather than a short run."""
    import numpy as np
    import soundfile as sf

    (tmp_path / "silent").mkdir()
    for index in range(2):
        sf.write(tmp_path / "silent" / f"s{index}.wav", np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(AudioDecodeError, match="the stream of process 0 ended"):
        main([TINY_CONFIG, "--output_dir", str(tmp_path / "run"), "--train_data", str(tmp_path / "silent"),
              "--eval_data", "demo_data/speech", "--streaming", "true", "--dataloader_num_workers", "2", *FAST,
              "--max_steps", "2", "--save_strategy", "no"])


@pytest.mark.slow
def test_five_percent_bad_files_at_scale_counted_across_a_resume(tmp_path, demo_data):
    """96 good files (one 8 kHz stereo), 5 broken: an epoch of 12 batches trains to the end; the counters equal the
    injected counts, also when the run is stopped after its checkpoint at step 6 and resumed."""
    expected = _write_bad_stream(tmp_path / "bad", good=60)
    speech = sorted((tmp_path / "bad").glob("train-*.flac"))
    for index in range(35):  # 60 + 35 + the stereo file = 96 usable, 5 broken: 4.9 %
        shutil.copy(speech[index], tmp_path / "bad" / f"copy-{index:02d}.flac")
    flags = [*FAST, "--train_data", str(tmp_path / "bad"), "--eval_data", "demo_data/speech", "--streaming", "true",
             "--per_device_train_batch_size",
             "8", "--logging_steps", "3", "--save_steps", "6"]
    with pytest.warns(UserWarning):
        main([TINY_CONFIG, "--output_dir", str(tmp_path / "whole"), *flags, "--max_steps", "12"])
        main([TINY_CONFIG, "--output_dir", str(tmp_path / "resumed"), *flags, "--max_steps", "6"])
        main([TINY_CONFIG, "--output_dir", str(tmp_path / "resumed"), *flags, "--max_steps", "12",
              "--resume_from_checkpoint", "last"])
    for run in ("whole", "resumed"):
        logged = [h for h in _log(tmp_path / run) if "loss" in h]
        assert logged[-1]["step"] == 12 and logged[-1]["epoch"] == pytest.approx(1.0)
        assert {reason: logged[-1][f"skipped_{reason}"] for reason in expected} == expected, run
        assert all(math.isfinite(h["loss"]) for h in logged)


def test_student_that_cannot_copy_the_teacher_fails_with_one_line(tmp_path, demo_data):
    overrides = {"hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128, "conv_dim": [64] * 7,
                 "num_conv_pos_embeddings": 32, "num_conv_pos_embedding_groups": 4}  # a narrower FFN than the teacher
    with pytest.raises(SystemExit, match="configuration error: cannot initialise the student"):
        main([TINY_CONFIG, "--output_dir", str(tmp_path), "--student_overrides", json.dumps(overrides)])


def test_a_key_error_inside_the_run_is_not_a_configuration_error(tmp_path, demo_data, monkeypatch):
    """Only configuration mistakes become the one-line "configuration error"; a failure of the run keeps its
    traceback."""
    from hf_corrdistill.training import train_cli

    def broken(student, teacher):
        raise KeyError("encoder.layers.0.attention.q_proj.weight")

    monkeypatch.setattr(train_cli, "init_student_from_teacher", broken)
    with pytest.raises(KeyError, match="q_proj"):
        main([TINY_CONFIG, "--output_dir", str(tmp_path / "run")])
    assert not (tmp_path / "run" / "run_config.json").exists()


def test_eval_split_none_trains_without_evaluation(tmp_path, demo_data):
    """tiny.yaml evaluates every 60 steps on its validation split; eval_split none turns evaluation off."""
    out = tmp_path / "run"
    main([TINY_CONFIG, "--output_dir", str(out), "--eval_split", "None", "--max_steps", "2", "--save_strategy", "no",
          "--per_device_train_batch_size", "4", "--max_length", "16000", "--pool_positions", "20", "--eval_steps",
          "1"])
    assert not any(key.startswith("eval_") for entry in _log(out) for key in entry)
    assert not any(key.startswith("eval_") for key in json.loads((out / "distillation_results.json").read_text()))


def test_a_batch_of_one_is_skipped_not_fatal(tmp_path, demo_data, caplog):
    trainer = tiny_trainer(tmp_path, demo_data)
    batch = next(iter(trainer.get_train_dataloader()))
    one = {key: value[:1] for key, value in batch.items()}
    model = trainer.model.train()
    with caplog.at_level("WARNING"):
        loss = trainer.compute_loss(model, one)
    assert loss.item() == 0.0 and "cannot form correlations" in caplog.text
    loss.backward()
    assert all(p.grad is None or torch.all(p.grad == 0) for p in model.parameters())
    assert trainer.prediction_step(model.eval(), one, prediction_loss_only=True) == (None, None, None)
    trainer.log({"loss": 1.0})
    assert trainer.state.log_history[-1]["skipped_batches"] == 1


# ---------------------------------------------------------------- long runs
FAST = ["--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--max_length", "16000",
        "--pool_positions", "20", "--eval_strategy", "no"]


def test_output_folder_of_another_run_is_refused(tmp_path, demo_data):
    out = tmp_path / "run"
    main([TINY_CONFIG, "--output_dir", str(out), *FAST, "--max_steps", "1", "--save_strategy", "no"])
    with pytest.raises(SystemExit, match="holds a different run.*lambda_cross"):
        main([TINY_CONFIG, "--output_dir", str(out), *FAST, "--max_steps", "1", "--lambda_cross", "0.1"])
    # a record written before a setting existed still matches while the setting stays at its default
    record = json.loads((out / "run_config.json").read_text())
    (out / "run_config.json").write_text(json.dumps({k: v for k, v in record.items() if k != "correlation_sync"}))
    main([TINY_CONFIG, "--output_dir", str(out), *FAST, "--max_steps", "2", "--save_strategy", "no"])
    # speed settings are not part of the run: the same folder takes them
    main([TINY_CONFIG, "--output_dir", str(out), *FAST, "--max_steps", "2", "--save_strategy", "no",
          "--cudnn_benchmark", "true"])
    with pytest.raises(SystemExit, match="holds a different run.*correlation_sync"):
        main([TINY_CONFIG, "--output_dir", str(out), *FAST, "--max_steps", "2", "--correlation_sync", "global"])
    (tmp_path / "foreign" / "checkpoint-5").mkdir(parents=True)
    with pytest.raises(SystemExit, match="did not record"):
        main([TINY_CONFIG, "--output_dir", str(tmp_path / "foreign"), *FAST, "--max_steps", "1"])
    with pytest.raises(SystemExit, match="not a complete checkpoint"):
        main([TINY_CONFIG, "--output_dir", str(out), *FAST, "--resume_from_checkpoint", str(tmp_path / "nowhere")])


@pytest.mark.slow
def test_same_seed_gives_the_same_first_50_losses(tmp_path, demo_data):
    runs = []
    for name in ("a", "b"):
        main([TINY_CONFIG, "--output_dir", str(tmp_path / name), *FAST, "--max_steps", "50", "--logging_steps", "1",
              "--save_strategy", "no"])
        runs.append([h["loss"] for h in _log(tmp_path / name) if "loss" in h])
    assert len(runs[0]) == 50 and runs[0] == runs[1]


@pytest.mark.slow
def test_kill_9_then_resume_matches_an_uninterrupted_run(tmp_path, demo_data):
    flags = [*FAST, "--max_steps", "12", "--logging_steps", "1", "--save_steps", "3", "--save_total_limit", "10"]
    main([TINY_CONFIG, "--output_dir", str(tmp_path / "whole"), *flags])
    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "train.py", TINY_CONFIG, "--output_dir", str(out), *flags],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not complete_checkpoint(out / "checkpoint-6") and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.kill()  # SIGKILL: no clean-up of any kind
    process.wait()
    assert complete_checkpoint(out / "checkpoint-6") and not (out / "checkpoint-12").exists()
    partial = out / "checkpoint-9"  # what a kill while saving leaves: files, but no trainer state
    if not partial.exists():
        shutil.copytree(out / "checkpoint-6", partial)
        (partial / "trainer_state.json").unlink()
    main([TINY_CONFIG, "--output_dir", str(out), *flags, "--resume_from_checkpoint", "last"])
    whole = {h["step"]: h["loss"] for h in _log(tmp_path / "whole") if "loss" in h}
    resumed = {h["step"]: h["loss"] for h in _log(out) if "loss" in h}
    assert max(resumed) == 12
    for step in range(7, 13):
        assert resumed[step] == pytest.approx(whole[step], rel=1e-5, abs=1e-6), step


@pytest.mark.slow
def test_200_fp16_steps_stay_finite(tmp_path, demo_data):
    out = tmp_path / "fp16"
    main([TINY_CONFIG, "--output_dir", str(out), *FAST, "--max_steps", "200", "--logging_steps", "10",
          "--save_strategy", "no", "--fp16", "true", "--use_cpu", "true"])
    losses = [h["loss"] for h in _log(out) if "loss" in h]
    assert len(losses) == 20 and all(math.isfinite(x) for x in losses)
    student = AutoModel.from_pretrained(out)
    assert all(torch.isfinite(p).all() for p in student.parameters())


@pytest.mark.parametrize("kind", ["identical", "silent"])
def test_degenerate_batches_give_a_finite_loss(tmp_path, demo_data, kind):
    trainer = tiny_trainer(tmp_path, demo_data)
    batch = next(iter(trainer.get_train_dataloader()))
    if kind == "identical":
        batch = {k: v[:1].repeat(4, *([1] * (v.dim() - 1))) for k, v in batch.items()}
    else:
        batch["input_values"] = torch.zeros_like(batch["input_values"])
    model = trainer.model.train()
    for size in (4, 2):
        loss = trainer.compute_loss(model, {k: v[:size] for k, v in batch.items()})
        loss.backward()
        assert torch.isfinite(loss)
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
        model.zero_grad()
