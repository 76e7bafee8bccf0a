"""Noise-ceiling stage: how well could any model of the stimulus predict each voxel?

With ``method: repeat`` and a stimulus heard twice, each subject's split-half reliability gives
the ceiling instead (``stats.repeat_ceiling``). The demo and most audiobook designs play every
story once, so by default the ceiling comes from the
inter-subject correlation (ISC) of the subjects who heard the same story: each subject's cleaned
BOLD (the arrays the encoding models are scored on, run by run) is correlated with the mean of
the other subjects', on the voxels all subjects' brain masks share (one template space). The
leave-one-subject-out ISC is corrected for the noise left in the others' mean
(``stats.ceiling_from_isc``) and tested against a circular-shift null (``stats.isc_null``).
"""

from __future__ import annotations

from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .alignment import seconds_to_volumes
from .bold import regress_out
from .stats import Ceiling, fdr_bh, null_p, repeat_ceiling, story_isc_ceiling
from .targets import Targets, intersect


def shared_targets(targets: type[Targets], mask_paths: list[str | Path]
                   ) -> tuple[Targets, list[np.ndarray]]:
    """Targets every subject kept: voxels of one template grid, vertices of one surface, or
    parcels of one parcellation.

    Parameters
    ----------
    targets : the class of the input kind (``targets.for_kind``)
    mask_paths : the subjects' mask files

    Returns
    -------
    shared : the intersection (maps are written through it)
    index : per subject, (n_shared,) indices of the shared targets among that subject's
        targets (the column order of its BOLD arrays)
    """
    return intersect([targets.load(p) for p in mask_paths], list(mask_paths),
                     "the inter-subject-correlation ceiling needs every subject on one, or set "
                     "`ceiling.method: none`")


def repeat_pairs(run_stimuli: list[str]) -> list[tuple[int, int]]:
    """Index pairs (first run, later run) of runs hearing the same stimulus, in run order."""
    first: dict[str, int] = {}
    pairs = []
    for i, stim in enumerate(run_stimuli):
        if stim in first:
            pairs.append((first[stim], i))
        else:
            first[stim] = i
    return pairs


def common_volumes(runs: list[list[np.ndarray]], confounds: list[list[np.ndarray]],
                   bounds: list[list[np.ndarray]], stimuli: list[list[str]]
                   ) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]]]:
    """Every run cut to the analysed volumes that all runs of its stimulus kept, so that the
    runs compared (across subjects, or the two hearings of a repeated stimulus) are in sync:
    with block cross-validation (``encoding.cv``) a run keeps its blocks only, without the
    volumes around their borders, and subjects cut differently (one run cut in five blocks,
    another whole) keep different volumes.

    Parameters
    ----------
    runs, confounds : per subject, per run, (n_kept, n_voxels) / (n_kept, n_confounds)
    bounds : per subject, per run, (n_blocks, 2) [start, stop) of its blocks in the run's
        analysed volumes (one block [0, n_kept) for a whole run)
    stimuli : per subject, per run, the stimulus it heard

    Returns
    -------
    runs, confounds : the same, each cut to its stimulus's common volumes
    """
    def kept(b: np.ndarray) -> np.ndarray:
        return np.concatenate([np.arange(a, z) for a, z in np.asarray(b).reshape(-1, 2)])

    kept_volumes = [[kept(b) for b in sub_bounds] for sub_bounds in bounds]
    common: dict[str, np.ndarray] = {}
    for sub_kept, sub_stims in zip(kept_volumes, stimuli, strict=True):
        for k, stim in zip(sub_kept, sub_stims, strict=True):
            common[stim] = k if stim not in common else np.intersect1d(common[stim], k)
    out_runs, out_conf = [], []
    for sub_runs, sub_conf, sub_kept, sub_stims in zip(runs, confounds, kept_volumes, stimuli,
                                                       strict=True):
        r_list, c_list = [], []
        for y, c, k, stim in zip(sub_runs, sub_conf, sub_kept, sub_stims, strict=True):
            if len(k) == len(common[stim]) and len(k) == len(y):
                r_list.append(y)
                c_list.append(c)
                continue
            rows = np.searchsorted(k, common[stim])
            r_list.append(np.asarray(y)[rows])
            c_list.append(np.asarray(c)[rows])
        out_runs.append(r_list)
        out_conf.append(c_list)
    return out_runs, out_conf


#: bytes of working memory the ceiling may use per block of voxels (float64, ~4 copies)
MEMORY_BUDGET = 2 * 1024**3


def _join(parts: list[Ceiling], q: float, min_ceiling: float) -> Ceiling:
    """One Ceiling from blocks of voxels; p-values (the null's shape pooled over all voxels)
    and FDR over all of them."""
    ceil = Ceiling(**{f: np.concatenate([getattr(c, f) for c in parts], axis=-1)
                      for f in ("isc", "ceiling", "group_isc", "group_ceiling", "p", "usable",
                                "null")})
    ceil.p = null_p(ceil.group_isc, ceil.null)
    ceil.usable = fdr_bh(ceil.p, q) & (ceil.group_ceiling >= min_ceiling)
    return ceil


@dataclass(frozen=True)
class CeilingOptions:
    """Settings of :func:`subject_ceilings`; the defaults are the config schema's (``ceiling``;
    ``min_shift`` is its 15 s at a TR of 1.5 s).

    Attributes
    ----------
    method : ``isc`` (inter-subject correlation) or ``repeat`` (split-half reliability of the
        runs that heard the same stimulus; see ``stats.repeat_ceiling``)
    n_permutations : circular-shift permutations of the significance test
    min_shift : smallest circular shift (volumes) of a subject against the others in the null
    fdr_q : FDR level over voxels for calling a voxel's ceiling significant
    min_ceiling : ceilings below this are not usable
    chunk_voxels : shared voxels processed at once (the same shifts for every block, so the
        result does not depend on it); None: as many as fit :data:`MEMORY_BUDGET`, and at
        least one block per thread
    n_threads : blocks of voxels computed in parallel (numpy releases the GIL in its loops)
    """

    method: str = "isc"
    n_permutations: int = 200
    min_shift: int = 10
    fdr_q: float = 0.05
    min_ceiling: float = 0.1
    chunk_voxels: int | None = None
    n_threads: int = 1

    @classmethod
    def from_config(cls, ceiling: dict[str, Any], t_r: float, n_threads: int = 1
                    ) -> CeilingOptions:
        """The options of a config's ``ceiling`` section (``min_shift_s`` in seconds, turned
        into volumes of ``t_r`` seconds, at least one), computed on ``n_threads`` threads."""
        return cls(method=ceiling["method"], n_permutations=ceiling["n_permutations"],
                   min_shift=max(1, seconds_to_volumes(ceiling["min_shift_s"], t_r)),
                   fdr_q=ceiling["fdr_q"], min_ceiling=ceiling["min_ceiling"],
                   n_threads=n_threads)


def subject_ceilings(runs_by_subject: list[list[np.ndarray]], index: list[np.ndarray],
                     options: CeilingOptions | None = None, *,
                     pairs: list[tuple[int, int]] | None = None,
                     stimuli: list[list[Hashable]] | None = None,
                     confounds: list[list[np.ndarray]] | None = None
                     ) -> tuple[Ceiling, list[dict[str, np.ndarray]]]:
    """Ceiling on the shared voxels, and each subject's ceiling over its own mask voxels.

    With ``method`` ``repeat``, the ceiling is the split-half reliability of the run ``pairs``
    that heard the same stimulus (every subject has the same runs).

    Parameters
    ----------
    runs_by_subject : per subject, per run, cleaned BOLD of shape (n_volumes_run, n_voxels_s)
        over that subject's mask voxels
    index : per subject, shared-voxel indices (``shared_voxels``)
    options : method, permutations, FDR level, usable floor, blocks and threads
        (:class:`CeilingOptions`; default: the schema's defaults)
    stimuli : per subject, what each of its runs is matched on across subjects: its story
        (subjects may have heard different stories: ``stats.story_isc_ceiling``; a story's
        first run counts), or a run label shared by all subjects. None: the run's position
        (every subject's run ``i`` heard the same story in sync).
    confounds : per subject, per run, (n_volumes_run, n_confounds) regressors cleaned like the
        BOLD, regressed out of each run before the ceiling is computed (the encoding models
        regress them out inside their folds): a confound shared across subjects, such as motion
        that follows the story, would otherwise count as signal.

    Returns
    -------
    ceiling : ``stats.Ceiling`` over the shared voxels
    per_subject : per subject, ``isc``, ``ceiling`` (NaN outside the shared voxels) and
        ``usable`` (group ceiling significant and at least ``min_ceiling``), each of shape
        (n_voxels_s,)
    """
    opts = options or CeilingOptions()
    method, n_permutations, min_shift = opts.method, opts.n_permutations, opts.min_shift
    q, min_ceiling, chunk_voxels, n_threads = (opts.fdr_q, opts.min_ceiling, opts.chunk_voxels,
                                               opts.n_threads)
    if method == "repeat" and not pairs:
        raise ValueError("ceiling.method is repeat, but no stimulus is heard in two runs "
                         "(`runs`); use ceiling.method: isc or none.")
    if stimuli is None:
        stimuli = [list(range(len(runs))) for runs in runs_by_subject]
    if confounds is None:
        confounds = [[np.zeros((run.shape[0], 0)) for run in runs] for runs in runs_by_subject]
    n_shared = len(index[0])
    if chunk_voxels is None:
        volumes = sum(run.shape[0] for runs in runs_by_subject for run in runs)
        budget = MEMORY_BUDGET / max(n_threads, 1)
        chunk_voxels = max(1, min(int(budget / (8 * 4 * volumes)),
                                  -(-n_shared // max(n_threads, 1))))

    def block(start: int) -> Ceiling:
        # one block of shared voxels (the runs may be memory-mapped .npy files), confounds
        # regressed out run by run
        shared = [[regress_out(np.asarray(run[:, idx[start:start + chunk_voxels]]), conf)
                   for run, conf in zip(runs, confs, strict=True)]
                  for runs, confs, idx in zip(runs_by_subject, confounds, index, strict=True)]
        if method == "repeat":
            return repeat_ceiling(shared, pairs, n_permutations, min_shift, q, min_ceiling)
        stories: dict[Hashable, dict[int, np.ndarray]] = {}
        for k, (runs, names) in enumerate(zip(shared, stimuli, strict=True)):
            for run, name in zip(runs, names, strict=True):
                stories.setdefault(name, {}).setdefault(k, run)
        return story_isc_ceiling(stories, len(shared), n_permutations, min_shift, q,
                                 min_ceiling)

    starts = range(0, n_shared, chunk_voxels)
    if n_threads > 1 and len(starts) > 1:
        with ThreadPoolExecutor(n_threads) as pool:
            parts = list(pool.map(block, starts))
    else:
        parts = [block(start) for start in starts]
    ceil = parts[0] if len(parts) == 1 else _join(parts, q, min_ceiling)
    per_subject = []
    for s, (runs, idx) in enumerate(zip(runs_by_subject, index, strict=True)):
        n_vox = runs[0].shape[1]
        isc = np.full(n_vox, np.nan, np.float32)
        own = np.full(n_vox, np.nan, np.float32)
        usable = np.zeros(n_vox, bool)
        isc[idx], own[idx], usable[idx] = ceil.isc[s], ceil.ceiling[s], ceil.usable
        per_subject.append({"isc": isc, "ceiling": own, "usable": usable})
    return ceil, per_subject
