"""Tests of brainalign.stats: FDR, Bonferroni over layers, confidence intervals."""

from __future__ import annotations

import numpy as np
import pytest

from brainalign import stats


def test_fdr_bh_matches_hand_computed_example():
    # sorted p:       0.001  0.008  0.039  0.041  0.042  0.060  0.074  0.205
    # BH bound i*q/m: 0.00625 0.0125 0.01875 0.025 0.03125 0.0375 0.04375 0.05
    # largest i with p_(i) <= bound is i = 2 -> reject the two smallest only (the 0.039 ... 0.042
    # are above their bounds, and no later p is below its bound either).
    p = np.array([0.039, 0.001, 0.205, 0.041, 0.008, 0.060, 0.042, 0.074])
    expected = np.array([False, True, False, False, True, False, False, False])
    np.testing.assert_array_equal(stats.fdr_bh(p, q=0.05), expected)


def test_fdr_bh_step_up_rejects_below_later_bound():
    # p_(3) = 0.03 <= 3 * 0.05 / 4 = 0.0375 although p_(2) = 0.026 > 2 * 0.05 / 4 = 0.025:
    # BH is step-up, so the 0.026 is rejected too (a step-down procedure would stop at 1).
    p = np.array([0.03, 0.001, 0.026, 0.9])
    np.testing.assert_array_equal(stats.fdr_bh(p, 0.05), [True, True, True, False])


def test_fdr_bh_keeps_shape_and_handles_no_rejection():
    p = np.full((3, 4), 0.5)
    out = stats.fdr_bh(p)
    assert out.shape == (3, 4) and out.dtype == bool and not out.any()
    # a 2D input gives the same decisions as its flattened version
    rng = np.random.default_rng(1)
    p2 = rng.uniform(size=(5, 6)) ** 4
    np.testing.assert_array_equal(stats.fdr_bh(p2).ravel(), stats.fdr_bh(p2.ravel()))


def test_fdr_bh_uniform_null_rejects_almost_nothing():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=10_000)
    # under the global null the chance of any rejection is <= q; with this seed: none or few
    assert stats.fdr_bh(p, q=0.05).sum() <= 5
    # whereas an uncorrected threshold would call ~5% of them
    assert 400 < (p < 0.05).sum() < 600


def test_fdr_bh_finds_planted_effects_among_nulls():
    rng = np.random.default_rng(2)
    p = np.concatenate([rng.uniform(size=900), rng.uniform(0, 1e-4, size=100)])
    rej = stats.fdr_bh(p, q=0.05)
    assert rej[900:].all()
    # false discoveries among rejections stay well below q on average; here a handful at most
    assert rej[:900].sum() <= 10


def test_min_p_over_layers_is_bonferroni_over_layers():
    p_layers = np.array([[0.01, 0.5, 0.30],
                         [0.04, 0.2, 0.90],
                         [0.02, 0.6, 0.45],
                         [0.50, 0.7, 0.99]])
    out = stats.min_p_over_layers(p_layers)
    # 4 layers: smallest p times 4, capped at 1
    np.testing.assert_allclose(out, [0.04, 0.8, 1.0])


def test_min_p_over_layers_controls_familywise_error_on_null():
    rng = np.random.default_rng(3)
    p_layers = rng.uniform(size=(12, 20_000))
    adj = stats.min_p_over_layers(p_layers)
    # the uncorrected minimum over 12 layers is < 0.05 for 1 - 0.95**12 ~ 46% of voxels;
    # the Bonferroni-adjusted one at most 5%
    assert (p_layers.min(0) < 0.05).mean() > 0.4
    assert (adj < 0.05).mean() <= 0.05
    assert adj.max() <= 1.0


def test_simes_over_layers_hand_example():
    p_layers = np.array([[0.01, 0.5, 0.030],
                         [0.04, 0.2, 0.020],
                         [0.02, 0.6, 0.025],
                         [0.50, 0.7, 0.035]])
    # Simes: min_k n * p_(k) / k
    expected = [min(4 * 0.01 / 1, 4 * 0.02 / 2, 4 * 0.04 / 3, 4 * 0.5 / 4),
                min(4 * 0.2 / 1, 4 * 0.5 / 2, 4 * 0.6 / 3, 4 * 0.7 / 4),
                min(4 * 0.02 / 1, 4 * 0.025 / 2, 4 * 0.03 / 3, 4 * 0.035 / 4)]
    np.testing.assert_allclose(stats.simes_over_layers(p_layers), expected)
    # never larger than Bonferroni, and far smaller when layers agree (third voxel)
    assert (stats.simes_over_layers(p_layers) <= stats.min_p_over_layers(p_layers)).all()
    assert stats.simes_over_layers(p_layers)[2] == pytest.approx(0.035)


def test_simes_over_correlated_layers_keeps_null_level():
    # 13 strongly correlated layer statistics under the null, as neighbouring layers are
    from scipy.stats import norm

    rng = np.random.default_rng(5)
    shared = rng.standard_normal(20_000)
    z = 0.9 * shared + np.sqrt(1 - 0.81) * rng.standard_normal((13, 20_000))
    comb = stats.simes_over_layers(norm.sf(z))
    assert (comb < 0.05).mean() <= 0.05


def test_significant_voxels_combines_layers_and_fdr():
    p_layers = np.ones((3, 6))
    p_layers[1, 0] = 1e-6  # strong effect in one layer only
    p_layers[2, 1] = 0.02  # 0.06 after combining 3 layers: not significant
    sig = stats.significant_voxels(p_layers, q=0.05)
    np.testing.assert_array_equal(sig, [True, False, False, False, False, False])


def test_mean_ci_contains_true_mean_and_matches_t_formula():
    rng = np.random.default_rng(4)
    sample = rng.normal(loc=2.0, scale=1.0, size=40)
    mean, low, high = stats.mean_ci(sample)
    assert mean == pytest.approx(sample.mean())
    assert low < 2.0 < high
    # half width = t_{0.975, 39} * s / sqrt(40), t_{0.975, 39} = 2.0227
    half = 2.0227 * sample.std(ddof=1) / np.sqrt(40)
    assert high - mean == pytest.approx(half, rel=1e-3)
    assert mean - low == pytest.approx(half, rel=1e-3)


def test_mean_ci_coverage_is_nominal():
    rng = np.random.default_rng(5)
    samples = rng.normal(loc=-0.3, scale=2.0, size=(10, 2000))  # 2000 experiments of n = 10
    _, low, high = stats.mean_ci(samples, axis=0, level=0.9)
    coverage = ((low < -0.3) & (-0.3 < high)).mean()
    assert 0.87 < coverage < 0.93


def test_mean_ci_single_value_is_degenerate():
    mean, low, high = stats.mean_ci(np.array([0.25]))
    assert mean == low == high == 0.25
