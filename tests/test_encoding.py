"""Tests of brainalign.encoding: nested leave-one-run-out ridge, scores and the shift null."""

from __future__ import annotations

import numpy as np
import pytest

from brainalign import encoding

ALPHAS = np.logspace(-1, 5, 7)


def ar1(rng: np.random.Generator, n: int, p: int, phi: float) -> np.ndarray:
    """Stationary unit-variance AR(1) series, (n, p)."""
    e = rng.standard_normal((n, p))
    out = np.empty_like(e)
    out[0] = e[0]
    for t in range(1, n):
        out[t] = phi * out[t - 1] + np.sqrt(1 - phi**2) * e[t]
    return out


def zscore(a: np.ndarray) -> np.ndarray:
    """Within-run cleaning, as bold.load_run does."""
    return (a - a.mean(0)) / a.std(0)


def standardise_like_split(x_train: np.ndarray, x_test: np.ndarray):
    """The training-split standardisation of encoding._Split.fit, replicated."""
    mean = x_train.mean(0)
    std = x_train.std(0)
    std[std < 1e-8] = 1.0
    return (x_train - mean) / std, (x_test - mean) / std


# ----------------------------------------------------------------------------- ridge algebra
@pytest.mark.parametrize("rank_deficient", [False, True])
def test_svd_ridge_equals_closed_form_ridge(rank_deficient):
    rng = np.random.default_rng(0)
    x_train = rng.standard_normal((50, 8)) * rng.uniform(0.5, 5, 8) + rng.uniform(-3, 3, 8)
    x_test = rng.standard_normal((20, 8)) * 2 + 1
    if rank_deficient:
        # a duplicated and a constant feature: the SVD drops null directions, and ridge with
        # alpha > 0 has no component there either
        x_train[:, 7] = x_train[:, 0]
        x_test[:, 7] = x_test[:, 0]
        x_train[:, 6] = 3.0
    y_train = rng.standard_normal((50, 5))
    alphas = np.array([0.1, 1.0, 10.0, 100.0, 1e4])

    split = encoding._Split.fit(x_train, x_test)
    pred = split.predict(y_train, alphas)
    assert pred.shape == (len(alphas), 20, 5)

    xs_train, xs_test = standardise_like_split(x_train, x_test)
    for i, a in enumerate(alphas):
        ref = xs_test @ encoding.closed_form_ridge(xs_train, y_train, a)
        rel = np.linalg.norm(pred[i] - ref) / np.linalg.norm(ref)
        assert rel < 1e-5, (a, rel)

    # one penalty per voxel: column j uses its own alpha
    per_voxel = np.array([0.1, 1e4, 10.0, 0.1, 100.0])
    out = split.predict_per_voxel(y_train.astype(np.float32), per_voxel.astype(np.float32))
    for j, a in enumerate(per_voxel):
        ref = xs_test @ encoding.closed_form_ridge(xs_train, y_train[:, [j]], a)
        np.testing.assert_allclose(out[:, j], ref[:, 0], rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def test_closed_form_ridge_limits():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 5))
    w = rng.standard_normal((5, 2))
    y = x @ w
    # alpha -> 0: ordinary least squares recovers the weights of a noiseless problem
    np.testing.assert_allclose(encoding.closed_form_ridge(x, y, 1e-10), w, atol=1e-6)
    # large alpha shrinks the weights to zero, like X'y / alpha
    big = encoding.closed_form_ridge(x, y, 1e8)
    np.testing.assert_allclose(big, x.T @ y / 1e8, rtol=1e-4)


def test_pearson_r_and_r2_score():
    rng = np.random.default_rng(2)
    y = rng.standard_normal((100, 3))
    pred = np.column_stack([2 * y[:, 0] + 5, -y[:, 1], np.full(100, 0.3)])
    np.testing.assert_allclose(encoding.pearson_r(y, pred), [1.0, -1.0, 0.0], atol=1e-12)
    r2 = encoding.r2_score(y, np.column_stack([y[:, 0], np.full(100, y[:, 1].mean()),
                                               y[:, 2] + 1.0]))
    assert r2[0] == pytest.approx(1.0)
    assert r2[1] == pytest.approx(0.0, abs=1e-12)  # the mean predictor explains nothing
    assert r2[2] < 0  # a biased prediction is worse than the mean
    # stacked predictions (n_alphas, n_samples, n_voxels) broadcast against y
    assert encoding.r2_score(y, np.stack([y, 0 * y])).shape == (2, 3)


def test_circular_shifts_range_and_seed():
    s = encoding.circular_shifts([60, 45, 80], n_permutations=500, min_shift=10, seed=3)
    assert s.shape == (500, 3)
    for j, n in enumerate([60, 45, 80]):
        assert s[:, j].min() >= 10 and s[:, j].max() <= n - 10
    np.testing.assert_array_equal(s, encoding.circular_shifts([60, 45, 80], 500, 10, seed=3))
    assert not np.array_equal(s, encoding.circular_shifts([60, 45, 80], 500, 10, seed=4))
    with pytest.raises(ValueError, match="too short"):
        encoding.circular_shifts([60, 19], 10, min_shift=10)


# ------------------------------------------------------------------------- fit_layer science
def test_fit_layer_pure_noise_is_calibrated():
    rng = np.random.default_rng(0)
    lengths = [60, 60, 55, 65, 60]
    xs = [rng.standard_normal((n, 20)) for n in lengths]
    ys = [zscore(ar1(rng, n, 300, 0.5)) for n in lengths]
    s = encoding.fit_layer(xs, ys, ALPHAS, n_permutations=20, min_shift=10)
    assert s.r.shape == s.r2.shape == s.p.shape == (300,)
    assert s.r_folds.shape == s.alpha.shape == (5, 300)
    np.testing.assert_allclose(s.r, s.r_folds.mean(0), rtol=1e-5, atol=1e-7)
    assert abs(s.r.mean()) < 0.02
    assert (s.p < 0.05).mean() <= 0.08
    assert np.all((s.p >= 0) & (s.p <= 1))
    # the null is centred on zero too, and out-of-sample R² of noise is not positive
    assert abs(s.null_mean.mean()) < 0.02
    assert s.r2.mean() < 0.01
    assert set(np.unique(s.alpha)) <= set(ALPHAS.astype(np.float32))


def test_fit_layer_recovers_planted_signal():
    rng = np.random.default_rng(1)
    lengths = [60, 70, 55, 60, 65]
    n_sig, n_vox = 100, 300
    xs = [rng.standard_normal((n, 20)) for n in lengths]
    w = rng.standard_normal((20, n_vox)) / np.sqrt(20)
    w[:, n_sig:] = 0.0  # voxels n_sig.. are noise only
    ys = [zscore(x @ w + ar1(rng, x.shape[0], n_vox, 0.5)) for x in xs]  # SNR 1
    s = encoding.fit_layer(xs, ys, ALPHAS, n_permutations=20, min_shift=10)
    sig, noise = slice(0, n_sig), slice(n_sig, n_vox)
    # noiseless r would be sqrt(SNR / (1 + SNR)) ~ 0.71
    assert s.r[sig].mean() > 0.5
    assert s.r[sig].min() > 0.3
    assert np.all(s.p[sig] < 1e-3)
    assert s.r2[sig].mean() > 0.25
    assert abs(s.r[noise].mean()) < 0.03
    assert (s.p[noise] < 0.05).mean() <= 0.1
    # inner CV shrinks noise voxels much harder than signal voxels
    assert np.median(s.alpha[:, sig]) < np.median(s.alpha[:, noise])
    # held-out scores are consistent across the held-out runs
    assert np.all(s.r_folds[:, sig].mean(1) > 0.4)


def test_fit_layer_no_leakage_with_autocorrelated_features_and_bold():
    """Slow features and slow BOLD that are independent: the held-out r must stay ~0.

    Both series wander (AR(1), phi = 0.9), so any fit finds spurious feature-BOLD covariance
    within a stretch of time. With leave-one-TR-out (or interleaved folds), the held-out
    volumes' neighbours are in the training set and share that spurious covariance, so the
    "held-out" r comes out strongly positive; whole runs held out keep train and test apart.
    """
    rng = np.random.default_rng(2)
    xs = [ar1(rng, 60, 20, 0.9) for _ in range(5)]
    ys = [zscore(ar1(rng, 60, 600, 0.9)) for _ in range(5)]
    s = encoding.fit_layer(xs, ys, ALPHAS, n_permutations=20, min_shift=10)
    assert abs(s.r.mean()) < 0.04
    assert (s.p < 0.05).mean() <= 0.08

    # contrast (positive control): interleaved folds on the same data leak through
    # autocorrelation, with the training-split standardisation and the same ridge solver
    x, y = np.concatenate(xs), np.concatenate(ys)
    held = np.arange(len(x)) % 5
    r_leaky = []
    for k in range(5):
        split = encoding._Split.fit(x[held != k], x[held == k])
        pred = split.predict(y[held != k], np.array([1.0]))[0]
        r_leaky.append(encoding.pearson_r(y[held == k], pred).mean())
    assert np.mean(r_leaky) > 0.3


def test_fit_layer_is_invariant_to_voxel_batching():
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((40, 6)) for _ in range(4)]
    w = rng.standard_normal((6, 25))
    ys = [zscore(x @ w + 2 * rng.standard_normal((40, 25))) for x in xs]
    kw = {"n_permutations": 5, "min_shift": 5, "seed": 7}
    a = encoding.fit_layer(xs, ys, ALPHAS, batch_voxels=1000, **kw)
    b = encoding.fit_layer(xs, ys, ALPHAS, batch_voxels=7, **kw)
    np.testing.assert_allclose(a.r, b.r, atol=1e-6)
    np.testing.assert_allclose(a.p, b.p, rtol=1e-4, atol=1e-10)
    np.testing.assert_array_equal(a.alpha, b.alpha)
    # a voxel's scores depend on that voxel only: refitting a subset gives the same r
    c = encoding.fit_layer(xs, [y[:, 10:15] for y in ys], ALPHAS, **kw)
    np.testing.assert_allclose(c.r, a.r[10:15], atol=1e-6)


# ---------------------------------------------------------------------------------- errors
def _runs(n_runs, n=30, p=4, vox=3, seed=0):
    rng = np.random.default_rng(seed)
    return ([rng.standard_normal((n, p)) for _ in range(n_runs)],
            [rng.standard_normal((n, vox)) for _ in range(n_runs)])


def test_fit_layer_needs_three_runs():
    xs, ys = _runs(2)
    with pytest.raises(ValueError, match="at least 3 runs"):
        encoding.fit_layer(xs, ys, ALPHAS, n_permutations=5, min_shift=5)


def test_fit_layer_rejects_mismatched_run_lengths():
    xs, ys = _runs(3)
    ys[1] = ys[1][:-2]
    with pytest.raises(ValueError, match="run 1: 30 feature rows but 28 volumes"):
        encoding.fit_layer(xs, ys, ALPHAS, n_permutations=5, min_shift=5)


def test_fit_layer_rejects_other_bad_input():
    xs, ys = _runs(4)
    with pytest.raises(ValueError, match="one entry per run"):
        encoding.fit_layer(xs, ys[:3], ALPHAS, n_permutations=5, min_shift=5)
    with pytest.raises(ValueError, match="n_permutations"):
        encoding.fit_layer(xs, ys, ALPHAS, n_permutations=1, min_shift=5)
    with pytest.raises(ValueError, match="too short for circular shifts"):
        encoding.fit_layer(xs, ys, ALPHAS, n_permutations=5, min_shift=15)


def test_inner_r2_never_sees_the_held_out_run():
    # the layer-selection score of outer fold f (inner_r2[f]) must be computed from the
    # training runs only: changing run f's BOLD leaves it unchanged, but changes other folds'
    rng = np.random.default_rng(3)
    x = [ar1(rng, 40, 5, 0.3) for _ in range(4)]
    w = rng.standard_normal((5, 6))
    y = [zscore(xi @ w + ar1(rng, 40, 6, 0.5)) for xi in x]
    base = encoding.fit_layer(x, y, ALPHAS, n_permutations=2, min_shift=5)
    assert base.inner_r2.shape == (4, 6) and (base.inner_r2 > 0.2).all()  # real signal
    y2 = list(y)
    y2[1] = zscore(ar1(rng, 40, 6, 0.5))  # replace held-out run 1
    moved = encoding.fit_layer(x, y2, ALPHAS, n_permutations=2, min_shift=5)
    np.testing.assert_allclose(moved.inner_r2[1], base.inner_r2[1], atol=1e-6)
    assert np.abs(np.delete(moved.inner_r2 - base.inner_r2, 1, 0)).max() > 1e-3
