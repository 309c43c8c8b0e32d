"""The pitch-shifted view: the shift drawn as before, of the right size, by librosa's method (vectorised)."""

import numpy as np
import pytest
import soundfile as sf
from conftest import DEMO, seeded_globals

from hf_corrdistill.data.views import (
    PITCH_FFT,
    PITCH_HOP,
    PITCH_SEMITONES,
    Distorter,
    draw_semitones,
    huang2022,
    only_kind,
    pitch_shift,
)

RATE = 16000


@pytest.fixture(scope="module")
def speech():
    audio, rate = sf.read(DEMO / "speech" / "train" / "train-0000.flac", dtype="float32")
    assert rate == RATE
    return audio


def dominant_frequency(audio: np.ndarray) -> float:
    middle = audio[4000:-4000]  # away from the edges
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(middle.size), 1 << 19))
    return float(np.argmax(spectrum) * RATE / (1 << 19))


def test_the_shift_is_drawn_as_audiomentations_drew_it():
    """Same range, same value for the same generator, and the generator left as the previous draw left it."""
    from audiomentations import PitchShift

    assert PITCH_SEMITONES == (-4.0, 4.0)
    previous = PitchShift(min_semitones=-4.0, max_semitones=4.0, p=1.0)  # the former transform's draw
    drawn = []
    for seed in range(200):
        old_rng, new_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        with seeded_globals(old_rng):
            previous.randomize_parameters(np.zeros(16, np.float32), RATE)
        drawn.append(draw_semitones(new_rng))
        assert drawn[-1] == previous.parameters["num_semitones"]
        assert new_rng.bit_generator.state == old_rng.bit_generator.state  # later draws of the view unchanged
    assert -4 <= min(drawn) < -3.5 and 3.5 < max(drawn) <= 4 and abs(np.mean(drawn)) < 0.5


@pytest.mark.parametrize("semitones", [-4.0, -2.5, -0.7, 1.3, 4.0])
def test_a_tone_moves_by_the_drawn_number_of_semitones(semitones):
    t = np.arange(2 * RATE) / RATE
    for frequency in (220.0, 440.0, 1000.0):
        tone = (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
        shifted = pitch_shift(tone, semitones)
        assert shifted.shape == tone.shape and shifted.dtype == np.float32
        moved = 12 * np.log2(dominant_frequency(shifted) / frequency)
        assert abs(moved - semitones) < 0.02, (frequency, moved)
        power = np.mean(np.square(shifted[4000:-4000])) / np.mean(np.square(tone))
        assert 0.7 < power < 1.3  # the level is kept, about


@pytest.mark.parametrize("semitones", [-4.0, -1.3, 0.0, 2.7, 4.0])
def test_it_matches_librosa_pitch_shift(speech, semitones):
    """The same algorithm as librosa.effects.pitch_shift (phase vocoder, then soxr resampling), computed in float32:
    equal to librosa's float64 result within 1e-3 of the signal's RMS, sample for sample."""
    import librosa

    audio = speech[:48000]
    reference = librosa.effects.pitch_shift(audio.astype(np.float64), sr=RATE, n_steps=semitones, n_fft=PITCH_FFT,
                                            hop_length=PITCH_HOP, res_type="soxr_hq")
    shifted = pitch_shift(audio, semitones)
    assert shifted.shape == audio.shape
    error = np.sqrt(np.mean(np.square(shifted - reference)) / np.mean(np.square(reference)))
    assert error < 1e-3


@pytest.mark.parametrize("negative_zeros", [False, True])
def test_digital_silence_inside_matches_librosa(speech, monkeypatch, negative_zeros):
    """Speech, a second of exact zeros, speech (many blocks of frames): within 1e-3 of librosa's RMS. A silent bin's
    phase is 0 as in librosa also when the FFT returns -0.0 for it (some FFT libraries do; atan2(0, -0.0) is pi)."""
    import librosa

    from hf_corrdistill.data import views

    if negative_zeros:
        rfft = views._rfft

        def signed_rfft(rows, n=None):
            spectrum = rfft(rows, n)
            spectrum.real[spectrum.real == 0] = -0.0
            return spectrum

        monkeypatch.setattr(views, "_rfft", signed_rfft)
    audio = np.concatenate([speech[:40000], np.zeros(RATE, np.float32), speech[:40000]])
    for semitones in (-2.7, 3.1):
        reference = librosa.effects.pitch_shift(audio.astype(np.float64), sr=RATE, n_steps=semitones,
                                                n_fft=PITCH_FFT, hop_length=PITCH_HOP, res_type="soxr_hq")
        shifted = pitch_shift(audio, semitones)
        assert np.sqrt(np.mean(np.square(shifted - reference)) / np.mean(np.square(reference))) < 1e-3


def test_short_and_silent_inputs(speech):
    for length in (0, 1, 300, PITCH_FFT, 5000):
        out = pitch_shift(speech[:length], 3.0)
        assert out.shape == (length,) and np.isfinite(out).all()
    padded = np.concatenate([np.zeros(5000, np.float32), speech[:20000], np.zeros(3000, np.float32)])
    out = pitch_shift(padded, -2.0)
    assert np.isfinite(out).all() and np.abs(out[:3000]).max() < 1e-3 * np.abs(padded).max()
    with pytest.raises(ValueError, match="multiple"):
        pitch_shift(speech[:4000], 1.0, n_fft=1000, hop=300)


def test_the_pitch_view_uses_the_drawn_shift(speech):
    distorter = Distorter(only_kind("none", "pitch", huang2022()), None)
    for seed in range(3):
        view, snr = distorter(speech, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        rng.choice(1, p=[1.0])  # the combo draw
        assert np.array_equal(view, pitch_shift(speech, draw_semitones(rng))) and snr == np.inf
