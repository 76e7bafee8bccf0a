"""Tests of brainalign.rois: packaged atlases, ROI masks, per-ROI layer scores."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainalign import rois, stats

HG_LEFT = "Left_Heschl's_Gyrus_(includes_H1_and_H2)"
HG_RIGHT = "Right_Heschl's_Gyrus_(includes_H1_and_H2)"


@pytest.fixture(scope="module")
def harvard_oxford():
    return rois.load_atlas("harvard_oxford")  # ~10 s: a 1 mm 4D probability map; load once


@pytest.fixture(scope="module")
def mni_4mm():
    from nilearn.datasets import load_mni152_brain_mask

    return load_mni152_brain_mask(resolution=4)  # packaged with nilearn, no download


def centroid_mm(img: nib.Nifti1Image, value: int) -> np.ndarray:
    ijk = np.argwhere(np.asarray(img.dataobj) == value)
    return nib.affines.apply_affine(img.affine, ijk).mean(0)


def test_harvard_oxford_atlas_labels_and_anatomy(harvard_oxford):
    img, names = harvard_oxford
    data = np.asarray(img.dataobj)
    assert data.ndim == 3 and np.issubdtype(data.dtype, np.integer)
    assert HG_LEFT in names.values() and HG_RIGHT in names.values()
    assert 0 not in names  # 0 is background
    present = set(np.unique(data).tolist()) - {0}
    assert present <= set(names)
    by_name = {n: v for v, n in names.items()}
    # labels sit where their names say: Heschl's gyrus at MNI ~(+-45, -20, 7)
    left = centroid_mm(img, by_name[HG_LEFT])
    right = centroid_mm(img, by_name[HG_RIGHT])
    np.testing.assert_allclose(left, [-45, -20, 7], atol=8)
    np.testing.assert_allclose(right, [45, -19, 7], atol=8)
    # thresholded at 25 %: outside the brain stays 0; the labelled volume is about a brain's
    voxel_ml = abs(np.linalg.det(img.affine[:3, :3])) / 1000
    assert data[0, 0, 0] == 0 and data[-1, -1, -1] == 0
    assert 500 < (data > 0).sum() * voxel_ml < 1800


def test_resample_labels_to_4mm_keeps_label_values(harvard_oxford, mni_4mm):
    img, names = harvard_oxford
    out = rois.resample_labels(img, mni_4mm)
    assert out.shape == mni_4mm.shape
    np.testing.assert_allclose(out.affine, mni_4mm.affine)
    orig = set(np.unique(np.asarray(img.dataobj)).tolist())
    new = np.asarray(out.dataobj)
    # nearest neighbour: no interpolated, in-between label values
    assert set(np.unique(new).tolist()) <= orig
    assert np.allclose(new, np.round(new))
    by_name = {n: v for v, n in names.items()}
    # hemispheres survive the flip from the atlas' LAS grid to the template's RAS grid
    assert centroid_mm(out, by_name[HG_LEFT])[0] < -30
    assert centroid_mm(out, by_name[HG_RIGHT])[0] > 30
    # the labelled voxels lie in the template brain
    mask = np.asarray(mni_4mm.dataobj) > 0
    assert ((new > 0) & mask).sum() > 0.95 * (new > 0).sum()


def test_roi_masks_unite_members_and_name_missing_labels():
    names = {1: "L_A", 2: "R_A", 3: "L_B", 7: "R_B"}
    labels = np.array([0, 1, 2, 3, 7, 7, 1, 0])
    masks = rois.roi_masks(labels, names, {"A": ["L_A", "R_A"], "B": ["R_B"]})
    np.testing.assert_array_equal(masks["A"], [0, 1, 1, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(masks["B"], [0, 0, 0, 0, 1, 1, 0, 0])
    with pytest.raises(KeyError) as exc:
        rois.roi_masks(labels, names, {"A": ["L_A", "Left_Nowhere"]})
    assert "Left_Nowhere" in str(exc.value) and "ROI 'A'" in str(exc.value)


def test_roi_masks_on_real_atlas(harvard_oxford, mni_4mm):
    img, names = harvard_oxford
    labels = np.asarray(rois.resample_labels(img, mni_4mm).dataobj)
    brain = np.asarray(mni_4mm.dataobj) > 0
    masks = rois.roi_masks(labels[brain], names, {"HG": [HG_LEFT, HG_RIGHT]})
    # Heschl's gyrus at 4 mm: a few dozen voxels per hemisphere
    assert 30 < masks["HG"].sum() < 200
    assert masks["HG"].shape == (int(brain.sum()),)


def planted_scores(rng, best: dict[str, int], n_layers: int = 6, n_vox: int = 40):
    """(n_layers, voxels) r with a bump at each ROI's planted layer, and the ROI masks."""
    n_rois = len(best)
    layer_r = 0.02 * rng.standard_normal((n_layers, n_rois * n_vox + 10))
    masks = {}
    for k, (roi, layer) in enumerate(best.items()):
        cols = np.zeros(layer_r.shape[1], bool)
        cols[k * n_vox:(k + 1) * n_vox] = True
        masks[roi] = cols
        tuning = 0.3 * np.exp(-0.5 * (np.arange(n_layers) - layer) ** 2)
        layer_r[:, cols] += tuning[:, None]
    return layer_r, masks


def test_roi_layer_scores_and_best_layer_find_planted_layers():
    rng = np.random.default_rng(0)
    best = {"HG": 0, "STG": 2, "IFG": 5}
    layer_r, masks = planted_scores(rng, best)
    layers = [f"{i:02d}" for i in range(6)]
    table = rois.roi_layer_scores(layer_r, masks, layers)
    assert len(table) == 3 * 6
    assert table["layer"].tolist()[:6] == list(range(6))
    assert (table["n_voxels"] == 40).all()
    hg = table[(table["roi"] == "HG") & (table["layer"] == 0)]["mean_r"].item()
    assert hg == pytest.approx(layer_r[0, masks["HG"]].mean())

    top = rois.best_layer_per_roi(table)
    assert list(top.columns) == ["roi", "best_layer", "best_r", "n_voxels"]
    assert dict(zip(top["roi"], top["best_layer"], strict=True)) == best
    assert np.all(top["best_r"] > 0.25)


def test_best_layer_skips_empty_rois():
    layer_r = np.array([[0.1, 0.2], [0.3, 0.2]])
    masks = {"A": np.array([True, True]), "empty": np.array([False, False])}
    table = rois.roi_layer_scores(layer_r, masks, ["00", "01"])
    assert table[table["roi"] == "empty"]["mean_r"].isna().all()
    top = rois.best_layer_per_roi(table)
    assert top["roi"].tolist() == ["A"]
    assert top["best_layer"].item() == 1  # means: layer 0 = 0.15, layer 1 = 0.25
    assert top["best_r"].item() == pytest.approx(0.25)


def test_voxel_best_layer():
    layer_r = np.array([[0.1, 0.5, 0.0], [0.3, 0.2, 0.1], [0.2, 0.1, 0.4]])
    out = rois.voxel_best_layer(layer_r, np.array([True, True, False]))
    np.testing.assert_array_equal(out, [1, 0, -1])


def test_group_roi_scores_ci_contains_mean():
    rng = np.random.default_rng(1)
    best = {"HG": 1, "IFG": 4}
    layers = [f"{i:02d}" for i in range(6)]
    tables = []
    for _ in range(5):  # subjects
        layer_r, masks = planted_scores(rng, best)
        layer_r += 0.05 * rng.standard_normal((layer_r.shape[0], 1))  # subject offsets
        tables.append(rois.roi_layer_scores(layer_r, masks, layers))
    group = rois.group_roi_scores(tables)
    assert len(group) == 2 * 6 and (group["n_subjects"] == 5).all()
    assert np.all((group["ci_low"] < group["mean_r"]) & (group["mean_r"] < group["ci_high"]))
    for _, row in group.iterrows():
        vals = [t[(t["roi"] == row["roi"]) & (t["layer"] == row["layer"])]["mean_r"].item()
                for t in tables]
        mean, low, high = stats.mean_ci(np.array(vals))
        assert row["mean_r"] == pytest.approx(mean)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
    # the group's best layers are the planted ones
    top = rois.best_layer_per_roi(group)
    assert dict(zip(top["roi"], top["best_layer"], strict=True)) == best


def test_user_atlas_from_nifti_and_tsv(tmp_path):
    data = np.zeros((4, 4, 4), np.int32)
    data[:2] = 5
    data[2:, :2] = 9
    path = tmp_path / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    labels = tmp_path / "labels.tsv"
    pd.DataFrame({"index": [0, 5, 9], "name": ["background", "alpha", "beta"]}).to_csv(
        labels, sep="\t", index=False)
    img, names = rois.load_atlas(str(path), labels_file=str(labels))
    assert names == {5: "alpha", 9: "beta"}
    np.testing.assert_array_equal(np.asarray(img.dataobj), data)
    with pytest.raises(ValueError, match="labels_file"):
        rois.load_atlas(str(path))
    with pytest.raises(FileNotFoundError, match="no_atlas"):
        rois.load_atlas(str(tmp_path / "no_atlas.nii.gz"))


def test_voxel_best_layer_reports_layer_numbers_of_a_subset():
    layer_r = np.array([[0.1, 0.5, 0.0],
                        [0.4, 0.2, 0.0],
                        [0.0, 0.1, 0.3]])
    sig = np.array([True, True, False])
    # rows hold layers 0, 6 and 12: numbers, not positions, go into the map
    np.testing.assert_array_equal(rois.voxel_best_layer(layer_r, sig, ["00", "06", "12"]),
                                  [6, 0, -1])
    np.testing.assert_array_equal(rois.voxel_best_layer(layer_r, sig), [1, 0, -1])


# ---------------------------------------------------------------- cross-fitted and group statistics
def _subject_tables(rng, n_sub, planted, n_noise_rois, n_layers=6, n_folds=4, n_vox=30):
    """Per subject: ROI x layer table and cross-fitted best-layer table from simulated per-fold
    voxel scores; planted ROIs peak at their layer, noise ROIs score 0 + noise."""
    layers = list(range(n_layers))
    names = list(planted) + [f"noise{i}" for i in range(n_noise_rois)]
    masks = {roi: np.arange(len(names) * n_vox) // n_vox == i for i, roi in enumerate(names)}
    tables, best_tables = [], []
    for _ in range(n_sub):
        tuning = np.zeros((n_layers, len(names) * n_vox))
        for roi, layer in planted.items():
            tuning[:, masks[roi]] = 0.2 * np.exp(-0.5 * (np.arange(n_layers) - layer) ** 2)[:, None]
        r_folds = tuning[:, None] + 0.1 * rng.standard_normal((n_layers, n_folds, tuning.shape[1]))
        inner = tuning[:, None] + 0.1 * rng.standard_normal(r_folds.shape)
        table = rois.roi_layer_scores(r_folds.mean(1), masks, [str(v) for v in layers])
        best = stats.crossfit_best_layer(rois.roi_fold_scores(inner, masks),
                                         rois.roi_fold_scores(r_folds, masks), layers)
        tables.append(table)
        best_tables.append(rois.best_layer_table(best, names, [n_vox] * len(names)))
    return tables, best_tables


def test_roi_fold_scores_averages_roi_voxels():
    values = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)
    masks = {"a": np.array([True, True, False, False]), "none": np.zeros(4, bool)}
    out = rois.roi_fold_scores(values, masks)
    assert out.shape == (2, 3, 2)
    np.testing.assert_allclose(out[..., 0], values[..., :2].mean(-1))
    assert np.isnan(out[..., 1]).all()


def test_best_layer_table_recovers_planted_layers_with_independent_scores():
    rng = np.random.default_rng(4)
    tables, best_tables = _subject_tables(rng, 3, {"HG": 1, "IFG": 4}, n_noise_rois=30)
    for best in best_tables:
        top = best.set_index("roi")
        assert top.loc["HG", "best_layer"] == 1 and top.loc["IFG", "best_layer"] == 4
        assert (top.loc[["HG", "IFG"], "stability"] == 1).all()
        noise = top.loc[top.index.str.startswith("noise")]
        # naive max over layers is biased upward on noise ROIs; the cross-fitted score is not
        assert noise["best_r"].mean() > 0.01
        assert abs(noise["independent_r"].mean()) < 0.01
        assert set(best.columns) >= {"best_layer", "stability", "mean_layer", "independent_r",
                                     "fold_layers", "naive_layer", "best_r", "n_voxels"}


def test_roi_ceiling_and_normalised_scores():
    ceiling = np.array([0.4, 0.6, np.nan, 0.05, 0.05, 0.5, 0.5])
    usable = np.array([True, True, False, False, False, True, False])
    masks = {"ok": np.array([1, 1, 1, 0, 0, 0, 0], bool),
             "low": np.array([0, 0, 0, 1, 1, 0, 0], bool),
             "half": np.array([0, 0, 0, 0, 0, 1, 1], bool)}
    roi_ceil = rois.roi_ceiling(ceiling, usable, masks, min_ceiling=0.1).set_index("roi")
    assert roi_ceil.loc["ok", "ceiling"] == pytest.approx(0.5)  # NaN voxel ignored
    assert roi_ceil.loc["ok", "ceiling_ok"] and not roi_ceil.loc["low", "ceiling_ok"]
    assert roi_ceil.loc["half", "ceiling_usable_share"] == 0.5 and roi_ceil.loc["half",
                                                                                "ceiling_ok"]
    table = pd.DataFrame({"roi": ["ok", "low", "half"], "mean_r": [0.25, 0.04, 0.1]})
    out = rois.add_normalised(table, roi_ceil.reset_index(), "mean_r").set_index("roi")
    assert out.loc["ok", "normalised_r"] == pytest.approx(0.5)
    assert np.isnan(out.loc["low", "normalised_r"])
    assert out.loc["half", "normalised_r"] == pytest.approx(0.2)


def test_group_roi_stats_detects_planted_and_keeps_noise_nominal():
    rng = np.random.default_rng(5)
    tables, _ = _subject_tables(rng, 10, {"HG": 1, "IFG": 4}, n_noise_rois=40)
    group = rois.group_roi_stats(tables, q=0.05, test="signflip")
    assert {"t", "p_t", "p_signflip", "q", "significant"} <= set(group.columns)
    planted = group[group["roi"].isin(["HG", "IFG"])]
    peak = planted[((planted["roi"] == "HG") & (planted["layer"] == 1))
                   | ((planted["roi"] == "IFG") & (planted["layer"] == 4))]
    assert peak["significant"].all() and (peak["p_signflip"] <= 1 / 1024 + 1e-12).all()
    noise = group[group["roi"].str.startswith("noise")]
    assert noise["significant"].mean() <= 0.05
    assert 0.01 < (noise["p_signflip"] <= 0.05).mean() < 0.1  # uncorrected: nominal
    assert (group["q"] >= group["p_signflip"] - 1e-12).all()
    t_group = rois.group_roi_stats(tables, test="t")
    assert t_group.loc[t_group["roi"].isin(["HG", "IFG"]), "significant"].sum() >= 4


def test_group_best_layer_bootstrap_and_independent_score():
    rng = np.random.default_rng(6)
    tables, best_tables = _subject_tables(rng, 6, {"HG": 1, "IFG": 4}, n_noise_rois=30)
    best = rois.group_best_layer(tables, best_tables, n_boot=300).set_index("roi")
    for roi, layer in {"HG": 1, "IFG": 4}.items():
        row = best.loc[roi]
        assert row["best_layer"] == layer and row["layer_ci_low"] <= layer <= row["layer_ci_high"]
        assert row["bootstrap_share"] > 0.9 and row["loso_stability"] == 1.0
        assert row["independent_ci_low"] > 0.1
        assert row["subject_layers"] == ",".join([str(layer)] * 6)
    noise = best.loc[best.index.str.startswith("noise")]
    # max of the group mean is biased upward (expected ~1.27 SD of a noise ROI's group mean,
    # 0.0047 here); the leave-one-subject-out score is not (its SE over 30 ROIs: ~0.0007)
    assert noise["best_r"].mean() > 0.003
    assert abs(noise["independent_r"].mean()) < 0.0025
    assert noise["bootstrap_share"].mean() < 0.6  # noise ROIs have unstable layers
    # with ceilings in the subjects' tables, the independent score is normalised
    for b in best_tables:
        b["ceiling"], b["ceiling_ok"] = 0.4, True
    with_ceiling = rois.group_best_layer(tables, best_tables, n_boot=50).set_index("roi")
    np.testing.assert_allclose(with_ceiling["normalised_r"], with_ceiling["independent_r"] / 0.4)


def test_group_statistics_with_one_subject_have_no_across_subject_inference():
    tables, best_tables = _subject_tables(np.random.default_rng(7), 1, {"HG": 1}, 3)
    group = rois.group_roi_stats(tables)
    assert group["p_t"].isna().all() and not group["significant"].any()
    best = rois.group_best_layer(tables, best_tables, n_boot=20).set_index("roi")
    assert best.loc["HG", "best_layer"] == 1
    assert best["independent_r"].isna().all() and best["loso_stability"].isna().all()
