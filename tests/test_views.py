"""Distorted teacher/student views: each distortion, exact SNRs, independence, presets and noise sources."""

import math

import numpy as np
import pytest
import soundfile as sf
from conftest import DEMO

from hf_corrdistill.data.views import (
    Distorter,
    DistortionPreset,
    NoiseBank,
    ViewMaker,
    huang2022,
    only_kind,
    robustdistiller,
)

NOISE = [str(DEMO / "noise" / "train")]


@pytest.fixture(scope="module")
def speech():
    audio, rate = sf.read(DEMO / "speech" / "train" / "train-0000.flac", dtype="float32")
    assert rate == 16000
    return audio


@pytest.fixture(scope="module")
def bank():
    return NoiseBank(NOISE)


def only(additive, non_additive, file_share=1.0, snr=(10, 19)):
    base = DistortionPreset(combos=(), snr_low=snr[0], snr_high=snr[1], file_noise_share=file_share)
    return only_kind(additive, non_additive, base)


@pytest.mark.parametrize("non_additive", ["reverb", "bandstop", "pitch"])
def test_each_non_additive_distortion_changes_the_audio(speech, bank, non_additive):
    view, snr = Distorter(only("none", non_additive), bank)(speech, np.random.default_rng(0))
    assert view.shape == speech.shape and view.dtype == np.float32 and np.isfinite(view).all()
    assert snr == math.inf
    assert np.abs(view - speech).mean() > 1e-3 * np.abs(speech).mean()


@pytest.mark.parametrize("file_share", [1.0, 0.0])  # a noise-bank file, Gaussian noise
@pytest.mark.parametrize("non_additive", ["none", "reverb"])
def test_added_noise_has_exactly_the_reported_snr(speech, bank, file_share, non_additive):
    distorter = Distorter(only("noise", non_additive, file_share, snr=(0, 20)), bank)
    for seed in range(5):
        view, snr = distorter(speech, np.random.default_rng(seed))
        assert snr == int(snr) and 0 <= snr <= 20
        # the same seed without the noise replays the same non-additive draw: the signal the noise was mixed into
        signal, _ = Distorter(only("none", non_additive), bank)(speech, np.random.default_rng(seed))
        noise = view.astype(np.float64) - signal
        measured = 10 * np.log10(np.mean(signal.astype(np.float64) ** 2) / np.mean(noise**2))
        assert abs(measured - snr) < 0.1


def test_setup1_leaves_the_teacher_untouched(speech, bank):
    views = ViewMaker("setup1", Distorter(huang2022(), bank))
    for seed in range(10):
        example = views(speech, np.random.default_rng(seed))
        assert example["teacher_input_values"] is speech and example["teacher_snr"] == math.inf
    assert any(np.isfinite(views(speech, np.random.default_rng(s))["student_snr"]) for s in range(10))


def test_setup2_draws_are_independent_and_reproducible(speech, bank):
    views = ViewMaker("setup2", Distorter(robustdistiller(), bank))
    short = speech[:8000]
    pairs = [views(short, np.random.default_rng(seed)) for seed in range(300)]
    teacher_noisy = np.array([math.isfinite(p["teacher_snr"]) for p in pairs])
    student_noisy = np.array([math.isfinite(p["student_snr"]) for p in pairs])
    # robustdistiller: noise in half the views; independent draws agree about as often as chance (50 %)
    assert 0.4 < teacher_noisy.mean() < 0.6 and 0.4 < student_noisy.mean() < 0.6
    assert 0.4 < (teacher_noisy == student_noisy).mean() < 0.6
    both = teacher_noisy & student_noisy
    t_snr = np.array([p["teacher_snr"] for p in pairs])[both]
    s_snr = np.array([p["student_snr"] for p in pairs])[both]
    assert abs(np.corrcoef(t_snr, s_snr)[0, 1]) < 0.25 and (t_snr != s_snr).mean() > 0.8
    noisy_pairs = [p for p, noisy in zip(pairs, both, strict=True) if noisy]
    assert not any(np.array_equal(p["teacher_input_values"], p["input_values"]) for p in noisy_pairs)
    again = views(short, np.random.default_rng(7))
    assert np.array_equal(again["input_values"], pairs[7]["input_values"])
    assert np.array_equal(again["teacher_input_values"], pairs[7]["teacher_input_values"])


def test_presets_follow_the_method():
    h = huang2022()
    assert (h.snr_low, h.snr_high) == (10, 19) and math.isclose(sum(p for p, _, _ in h.combos), 1.0)
    assert {n for _, _, n in h.combos} == {"reverb", "bandstop", "pitch", "none"}
    r = robustdistiller()
    assert (r.snr_low, r.snr_high, r.file_noise_share) == (0, 20, 0.7)
    assert sorted((a, n) for _, a, n in r.combos) == [("noise", "none"), ("noise", "reverb"), ("none", "none"),
                                                     ("none", "reverb")]
    assert all(p == 0.25 for p, _, _ in r.combos)


def test_clean_probability_one_leaves_views_clean(speech, bank):
    view, snr = Distorter(huang2022(), bank, clean_probability=1.0)(speech, np.random.default_rng(0))
    assert view is speech and snr == math.inf


def test_noise_sources_are_checked_and_converted(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        NoiseBank([str(tmp_path / "nowhere")])
    with pytest.raises(ValueError, match="no noise sources"):
        NoiseBank([])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no"):
        NoiseBank([str(tmp_path / "empty")])
    (tmp_path / "odd").mkdir()
    stereo_8k = np.random.default_rng(0).standard_normal((8000, 2)).astype(np.float32) * 0.1
    sf.write(tmp_path / "odd" / "hum.wav", stereo_8k, 8000)
    bank = NoiseBank([str(tmp_path / "odd")], cache_dir=str(tmp_path / "cache"))
    info = sf.info(bank.files[0])
    assert (info.samplerate, info.channels) == (16000, 1) and abs(info.frames - 16000) <= 1
    assert bank.segment(40000, np.random.default_rng(0)).shape == (40000,)  # looped when shorter
    with pytest.raises(ValueError, match="noise source"):
        Distorter(huang2022(), None)


def test_noise_from_a_saved_dataset_is_cached_at_16k(tmp_path):
    import datasets

    paths = [str(p) for p in sorted((DEMO / "noise" / "test").rglob("*.flac"))]
    table = datasets.Dataset.from_dict({"audio": paths}).cast_column("audio", datasets.Audio(decode=False))
    table.save_to_disk(str(tmp_path / "noise_ds"))
    bank = NoiseBank([str(tmp_path / "noise_ds")], cache_dir=str(tmp_path / "cache"))
    assert len(bank) == 3 and all(sf.info(f).samplerate == 16000 for f in bank.files)
    again = NoiseBank([str(tmp_path / "noise_ds")], cache_dir=str(tmp_path / "cache"))  # from the cache
    assert again.files == bank.files
