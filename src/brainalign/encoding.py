"""Encoding stage: ridge regression from one layer's features to every voxel, scored on held-out
runs.

Outer cross-validation leaves one run out. Inside the training runs, a second leave-one-run-out
loop picks each voxel's ridge penalty from a log grid (by validation R²); the model is refitted on
all training runs with that penalty and scored on the held-out run (Pearson r and R²). Feature
standardisation is fitted on the training split of each loop only. One thin SVD per split serves
every penalty and every voxel; voxels are processed in batches so memory stays bounded.

Significance: the whole outer loop is refitted ``n_permutations`` times on BOLD circularly
shifted within each run (by at least ``min_shift`` volumes; penalties kept), which breaks the
stimulus-BOLD link but keeps each series' autocorrelation and the dependence between folds that
share training runs (ignoring it, as per-fold shift nulls do, gave 13% false positives at
p < 0.05 on pure noise). p-values come from a t-test of the observed r against the null sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import t as student_t


@dataclass
class LayerScores:
    """Held-out scores of one layer for every voxel.

    Attributes
    ----------
    r : (n_voxels,) Pearson r between prediction and BOLD, averaged over held-out runs.
    r_folds : (n_folds, n_voxels) r of each held-out run.
    r2 : (n_voxels,) held-out R², averaged over runs.
    alpha : (n_folds, n_voxels) penalty chosen by inner CV in each outer fold.
    null_mean, null_std : (n_voxels,) moments of the circular-shift null of ``r``.
    p : (n_voxels,) one-sided p-value of ``r`` against that null.
    inner_r2 : (n_folds, n_voxels) inner-CV validation R² at the chosen penalty, computed on
        each outer fold's training runs only: a score independent of the held-out run, for
        choosing between layers without double dipping (see ``stats.crossfit_best_layer``).
    """

    r: np.ndarray
    r_folds: np.ndarray
    r2: np.ndarray
    alpha: np.ndarray
    null_mean: np.ndarray
    null_std: np.ndarray
    p: np.ndarray
    inner_r2: np.ndarray


def _standardizer(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(0)
    std = train.std(0)
    std[std < 1e-8] = 1.0
    return mean, std


@dataclass
class _Split:
    """Thin SVD of a standardised training design, plus the held-out design in its basis."""

    u: np.ndarray  # (n_train, k)
    s: np.ndarray  # (k,)
    test_v: np.ndarray  # (n_test, k): X_test @ V

    @classmethod
    def fit(cls, x_train: np.ndarray, x_test: np.ndarray) -> _Split:
        mean, std = _standardizer(x_train)
        xt = (x_train - mean) / std
        u, s, vt = np.linalg.svd(xt, full_matrices=False)
        keep = s > s[0] * 1e-6
        u, s, vt = u[:, keep], s[keep], vt[keep]
        return cls(u.astype(np.float32), s.astype(np.float32),
                   (((x_test - mean) / std) @ vt.T).astype(np.float32))

    def predict(self, y_train: np.ndarray, alphas: np.ndarray) -> np.ndarray:
        """Held-out predictions for each penalty, shape (n_alphas, n_test, n_voxels)."""
        uty = self.u.T @ y_train
        return np.stack([(self.test_v * (self.s / (self.s**2 + a))) @ uty for a in alphas])

    def hat(self, alpha: float) -> np.ndarray:
        """(n_test, n_train) matrix mapping training BOLD to held-out predictions."""
        return (self.test_v * (self.s / (self.s**2 + alpha))) @ self.u.T

    def predict_per_voxel(self, y_train: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """Held-out predictions with one penalty per voxel, shape (n_test, n_voxels)."""
        out = np.empty((self.test_v.shape[0], y_train.shape[1]), dtype=np.float32)
        for a in np.unique(alpha):
            cols = alpha == a
            out[:, cols] = self.hat(a) @ y_train[:, cols]
        return out


def _shifted_hats(hat: np.ndarray, train_lengths: list[int], train_shifts: np.ndarray,
                  test_shifts: np.ndarray) -> np.ndarray:
    """Hat matrices of BOLD circularly shifted within each run, (n_perm, n_test, n_train).

    Shifting training run r by k equals rolling its block of hat columns by -k; shifting the
    held-out run by k equals rolling the prediction rows by -k. So the null refit never copies
    BOLD: it permutes a small matrix and does one product per permutation block.
    """
    out = np.empty((len(test_shifts), *hat.shape), dtype=np.float32)
    bounds = np.cumsum([0, *train_lengths])
    for j, (ks, kt) in enumerate(zip(train_shifts, test_shifts, strict=True)):
        for r, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            out[j, :, a:b] = np.roll(hat[:, a:b], -ks[r], axis=1)
        out[j] = np.roll(out[j], -kt, axis=0)
    return out


def r2_score(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-column coefficient of determination, y and pred (..., n_samples, n_voxels)."""
    ss_res = ((y - pred) ** 2).sum(-2)
    ss_tot = ((y - y.mean(-2, keepdims=True)) ** 2).sum(-2)
    return 1.0 - ss_res / np.maximum(ss_tot, 1e-12)


def _zscore(a: np.ndarray) -> np.ndarray:
    a = a - a.mean(0)
    sd = a.std(0)
    return a / np.where(sd < 1e-12, 1.0, sd)


def pearson_r(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-column Pearson correlation of y and pred (n_samples, n_voxels); 0 for constants."""
    return (_zscore(y) * _zscore(pred)).mean(0)


def circular_shifts(lengths: list[int], n_permutations: int, min_shift: int, seed: int = 0
                    ) -> np.ndarray:
    """Random circular shifts (n_permutations, n_runs), each in [min_shift, n_run - min_shift].

    Seeded, so every layer of a subject is tested against the same permutations."""
    rng = np.random.default_rng(seed)
    for n in lengths:
        if n - 2 * min_shift < 1:
            raise ValueError(f"run of {n} volumes is too short for circular shifts of at least "
                             f"{min_shift} volumes; lower `encoding.min_shift_s` or use longer "
                             "runs.")
    return np.stack([rng.integers(min_shift, n - min_shift + 1, size=n_permutations)
                     for n in lengths], axis=1)


def fit_layer(x_runs: list[np.ndarray], y_runs: list[np.ndarray], alphas: np.ndarray,
              n_permutations: int = 50, min_shift: int = 10, batch_voxels: int = 20_000,
              seed: int = 0) -> LayerScores:
    """Leave-one-run-out ridge encoding of every voxel from one layer's features.

    Parameters
    ----------
    x_runs : per run, array of shape (n_volumes_run, n_features)
    y_runs : per run, array of shape (n_volumes_run, n_voxels), cleaned within the run
    alphas : array of shape (n_alphas,), penalties to choose from (per voxel)
    n_permutations : refits on circularly shifted BOLD for the null
    min_shift : smallest circular shift (volumes) used for the null
    batch_voxels : voxels fitted at once (bounds memory)
    """
    n_runs = len(x_runs)
    if n_runs < 3:
        raise ValueError(f"need at least 3 runs for nested leave-one-run-out CV, got {n_runs}.")
    if n_permutations < 2:
        raise ValueError(f"n_permutations must be at least 2, got {n_permutations}.")
    if len(y_runs) != n_runs:
        raise ValueError("x_runs and y_runs must have one entry per run.")
    for i, (x, y) in enumerate(zip(x_runs, y_runs, strict=True)):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"run {i}: {x.shape[0]} feature rows but {y.shape[0]} volumes.")
    alphas = np.asarray(alphas, dtype=np.float32)
    n_vox = y_runs[0].shape[1]

    # one SVD per (outer, inner) split, shared by all alphas and voxel batches
    outer, inner = [], []
    for test in range(n_runs):
        train = [i for i in range(n_runs) if i != test]
        outer.append(_Split.fit(np.concatenate([x_runs[i] for i in train]), x_runs[test]))
        inner.append([_Split.fit(np.concatenate([x_runs[i] for i in train if i != val]),
                                 x_runs[val]) for val in train])

    r_folds = np.zeros((n_runs, n_vox), np.float32)
    r2_folds = np.zeros((n_runs, n_vox), np.float32)
    alpha_folds = np.zeros((n_runs, n_vox), np.float32)
    inner_r2 = np.zeros((n_runs, n_vox), np.float32)
    shifts = circular_shifts([y.shape[0] for y in y_runs], n_permutations, min_shift, seed)
    r_null = np.zeros((n_permutations, n_vox), np.float32)
    for start in range(0, n_vox, batch_voxels):
        cols = slice(start, min(n_vox, start + batch_voxels))
        ys = [y[:, cols].astype(np.float32) for y in y_runs]
        for test in range(n_runs):
            train = [i for i in range(n_runs) if i != test]
            score = np.zeros((len(alphas), ys[0].shape[1]), np.float64)
            for split, val in zip(inner[test], train, strict=True):
                y_tr = np.concatenate([ys[i] for i in train if i != val])
                score += r2_score(ys[val], split.predict(y_tr, alphas))
            best = alphas[np.argmax(score, axis=0)]
            pred = outer[test].predict_per_voxel(np.concatenate([ys[i] for i in train]), best)
            r_folds[test, cols] = pearson_r(ys[test], pred)
            r2_folds[test, cols] = r2_score(ys[test], pred)
            alpha_folds[test, cols] = best
            inner_r2[test, cols] = score.max(0) / len(train)
        for test in range(n_runs):
            train = [i for i in range(n_runs) if i != test]
            y_train = np.concatenate([ys[i] for i in train])
            z_test = _zscore(ys[test])
            for a in np.unique(alpha_folds[test, cols]):
                sel = np.flatnonzero(alpha_folds[test, cols] == a)
                y_sel, z_sel = y_train[:, sel], z_test[:, sel]
                hat = outer[test].hat(a)
                # permutations in blocks of ~64 MB of predictions
                step = max(1, int(16e6 // (hat.shape[0] * sel.size)))
                for p0 in range(0, n_permutations, step):
                    hats = _shifted_hats(hat, [ys[i].shape[0] for i in train],
                                         shifts[p0:p0 + step][:, train],
                                         shifts[p0:p0 + step, test])
                    pred = (hats.reshape(-1, hat.shape[1]) @ y_sel).reshape(
                        len(hats), hat.shape[0], sel.size)
                    pred -= pred.mean(1, keepdims=True)
                    pred /= np.maximum(pred.std(1, keepdims=True), 1e-12)
                    r_null[p0:p0 + step, start + sel] += (pred * z_sel).mean(1) / n_runs
    r = r_folds.mean(0)
    null_mean = r_null.mean(0)
    null_std = np.maximum(r_null.std(0, ddof=1), 1e-6)
    # prediction interval of one more draw from the null: a t-test with n_permutations - 1 df
    tstat = (r - null_mean) / (null_std * np.sqrt(1 + 1 / n_permutations))
    p = student_t.sf(tstat, df=n_permutations - 1)
    return LayerScores(r=r, r_folds=r_folds, r2=r2_folds.mean(0), alpha=alpha_folds,
                       null_mean=null_mean.astype(np.float32),
                       null_std=null_std.astype(np.float32), p=p, inner_r2=inner_r2)


def closed_form_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Reference ridge weights (X'X + alpha I)^-1 X'y, for tests."""
    return np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ y)
