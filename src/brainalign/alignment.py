"""Alignment stage: layer activations at the model's frame rate -> one row per fMRI volume.

Volume k is taken to sample the brain at ``(k + slice_time_ref) * t_r`` seconds after stimulus
onset (fMRIPrep's slice-timing reference, 0.5 by default). Three response models:

- ``hrf``: activations averaged in bins of ``t_r / oversampling``, convolved with a canonical HRF
  from nilearn (Glover or SPM), then sampled at the volume times;
- ``fir``: activations averaged within each volume's TR (mean pooling), then stacked at
  ``delays`` volumes back, so the encoding model learns the response shape;
- ``lanczos``: activations resampled at the volume times with a Lanczos filter cut off at the
  Nyquist frequency of the TR grid (the Huth lab's ``lanczosinterp2D``), then stacked at
  ``delays`` volumes back like ``fir``.

Features are computed per stimulus with t=0 at stimulus onset. A run whose stimulus starts
``onset_s`` seconds after its first kept volume gets ``ceil((onset_s + duration_s) / t_r)`` rows:
volume k samples the stimulus at ``(k + slice_time_ref) * t_r - onset_s``. The onset may be
negative (the stimulus began before the first kept volume): the features are then those of the
full run, cropped to the kept volumes.

Every run starts from silence, and every brain answers a sound's onset. Two things keep that
onset out of the scores:

- :func:`align` centres each feature on its mean over the stimulus before the convolution or the
  delays, so the time before the stimulus (and the missing history of the first volumes) stands
  at the feature's mean. Uncentred activations, convolved from silence, put the same large ramp
  at the start of every run whatever the audio (20-80 % of a layer's variance in the first
  20 volumes of real Whisper features), and any BOLD that happens to be high at run starts
  then "predicts" every held-out run; circular-shift nulls do not reproduce it.
- :func:`first_volume` gives the first volume that is fitted and scored: the volumes before the
  stimulus onset and during the onset transient (``exclude_onset_s``, as Huth-lab pipelines trim)
  are left out of the BOLD before it is cleaned and out of the features, and FIR / Lanczos rows
  whose delayed copies would reach before the stimulus (zeros standing in for missing history)
  are never kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def n_volumes(duration_s: float, t_r: float) -> int:
    """Volumes that cover a stimulus of ``duration_s`` seconds."""
    return int(np.ceil(duration_s / t_r - 1e-9))


def seconds_to_volumes(seconds: float, t_r: float) -> int:
    """A duration in seconds as the nearest whole number of volumes of ``t_r`` seconds."""
    return round(seconds / t_r)


def analysed_rows(features: np.ndarray, first: int, n_analysed: int) -> np.ndarray:
    """The rows of a run's volume-rate features (one per volume of the stimulus grid,
    :func:`align`) that match its analysed volumes: up to ``n_analysed`` rows from volume
    ``first`` on (:func:`first_volume`: after the silence and the onset transient). Fewer rows
    come back when the features end sooner; ``encoding.split_blocks`` reports that mismatch
    with the BOLD."""
    if first < 0 or n_analysed < 0:
        raise ValueError(f"first ({first}) and n_analysed ({n_analysed}) must be >= 0.")
    return features[first:first + n_analysed]


def bin_mean(frame_times: np.ndarray, values: np.ndarray, bin_s: float, n_bins: int
             ) -> np.ndarray:
    """Mean of ``values`` (n_frames, n_features) in bins [i*bin_s, (i+1)*bin_s); empty bins
    take the previous bin's value (zero before the first frame)."""
    # a frame on a bin edge belongs to the later bin whatever the rounding of
    # ``frame_times / bin_s`` (frames shifted by whole TRs must fall in the same bins)
    idx = np.floor(np.round(np.asarray(frame_times) / bin_s, 6)).astype(int)
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


def delay_stack(per_vol: np.ndarray, delays: list[int]) -> np.ndarray:
    """``per_vol`` (n_vols, n_features) stacked at ``delays`` volumes back, shape
    (n_vols, n_features * len(delays)); rows shifted in from before the run are zero."""
    n_vols, n_feat = per_vol.shape
    out = np.zeros((n_vols, n_feat * len(delays)), dtype=np.float32)
    for j, d in enumerate(delays):
        if d < n_vols:
            out[d:, j * n_feat:(j + 1) * n_feat] = per_vol[: n_vols - d]
    return out


def fir_features(frame_times: np.ndarray, values: np.ndarray, t_r: float, n_vols: int,
                 delays: list[int]) -> np.ndarray:
    """Per-TR mean features stacked at ``delays`` volumes back, shape
    (n_vols, n_features * len(delays)); rows before the stimulus are zero."""
    return delay_stack(bin_mean(frame_times, values, t_r, n_vols), delays)


def lanczos_kernel(x: np.ndarray, window: int = 3) -> np.ndarray:
    """Lanczos kernel ``sinc(x) sinc(x / window)`` for ``|x| < window``, zero elsewhere."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.abs(x) < window, np.sinc(x) * np.sinc(x / window), 0.0)


def lanczos_resample(frame_times: np.ndarray, values: np.ndarray, sample_times: np.ndarray,
                     cutoff: float, window: int = 3) -> np.ndarray:
    """Lanczos-filtered ``values`` (n_frames, n_features) at ``sample_times``.

    As the Huth lab's ``lanczosinterp2D``: sample k is ``sum_i L((t_k - t_i) * cutoff) x_i``,
    with ``cutoff`` in Hz (``1 / t_r`` puts the filter's cutoff at the Nyquist frequency of the
    TR grid). Their sum grows with the frame rate; here it is divided by the kernel's sum over a
    full window of the mean frame spacing, so a constant input stays constant wherever the
    window lies inside the stimulus. Outside it there are no frames (silence = zero features),
    so the first and last ``window`` samples taper towards zero.
    """
    frame_times = np.asarray(frame_times, dtype=np.float64)
    values = np.asarray(values)
    out = np.zeros((len(sample_times), values.shape[1]), dtype=np.float64)
    if frame_times.size == 0:
        return out
    order = np.argsort(frame_times, kind="stable")
    frame_times, values = frame_times[order], values[order]
    # mean frame spacing (the frame density; irregular frames are weighted by it too)
    dt = float(np.ptp(frame_times)) / (frame_times.size - 1) if frame_times.size > 1 else 0.0
    dt = dt if dt > 0 else 1.0 / cutoff
    half = window / cutoff  # seconds either side
    n_half = int(np.ceil(half / dt))
    norm = lanczos_kernel(np.arange(-n_half, n_half + 1) * dt * cutoff, window).sum()
    lo = np.searchsorted(frame_times, np.asarray(sample_times) - half, side="right")
    hi = np.searchsorted(frame_times, np.asarray(sample_times) + half, side="left")
    for k, (a, b) in enumerate(zip(lo, hi, strict=True)):
        if b > a:
            w = lanczos_kernel((sample_times[k] - frame_times[a:b]) * cutoff, window)
            out[k] = w @ values[a:b] / norm
    return out


def lanczos_features(frame_times: np.ndarray, values: np.ndarray, t_r: float, n_vols: int,
                     delays: list[int], window: int = 3, slice_time_ref: float = 0.5,
                     start_s: float = 0.0) -> np.ndarray:
    """Lanczos-resampled features at the volume times ``(k + slice_time_ref) * t_r``, stacked
    at ``delays`` volumes back: shape (n_vols, n_features * len(delays)). Rows sampled before
    ``start_s`` (the stimulus onset) are zero."""
    sample_times = (np.arange(n_vols) + slice_time_ref) * t_r
    per_vol = lanczos_resample(frame_times, values, sample_times, 1.0 / t_r, window)
    per_vol[sample_times < start_s] = 0.0
    return delay_stack(per_vol, delays)


def first_volume(onset_s: float, t_r: float, exclude_onset_s: float = 0.0,
                 method: str = "hrf", delays: list[int] | None = None) -> int:
    """Index (from the run's first kept volume) of the first volume fitted and scored.

    Left out: the volumes before the stimulus onset and those within ``exclude_onset_s`` seconds
    after it (the onset transient); with ``fir`` and ``lanczos`` also every row whose delayed
    copies would reach before the onset, so no zero row stands in for missing history. A
    negative ``onset_s`` (the stimulus began before the first kept volume) counts all of this
    from the true onset: a run whose first kept volume is N volumes later than in the full run
    gets ``max(0, first_volume(onset_s + N * t_r) - N)``.
    """
    if exclude_onset_s < 0:
        raise ValueError(f"exclude_onset_s must be >= 0, got {exclude_onset_s}.")
    first = n_volumes(onset_s + exclude_onset_s, t_r)
    if method in ("fir", "lanczos"):
        first = max(first, n_volumes(onset_s, t_r) + max(delays or [1, 2, 3, 4]))
    return max(first, 0)


@dataclass(frozen=True)
class AlignOptions:
    """Settings of :func:`align`; the defaults are the config schema's (``alignment``; the
    schema requires ``method``, ``hrf`` here).

    Attributes
    ----------
    method : response model, ``hrf``, ``fir`` or ``lanczos`` (see the module docstring)
    hrf_model : canonical HRF of ``hrf``, ``glover`` or ``spm``
    delays : volumes back at which ``fir`` and ``lanczos`` stack the features
    slice_time_ref : where in its TR a volume samples the brain (0: start, 1: end)
    lanczos_window : Lanczos kernel lobes either side (``lanczos``)
    center : subtract each feature's mean over the stimulus's frames first (see the module
        docstring); the rows before the onset are then the features' mean (zero), not silence
        standing for "no activation"
    """

    method: str = "hrf"
    hrf_model: str = "glover"
    delays: tuple[int, ...] = (1, 2, 3, 4)
    slice_time_ref: float = 0.5
    lanczos_window: int = 3
    center: bool = True

    @classmethod
    def from_config(cls, alignment: dict[str, Any]) -> AlignOptions:
        """The options of a config's ``alignment`` section (``fir_delays`` -> ``delays``)."""
        return cls(method=alignment["method"], hrf_model=alignment["hrf_model"],
                   delays=tuple(alignment["fir_delays"]),
                   slice_time_ref=alignment["slice_time_ref"],
                   lanczos_window=alignment["lanczos_window"])


def align(frame_times: np.ndarray, values: np.ndarray, t_r: float, duration_s: float,
          options: AlignOptions | None = None, *, onset_s: float = 0.0) -> np.ndarray:
    """Features for each volume of a run whose stimulus of ``duration_s`` seconds starts
    ``onset_s`` seconds after the run's first (kept) volume: ``n_volumes(onset_s + duration_s,
    t_r)`` rows; ``frame_times`` are relative to the stimulus onset. ``options``: the response
    model and its settings (:class:`AlignOptions`; default: the schema's defaults).

    A negative ``onset_s``: the stimulus began before the first kept volume (released data
    often drop the first volumes after the audio started). The features are then computed on
    the volume grid extended back to the onset (whole TRs, so every volume keeps its sampling
    time) and cropped to the kept volumes: rows equal to those of the full run, with the
    HRF's and the delays' history from the stimulus's start."""
    opts = options or AlignOptions()
    if onset_s <= -duration_s:
        raise ValueError(f"the stimulus ({duration_s:g} s) ends before the run's first kept "
                         f"volume (onset {onset_s:g} s): check the onset in events.tsv or "
                         "`onsets`, and `bold.start_volume`.")
    n_before = n_volumes(-onset_s, t_r) if onset_s < 0 else 0  # volumes missing from the run
    onset_s += n_before * t_r
    n_vols = n_volumes(duration_s + onset_s, t_r)
    run_times = np.asarray(frame_times, dtype=np.float64) + onset_s  # t=0: first grid volume
    if opts.center and len(values):
        values = np.asarray(values, dtype=np.float64)
        values = values - values.mean(0)
    if opts.method == "hrf":
        out = hrf_features(run_times, values, t_r, n_vols, opts.hrf_model,
                           slice_time_ref=opts.slice_time_ref)
    elif opts.method == "fir":
        out = fir_features(run_times, values, t_r, n_vols, list(opts.delays))
    elif opts.method == "lanczos":
        out = lanczos_features(run_times, values, t_r, n_vols, list(opts.delays),
                               opts.lanczos_window, opts.slice_time_ref, start_s=onset_s)
    else:
        raise ValueError(f"unknown alignment method '{opts.method}' (use 'hrf', 'fir' or "
                         "'lanczos').")
    return out[n_before:]
