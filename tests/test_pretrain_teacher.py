"""HuBERT-style teacher pre-training: k-means, frame-aligned MFCC targets, the masked loss, and a tiny run."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, HubertModel

from hf_corrdistill.tools.pretrain_teacher import (
    HubertPretrainer,
    _nearest,
    crop_batch,
    kmeans,
    main,
    masked_prediction_loss,
    mfcc_frames,
    span_mask,
    teacher_config,
)

TINY = ["--hidden_size", "32", "--num_layers", "2", "--num_heads", "2", "--conv_dim", "16", "--clusters", "20",
        "--batch_size", "4", "--min_crop", "1", "--max_crop", "2", "--lr", "2e-3", "--dropout", "0", "--threads", "1"]


@pytest.fixture
def one_thread():
    """`main --threads 1` sets torch's threads for the process: put them back afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def tiny_pretrainer() -> HubertPretrainer:
    torch.manual_seed(0)
    return HubertPretrainer(teacher_config(hidden_size=32, num_layers=2, num_heads=2, conv_dim=16), num_clusters=20)


def test_kmeans_recovers_blobs():
    generator = torch.Generator().manual_seed(1)
    centres = 10 * torch.randn(5, 3, generator=generator)  # (5, 3)
    truth = torch.arange(5).repeat_interleave(200)  # (1000,)
    x = centres[truth] + 0.3 * torch.randn(1000, 3, generator=generator)  # (1000, 3)
    centroids = kmeans(x, 5, iters=20, seed=0)
    found = _nearest(x, centroids)
    mapping = {int(t): set(found[truth == t].tolist()) for t in range(5)}
    assert all(len(ids) == 1 for ids in mapping.values()), mapping  # each blob is one cluster ...
    assert len(set().union(*mapping.values())) == 5  # ... and no two blobs share one
    assert torch.equal(centroids, kmeans(x, 5, iters=20, seed=0))


def test_targets_have_the_model_frame_count():
    model = tiny_pretrainer().eval()
    rng = np.random.default_rng(0)
    lengths = [400, 401, 719, 720, 1000, 16_000, 16_123, 35_999]
    waves = [0.1 * rng.standard_normal(n).astype(np.float32) for n in lengths]
    for wave, features in zip(waves, mfcc_frames(waves, model.num_frames), strict=True):
        with torch.no_grad():
            hidden = model.hubert(torch.from_numpy(wave)[None]).last_hidden_state  # (1, F, H)
        assert features.shape == (hidden.shape[1], 39) == (model.num_frames(wave.size), 39)


def test_crops_slice_targets_in_step_with_the_audio():
    """A frame-aligned crop's MFCC frames equal the whole utterance's, away from the crop's edges."""
    model = tiny_pretrainer()
    rng = np.random.default_rng(0)
    wave = 0.1 * rng.standard_normal(40_000).astype(np.float32)
    (full,) = mfcc_frames([wave], model.num_frames)  # (F, 39)
    inputs, targets = crop_batch([wave], [torch.arange(len(full))], [0], 1.3, 320, model.num_frames, rng)
    first = int(targets[0, 0])  # the labels are frame indices: the crop's first frame
    (cropped,) = mfcc_frames([inputs[0].numpy()], model.num_frames)
    assert torch.equal(inputs[0], torch.from_numpy(wave[first * 320 : first * 320 + inputs.shape[1]]))
    assert targets.shape[1] == len(cropped) == model.num_frames(inputs.shape[1])
    torch.testing.assert_close(cropped[4:-4], full[first + 4 : first + len(cropped) - 4], atol=1e-4, rtol=1e-4)


def test_loss_is_on_masked_frames_only():
    generator = torch.Generator().manual_seed(0)
    mask = span_mask(2, 60, mask_prob=0.8, mask_length=10, seed=3)  # (2, 60)
    assert 0.2 < mask.float().mean() < 0.8 and (~mask).any()
    logits = torch.randn(2, 60, 20, generator=generator, requires_grad=True)  # (B, F, K)
    targets = torch.randint(20, (2, 60), generator=generator)
    loss, accuracy = masked_prediction_loss(logits, targets, mask)
    changed = logits.detach().clone()
    changed[~mask] = 100 * torch.randn(int((~mask).sum()), 20, generator=generator)
    assert torch.equal(loss, masked_prediction_loss(changed, targets, mask)[0])
    loss.backward()
    assert logits.grad[~mask].abs().max() == 0 and logits.grad[mask].abs().max() > 0
    assert 0 <= accuracy <= 1


def test_span_mask_is_seeded_and_leaves_numpy_alone():
    np.random.seed(7)
    expected = np.random.rand()
    np.random.seed(7)
    first = span_mask(4, 200, 0.8, 10, seed=5)
    assert np.random.rand() == expected
    assert torch.equal(first, span_mask(4, 200, 0.8, 10, seed=5))
    assert not torch.equal(first, span_mask(4, 200, 0.8, 10, seed=6))


def test_masked_frames_get_the_mask_embedding():
    model = tiny_pretrainer().eval()
    wave = torch.randn(1, 16_000)
    mask = span_mask(1, model.num_frames(16_000), 0.8, 10, seed=0)  # (1, F)
    with torch.no_grad():
        plain = model.hubert(wave).last_hidden_state
        masked = model.hubert(wave, mask_time_indices=mask).last_hidden_state
    assert not torch.allclose(plain, masked)


@pytest.mark.slow
def test_tiny_run_learns_saves_and_reproduces(demo_data: Path, tmp_path: Path, one_thread):
    runs = [main(["--data", str(demo_data / "speech"), "--output", str(tmp_path / name), "--steps", "30",
                  "--log_every", "10", "--seed", "0", *TINY]) for name in ("a", "b")]
    record = json.loads((tmp_path / "a" / "pretraining.json").read_text())
    losses = [entry["loss"] for entry in record["history"]]
    assert losses[-1] < losses[0], losses
    assert record["steps_done"] == 30 and not record["stopped_by_time"]
    assert record["clusters"]["used"] == 20 and record["chance_accuracy"] == 1 / 20
    assert 0 < record["clusters"]["unigram_loss"] <= np.log(20) and set(record["final"]) == {"loss", "accuracy"}
    assert record["parameters"] > 0 and 0 < record["size_mb"] < 1
    assert np.load(tmp_path / "a" / "kmeans.npz")["centroids"].shape == (20, 39)

    teacher = AutoModel.from_pretrained(tmp_path / "a").eval()
    assert isinstance(teacher, HubertModel)
    with torch.no_grad():
        hidden = teacher(torch.randn(1, 16_000), output_hidden_states=True).hidden_states
    assert len(hidden) == 3 and hidden[-1].shape == (1, 49, 32)

    weights = [load_file(tmp_path / name / "model.safetensors") for name in ("a", "b")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert [h["loss"] for h in runs[0]["history"]] == [h["loss"] for h in runs[1]["history"]]


@pytest.mark.slow
def test_time_budget_stops_cleanly_and_saves(demo_data: Path, tmp_path: Path, one_thread):
    record = main(["--data", str(demo_data / "speech"), "--output", str(tmp_path), "--steps", "1000",
                   "--max_minutes", "0.0001", *TINY])
    assert record["stopped_by_time"] and record["steps_done"] < 1000
    assert isinstance(AutoModel.from_pretrained(tmp_path), HubertModel)
