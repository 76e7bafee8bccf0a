"""BOLD stage: one fMRIPrep run -> a (n_volumes, n_voxels) array, cleaned within the run.

The run is trimmed to the volumes acquired during its stimulus (after ``start_volume`` dummy
volumes, and without the ``first_volume`` volumes of silence and onset transient that
``alignment.first_volume`` leaves out), masked with the subject's brain mask, then detrended and
z-scored. Its confound regressors are trimmed and cleaned by the same function
(:func:`clean_signals`), so that regressing them out inside the encoding folds removes what they
explain from the cleaned BOLD and puts no drift back. All of it is computed from this run alone,
so with run-wise cross-validation no step sees held-out data.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.openers import ImageOpener

#: nilearn ``load_confounds`` strategies brainalign supports (no scrubbing: censored volumes
#: would break the run-wise circular-shift null)
CONFOUND_STRATEGIES = ("motion", "wm_csf", "global_signal", "high_pass", "compcor")


class BoldError(ValueError):
    """A BOLD run or mask that does not fit the stimulus or the pipeline."""


@dataclass(frozen=True)
class CleanOptions:
    """How a run is trimmed to its stimulus and cleaned (:func:`load_run`,
    :func:`clean_series`, :func:`kept_volumes`, :func:`clean_run_in_blocks`); the defaults are
    the config schema's (``bold``).

    Attributes
    ----------
    start_volume : index of the first stimulus volume (dummy scans before it are dropped)
    max_extra_volumes : volumes allowed after the stimulus ends before the run is refused as a
        mismatch (scanners often run on for a few volumes)
    max_missing_volumes : volumes the run may lack at the end of the stimulus (stopped early);
        the run is then shorter and the encoding stage cuts the features to match
    first_volume : volumes after ``start_volume`` left out before cleaning (the silence before
        the stimulus and its onset transient: ``alignment.first_volume``); not a config key,
        it depends on the run's onset
    detrend : remove each target's linear trend within the run
    standardize : z-score each target within the run
    """

    start_volume: int = 0
    max_extra_volumes: int = 20
    max_missing_volumes: int = 0
    first_volume: int = 0
    detrend: bool = True
    standardize: bool = True

    @classmethod
    def from_config(cls, bold: dict[str, Any], first_volume: int = 0) -> CleanOptions:
        """The options of a config's ``bold`` section, for a run whose first ``first_volume``
        volumes after ``start_volume`` are left out."""
        return cls(start_volume=bold["start_volume"], max_extra_volumes=bold["max_extra_volumes"],
                   max_missing_volumes=bold["max_missing_volumes"], first_volume=first_volume,
                   detrend=bold["detrend"], standardize=bold["standardize"])


@contextmanager
def readable(path: str | Path, what: str) -> Iterator[None]:
    """Turn the low-level error of reading a truncated or corrupt image file (gzip's EOFError,
    nibabel's short read, a GIFTI's or CIFTI's broken XML) into a BoldError naming the file and
    the fix.

    nibabel reads a NIfTI's header when it loads it and the data only when asked, so the body
    that reads the data must run inside this context too.
    """
    from xml.etree.ElementTree import ParseError
    from xml.parsers.expat import ExpatError

    try:
        yield
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (EOFError, OSError, zlib.error, ExpatError, ParseError,
            nib.filebasedimages.ImageFileError) as err:
        raise BoldError(f"{path}: the {what} file is truncated or corrupt ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}); fetch it again (an "
                        "interrupted download or copy leaves such files; `gzip -t` checks a "
                        ".gz file).") from err


def check_tr(path: str | Path, found_s: float | None, t_r: float, source: str) -> None:
    """Refuse a run whose recorded repetition time (``found_s`` seconds, read from ``source``;
    None when not recorded) differs from the config's ``t_r``."""
    if found_s is not None and found_s > 0 and abs(found_s - t_r) > 1e-3:
        raise BoldError(f"{path}: {source} gives a TR of {found_s:g} s but the config says tr: "
                        f"{t_r:g}; set `tr` to the runs' repetition time (with a wrong TR the "
                        "stimulus is matched to the wrong number of volumes and the features "
                        "are misaligned).")


def same_grid(a: nib.spatialimages.SpatialImage, b: nib.spatialimages.SpatialImage) -> bool:
    """Whether two images share one voxel grid (spatial shape, and affine to 1e-3 mm)."""
    return a.shape[:3] == b.shape[:3] and np.allclose(a.affine, b.affine, atol=1e-3)


def subject_mask(mask_paths: list[str | Path]) -> nib.Nifti1Image:
    """Intersection of the brain masks of a subject's runs (all must share one grid)."""
    imgs, masks = [], []
    for p in mask_paths:
        with readable(p, "brain mask"):
            imgs.append(nib.load(str(p)))
            masks.append(np.asarray(imgs[-1].dataobj) > 0)
    ref = imgs[0]
    data = masks[0]
    for p, img, mask in zip(mask_paths[1:], imgs[1:], masks[1:], strict=True):
        if not same_grid(img, ref):
            raise BoldError(f"{p}: brain mask is on a different grid than {mask_paths[0]}; all "
                            "runs of a subject must be in the same space and resolution.")
        data &= mask
    if not data.any():
        raise BoldError(f"{mask_paths[0]}: the brain mask (intersected over runs) is empty.")
    return nib.Nifti1Image(data.astype(np.uint8), ref.affine)


def load_run(bold_path: str | Path, mask_img: nib.Nifti1Image, n_vols: int, t_r: float,
             options: CleanOptions | None = None) -> np.ndarray:
    """Masked, trimmed and cleaned BOLD of one run.

    Parameters
    ----------
    n_vols : volumes acquired during the stimulus (from its duration and the TR).
    options : trimming and cleaning (:class:`CleanOptions`; default: the schema's defaults)

    Returns
    -------
    bold : array of shape (n_kept, n_voxels), float32; n_kept = n_vols - first_volume unless
        the run stopped up to ``max_missing_volumes`` early.
    """
    from nilearn.masking import apply_mask

    bold_path = Path(bold_path)
    if not bold_path.exists():
        raise BoldError(f"{bold_path}: BOLD run not found; check `bold_template`, subjects and "
                        "runs in your config.")
    with readable(bold_path, "BOLD run"):
        img = nib.load(str(bold_path))
    if img.ndim != 4:
        raise BoldError(f"{bold_path}: expected a 4D BOLD series, got a {img.ndim}D image of "
                        f"shape {img.shape}.")
    if not same_grid(img, mask_img):
        raise BoldError(f"{bold_path}: BOLD grid {img.shape[:3]} does not match its brain mask "
                        f"grid {mask_img.shape}; use the mask from the same fMRIPrep space.")
    header_tr = float(img.header.get_zooms()[3]) if len(img.header.get_zooms()) > 3 else 0.0
    if header_tr > 0 and abs(header_tr - t_r) > 1e-3 and img.header.get_xyzt_units()[1] == "sec":
        raise BoldError(f"{bold_path}: header TR is {header_tr} s but the config says tr: {t_r}.")
    # ensure_finite=False: nilearn would otherwise silently turn NaN voxels into zeros
    with readable(bold_path, "BOLD run"):
        data = apply_mask(img, mask_img, dtype=np.float32, ensure_finite=False)
    return clean_series(data, bold_path, n_vols, t_r, options)


def varying_targets(data: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Targets (columns of ``data``, shape (n_volumes, n_targets)) finite and not constant in
    this run, and in ``keep`` (the earlier runs' result) when given: bool (n_targets,)."""
    ok = np.isfinite(data).all(0) & (np.ptp(np.nan_to_num(data), axis=0) > 0)
    return ok if keep is None else keep & ok


def clean_signals(data: np.ndarray, t_r: float, detrend: bool = True,
                  standardize: bool = True) -> np.ndarray:
    """Detrend and (optionally) z-score each column of ``data`` (n_volumes, n_columns) within
    the run (nilearn ``signal.clean``): the one temporal cleaning applied to a run's BOLD and
    to its confounds."""
    from nilearn.signal import clean

    return clean(np.asarray(data, np.float64), detrend=detrend,
                 standardize="zscore_sample" if standardize else None, t_r=t_r,
                 ensure_finite=False)


def kept_volumes(n_acquired: int, path: str | Path, n_vols: int, t_r: float,
                 options: CleanOptions | None = None) -> slice:
    """The volumes of a run that are analysed, after checking its length against the stimulus.

    Parameters
    ----------
    n_acquired : volumes in the run's file
    n_vols : volumes its stimulus needs (from the onset and duration)
    options : start volume, volumes allowed extra or missing, and ``first_volume`` (left out
        after ``start_volume``: ``alignment.first_volume``) (:class:`CleanOptions`)
    """
    opts = options or CleanOptions()
    start_volume, first_volume = opts.start_volume, opts.first_volume
    max_extra_volumes, max_missing_volumes = opts.max_extra_volumes, opts.max_missing_volumes
    have = n_acquired - start_volume
    if have < n_vols - max_missing_volumes or have > n_vols + max_extra_volumes:
        raise BoldError(
            f"{path}: has {n_acquired} volumes; its stimulus needs {n_vols} volumes of "
            f"TR {t_r} s after start volume {start_volume} (at most {max_extra_volumes} extra "
            f"and {max_missing_volumes} missing allowed). Check the run <-> stimulus mapping, "
            "the TR, `bold.start_volume`, `bold.max_extra_volumes` and "
            "`bold.max_missing_volumes`.")
    warn_if_short(path, have, n_vols, t_r)
    stop = start_volume + min(n_vols, have)
    if stop - (start_volume + first_volume) < MIN_VOLUMES:
        raise BoldError(
            f"{path}: only {stop - start_volume - first_volume} volumes are left after leaving "
            f"out the first {first_volume} (silence before the stimulus and its onset "
            f"transient); at least {MIN_VOLUMES} are needed. Lower `bold.exclude_onset_s` or "
            "check the run's onset.")
    return slice(start_volume + first_volume, stop)


#: fewest volumes a run may keep after trimming
MIN_VOLUMES = 10


def clean_series(data: np.ndarray, path: str | Path, n_vols: int, t_r: float,
                 options: CleanOptions | None = None, *,
                 targets: str = "voxels inside the brain mask") -> np.ndarray:
    """Checks the run's length against its stimulus, trims it, refuses NaN or constant targets,
    then detrends and z-scores each target within the run (:func:`clean_signals`).

    Parameters
    ----------
    data : array of shape (n_acquired_volumes, n_targets), the whole run
    path : the run's file, named in errors
    options : trimming (``first_volume``: volumes after ``start_volume`` left out before
        cleaning) and cleaning (:class:`CleanOptions`; default: the schema's defaults)
    targets : what a column is, for error messages

    Returns
    -------
    bold : array of shape (n_kept, n_targets), float32
    """
    opts = options or CleanOptions()
    data = data[kept_volumes(data.shape[0], path, n_vols, t_r, opts)]
    bad = ~np.isfinite(data)
    if bad.any():
        n_bad = int(bad.any(axis=0).sum())
        raise BoldError(f"{path}: {n_bad} {targets} contain NaN or infinite values; fix the "
                        "preprocessing or exclude them from the mask.")
    constant = np.ptp(data, axis=0) == 0
    if constant.any():
        raise BoldError(f"{path}: {int(constant.sum())} {targets} are constant over the run (no "
                        "signal to model); exclude them from the mask (fMRIPrep's "
                        "desc-brain_mask should not contain any).")
    return clean_signals(data, t_r, opts.detrend, opts.standardize).astype(np.float32)


#: seconds after which nilearn's Glover HRF stays below 1 % of its peak (21.7 s; 99 % of its
#: absolute area lies within 19.5 s): a feature row carries the audio of about that much time
#: before it, so training and test volumes that far apart share no audio through the HRF
HRF_LENGTH_S = 22.0


def blocks_per_run(n_runs: int, n_folds: int) -> list[int]:
    """How many contiguous blocks each of a subject's runs is cut into for block
    cross-validation: ``n_folds`` blocks in all, spread as evenly as the runs allow (run
    borders are block borders: no block spans two acquisitions), at least one a run.

    >>> blocks_per_run(1, 5), blocks_per_run(2, 5), blocks_per_run(4, 3)
    ([5], [3, 2], [1, 1, 1, 1])
    """
    if n_runs < 1 or n_folds < 1:
        raise ValueError(f"need at least one run and one fold, got {n_runs} and {n_folds}.")
    base, extra = divmod(max(n_folds, n_runs), n_runs)
    return [base + (i < extra) for i in range(n_runs)]


def block_slices(n_volumes: int, n_blocks: int, gap: int) -> list[slice]:
    """Contiguous blocks of one run's analysed volumes, as equal as possible, with ``gap``
    volumes dropped on each side of every border between two blocks (so a block's volumes are
    at least ``2 * gap + 1`` volumes from the next block's). The run's own start and end need
    no gap: nothing is acquired beyond them.

    Parameters
    ----------
    n_volumes : the run's analysed volumes
    n_blocks : blocks to cut it into (1: the whole run)
    gap : volumes dropped on each side of each inner border

    Returns
    -------
    blocks : list of n_blocks slices into the run's volumes
    """
    edges = np.linspace(0, n_volumes, n_blocks + 1).round().astype(int)
    blocks = [slice(int(a) + (gap if i else 0), int(b) - (gap if i < n_blocks - 1 else 0))
              for i, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True))]
    shortest = min(b.stop - b.start for b in blocks)
    if shortest < MIN_VOLUMES:
        raise BoldError(
            f"a run of {n_volumes} analysed volumes cut into {n_blocks} blocks with {gap} "
            f"volumes dropped on each side of every border leaves blocks of {shortest} volumes "
            f"(at least {MIN_VOLUMES} needed); lower `encoding.cv.n_folds` or "
            "`encoding.cv.gap_s`.")
    return blocks


def clean_blocks(data: np.ndarray, t_r: float, blocks: Sequence[slice], detrend: bool = True,
                 standardize: bool = True) -> list[np.ndarray]:
    """Each block of one run cleaned on its own volumes only (:func:`clean_signals`): with
    folds that cut a run, no detrending or z-scoring may span a train/test border (the
    held-out block's values would reach the training data and the reverse).

    Parameters
    ----------
    data : array of shape (n_volumes, n_targets), the run's analysed volumes, not yet cleaned
    blocks : from :func:`block_slices`

    Returns
    -------
    list of arrays of shape (n_block_volumes, n_targets), float32
    """
    return [clean_signals(data[b], t_r, detrend, standardize).astype(np.float32)
            for b in blocks]


def clean_run_in_blocks(data: np.ndarray, confounds: np.ndarray, t_r: float, n_blocks: int,
                        gap: int, options: CleanOptions | None = None, *,
                        path: str | Path = "run") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A run's analysed volumes and confounds (``path``, named in errors), not yet cleaned, cut
    into ``n_blocks`` contiguous blocks (:func:`block_slices`, ``gap`` volumes dropped each side
    of an inner border) and cleaned block by block as ``options`` says (:class:`CleanOptions`'s
    ``detrend`` and ``standardize``; default: both): the BOLD detrended and z-scored, the
    confounds only detrended (:func:`load_run_confounds` says why), each on its block's volumes.

    Returns
    -------
    bold : (n_kept, n_targets) float32, the cleaned blocks one after the other
    confounds : (n_kept, n_confounds) float32, likewise
    bounds : (n_blocks, 2) int, each block's [start, stop) in the run's analysed volumes
    """
    try:
        blocks = block_slices(len(data), n_blocks, gap)
    except BoldError as err:
        raise BoldError(f"{path}: {err}") from None
    opts = options or CleanOptions()
    bold = np.concatenate(clean_blocks(data, t_r, blocks, opts.detrend, opts.standardize))
    if confounds.shape[1]:
        conf = np.concatenate(clean_blocks(confounds, t_r, blocks, opts.detrend, False))
    else:
        conf = np.zeros((len(bold), 0), np.float32)
    return bold, conf, np.array([[b.start, b.stop] for b in blocks], dtype=np.int64)


def regress_out(data: np.ndarray, confounds: np.ndarray) -> np.ndarray:
    """``data`` (n_volumes, n_targets) minus its least-squares fit on ``confounds``
    (n_volumes, n_confounds), within one run; unchanged when there are no confounds. For
    statistics computed without cross-validation (the noise ceiling); the encoding models fit
    the confound betas inside their folds instead."""
    if confounds.shape[1] == 0:
        return np.asarray(data)
    c = np.asarray(confounds, np.float64)
    c = c - c.mean(0)
    y = np.asarray(data, np.float64)
    beta, *_ = np.linalg.lstsq(c, y - y.mean(0), rcond=None)
    return (y - c @ beta).astype(np.float32)


#: fMRIPrep's names of a run's confounds TSV, preferred first: ``desc-confounds_timeseries``
#: (fMRIPrep >= 20.2) and ``desc-confounds_regressors`` (older releases, e.g. Narratives)
CONFOUNDS_NAMES = ("desc-confounds_timeseries.tsv", "desc-confounds_regressors.tsv")
#: entities that name a run (not a space, resolution or hemisphere of it), in BIDS order
_RUN_ENTITIES = ("sub", "ses", "task", "acq", "ce", "dir", "rec", "run", "echo")
_RUN_FILE = re.compile(r"(?:_bold\.nii(?:\.gz)?|_bold\.func\.gii|\.func\.gii|_bold\.dtseries\.nii"
                       r"|_timeseries\.tsv)$")


def confounds_path(run_path: str | Path) -> Path:
    """fMRIPrep's confounds TSV of a run, in the same folder: the run's entities (sub, ses,
    task, run ...) + ``_desc-confounds_timeseries.tsv``, or the older
    ``_desc-confounds_regressors.tsv`` when only that exists.

    ``run_path``: a volume (``..._space-S[_res-R]_desc-preproc_bold.nii.gz``), a surface
    hemisphere (``..._hemi-L_space-fsaverage6_bold.func.gii`` or fMRIPrep < 21's
    ``..._space-fsaverage6_hemi-L.func.gii``), a CIFTI run
    (``..._space-fsLR_den-91k_bold.dtseries.nii``) or a parcel time series
    (``...[_space-S]_desc-D_timeseries.tsv``). Without either file, the current name.
    """
    run_path = Path(run_path)
    name = run_path.name
    parts = name.split(".")[0].split("_")
    head = []
    for part in parts:
        if part.partition("-")[0] not in _RUN_ENTITIES or "-" not in part:
            break
        head.append(part)
    if not head or not head[0].startswith("sub-") or len(head) == len(parts) \
            or _RUN_FILE.search(name) is None:
        raise BoldError(f"{run_path}: not an fMRIPrep BOLD file name (..._desc-preproc_bold"
                        ".nii.gz, ..._hemi-L_space-fsaverage6_bold.func.gii, "
                        "..._space-fsLR_den-91k_bold.dtseries.nii or a parcel "
                        "..._desc-<atlas>_timeseries.tsv), so its confounds TSV cannot be found; "
                        "rename the run or set `bold.confounds.strategy: []`.")
    candidates = [run_path.with_name(f"{'_'.join(head)}_{c}") for c in CONFOUNDS_NAMES]
    return next((c for c in candidates if c.is_file()), candidates[0])


def load_run_confounds(bold_path: str | Path | Sequence[str | Path], volumes: slice,
                       strategy: list[str], t_r: float, detrend: bool = True,
                       motion: str = "basic", wm_csf: str = "basic",
                       global_signal: str = "basic") -> np.ndarray:
    """Confound regressors of one run, trimmed and filtered exactly like its BOLD.

    Read from fMRIPrep's confounds TSV beside the run (:func:`confounds_path`: volume, surface
    or parcel runs; current or older names) with nilearn's
    ``load_confounds`` and the given strategies, cut to the run's analysed ``volumes`` (the
    slice :func:`kept_volumes` gave its BOLD) and detrended by :func:`clean_signals` as the
    BOLD was (``detrend``). They are NOT regressed out here: the encoding stage regresses them
    out inside its cross-validation folds (betas from the training runs). Filtering them like
    the BOLD matters: with the BOLD detrended but the motion regressors only demeaned, the
    betas fitted on the training runs put the held-out run's motion drift back into it. They
    are not z-scored per run: that rescales each regressor differently in every run and breaks
    its linear relation to the BOLD across runs. Share of a drifting motion artefact left in
    held-out runs
    (tests/test_encoding.py): demeaned regressors 260-1200 %, detrended and z-scored 10-16 %,
    detrended 1-5 %.

    Returns
    -------
    confounds : array of shape (n_volumes, n_confounds), float32; (n_volumes, 0) for no
        strategy, with n_volumes the length of ``volumes``
    """
    n_kept = volumes.stop - volumes.start
    if not strategy:
        return np.zeros((n_kept, 0), np.float32)
    bad = sorted(set(strategy) - set(CONFOUND_STRATEGIES))
    if bad:
        raise BoldError(f"unknown confound strategies {bad}; `bold.confounds.strategy` takes "
                        f"{list(CONFOUND_STRATEGIES)}.")
    paths = ([Path(bold_path)] if isinstance(bold_path, str | Path)
             else [Path(p) for p in bold_path])  # a volume, a surface run's GIFTI pair, a TSV
    bold_path = paths[0]
    tsv = confounds_path(bold_path)
    if not tsv.exists():
        raise BoldError(f"{tsv}: fMRIPrep confounds file not found for {bold_path.name} (looked "
                        f"for {' and '.join(CONFOUNDS_NAMES)} beside it); copy it from the "
                        "fMRIPrep derivatives next to the run, or set "
                        "`bold.confounds.strategy: []` to fit without confounds.")
    n_total = n_volumes_in(bold_path)
    n_rows = sum(1 for _ in tsv.open()) - 1
    if n_rows != n_total:
        raise BoldError(f"{tsv}: has {n_rows} rows but {bold_path.name} has {n_total} volumes; "
                        "use the confounds file of this exact run (same fMRIPrep output), "
                        "not of another run or a truncated copy.")
    check_confound_columns(tsv, strategy, motion=motion, wm_csf=wm_csf,
                           global_signal=global_signal)
    table = _nilearn_confounds(tsv, strategy, motion=motion, wm_csf=wm_csf,
                               global_signal=global_signal)
    data = np.nan_to_num(table.to_numpy(np.float64))[volumes]
    return clean_signals(data, t_r, detrend, standardize=False).astype(np.float32)


def _nilearn_confounds(tsv: Path, strategy: list[str], **variants: str) -> pd.DataFrame:
    """nilearn's ``load_confounds`` on one confounds TSV (demeaned over the whole run).

    nilearn finds the TSV from an image's name and accepts only fMRIPrep's current image names
    (not ``.nii`` volumes, parcel TSVs or fMRIPrep < 21's ``..._hemi-L.func.gii``), so it is
    given a stand-in image name (never opened) in a temporary folder holding the chosen TSV
    (and its JSON sidecar, which compcor reads) under the current confounds name."""
    import shutil
    import tempfile

    from nilearn.interfaces.fmriprep import load_confounds

    stem = tsv.name[: -len(next(c for c in CONFOUNDS_NAMES if tsv.name.endswith(c)))]
    with tempfile.TemporaryDirectory(prefix="brainalign-confounds-") as tmp:
        shutil.copyfile(tsv, Path(tmp) / f"{stem}{CONFOUNDS_NAMES[0]}")
        if tsv.with_suffix(".json").is_file():
            shutil.copyfile(tsv.with_suffix(".json"),
                            (Path(tmp) / f"{stem}{CONFOUNDS_NAMES[0]}").with_suffix(".json"))
        table, _ = load_confounds(str(Path(tmp) / f"{stem}desc-preproc_bold.nii.gz"),
                                  strategy=tuple(strategy), demean=True, **variants)
    return table


#: fMRIPrep columns behind each column-named strategy, and the suffixes of each variant (as
#: nilearn's load_confounds reads them)
_CONFOUND_COLUMNS = {"motion": ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"],
                     "wm_csf": ["csf", "white_matter"], "global_signal": ["global_signal"]}
_VARIANT_SUFFIXES = {"basic": [""], "derivatives": ["", "_derivative1"],
                     "power2": ["", "_power2"],
                     "full": ["", "_derivative1", "_power2", "_derivative1_power2"]}


def check_confound_columns(tsv: str | Path, strategy: list[str], **variants: str) -> None:
    """Refuse a confounds TSV that lacks what ``strategy`` needs, naming the file and the
    missing columns (nilearn's error names neither the file nor, for compcor, the columns).

    ``variants`` gives the variant of each column-named strategy (motion, wm_csf,
    global_signal: basic, derivatives, power2 or full); compcor needs ``a_comp_cor_*`` columns
    and the TSV's JSON sidecar; high_pass needs nothing (nilearn adds no cosine when absent).
    """
    tsv = Path(tsv)
    columns = set(pd.read_csv(tsv, sep="\t", nrows=0).columns)
    missing = [base + suffix for comp in strategy if comp in _CONFOUND_COLUMNS
               for base in _CONFOUND_COLUMNS[comp]
               for suffix in _VARIANT_SUFFIXES[variants.get(comp, "basic")]
               if base + suffix not in columns]
    if "compcor" in strategy:
        if not any(c.startswith("a_comp_cor_") for c in columns):
            missing.append("a_comp_cor_*")
        if not tsv.with_suffix(".json").is_file():
            missing.append(f"(its JSON sidecar {tsv.with_suffix('.json').name})")
    if missing:
        chosen = ", ".join(f"{c} ({variants.get(c, 'basic')})" if c in _CONFOUND_COLUMNS else c
                           for c in strategy)
        raise BoldError(
            f"{tsv}: lacks {', '.join(missing)}, which `bold.confounds.strategy` [{chosen}] "
            "needs. Use this run's complete fMRIPrep confounds file, or leave those "
            "strategies out (or pick a variant the file has, e.g. `bold.confounds.motion: "
            "basic`).")


def warn_if_short(path: str | Path, have: int, n_vols: int, t_r: float) -> None:
    """Log a run accepted with fewer volumes (``have``) than its stimulus needs (``n_vols``):
    it is kept on the assumption that the volumes are missing at its END. Nothing in the run
    itself can confirm that; :func:`check_acquired_volumes` refuses the runs where evidence
    shows volumes were removed after acquisition."""
    if have < n_vols:
        logging.getLogger("brainalign.bold").warning(
            "%s: %d volume(s) short of its stimulus (%d of %d); kept on the assumption that the "
            "missing volumes are at the END of the run (the scanner stopped early), so the "
            "features are cut at the end. If volumes were removed at the run's START instead, "
            "the stimulus is misaligned by %.3g s: use the untrimmed run, or correct its onset.",
            path, n_vols - have, have, n_vols, (n_vols - have) * t_r)


def n_volumes_in(path: str | Path) -> int | None:
    """Volumes of a run file: a 4D NIfTI (header only), a CIFTI dtseries (header only), a GIFTI
    time series, or a TSV (rows after the header); None for other files."""
    path = Path(path)
    name = path.name
    if name.endswith(".dtseries.nii"):
        with readable(path, "CIFTI BOLD run"):
            if nib.Cifti2Image.path_maybe_image(str(path))[0]:
                # the NIfTI-2 dims are (1, 1, 1, 1, volumes, grayordinates); nib.load would
                # parse and copy the CIFTI XML of all grayordinates
                with ImageOpener(str(path)) as fobj:
                    return int(nib.Nifti2Header.from_fileobj(fobj, check=False)
                               .get_data_shape()[4])
            return int(nib.load(str(path)).shape[0])
    if name.endswith((".nii", ".nii.gz")):
        with readable(path, "BOLD run"):
            shape = nib.load(str(path)).shape
        return int(shape[3]) if len(shape) == 4 else None
    if name.endswith(".gii"):
        with readable(path, "surface BOLD run"):
            darrays = nib.load(str(path)).darrays
        return darrays[0].data.shape[1] if len(darrays) == 1 else len(darrays)
    if name.endswith(".tsv"):
        with path.open() as f:
            return sum(1 for line in f if line.strip()) - 1
    return None


def check_acquired_volumes(targets: Sequence[str | Path], n_vols: int, t_r: float,
                           start_volume: int = 0, raw: str | Path | None = None) -> None:
    """Check a run against the evidence of how many volumes were acquired.

    Evidence: the raw BIDS run ``raw`` (fMRIPrep never drops volumes, it only flags
    non-steady-state ones) and the fMRIPrep confounds TSV beside the run (one row per volume);
    evidence that cannot be read is skipped. A run with fewer volumes than either was cut
    after acquisition. A run that is also short of its stimulus (``n_vols`` after
    ``start_volume``) is then refused: `bold.max_missing_volumes` accepts a scan that stopped
    early, while volumes removed at the start (dummy scans, say) would misalign the stimulus
    by that many TRs. A cut run that still covers its stimulus is kept with a warning (trailing
    volumes are often cut; where they were cannot be told).
    """
    path = Path(targets[0])
    evidence = []
    if raw is not None and Path(raw).is_file():
        try:
            shape = nib.load(str(raw)).shape  # the header only
            if len(shape) == 4:
                evidence.append((int(shape[3]), f"its raw BIDS run ({raw})",
                                 "fMRIPrep keeps every acquired volume"))
        except Exception as err:  # an unfetched annex file, say: no evidence, no refusal
            logging.getLogger("brainalign.bold").debug("%s: unreadable (%s)", raw, err)
    try:
        tsv = confounds_path(path)
    except BoldError:
        tsv = None
    if tsv is not None and tsv.is_file():
        evidence.append((n_volumes_in(tsv), f"its fMRIPrep confounds file ({tsv})",
                         "fMRIPrep writes one confounds row per volume"))
    n = n_volumes_in(path) if evidence else None  # a GIFTI is parsed only when needed
    for m, what, why in evidence:
        if n is None or m is None or m <= n:
            continue
        shift = f"{(m - n) * t_r:g} s"
        if n - start_volume < n_vols:
            raise BoldError(
                f"{path}: {n_vols - (n - start_volume)} volume(s) short of its stimulus, and it "
                f"has {n} volumes where {what} has {m}; {why}, so {m - n} volume(s) were removed "
                "after acquisition: not a scan that stopped early, which is what "
                "`bold.max_missing_volumes` allows. Removed at the run's start (dummy scans, "
                f"say), they misalign the stimulus by {shift}. Use the untrimmed run (and drop "
                "leading volumes with `bold.start_volume` instead), or subtract the removed "
                "time from the stimulus onset (events.tsv or `onsets`).")
        logging.getLogger("brainalign.bold").warning(
            "%s: has %d volumes where %s has %d; %s, so %d volume(s) were removed after "
            "acquisition. Kept (it covers its stimulus) on the assumption that they were "
            "removed at the END; if they were removed at the START, the stimulus is misaligned "
            "by %s: use the untrimmed run, or correct the onset.", path, n, what, m, why, m - n,
            shift)
        return
