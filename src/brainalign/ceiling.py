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

from pathlib import Path

import nibabel as nib
import numpy as np

from .bold import same_grid
from .stats import Ceiling, isc_ceiling, repeat_ceiling


def shared_voxels(mask_paths: list[str | Path]) -> tuple[nib.Nifti1Image, list[np.ndarray]]:
    """Voxels inside every subject's brain mask.

    Returns
    -------
    shared : the intersection mask image
    index : per subject, (n_shared,) indices of the shared voxels among that subject's mask
        voxels (the column order of its BOLD arrays)
    """
    imgs = [nib.load(str(p)) for p in mask_paths]
    ref = imgs[0]
    masks = []
    for p, img in zip(mask_paths, imgs, strict=True):
        if not same_grid(img, ref):
            raise ValueError(f"{p}: brain mask grid differs from {mask_paths[0]}; the inter-"
                             "subject-correlation ceiling needs all subjects in one template "
                             "space (`space`), or set `ceiling.method: none`.")
        masks.append(np.asarray(img.dataobj) > 0)
    shared = np.logical_and.reduce(masks)
    if not shared.any():
        raise ValueError(f"{mask_paths[0]}: the subjects' brain masks share no voxel; set "
                         "`ceiling.method: none` or check the masks' space.")
    index = [np.flatnonzero(shared[m]) for m in masks]
    return nib.Nifti1Image(shared.astype(np.uint8), ref.affine), index


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


def subject_ceilings(runs_by_subject: list[list[np.ndarray]], index: list[np.ndarray],
                     n_permutations: int = 200, min_shift: int = 10, q: float = 0.05,
                     min_ceiling: float = 0.1, method: str = "isc",
                     pairs: list[tuple[int, int]] | None = None
                     ) -> tuple[Ceiling, list[dict[str, np.ndarray]]]:
    """Ceiling on the shared voxels, and each subject's ceiling over its own mask voxels.

    ``method`` is ``isc`` (inter-subject correlation) or ``repeat`` (split-half reliability of
    the run ``pairs`` that heard the same stimulus; see ``stats.repeat_ceiling``).

    Parameters
    ----------
    runs_by_subject : per subject, per run, cleaned BOLD of shape (n_volumes_run, n_voxels_s)
        over that subject's mask voxels
    index : per subject, shared-voxel indices (``shared_voxels``)

    Returns
    -------
    ceiling : ``stats.Ceiling`` over the shared voxels
    per_subject : per subject, ``isc``, ``ceiling`` (NaN outside the shared voxels) and
        ``usable`` (group ceiling significant and at least ``min_ceiling``), each of shape
        (n_voxels_s,)
    """
    shared = [[run[:, idx] for run in runs] for runs, idx in
              zip(runs_by_subject, index, strict=True)]
    if method == "repeat":
        if not pairs:
            raise ValueError("ceiling.method is repeat, but no stimulus is heard in two runs "
                             "(`runs`); use ceiling.method: isc or none.")
        ceil = repeat_ceiling(shared, pairs, n_permutations, min_shift, q, min_ceiling)
    else:
        ceil = isc_ceiling(shared, n_permutations, min_shift, q, min_ceiling)
    per_subject = []
    for s, (runs, idx) in enumerate(zip(runs_by_subject, index, strict=True)):
        n_vox = runs[0].shape[1]
        isc = np.full(n_vox, np.nan, np.float32)
        own = np.full(n_vox, np.nan, np.float32)
        usable = np.zeros(n_vox, bool)
        isc[idx], own[idx], usable[idx] = ceil.isc[s], ceil.ceiling[s], ceil.usable
        per_subject.append({"isc": isc, "ceiling": own, "usable": usable})
    return ceil, per_subject
