"""Alignment stage: layer activations at the model's frame rate -> one row per fMRI volume.

Volume k is taken to sample the brain at ``(k + slice_time_ref) * t_r`` seconds after stimulus
onset (fMRIPrep's slice-timing reference, 0.5 by default). Two response models:

- ``hrf``: activations averaged in bins of ``t_r / oversampling``, convolved with a canonical HRF
  from nilearn (Glover or SPM), then sampled at the volume times;
- ``fir``: activations averaged within each volume's TR, then stacked at ``delays`` volumes back,
  so the encoding model learns the response shape.
"""

from __future__ import annotations

import numpy as np


def n_volumes(duration_s: float, t_r: float) -> int:
    """Volumes that cover a stimulus of ``duration_s`` seconds."""
    return int(np.ceil(duration_s / t_r - 1e-9))


def bin_mean(frame_times: np.ndarray, values: np.ndarray, bin_s: float, n_bins: int
             ) -> np.ndarray:
    """Mean of ``values`` (n_frames, n_features) in bins [i*bin_s, (i+1)*bin_s); empty bins
    take the previous bin's value (zero before the first frame)."""
    idx = np.floor(frame_times / bin_s).astype(int)
    ok = (idx >= 0) & (idx < n_bins)
    sums = np.zeros((n_bins, values.shape[1]), dtype=np.float64)
    np.add.at(sums, idx[ok], values[ok])
    counts = np.bincount(idx[ok], minlength=n_bins)
    out = sums / np.maximum(counts, 1)[:, None]
    for i in np.flatnonzero(counts == 0):
        out[i] = out[i - 1] if i > 0 else 0.0
    return out


def hrf_kernel(t_r: float, oversampling: int, model: str = "glover") -> np.ndarray:
    """Canonical HRF sampled every ``t_r / oversampling`` s, summing to one (nilearn)."""
    from nilearn.glm.first_level import glover_hrf, spm_hrf

    fn = {"glover": glover_hrf, "spm": spm_hrf}[model]
    return fn(t_r=t_r, oversampling=oversampling, time_length=32.0, onset=0.0)


def hrf_features(frame_times: np.ndarray, values: np.ndarray, t_r: float, n_vols: int,
                 hrf_model: str = "glover", oversampling: int = 10,
                 slice_time_ref: float = 0.5) -> np.ndarray:
    """HRF-convolved features at volume times, shape (n_vols, n_features)."""
    dt = t_r / oversampling
    n_bins = int(np.ceil((n_vols + 1) * oversampling))
    fine = bin_mean(frame_times, values, dt, n_bins)
    kernel = hrf_kernel(t_r, oversampling, hrf_model)
    # causal convolution along time for every feature at once
    conv = _fft_convolve(fine, kernel)
    sample_at = np.round((np.arange(n_vols) + slice_time_ref) * oversampling).astype(int)
    return conv[sample_at].astype(np.float32)


def _fft_convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    from scipy.signal import fftconvolve

    return fftconvolve(x, kernel[:, None], axes=0)[: x.shape[0]]


def fir_features(frame_times: np.ndarray, values: np.ndarray, t_r: float, n_vols: int,
                 delays: list[int]) -> np.ndarray:
    """Per-TR mean features stacked at ``delays`` volumes back, shape
    (n_vols, n_features * len(delays)); rows before the stimulus are zero."""
    per_tr = bin_mean(frame_times, values, t_r, n_vols)
    out = np.zeros((n_vols, per_tr.shape[1] * len(delays)), dtype=np.float32)
    for j, d in enumerate(delays):
        block = slice(j * per_tr.shape[1], (j + 1) * per_tr.shape[1])
        out[d:, block] = per_tr[: n_vols - d] if d < n_vols else 0.0
    return out


def align(frame_times: np.ndarray, values: np.ndarray, t_r: float, duration_s: float,
          method: str = "hrf", hrf_model: str = "glover", delays: list[int] | None = None,
          slice_time_ref: float = 0.5) -> np.ndarray:
    """Features for each volume acquired during a stimulus of ``duration_s`` seconds."""
    n_vols = n_volumes(duration_s, t_r)
    if method == "hrf":
        return hrf_features(frame_times, values, t_r, n_vols, hrf_model,
                            slice_time_ref=slice_time_ref)
    if method == "fir":
        return fir_features(frame_times, values, t_r, n_vols, delays or [1, 2, 3, 4])
    raise ValueError(f"unknown alignment method '{method}' (use 'hrf' or 'fir').")
