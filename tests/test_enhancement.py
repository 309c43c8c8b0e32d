"""The enhancement term: its maths against plain float64 references, and its wiring (head, batch, trainer, exports)."""

import librosa
import numpy as np
import pytest
import torch
from conftest import ROOT
from test_trainer import tiny_trainer, two_view_batch
from test_views import bank, speech  # noqa: F401  (module fixtures)
from transformers import AutoModel

from hf_corrdistill import CorrDistillConfig, CorrDistillForPreTraining
from hf_corrdistill.data.crops import AudioCollator
from hf_corrdistill.data.views import Distorter, ViewMaker, huang2022
from hf_corrdistill.losses import LOSSES, correlation_loss, enhancement_loss, frame_geometry, log_mel_frames
from hf_corrdistill.losses.enhancement import LOG_FLOOR


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def reference_log_mel(wave: np.ndarray, frames: int, window: int, hop: int, bins: int) -> np.ndarray:
    """Frame by frame in float64: Hann window, |rfft|^2, mel filters (librosa's, on Kaldi's / HTK's mel scale from
    20 Hz to 8 kHz, unnormalised triangles), log."""
    n_fft = 1 << (window - 1).bit_length()
    taper = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)  # periodic Hann
    mel = librosa.filters.mel(sr=16000, n_fft=n_fft, n_mels=bins, fmin=20.0, fmax=8000.0, htk=True, norm=None,
                              dtype=np.float64).T  # (K, M)
    rows = []
    for f in range(frames):
        segment = wave[f * hop : f * hop + window].astype(np.float64) * taper
        power = np.abs(np.fft.rfft(segment, n_fft)) ** 2
        rows.append(np.log(power @ mel + LOG_FLOOR))
    return np.stack(rows)


def reference_loss(predicted: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    total, count = 0.0, 0
    for b in range(predicted.shape[0]):
        for f in range(predicted.shape[1]):
            if mask[b, f]:
                for m in range(predicted.shape[2]):
                    total += abs(float(predicted[b, f, m]) - float(target[b, f, m]))
                    count += 1
    return total / max(count, 1)


def test_frame_geometry_matches_the_student_cnn():
    config = CorrDistillConfig()
    assert frame_geometry(config.conv_kernel, config.conv_stride) == (400, 320)
    model = CorrDistillForPreTraining(CorrDistillConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64,
                                                        conv_dim=(8,) * 7, num_conv_pos_embedding_groups=2,
                                                        num_conv_pos_embeddings=8, pred_layer_ids=(1,),
                                                        teacher_hidden_size=16, num_hidden_layers=1))
    for samples in (400, 719, 720, 16000, 48123):
        assert int(model._get_feat_extract_output_lengths(samples)) == (samples - 400) // 320 + 1
    assert frame_geometry((3, 2), (2, 2)) == (5, 4)  # 1 + 2 * 1 + 1 * 2; strides 2 * 2


@pytest.mark.parametrize("bins", [80, 40])
def test_log_mel_frames_match_a_plain_reference(bins):
    g = torch.Generator().manual_seed(0)
    waves = torch.randn(2, 5000, generator=g) * torch.tensor([[0.1], [0.7]])  # (B, T)
    frames = (5000 - 400) // 320 + 1
    ours = log_mel_frames(waves, frames, 400, 320, bins)
    assert ours.shape == (2, frames, bins) and ours.dtype == torch.float32
    for b in range(2):
        expected = reference_log_mel(waves[b].numpy(), frames, 400, 320, bins)
        np.testing.assert_allclose(ours[b].double().numpy(), expected, rtol=0, atol=2e-4)
    assert log_mel_frames(waves.half().float(), 3, 400, 320).shape == (2, 3, 80)  # fewer frames: the first ones
    with pytest.raises(ValueError, match="fewer than"):
        log_mel_frames(waves, frames + 1, 400, 320)


def test_enhancement_loss_matches_a_plain_reference_and_ignores_padding():
    g = torch.Generator().manual_seed(1)
    predicted = torch.randn(3, 7, 5, generator=g, dtype=torch.float64)
    target = torch.randn(3, 7, 5, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5], dtype=torch.bool)
    loss = enhancement_loss(predicted, target, mask).loss
    assert loss.item() == pytest.approx(reference_loss(predicted.numpy(), target.numpy(), mask.numpy()), abs=1e-12)
    assert enhancement_loss(predicted, target).loss.item() == pytest.approx(
        reference_loss(predicted.numpy(), target.numpy(), np.ones((3, 7), bool)), abs=1e-12)
    # padding holding NaN / inf changes neither the value nor the gradients
    poisoned = predicted.clone().where(mask[:, :, None], torch.nan).requires_grad_()
    target_poisoned = target.where(mask[:, :, None], torch.inf)
    value = enhancement_loss(poisoned, target_poisoned, mask).loss
    value.backward()
    assert value.item() == pytest.approx(loss.item(), abs=1e-12)
    assert torch.isfinite(poisoned.grad).all() and (poisoned.grad[~mask] == 0).all()
    # no valid frame: zero, not NaN
    assert enhancement_loss(predicted, target, torch.zeros(3, 7, dtype=torch.bool)).loss.item() == 0.0
    with pytest.raises(ValueError, match="frame_mask"):
        enhancement_loss(predicted, target, mask[:, :5])
    with pytest.raises(ValueError, match="batch, frames, bins"):
        enhancement_loss(predicted, target[:, :, :4], mask)


def test_targets_of_valid_frames_do_not_depend_on_padding():
    g = torch.Generator().manual_seed(2)
    short = torch.randn(1, 6000, generator=g)
    padded = torch.cat([short, torch.zeros(1, 4000)], dim=1)  # (1, 10000): zero padding, as the collator
    frames = (6000 - 400) // 320 + 1
    alone = log_mel_frames(short, frames, 400, 320)
    in_batch = log_mel_frames(padded, (10000 - 400) // 320 + 1, 400, 320)[:, :frames]
    torch.testing.assert_close(in_batch, alone, rtol=0, atol=0)


def test_views_carry_the_clean_crop_only_when_asked(speech, bank):  # noqa: F811
    plain = ViewMaker("setup2", Distorter(huang2022(), bank))(speech, np.random.default_rng(3))
    kept = ViewMaker("setup2", Distorter(huang2022(), bank), keep_clean=True)(speech, np.random.default_rng(3))
    assert "clean_input_values" not in plain
    assert kept["clean_input_values"] is speech
    for name in ("input_values", "teacher_input_values"):  # the same draws either way
        assert np.array_equal(kept[name], plain[name])
    batch = AudioCollator(320)([kept, {**kept, "input_values": kept["input_values"][:9000],
                                       "teacher_input_values": kept["teacher_input_values"][:9000],
                                       "clean_input_values": speech[:9000]}])
    assert torch.equal(batch["clean_input_values"][1, :9000], torch.as_tensor(speech[:9000]))
    assert (batch["clean_input_values"][1, 9000:] == 0).all()
    assert "clean_input_values" not in AudioCollator(320)([plain])


def test_off_by_default_no_head_and_no_term(tmp_path, demo_data):
    trainer = tiny_trainer(tmp_path)
    assert trainer.args.enhancement_weight == 0 and trainer.model.enhancement_head is None
    batch = two_view_batch()
    trainer.model.eval()
    with torch.no_grad():
        loss, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    assert "enhancement" not in outputs.terms
    assert trainer.model(input_values=batch["input_values"]).enhancement is None


def _with_clean(batch: dict) -> dict:
    g = torch.Generator().manual_seed(5)
    return {**batch, "clean_input_values": torch.randn(batch["input_values"].shape, generator=g)
            * batch["attention_mask"]}


def test_term_value_is_the_clean_crops_reference_added_with_its_weight(tmp_path, demo_data):
    trainer = tiny_trainer(tmp_path, "--enhancement_weight", "0.3", "--enhancement_bins", "24")
    config = trainer.model.config
    assert config.enhancement_bins == 24 and trainer.model.enhancement_head is not None
    batch = _with_clean(two_view_batch())
    trainer.model.eval()
    with torch.no_grad():
        loss, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
        student = trainer.model(input_values=batch["input_values"], attention_mask=batch["attention_mask"])
    predicted, mask = student.enhancement.double().numpy(), student.frame_mask.numpy()
    frames = predicted.shape[1]

    def reference(view: str) -> float:
        target = np.stack([reference_log_mel(batch[view][b].numpy(), frames, 400, 320, 24) for b in range(4)])
        return reference_loss(predicted, target, mask)

    expected = reference("clean_input_values")
    assert outputs.terms["enhancement"].item() == pytest.approx(expected, abs=1e-4)
    distillation = correlation_loss(outputs.predictions, outputs.targets, outputs.frame_mask,
                                    **LOSSES["correlation"].kwargs(trainer.args), student_snr=batch["student_snr"],
                                    teacher_snr=batch["teacher_snr"]).loss
    torch.testing.assert_close(loss, distillation + 0.3 * outputs.terms["enhancement"], rtol=0, atol=0)
    for wrong in ("input_values", "teacher_input_values"):  # a miswired target: a distorted view
        assert abs(reference(wrong) - expected) > 1e-2, wrong
    with pytest.raises(KeyError, match="clean_input_values"):
        trainer.compute_loss(trainer.model, two_view_batch())


def test_clean_views_use_the_students_own_input(tmp_path, demo_data):
    trainer = tiny_trainer(tmp_path, "--loss", "distilhubert", "--enhancement_weight", "1")
    batch = {name: two_view_batch()[name] for name in ("input_values", "attention_mask")}  # views: clean
    trainer.model.eval()
    with torch.no_grad():
        _, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
        student = trainer.model(input_values=batch["input_values"], attention_mask=batch["attention_mask"])
    frames = student.enhancement.shape[1]
    target = np.stack([reference_log_mel(batch["input_values"][b].numpy(), frames, 400, 320, 80) for b in range(4)])
    expected = reference_loss(student.enhancement.double().numpy(), target, student.frame_mask.numpy())
    assert outputs.terms["enhancement"].item() == pytest.approx(expected, abs=1e-4)


def test_the_term_trains_the_backbone(tmp_path, demo_data):
    trainer = tiny_trainer(tmp_path, "--enhancement_weight", "1")
    batch = _with_clean(two_view_batch())
    outputs = trainer.model(input_values=batch["input_values"], attention_mask=batch["attention_mask"])
    trainer._enhancement(batch, outputs.enhancement, outputs.frame_mask).backward()
    backbone = trainer.model.corrdistill
    assert backbone.encoder.layers[-1].feed_forward.output_dense.weight.grad.abs().sum() > 0
    assert backbone.feature_extractor.conv_layers[0].conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in trainer.model.prediction_heads.parameters())


def test_the_head_is_dropped_from_the_published_backbone(tmp_path, demo_data):
    trainer = tiny_trainer(tmp_path, "--enhancement_weight", "1")
    trainer.model.save_pretrained(tmp_path / "student")
    loaded, info = AutoModel.from_pretrained(tmp_path / "student", output_loading_info=True)
    assert type(loaded).__name__ == "CorrDistillModel"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not any("enhancement" in name for name in loaded.state_dict())
    again = CorrDistillForPreTraining.from_pretrained(tmp_path / "student")  # the training model keeps it
    torch.testing.assert_close(again.enhancement_head.output.weight, trainer.model.enhancement_head.output.weight)
