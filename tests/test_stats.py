"""Tests of brainalign.stats: FDR, Bonferroni over layers, confidence intervals."""

from __future__ import annotations

import numpy as np
import pytest

from brainalign import stats

#: lowest consecutive-layer linear CKA between transformer layers of a random wav2vec2-base
#: and a random Whisper tiny at transformers' default initialisation, on the demo's TTS speech
#: (TR 1 to 2 s); see stats.CKA_INDISTINGUISHABLE
MIN_DEFAULT_INIT_CKA = 0.9975


def test_fdr_bh_matches_hand_computed_example():
    # sorted p:       0.001  0.008  0.039  0.041  0.042  0.060  0.074  0.205
    # BH bound i*q/m: 0.00625 0.0125 0.01875 0.025 0.03125 0.0375 0.04375 0.05
    # largest i with p_(i) <= bound is i = 2 -> reject the two smallest only (the 0.039 ... 0.042
    # are above their bounds, and no later p is below its bound either).
    p = np.array([0.039, 0.001, 0.205, 0.041, 0.008, 0.060, 0.042, 0.074])
    expected = np.array([False, True, False, False, True, False, False, False])
    np.testing.assert_array_equal(stats.fdr_bh(p, q=0.05), expected)


def test_bh_adjusted_matches_scipy_and_keeps_nan():
    from scipy.stats import false_discovery_control

    rng = np.random.default_rng(0)
    p = np.r_[rng.uniform(size=500), rng.uniform(0, 1e-3, 50)]
    np.testing.assert_allclose(stats.bh_adjusted(p), false_discovery_control(p), rtol=1e-12)
    with_nan = np.r_[p[:10], np.nan]
    adj = stats.bh_adjusted(with_nan)
    assert np.isnan(adj[-1]) and np.isfinite(adj[:-1]).all()
    assert not stats.fdr_bh(with_nan, 0.99)[-1]


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


def test_mean_ci_of_a_single_value_has_no_interval():
    mean, low, high = stats.mean_ci(np.array([0.25]))
    assert mean == 0.25 and np.isnan(low) and np.isnan(high)  # not a zero-width "certainty"


# ---------------------------------------------------------------- best layer without double dipping
def _ar1(rng, n, v, phi=0.5):
    e = rng.standard_normal((n, v))
    out = np.empty_like(e)
    out[0] = e[0]
    for t in range(1, n):
        out[t] = phi * out[t - 1] + np.sqrt(1 - phi**2) * e[t]
    return out.astype(np.float32)


@pytest.fixture(scope="module")
def noise_layer_fits():
    """Real leave-one-run-out fits of 5 unrelated 'layers' to pure AR(1) noise BOLD, plus 200
    voxels driven by layer 2."""
    from brainalign.encoding import FitOptions, fit_layer

    rng = np.random.default_rng(0)
    n_runs, n_t, n_noise, n_sig, n_feat = 4, 100, 1500, 200, 16
    x = [[_ar1(rng, n_t, n_feat) for _ in range(n_runs)] for _ in range(5)]
    w = rng.standard_normal((n_feat, n_sig)) / np.sqrt(n_feat)
    y = [np.hstack([_ar1(rng, n_t, n_noise), x[2][i] @ w + _ar1(rng, n_t, n_sig)])
         for i in range(n_runs)]
    options = FitOptions(n_permutations=3, min_shift=5)
    fits = [fit_layer(xl, y, np.logspace(-1, 6, 8), options) for xl in x]
    return (np.stack([f.inner_r2 for f in fits]), np.stack([f.r_folds for f in fits]), n_noise)


def test_crossfit_best_layer_is_unbiased_on_noise_where_naive_max_is_not(noise_layer_fits):
    inner, r_folds, n_noise = noise_layer_fits
    noise = slice(0, n_noise)
    best = stats.crossfit_best_layer(inner[..., noise], r_folds[..., noise])
    se = best.independent_r.std() / np.sqrt(n_noise)
    # max over layers of the same scores: biased upward (measured 0.10)
    assert best.naive_r.mean() > 0.05
    # layer picked on the training runs' inner CV, scored on the held-out run: ~0
    assert abs(best.independent_r.mean()) < 3 * se + 0.005, (best.independent_r.mean(), se)
    # picking on the other folds' held-out scores is NOT independent with leave-one-run-out
    # (their models saw this fold's run): a clear bias, which is why inner scores are used
    other = np.stack([np.delete(r_folds, f, 1).mean(1) for f in range(r_folds.shape[1])], 1)
    leaky = stats.crossfit_best_layer(other[..., noise], r_folds[..., noise])
    assert leaky.independent_r.mean() > 0.02
    # on noise the chosen layer is unstable across folds
    assert best.stability.mean() < 0.7


def test_crossfit_best_layer_recovers_planted_layer(noise_layer_fits):
    inner, r_folds, n_noise = noise_layer_fits
    sig = slice(n_noise, None)
    best = stats.crossfit_best_layer(inner[..., sig], r_folds[..., sig], layers=[0, 3, 6, 9, 12])
    assert (best.layer == 6).mean() > 0.95  # row 2 is layer number 6
    assert best.stability.mean() > 0.95
    np.testing.assert_allclose(best.independent_r.mean(), best.naive_r.mean(), atol=0.01)
    assert best.independent_r.mean() > 0.3


def test_crossfit_best_layer_mode_stability_and_ties():
    # 3 layers, 4 folds, 2 units; selection one-hot per fold
    sel = np.zeros((3, 4, 2))
    sel[1, [0, 1, 2], 0] = 1  # unit 0: layer 1 in folds 0-2, layer 2 in fold 3
    sel[2, 3, 0] = 1
    sel[0, [0, 1], 1] = 1  # unit 1: tie 2 vs 2 between layers 0 and 2
    sel[2, [2, 3], 1] = 2  # ... layer 2 with the higher mean selection score wins
    held = np.arange(24, dtype=float).reshape(3, 4, 2) / 100
    best = stats.crossfit_best_layer(sel, held)
    np.testing.assert_array_equal(best.layer, [1, 2])
    np.testing.assert_allclose(best.stability, [0.75, 0.5])
    np.testing.assert_allclose(best.mean_layer, [1.25, 1.0])
    # unit 0: folds 0-2 score layer 1 (held[1, f, 0]), fold 3 layer 2 (held[2, 3, 0])
    np.testing.assert_allclose(best.independent_r[0], (0.08 + 0.10 + 0.12 + 0.22) / 4)
    np.testing.assert_array_equal(best.naive_layer, [2, 2])
    with pytest.raises(ValueError, match="n_layers, n_folds, n_units"):
        stats.crossfit_best_layer(sel[:, :, 0], held[:, :, 0])


# ---------------------------------------------------------------- noise ceiling
def _shared_signal_runs(rng, n_sub, rho, n_runs=3, n_t=400, n_vox=300):
    """Subjects = one shared unit-variance signal * sqrt(rho) + own noise * sqrt(1 - rho)."""
    signal = [rng.standard_normal((n_t, n_vox)) for _ in range(n_runs)]
    runs = [[np.sqrt(rho) * s + np.sqrt(1 - rho) * rng.standard_normal((n_t, n_vox))
             for s in signal] for _ in range(n_sub)]
    return runs, signal


def _noise_then_signal_runs(rng, n_noise, n_signal, rho, n_sub=3):
    """2 runs x 150 volumes per subject: ``n_noise`` pure-noise voxels, then ``n_signal`` voxels
    sharing a signal of pairwise ISC ``rho``."""
    noise, _ = _shared_signal_runs(rng, n_sub, 0.0, n_runs=2, n_t=150, n_vox=n_noise)
    signal, _ = _shared_signal_runs(rng, n_sub, rho, n_runs=2, n_t=150, n_vox=n_signal)
    return [[np.hstack([a, b]) for a, b in zip(n, s, strict=True)]
            for n, s in zip(noise, signal, strict=True)]


@pytest.mark.parametrize("n_sub", [2, 3, 6])
def test_isc_ceiling_matches_analytic_ceiling(n_sub):
    rng = np.random.default_rng(n_sub)
    rho = 0.3
    runs, signal = _shared_signal_runs(rng, n_sub, rho)
    isc = stats.loso_isc(runs).mean(1)  # (n_sub, n_vox)
    # LOSO ISC has a closed form under this model ...
    sb = (n_sub - 1) * rho / (1 + (n_sub - 2) * rho)
    np.testing.assert_allclose(isc.mean(), np.sqrt(rho * sb), atol=0.01)
    # ... and the corrected ceiling is sqrt(rho), the r of a perfect model of the signal
    ceiling = stats.ceiling_from_isc(isc.mean(0), n_sub)
    np.testing.assert_allclose(ceiling.mean(), np.sqrt(rho), atol=0.015)
    perfect = np.mean([stats.loso_isc([[r], [s]])[0, 0] for r, s in zip(runs[0], signal,
                                                                          strict=True)])
    np.testing.assert_allclose(ceiling.mean(), perfect, atol=0.02)


def test_ceiling_from_isc_edge_cases():
    np.testing.assert_allclose(stats.ceiling_from_isc(np.array([0.25]), 2), [0.5])
    np.testing.assert_allclose(stats.ceiling_from_isc(np.array([0.5]), 10**6), [0.5], atol=1e-3)
    out = stats.ceiling_from_isc(np.array([-0.1, np.nan, 1.0]), 3)
    assert out[0] == 0 and np.isnan(out[1]) and out[2] == pytest.approx(1.0)


def test_isc_ceiling_significance_on_noise_and_signal():
    rng = np.random.default_rng(5)
    runs = _noise_then_signal_runs(rng, 400, 100, 0.2)
    ceil = stats.isc_ceiling(runs, n_permutations=100, min_shift=10, min_ceiling=0.1)
    assert abs(ceil.group_isc[:400].mean()) < 0.01
    assert ceil.usable[:400].mean() <= 0.05
    assert 0.05 < (ceil.p[:400] < 0.05).mean() + 0.05 < 0.15  # uncorrected p ~ uniform
    assert ceil.usable[400:].mean() > 0.9
    np.testing.assert_allclose(np.median(ceil.group_ceiling[400:]), np.sqrt(0.2), atol=0.05)
    single = stats.isc_ceiling(runs[:1], n_permutations=10, min_shift=10)
    assert np.isnan(single.group_ceiling).all() and not single.usable.any()


def test_isc_ceiling_passes_fdr_over_many_voxels():
    """The demo's situation: a few hundred reliable voxels among thousands. The smallest rank
    p-value of 50 shifts (1/51) cannot pass BH over 5 100 voxels (it needs p < 1e-3); the null's
    t prediction interval can, and stays calibrated on the noise voxels."""
    rng = np.random.default_rng(7)
    runs = _noise_then_signal_runs(rng, 5000, 100, 0.3)
    ceil = stats.isc_ceiling(runs, n_permutations=50, min_shift=10, min_ceiling=0.1)
    assert ceil.usable[5000:].mean() > 0.95
    # false discovery proportion near q = 0.05 (8 of 108 here; 1-8 over seeds and 50 or 200
    # shifts, with the noise voxels' p-values nominal at 0.05, 0.01 and 0.001)
    assert ceil.usable[:5000].sum() <= 0.1 * ceil.usable.sum()
    assert 0.04 < (ceil.p[:5000] < 0.05).mean() < 0.06
    rank_p = 1 / 51
    assert not stats.fdr_bh(np.r_[np.full(100, rank_p), ceil.p[:5000]], 0.05).any()


def test_normalise_by_ceiling_guards():
    r = np.array([0.2, 0.2, 0.2, 0.2])
    ceiling = np.array([0.4, 0.0, np.nan, 0.4])
    usable = np.array([True, True, True, False])
    out = stats.normalise_by_ceiling(r, ceiling, usable)
    assert out[0] == pytest.approx(0.5) and np.isnan(out[1:]).all()


# ---------------------------------------------------------------- group level
def test_sign_flip_p_exact_and_nominal_on_noise():
    assert stats.sign_flip_p(np.array([[0.1], [0.2], [0.3]]))[0] == pytest.approx(1 / 8)
    assert stats.sign_flip_p(np.array([[0.1], [-0.2], [0.3]]))[0] == pytest.approx(3 / 8)
    rng = np.random.default_rng(0)
    p = stats.sign_flip_p(rng.standard_normal((8, 4000)))
    assert 0.035 < (p <= 0.05).mean() < 0.065  # exact test: nominal false-positive share
    assert stats.sign_flip_p(np.abs(rng.standard_normal((8, 50))) + 0.1).max() <= 1 / 256 + 1e-12
    p_mc = stats.sign_flip_p(rng.standard_normal((20, 500)), n_flips=2000)
    assert 0.02 < (p_mc <= 0.05).mean() < 0.09


def test_t_test_p_matches_scipy():
    from scipy.stats import ttest_1samp

    rng = np.random.default_rng(1)
    v = rng.standard_normal((6, 5)) + 0.5
    t, p = stats.t_test_p(v)
    ref = ttest_1samp(v, 0, alternative="greater")
    np.testing.assert_allclose(t, ref.statistic)
    np.testing.assert_allclose(p, ref.pvalue)


def test_bootstrap_best_layer_planted_and_flat():
    rng = np.random.default_rng(2)
    layers = [0, 2, 4, 6, 8]
    peak = np.array([0.05, 0.1, 0.2, 0.1, 0.05])[None, :, None]
    profiles = np.concatenate([peak + 0.02 * rng.standard_normal((8, 5, 1)),
                               0.02 * rng.standard_normal((8, 5, 1))], axis=2)
    out = stats.bootstrap_best_layer(profiles, layers, n_boot=500)
    assert out["best_layer"][0] == 4 and out["layer_ci_low"][0] == out["layer_ci_high"][0] == 4
    assert out["bootstrap_share"][0] > 0.95
    assert out["bootstrap_share"][1] < 0.8 and out["layer_ci_high"][1] > out["layer_ci_low"][1]
    np.testing.assert_allclose(out["layer_distribution"].sum(0), 1.0)


def test_loso_best_layer_unbiased_on_noise():
    rng = np.random.default_rng(3)
    profiles = rng.standard_normal((5, 8, 2000)) * 0.05
    out = stats.loso_best_layer(profiles, range(8))
    naive = profiles.mean(0).max(0)
    assert naive.mean() > 0.03  # max of the group mean is biased
    se = out["independent_r"].mean(0).std() / np.sqrt(2000)
    assert abs(out["independent_r"].mean()) < 3 * se


def test_isc_null_warns_when_runs_allow_few_shifts():
    rng = np.random.default_rng(0)
    runs = [[rng.standard_normal((32, 5))] for _ in range(2)]
    with pytest.warns(UserWarning, match="distinct circular shifts"):
        stats.isc_null(runs, 10, min_shift=15)


# ---------------------------------------------------------------- layers that cannot be told apart
def test_layer_groups_join_layers_only_through_high_cka():
    cka = {0: 0.5, 1: 0.995, 2: 0.999, 3: 0.7, 4: np.nan}
    groups = stats.layer_groups(range(6), cka, threshold=0.99)
    assert groups == [[0], [1, 2, 3], [4], [5]]  # NaN CKA keeps 4 and 5 apart
    assert stats.equivalent_layers(2, groups) == [1, 2, 3]
    assert stats.equivalent_layers(0, groups) == [0]
    assert not stats.all_layers_indistinguishable(groups)
    # a subset of fitted layers is joined only when every step between them is high
    assert stats.layer_groups([1, 3, 5], cka, 0.99) == [[1, 3], [5]]
    # a random model at its default init: every consecutive CKA ~1
    flat = stats.layer_groups(range(5), dict.fromkeys(range(4), 0.9995))
    assert flat == [[0, 1, 2, 3, 4]] and stats.all_layers_indistinguishable(flat)
    assert not stats.all_layers_indistinguishable([[3]])  # one fitted layer: nothing to compare


def test_cka_threshold_separates_measured_models():
    # consecutive linear CKA measured on the demo's TTS speech (see CKA_INDISTINGUISHABLE):
    # the highest of real Whisper tiny.en (TR 2 s) and of the demo's random wav2vec2, and the
    # lowest of a random wav2vec2 at transformers' default init
    distinguishable, identical = max(0.9831, 0.9720), MIN_DEFAULT_INIT_CKA
    assert distinguishable < stats.CKA_INDISTINGUISHABLE <= identical


# ---------------------------------------------------------------- group tests: which, and its floor
def test_sign_flip_floor_and_the_subjects_it_needs():
    assert stats.signflip_floor(4) == 0.0625 and stats.signflip_floor(3) == 0.125
    assert stats.signflip_floor(20, n_flips=999) == 1 / 1000  # sampled patterns
    # one ROI passes BH over n_rois x n_layers tests only if 2^-n <= q / n_rois
    assert stats.min_subjects_signflip(1, 0.05) == 5  # 2^-5 = 0.031 <= 0.05 < 2^-4
    assert stats.min_subjects_signflip(7, 0.05) == 8  # 2^-8 = 0.0039 <= 0.0071 < 2^-7
    assert stats.min_subjects_signflip(34, 0.05) == 10


def test_choose_group_test_says_when_the_sign_flip_floor_blocks_everything():
    four = stats.choose_group_test("signflip", 4, 7, 0.05)
    assert four.name == "signflip" and not four.can_pass and four.floor == 0.0625
    assert "0.0625" in four.reason and "no ROI x layer test can be significant" in four.reason
    assert "auto or fixed" in four.reason  # and what to do instead
    auto = stats.choose_group_test("auto", 4, 7, 0.05)
    assert auto.name == "fixed" and auto.can_pass and not auto.population
    assert "0.0625" in auto.reason and "at least 8 subjects" in auto.reason
    assert "population" in auto.reason  # it says it does not generalise
    eight = stats.choose_group_test("auto", 8, 7, 0.05)
    assert eight.name == "signflip" and eight.population and eight.can_pass
    # between q / n_rois and q: possible only when many tests reach the floor
    six = stats.choose_group_test("signflip", 6, 7, 0.05)
    assert six.can_pass and "more than 31% of the tests" in six.reason
    assert stats.choose_group_test("t", 1, 7).can_pass is False
    with pytest.raises(ValueError, match="group.test 'wilcoxon'"):
        stats.choose_group_test("wilcoxon", 5, 7)


def _subject_nulls(rng, n_sub, n_perm, n_tests):
    """Each subject's null differs (bias and spread, as circular-shift nulls do); its observed
    r under H0 is one more draw of the same distribution."""
    bias = rng.normal(0, 0.02, (n_sub, 1, 1))
    sd = rng.uniform(0.02, 0.08, (n_sub, 1, 1))
    draws = bias + sd * rng.standard_normal((n_sub, n_perm + 1, n_tests))
    return draws[:, 0], draws[:, 1:], sd[:, 0, 0]


def test_fixed_effects_p_is_calibrated_on_noise_and_powered_on_signal():
    from scipy.stats import kstest

    rng = np.random.default_rng(11)
    observed, nulls, sd = _subject_nulls(rng, 3, 50, 20_000)
    p = stats.fixed_effects_p(observed, nulls)
    assert kstest(p, "uniform").pvalue > 0.01  # uniform over many draws
    assert 0.045 < (p < 0.05).mean() < 0.055 and (p < 0.001).mean() < 0.002
    # a signal of 1.5 null SDs of the group mean in every subject is found
    group_sd = np.sqrt((sd**2).sum()) / 3
    p_sig = stats.fixed_effects_p(observed[:, :2000] + 1.5 * group_sd, nulls[:, :, :2000])
    assert (p_sig < 0.05).mean() > 0.4
    p_big = stats.fixed_effects_p(observed[:, :2000] + 5 * group_sd, nulls[:, :, :2000])
    assert (p_big < 0.001).mean() > 0.95
    # a mean over subjects' nulls, not over a pooled null: a biased subject does not leak
    biased = nulls + np.array([0.05, 0.0, 0.0])[:, None, None]
    p_b = stats.fixed_effects_p(observed + np.array([0.05, 0.0, 0.0])[:, None], biased)
    assert 0.04 < (p_b < 0.05).mean() < 0.06
    with pytest.raises(ValueError, match="n_permutations"):
        stats.fixed_effects_p(observed, nulls[:2])


def test_pearson_r_and_r2_score():
    rng = np.random.default_rng(2)
    y = rng.standard_normal((100, 3))
    pred = np.column_stack([2 * y[:, 0] + 5, -y[:, 1], np.full(100, 0.3)])
    np.testing.assert_allclose(stats.pearson_r(y, pred), [1.0, -1.0, 0.0], atol=1e-12)
    r2 = stats.r2_score(y, np.column_stack([y[:, 0], np.full(100, y[:, 1].mean()),
                                               y[:, 2] + 1.0]))
    assert r2[0] == pytest.approx(1.0)
    assert r2[1] == pytest.approx(0.0, abs=1e-12)  # the mean predictor explains nothing
    assert r2[2] < 0  # a biased prediction is worse than the mean
    # stacked predictions (n_alphas, n_samples, n_voxels) broadcast against y
    assert stats.r2_score(y, np.stack([y, 0 * y])).shape == (2, 3)
    # the same function on torch tensors (the ridge's torch backend), same values
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(stats.pearson_r(torch.as_tensor(y), torch.as_tensor(pred)),
                               stats.pearson_r(y, pred), atol=1e-12)


def test_zscore_time_on_numpy_and_torch():
    rng = np.random.default_rng(4)
    a = np.column_stack([rng.standard_normal(80) * 3 + 2, np.full(80, 5.0)])
    z = stats.zscore_time(a)
    np.testing.assert_allclose(z[:, 0].mean(), 0, atol=1e-12)
    np.testing.assert_allclose(z[:, 0].std(), 1, atol=1e-12)
    assert np.all(z[:, 1] == 0)  # a constant column becomes 0, not NaN
    # the same on torch tensors (the null's backend), same values
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(stats.zscore_time(torch.as_tensor(a)).numpy(), z, atol=1e-12)


def test_shift_design_is_an_orthogonal_array_of_uniform_shifts():
    lengths = [60, 45, 80, 70, 50]
    d = stats.shift_design(lengths, n_permutations=50, min_shift=10, seed=3)
    s = d.shifts
    assert s.shape == (50, 5) and d.k == 11  # smallest prime or 2^m >= 5 runs, k² >= 2 x 50
    for j, n in enumerate(lengths):
        assert s[:, j].min() >= 10 and s[:, j].max() <= n - 10
        assert len(set(d.sets[j])) == d.k  # distinct candidates
        assert set(s[:, j]) <= set(d.sets[j])
    same = (d.index[:, None, :] == d.index[None, :, :]).sum(-1)
    np.fill_diagonal(same, 0)
    assert same.max() == 1  # two draws share at most one run's shift
    np.testing.assert_array_equal(s, stats.shift_design(lengths, 50, 10, seed=3).shifts)
    assert not np.array_equal(s, stats.shift_design(lengths, 50, 10, seed=4).shifts)
    assert stats.shift_design([30] * 12, 20, 0, 0).k == 13  # at least one candidate a run
    for n_perm, n_runs, k in ((10, 5, 5), (20, 5, 7), (100, 5, 16), (500, 3, 32)):
        d = stats.shift_design([40] * n_runs, n_perm, 0, seed=1)  # prime and GF(2^m) fields
        same = (d.index[:, None, :] == d.index[None, :, :]).sum(-1)
        np.fill_diagonal(same, 0)
        assert d.k == k and same.max() == 1 and len({tuple(r) for r in d.index}) == n_perm
    # each draw's shift of a run is uniform over the run's shifts (here all 20: min_shift 0)
    hist = np.bincount(np.concatenate([stats.shift_design([20, 30, 25], 30, 0, seed).shifts[:, 0]
                                       for seed in range(400)]), minlength=20)
    assert hist.size == 20 and hist.min() > 0.7 * hist.mean() and hist.max() < 1.3 * hist.mean()
    with pytest.raises(ValueError, match="too short"):
        stats.shift_design([60, 19], 10, min_shift=10)


def test_circular_shifts_range_and_seed():
    s = stats.circular_shifts([60, 45, 80], n_permutations=500, min_shift=10, seed=3)
    assert s.shape == (500, 3)
    for j, n in enumerate([60, 45, 80]):
        assert s[:, j].min() >= 10 and s[:, j].max() <= n - 10
    np.testing.assert_array_equal(s, stats.circular_shifts([60, 45, 80], 500, 10, seed=3))
    assert not np.array_equal(s, stats.circular_shifts([60, 45, 80], 500, 10, seed=4))
    with pytest.raises(ValueError, match="too short"):
        stats.circular_shifts([60, 19], 10, min_shift=10)
