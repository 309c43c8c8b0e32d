"""DistillationTrainer: the loss it computes, checked field by field against the config, and its skip counters
across a resume."""

import inspect
import json

import numpy as np
import pytest
import torch
from conftest import ROOT
from transformers import TrainerControl, TrainerState

from hf_corrdistill import CorrDistillForPreTraining
from hf_corrdistill.data.crops import AudioCollator, CroppedAudioDataset
from hf_corrdistill.data.sources import SKIP_REASONS, load_audio_source
from hf_corrdistill.losses import correlation_loss, distilhubert_loss
from hf_corrdistill.training.callbacks import LEGACY_ENTRY, DistillationMetrics, EpochSetter
from hf_corrdistill.training.teacher import load_teacher, teacher_targets
from hf_corrdistill.training.train_cli import build_student_config, parse_args
from hf_corrdistill.training.trainer import DistillationTrainer

TINY_CONFIG = str(ROOT / "configs" / "tiny.yaml")


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the tiny config names demo_data/ relative to the repository


def tiny_trainer(tmp_path, *flags: str, **kwargs) -> DistillationTrainer:
    """configs/tiny.yaml (its tiny teacher, its student) with ``flags``; the student seeded."""
    args, _ = parse_args([TINY_CONFIG, "--output_dir", str(tmp_path), "--report_to", "none", "--eval_strategy", "no",
                          *flags])
    teacher = load_teacher(args.teacher_name_or_path)
    torch.manual_seed(0)
    student = CorrDistillForPreTraining(build_student_config(args, teacher.config))
    return DistillationTrainer(model=student, teacher=teacher, args=args, **kwargs)


def two_view_batch() -> dict[str, torch.Tensor]:
    """Four utterances of different lengths, each heard in two different views with different SNRs."""
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([9600, 8000, 6400, 8960])
    mask = (torch.arange(9600)[None, :] < lengths[:, None]).long()  # (B, T)
    student_view = torch.randn(4, 9600, generator=g) * mask  # (B, T)
    teacher_view = (student_view + 0.5 * torch.randn(4, 9600, generator=g)) * mask  # (B, T)
    return {
        "input_values": student_view,
        "teacher_input_values": teacher_view,
        "attention_mask": mask,
        "student_snr": torch.tensor([13.0, 16.5, 12.5, 15.0]),  # inside (weighting_snr_low, weighting_snr_high)
        "teacher_snr": torch.tensor([15.5, 12.2, 16.8, 13.7]),
    }


def _non_defaults(function, kwargs: dict) -> set[str]:
    defaults = {name: p.default for name, p in inspect.signature(function).parameters.items()}
    return {name for name, value in kwargs.items() if value != defaults[name]}


def _student_and_targets(trainer, batch, student_view: str, teacher_view: str, teacher_mask: bool):
    args = trainer.args
    with torch.no_grad():
        out = trainer.model(input_values=batch[student_view], attention_mask=batch["attention_mask"])
        targets = teacher_targets(trainer.teacher, batch[teacher_view], batch["attention_mask"] if teacher_mask
                                  else None, tuple(args.pred_layers))  # (B, N, F, D)
    return out.predictions, targets, out.frame_mask


@pytest.mark.parametrize("style", ["batch", "frames"])
def test_correlation_loss_wired_field_by_field(tmp_path, demo_data, style):
    trainer = tiny_trainer(tmp_path, "--correlation_style", style, "--pool_positions", "7", "--lambda_cross", "0.3",
                           "--lambda_self", "0.02", "--diag_scale", "4", "--cross_scale", "9", "--self_scale", "13",
                           "--cosine_weight", "0.7", "--weighting", "snr", "--weighting_snr_low", "12",
                           "--weighting_snr_high", "17")
    args, batch = trainer.args, two_view_batch()
    trainer.model.eval()  # no dropout: the reference sees the same network
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)

    def reference(student_view, teacher_view, student_snr, teacher_snr):
        predictions, targets, frame_mask = _student_and_targets(trainer, batch, student_view, teacher_view,
                                                                args.teacher_attention_mask)
        kwargs = dict(style=args.correlation_style, pool_positions=args.pool_positions,
                      lambda_cross=args.lambda_cross, lambda_self=args.lambda_self, diag_scale=args.diag_scale,
                      cross_scale=args.cross_scale, self_scale=args.self_scale, cosine_weight=args.cosine_weight,
                      weighting=args.weighting, snr_low=args.weighting_snr_low, snr_high=args.weighting_snr_high)
        assert _non_defaults(correlation_loss, kwargs) == set(kwargs) - ({"style"} if style == "batch" else set())
        return correlation_loss(predictions, targets, frame_mask, **kwargs, student_snr=batch[student_snr],
                                teacher_snr=batch[teacher_snr]).loss

    expected = reference("input_values", "teacher_input_values", "student_snr", "teacher_snr")
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    wrong = {  # what a miswired trainer would compute
        "views swapped": reference("teacher_input_values", "input_values", "student_snr", "teacher_snr"),
        "teacher hears the student's view": reference("input_values", "input_values", "student_snr", "teacher_snr"),
        "SNRs swapped": reference("input_values", "teacher_input_values", "teacher_snr", "student_snr"),
    }
    for name, other in wrong.items():
        assert not torch.allclose(loss, other, rtol=1e-5, atol=0), name


def test_distilhubert_loss_wired_field_by_field(tmp_path, demo_data):
    trainer = tiny_trainer(tmp_path, "--loss", "distilhubert", "--cosine_weight", "0.3",
                           "--teacher_attention_mask", "false")
    args, batch = trainer.args, two_view_batch()
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)

    def reference(student_view, teacher_view, teacher_mask):
        predictions, targets, frame_mask = _student_and_targets(trainer, batch, student_view, teacher_view,
                                                                teacher_mask)
        kwargs = dict(cosine_weight=args.cosine_weight)
        assert _non_defaults(distilhubert_loss, kwargs) == set(kwargs)
        return distilhubert_loss(predictions, targets, frame_mask, **kwargs).loss

    torch.testing.assert_close(loss, reference("input_values", "teacher_input_values", args.teacher_attention_mask),
                               rtol=0, atol=0)
    wrong = {
        "views swapped": reference("teacher_input_values", "input_values", False),
        "teacher hears the student's view": reference("input_values", "input_values", False),
        "teacher given the padding mask": reference("input_values", "teacher_input_values", True),
    }
    for name, other in wrong.items():
        assert not torch.allclose(loss, other, rtol=1e-5, atol=0), name


ROW = [1.0, 0.0, 2.0, 0.0, 3.0]  # utterances skipped before each example, by reason (SKIP_REASONS order)


class SkippingCollator:
    """`AudioCollator` plus known skip counts per example; batch number ``one_at`` keeps a single utterance."""

    def __init__(self, one_at: int | None = None):
        self.collate, self.calls, self.one_at = AudioCollator(320), 0, one_at

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        self.calls += 1
        batch = self.collate(features)
        batch["skipped"] = torch.tensor([ROW] * len(features))  # (B, R)
        if self.calls == self.one_at:
            batch = {name: value[:1] for name, value in batch.items()}
        return batch


def _counts(batches_of_four: int) -> dict[str, int]:
    return {reason: int(n * 4 * batches_of_four) for reason, n in zip(SKIP_REASONS, ROW, strict=True)}


@pytest.mark.parametrize("restore_flag", ["false", "true"])
def test_skip_counters_survive_a_resume(tmp_path, demo_data, restore_flag):
    """Steps 1-2 (the first a batch of one, skipped) saved at step 2; a new trainer resumes and takes step 3:
    its counters go on from the checkpoint's, whatever restore_callback_states_from_checkpoint says."""
    source = load_audio_source(str(demo_data / "speech"), "train")
    dataset = CroppedAudioDataset(source, "audio", max_length=16000, min_length=8000, seed=0)
    flags = ["--per_device_train_batch_size", "4", "--pool_positions", "10", "--logging_steps", "1",
             "--save_steps", "2", "--restore_callback_states_from_checkpoint", restore_flag]
    first = tiny_trainer(tmp_path, *flags, "--max_steps", "2", train_dataset=dataset,
                         data_collator=SkippingCollator(one_at=1))
    first.train()
    logged = first.state.log_history[1]
    assert logged["step"] == 2 and logged["skipped_batches"] == 1
    assert {reason: logged[f"skipped_{reason}"] for reason in SKIP_REASONS} == _counts(1)
    saved = json.loads((tmp_path / "checkpoint-2" / "trainer_state.json").read_text())["stateful_callbacks"]
    assert saved["DistillationMetrics"] == {
        "args": {}, "attributes": {"checkpoint_counts": {"skipped": _counts(1), "skipped_batches": 1}}
    }

    resumed = tiny_trainer(tmp_path, *flags, "--max_steps", "3", train_dataset=dataset,
                           data_collator=SkippingCollator())
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    logged = [h for h in resumed.state.log_history if h.get("step") == 3 and "loss" in h][0]
    assert logged["skipped_batches"] == 1  # restored: this run skipped none
    assert {reason: logged[f"skipped_{reason}"] for reason in SKIP_REASONS} == _counts(2)
    saved = json.loads((tmp_path / "checkpoint-3" / "trainer_state.json").read_text())["stateful_callbacks"]
    assert saved["DistillationMetrics"]["attributes"]["checkpoint_counts"] == {"skipped": _counts(2),
                                                                                "skipped_batches": 1}


@pytest.mark.parametrize("first_process", [True, False])
def test_counters_of_the_earlier_checkpoint_entry_are_read(first_process):
    """Checkpoints written before the callback kept the counters under their own entry: a resume reads it."""
    skipped = dict(zip(SKIP_REASONS, [3, 0, 1, 0, 2], strict=True))
    state = TrainerState(global_step=6, stateful_callbacks={LEGACY_ENTRY: {"skipped": skipped, "skipped_batches": 2}})
    state.is_world_process_zero = first_process
    metrics = DistillationMetrics()
    metrics.on_train_begin(None, state, TrainerControl())
    assert metrics.skipped_total["train"].tolist() == [3.0, 0.0, 1.0, 0.0, 2.0]
    assert metrics.skipped_batches["train"] == (2 if first_process else 0)  # summed over processes when logged
    assert "DistillationMetrics" in state.stateful_callbacks  # the Trainer looks its entry up at every save


def test_training_data_moves_to_each_new_epoch(tmp_path, demo_data):
    """Four utterances, batches of two: five steps run epochs 0, 1 and 2, and the crops follow the epoch."""
    source = load_audio_source(str(demo_data / "speech"), "train").select(range(4))
    dataset = CroppedAudioDataset(source, "audio", max_length=8000, min_length=4000, seed=0)
    first = dataset[0]["input_values"].copy()
    trainer = tiny_trainer(tmp_path, "--max_steps", "5", "--per_device_train_batch_size", "2", "--logging_steps", "5",
                           "--save_strategy", "no", train_dataset=dataset, data_collator=AudioCollator(320))
    trainer.train()
    assert trainer.state.epoch == 2.5 and dataset.epoch == 2
    assert not np.array_equal(dataset[0]["input_values"], first)  # another crop of the same utterance
    dataset.set_epoch(0)
    assert np.array_equal(dataset[0]["input_values"], first)


def test_epoch_setter_gives_the_dataset_the_state_s_epoch(demo_data):
    """The callback sets the dataset's epoch whatever loader wraps it (accelerate's loader hands the epoch to a
    sampler of its batch sampler when it finds one, and then not to the dataset)."""
    source = load_audio_source(str(demo_data / "speech"), "train").select(range(2))
    dataset = CroppedAudioDataset(source, "audio", max_length=8000, min_length=4000, seed=0)
    setter = EpochSetter(dataset)
    for epoch in (1.0, 2.0, 3.5):
        setter.on_epoch_begin(None, TrainerState(epoch=epoch), TrainerControl())
        assert dataset.epoch == int(epoch)
