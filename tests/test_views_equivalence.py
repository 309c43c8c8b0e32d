"""The views' distortions as re-implemented for speed, against the implementations they replaced: the same draws from
the same generator and, distortion by distortion, the same output within the tolerance stated in each test (Gaussian
noise: the same distribution, other values). The former implementations are written out here as they were."""

import math

import numpy as np
import pytest
import soundfile as sf
from conftest import DEMO, seeded_globals
from scipy.signal import butter, fftconvolve, sosfilt_zi

from hf_corrdistill.data.sources import decode_audio
from hf_corrdistill.data.views import (
    Distorter,
    DistortionPreset,
    NoiseBank,
    _steady_state,
    butterworth_bandstop,
    convolve_head,
    draw_bandstop,
    gaussian_noise,
    huang2022,
    mix_at_snr,
    only_kind,
    rms_power,
    simulated_room,
)

NOISE = [str(DEMO / "noise" / "train")]


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    audio, rate = sf.read(DEMO / "speech" / "train" / "train-0000.flac", dtype="float32")
    assert rate == 16000
    return audio


@pytest.fixture(scope="module")
def bank() -> NoiseBank:
    return NoiseBank(NOISE)


def former_power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def former_mix(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    gain = np.sqrt(former_power(signal) / (max(former_power(noise), 1e-20) * 10 ** (snr_db / 10)))
    return (signal + gain * noise).astype(np.float32)


def former_reverb(audio: np.ndarray, response: np.ndarray) -> np.ndarray:
    wet = fftconvolve(audio, response)[: audio.size]
    return (wet * np.sqrt(former_power(audio) / max(former_power(wet), 1e-20))).astype(np.float32)


def peak_error(new: np.ndarray, old: np.ndarray) -> float:
    """The largest sample difference, relative to the former output's peak."""
    assert new.shape == old.shape and new.dtype == np.float32
    return float(np.abs(new.astype(np.float64) - old).max() / np.abs(old).max())


def test_powers_and_mixing_match_float64(speech):
    """Powers summed pairwise in float32 and the mix computed in float32: within 1e-6 (of the power; of the peak)."""
    noise = np.random.default_rng(0).standard_normal(speech.size).astype(np.float32)
    assert rms_power(speech) == pytest.approx(former_power(speech), rel=1e-6)
    for snr in (0.0, 10.0, 19.0):
        assert peak_error(mix_at_snr(speech, noise, snr), former_mix(speech, noise, snr)) < 1e-6


@pytest.mark.parametrize("taps", [1, 3200, 8113, 12800, 24000, 60000])
def test_convolution_matches_fftconvolve(speech, taps):
    """Overlap-save in blocks against one FFT over the whole signal: within 1e-6 of the peak, for room responses of
    0.2 to 0.8 s, longer ones (other block sizes) and one longer than the audio (a single block)."""
    response = np.random.default_rng(taps).standard_normal(taps).astype(np.float32) * np.exp(-np.arange(taps) / 2000)
    for audio in (speech, speech[:5000]):
        assert peak_error(convolve_head(audio, response), fftconvolve(audio, response)[: audio.size]) < 1e-6
    assert convolve_head(speech[:0], response).shape == (0,)


def test_reverb_view_matches_the_former_one(speech, bank):
    """The same room (or file response) drawn, the same level: within 1e-6 of the peak."""
    responses = [simulated_room(np.random.default_rng(100 + k)) for k in range(3)]
    for impulse_responses in (None, responses):
        distorter = Distorter(only_kind("none", "reverb", huang2022()), bank, impulse_responses)
        for seed in range(6):
            view, snr = distorter(speech, np.random.default_rng(seed))
            rng = np.random.default_rng(seed)
            rng.choice(1, p=[1.0])  # the combination drawn first
            response = responses[int(rng.integers(3))] if impulse_responses else simulated_room(rng)
            assert peak_error(view, former_reverb(speech, response)) < 1e-6 and snr == math.inf


def test_bandstop_is_drawn_as_audiomentations_drew_it():
    """Order, band edges: equal to audiomentations' `BandStopFilter` parameters under the former seeding, and the
    generator left in the same state."""
    from audiomentations import BandStopFilter

    former = BandStopFilter(p=1.0)
    orders = set()
    for seed in range(300):
        old_rng, new_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        with seeded_globals(old_rng):
            former.randomize_parameters(np.zeros(16, np.float32), 16000)
        order, low, high = draw_bandstop(new_rng)
        centre, width = former.parameters["center_freq"], former.parameters["bandwidth"]
        assert (order, low, high) == (former.parameters["rolloff"] // 6, centre - width / 2, centre + width / 2)
        assert new_rng.bit_generator.state == old_rng.bit_generator.state
        orders.add(order)
    assert orders == {2, 3, 4}


def test_bandstop_design_matches_scipy_butter():
    """Second-order sections equal to `scipy.signal.butter`'s to 1e-9 (the same sections, in the same order), and
    the steady-state start equal to `sosfilt_zi`'s to 1e-8, for drawn filters and edge cases: a narrow band, bands
    wide enough for real poles, an edge near Nyquist."""
    cases = [(order, low, high) for order in (2, 3, 4)
             for low, high in ((150, 250), (10, 4000), (19.9, 7980), (100, 7999.2), (300, 301))]
    rng = np.random.default_rng(0)
    cases += [draw_bandstop(rng) for _ in range(500)]
    for order, low, high in cases:
        expected = butter(order, [low, high], btype="bandstop", fs=16000, output="sos")
        sos = butterworth_bandstop(order, low, high)
        np.testing.assert_allclose(sos, expected, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(_steady_state(sos), sosfilt_zi(expected), rtol=1e-6, atol=1e-8)


def test_bandstop_view_matches_audiomentations(speech, bank):
    """The band-stop view against audiomentations' `BandStopFilter` under the former seeding: within 1e-6 of the
    peak (float32 rounding of the same float64 filtering)."""
    from audiomentations import BandStopFilter

    former = BandStopFilter(p=1.0)
    distorter = Distorter(only_kind("none", "bandstop", huang2022()), bank)
    for seed in range(20):
        view, _ = distorter(speech, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        rng.choice(1, p=[1.0])
        with seeded_globals(rng):
            expected = former(samples=speech, sample_rate=16000).astype(np.float32)
        assert peak_error(view, expected) < 1e-6


def test_the_chain_with_noise_files_matches_the_former_one(speech, bank):
    """Every huang2022 combination with file noise (the Gaussian share set to 0): the same SNRs and, but for the
    pitch shift (tested against librosa), the former outputs within 1e-6 of the peak."""
    from audiomentations import BandStopFilter

    former_bandstop = BandStopFilter(p=1.0)
    preset = huang2022()
    files_only = DistortionPreset(preset.combos, preset.snr_low, preset.snr_high, file_noise_share=1.0)
    distorter = Distorter(files_only, bank)
    kinds = set()
    for seed in range(40):
        view, snr = distorter(speech, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        _, additive, kind = files_only.combos[int(rng.choice(len(distorter.probabilities), p=distorter.probabilities))]
        kinds.add((additive, kind))
        if kind == "pitch":
            signal = distorter._non_additive(kind, speech, rng)
        elif kind == "reverb":
            signal = former_reverb(speech, simulated_room(rng))
        elif kind == "bandstop":
            with seeded_globals(rng):
                signal = former_bandstop(samples=speech, sample_rate=16000).astype(np.float32)
        else:
            signal = speech
        if additive == "none":
            expected, expected_snr = signal, math.inf
        else:
            expected_snr = float(rng.integers(preset.snr_low, preset.snr_high + 1))
            rng.random()  # the file-or-Gaussian draw: always a file here
            expected = former_mix(signal, NoiseBank(NOISE, keep_short_mb=0).segment(signal.size, rng), expected_snr)
        assert snr == expected_snr and peak_error(view, expected) < 1e-6
    assert len(kinds) == 8


def test_gaussian_noise_is_standard_normal_and_reproducible():
    """Box-Muller noise: mean 0, variance 1, normal by a Kolmogorov-Smirnov test, uncorrelated from sample to sample
    and between the cosine and sine halves; the same generator state gives the same noise."""
    from scipy.stats import kstest

    noise = gaussian_noise(1_000_001, np.random.default_rng(0))
    assert noise.shape == (1_000_001,) and noise.dtype == np.float32
    assert abs(noise.mean()) < 5e-3 and abs(noise.var() - 1) < 5e-3
    assert kstest(noise[::7], "norm").pvalue > 1e-3
    assert abs(np.corrcoef(noise[:-1], noise[1:])[0, 1]) < 5e-3
    half = noise.size // 2
    assert abs(np.corrcoef(noise[:half], noise[half + 1 :])[0, 1]) < 5e-3
    assert 4.5 < np.abs(noise).max() < 5.8  # the tails reach about 5 sigma here; float32 uniforms end them at 5.8
    assert np.array_equal(gaussian_noise(333, np.random.default_rng(5)), gaussian_noise(333, np.random.default_rng(5)))
    assert gaussian_noise(0, np.random.default_rng(0)).shape == (0,)


def test_short_noise_files_are_decoded_once(bank):
    """Files shorter than the segment are kept decoded within the budget; the segments are those of a bank that
    keeps none."""
    keeps_none = NoiseBank(NOISE, keep_short_mb=0)
    for seed in range(12):
        assert np.array_equal(bank.segment(100_000, np.random.default_rng(seed)),
                              keeps_none.segment(100_000, np.random.default_rng(seed)))
    assert not keeps_none._short and 0 < len(bank._short) <= len(bank)
    small = NoiseBank(NOISE, keep_short_mb=0.3)  # room for one 4 s file
    for seed in range(12):
        small.segment(100_000, np.random.default_rng(seed))
    assert len(small._short) == 1


def test_mono_decoding_is_unchanged(tmp_path, speech):
    """Mono files are no longer averaged over one channel: the same samples, bit for bit; stereo still averaged."""
    sf.write(tmp_path / "mono.flac", speech, 16000, subtype="PCM_16")
    stereo = np.stack([speech, speech[::-1]], axis=1)
    sf.write(tmp_path / "stereo.wav", stereo, 16000, subtype="FLOAT")
    for name in ("mono.flac", "stereo.wav"):
        path = str(tmp_path / name)
        expected = sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1)
        decoded = decode_audio({"path": path, "bytes": None})
        assert decoded.dtype == np.float32 and np.array_equal(decoded, expected)
