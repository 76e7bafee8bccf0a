"""Tests of brainalign.audio: stimulus files -> 16 kHz mono float32, with errors naming the file."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from brainalign import audio


def tone(freq: float, sr: int, duration: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(sr * duration))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_frequency(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / sr)[spec.argmax()])


def test_stereo_44k1_becomes_mono_16k_with_tone_preserved(tmp_path):
    sr, duration = 44_100, 2.0
    left = tone(440.0, sr, duration, 0.6)
    right = tone(440.0, sr, duration, 0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), sr, subtype="PCM_16")

    out = audio.load_audio(path)
    assert out.ndim == 1 and out.dtype == np.float32
    assert out.size == int(duration * audio.TARGET_SR)  # 88200 * 160 / 441 = 32000
    assert peak_frequency(out, audio.TARGET_SR) == pytest.approx(440.0, abs=1.0)
    # mono is the channel mean: amplitude (0.6 + 0.2) / 2 = 0.4 (away from the filter edges)
    mid = out[4000:-4000]
    assert np.sqrt(2 * np.mean(mid**2)) == pytest.approx(0.4, rel=0.01)
    assert audio.audio_duration(path) == pytest.approx(duration)


def test_resampling_removes_content_above_new_nyquist():
    sr = 44_100
    x = tone(440.0, sr, 1.0) + tone(12_000.0, sr, 1.0)  # 12 kHz cannot exist at 16 kHz
    out = audio.resample(x, sr)
    spec = np.abs(np.fft.rfft(out * np.hanning(out.size)))
    freqs = np.fft.rfftfreq(out.size, 1 / audio.TARGET_SR)
    at_440 = spec[np.argmin(np.abs(freqs - 440))]
    # anti-aliasing: no 12 kHz alias folded back to 16 - 12 = 4 kHz
    at_4k = spec[np.abs(freqs - 4000) < 20].max()
    assert at_4k < 1e-2 * at_440


def test_16k_mono_file_is_read_unchanged(tmp_path):
    x = tone(1000.0, audio.TARGET_SR, 0.5)
    path = tmp_path / "mono.flac"
    sf.write(path, x, audio.TARGET_SR, subtype="PCM_24")
    out = audio.load_audio(path)
    np.testing.assert_allclose(out, x, atol=1e-6)


def test_save_wav_clips_and_round_trips(tmp_path):
    path = tmp_path / "out.wav"
    x = np.array([0.0, 0.5, -0.5, 2.0, -3.0], dtype=np.float32)
    audio.save_wav(path, x)
    info = sf.info(path)
    assert info.samplerate == audio.TARGET_SR and info.subtype == "PCM_16"
    back, _ = sf.read(path, dtype="float32")
    np.testing.assert_allclose(back, np.clip(x, -1, 1), atol=1 / 2**15)


def test_to_mono_rejects_3d_arrays():
    with pytest.raises(audio.AudioError, match="expected 1 or 2"):
        audio.to_mono(np.zeros((4, 2, 2)), "x.wav")


def _check_error_names(path, *fragments):
    with pytest.raises(audio.AudioError) as exc:
        audio.load_audio(path)
    msg = str(exc.value)
    assert str(path) in msg
    for f in fragments:
        assert f in msg
    return msg


def test_missing_file_error_names_path(tmp_path):
    _check_error_names(tmp_path / "nope.wav", "does not exist")


def test_zero_byte_file_error_names_path(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    _check_error_names(path, "cannot be read as audio")


def test_wav_with_no_samples_error_names_path(tmp_path):
    path = tmp_path / "nosamples.wav"
    sf.write(path, np.zeros((0, 2), np.float32), 22_050)
    _check_error_names(path, "empty")


def test_silent_file_error_names_path(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(16_000, np.float32), 16_000)
    _check_error_names(path, "silent")


def test_corrupt_file_error_names_path(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    _check_error_names(path, "cannot be read as audio")
    with pytest.raises(audio.AudioError) as exc:
        audio.audio_duration(path)
    assert str(path) in str(exc.value)


def test_non_finite_samples_error_names_path(tmp_path):
    path = tmp_path / "nan.wav"
    x = tone(440.0, 16_000, 0.1)
    x[10] = np.nan
    sf.write(path, x, 16_000, subtype="FLOAT")
    _check_error_names(path, "NaN")
