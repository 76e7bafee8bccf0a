"""Group maps and paired model comparison: planted differences found, calibrated under the null."""

import numpy as np
import pandas as pd
import pytest

from brainalign.compare import group_layer_maps, paired_model_comparison, roi_peak_r


def test_group_best_layer_needs_most_subjects_significant():
    rng = np.random.default_rng(0)
    n_sub, layers, n_vox = 3, ["00", "03", "06"], 40
    r = rng.normal(0, 0.01, (n_sub, len(layers), n_vox))
    r[:, 1, :20] += 0.3  # layer 03 drives voxels 0-19 in every subject
    r[:, 2, 20:] += 0.3  # layer 06 drives the rest
    sig = np.zeros((n_sub, n_vox), bool)
    sig[:2, :30] = True  # voxels 0-29 significant in 2 of 3 subjects
    sig[0, 30:] = True  # voxels 30-39 in 1 of 3
    mean_r, best, share = group_layer_maps(r, sig, layers)
    assert mean_r.shape == (3, n_vox)
    np.testing.assert_allclose(mean_r, r.mean(0))
    assert (best[:20] == 3).all() and (best[20:30] == 6).all() and (best[30:] == -1).all()
    np.testing.assert_allclose(share[[0, 35]], [2 / 3, 1 / 3])


def test_group_maps_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="subjects, layers, voxels"):
        group_layer_maps(np.zeros((2, 3, 5)), np.zeros((3, 5), bool), ["0", "1", "2"])


def _tables(peaks: dict[tuple[str, str], dict[str, list[float]]]) -> dict:
    return {key: pd.DataFrame([{"roi": roi, "layer": i, "mean_r": v}
                               for roi, vals in rois.items() for i, v in enumerate(vals)])
            for key, rois in peaks.items()}


def test_peak_r_is_the_best_layer_of_each_roi():
    peaks = roi_peak_r(_tables({("01", "a"): {"HG": [0.1, 0.4, 0.2], "IFG": [0.0, 0.1, 0.3]}}))
    assert peaks.set_index("roi")["peak_r"].to_dict() == {"HG": 0.4, "IFG": 0.3}
    assert peaks.set_index("roi")["peak_layer"].to_dict() == {"HG": 1, "IFG": 2}


def _simulate(rng, n_sub: int, true_diff: float) -> pd.DataFrame:
    """Subjects differ a lot in overall r (shared by both models): only pairing removes it."""
    base = rng.normal(0.3, 0.1, n_sub)
    rows = []
    for s in range(n_sub):
        for model, shift in (("a", true_diff), ("b", 0.0)):
            rows.append({"subject": f"{s:02d}", "model": model, "roi": "HG",
                         "peak_r": base[s] + shift + rng.normal(0, 0.02), "peak_layer": 3})
    return pd.DataFrame(rows)


def test_paired_comparison_finds_a_small_difference_hidden_by_subject_spread():
    rng = np.random.default_rng(1)
    res = paired_model_comparison(_simulate(rng, 8, 0.05)).iloc[0]
    assert (res["model_a"], res["model_b"], res["n_subjects"]) == ("a", "b", 8)
    assert res["ci_low"] > 0 and res["p"] < 0.01 and res["wins_a"] >= 7
    assert abs(res["mean_diff"] - 0.05) < 0.02
    assert abs(res["mean_a"] - res["mean_b"] - res["mean_diff"]) < 1e-9


def test_paired_comparison_is_calibrated():
    rng = np.random.default_rng(2)
    null = [paired_model_comparison(_simulate(rng, 6, 0.0)).iloc[0] for _ in range(400)]
    fpr = np.mean([r["p"] < 0.05 for r in null])
    assert 0.02 <= fpr <= 0.09, fpr
    alt = [paired_model_comparison(_simulate(rng, 6, 0.03)).iloc[0] for _ in range(400)]
    coverage = np.mean([r["ci_low"] <= 0.03 <= r["ci_high"] for r in alt])
    assert 0.91 <= coverage <= 0.98, coverage


def test_paired_comparison_of_three_models_gives_every_pair():
    rng = np.random.default_rng(3)
    df = pd.concat([_simulate(rng, 4, 0.0),
                    _simulate(rng, 4, 0.0).query("model == 'a'").assign(model="c")])
    res = paired_model_comparison(df)
    assert list(zip(res["model_a"], res["model_b"], strict=True)) == [("a", "b"), ("a", "c"),
                                                                      ("b", "c")]
