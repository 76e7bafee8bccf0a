"""Audio stage: read a stimulus file and bring it to the model's input format (16 kHz mono float32).

Every check names the file, so a bad stimulus stops the run with a message a user can act on.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

TARGET_SR = 16_000


class AudioError(ValueError):
    """A stimulus file that cannot be used as model input."""


def to_mono(audio: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """Average channels of ``audio`` (n_samples[, n_channels]) into one channel."""
    if audio.ndim == 1:
        return audio
    if audio.ndim == 2:
        return audio.mean(axis=1)
    raise AudioError(f"{path}: expected 1 or 2 array dimensions, got shape {audio.shape}.")


def resample(audio: np.ndarray, sr_in: int, sr_out: int = TARGET_SR) -> np.ndarray:
    """Polyphase resampling (anti-aliased) of a mono signal from ``sr_in`` to ``sr_out`` Hz."""
    if sr_in == sr_out:
        return audio.astype(np.float32, copy=False)
    from scipy.signal import resample_poly  # here: scipy.signal costs ~1 s to import

    ratio = Fraction(sr_out, sr_in).limit_denominator(10_000)
    out = resample_poly(audio.astype(np.float64), ratio.numerator, ratio.denominator)
    return out.astype(np.float32)


def load_audio(path: str | Path, target_sr: int = TARGET_SR) -> np.ndarray:
    """Read a wav/flac/ogg file as mono float32 at ``target_sr`` Hz.

    Returns
    -------
    audio : array of shape (n_samples,)
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: stimulus file does not exist; check the `stimuli` paths in "
                         "your config.")
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except Exception as err:  # soundfile raises several types for corrupt files
        raise AudioError(f"{path}: cannot be read as audio ({err}). Convert it to wav or flac "
                         "(e.g. `ffmpeg -i in.mp3 out.wav`).") from err
    audio = to_mono(audio, path)
    if audio.size == 0:
        raise AudioError(f"{path}: the audio file is empty (0 samples).")
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path}: the audio contains NaN or infinite samples.")
    if float(np.max(np.abs(audio))) < 1e-6:
        raise AudioError(f"{path}: the audio is silent (peak amplitude < 1e-6); was the right "
                         "file exported?")
    return resample(audio, int(sr), target_sr)


def audio_duration(path: str | Path) -> float:
    """Duration of an audio file in seconds, read from its header only."""
    try:
        info = sf.info(str(path))
    except Exception as err:
        raise AudioError(f"{path}: cannot be read as audio ({err}).") from err
    return info.frames / info.samplerate


def save_wav(path: str | Path, audio: np.ndarray, sr: int = TARGET_SR) -> None:
    """Write mono float audio as 16-bit PCM wav."""
    sf.write(str(path), np.clip(audio, -1.0, 1.0), sr, subtype="PCM_16")
