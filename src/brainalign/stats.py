"""Statistics shared by the stages: multiple comparisons across layers and voxels."""

from __future__ import annotations

import numpy as np


def fdr_bh(p: np.ndarray, q: float = 0.05) -> np.ndarray:
    """Benjamini-Hochberg: boolean array, True where the hypothesis is rejected at FDR ``q``."""
    p = np.asarray(p, dtype=np.float64)
    flat = p.ravel()
    order = np.argsort(flat)
    m = flat.size
    below = flat[order] <= q * np.arange(1, m + 1) / m
    reject = np.zeros(m, dtype=bool)
    if below.any():
        reject[order[: np.flatnonzero(below).max() + 1]] = True
    return reject.reshape(p.shape)


def min_p_over_layers(p_layers: np.ndarray) -> np.ndarray:
    """Bonferroni-adjusted smallest p over layers, (n_layers, n_voxels) -> (n_voxels,)."""
    n_layers = p_layers.shape[0]
    return np.minimum(p_layers.min(axis=0) * n_layers, 1.0)


def simes_over_layers(p_layers: np.ndarray) -> np.ndarray:
    """Simes combination over layers, (n_layers, n_voxels) -> (n_voxels,).

    Tests "some layer predicts this voxel"; valid when the layers' tests are positively
    dependent (they share the voxel's BOLD and similar features), and far less conservative
    than Bonferroni when neighbouring layers carry the same information."""
    n_layers = p_layers.shape[0]
    ranked = np.sort(p_layers, axis=0)
    return np.minimum((ranked * n_layers / np.arange(1, n_layers + 1)[:, None]).min(0), 1.0)


def significant_voxels(p_layers: np.ndarray, q: float = 0.05) -> np.ndarray:
    """Voxels predicted above chance by at least one layer: Simes over layers, then
    Benjamini-Hochberg FDR ``q`` over voxels."""
    return fdr_bh(simes_over_layers(p_layers), q)


def mean_ci(values: np.ndarray, axis: int = 0, level: float = 0.95
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and t-based confidence interval across ``axis`` (e.g. subjects)."""
    from scipy.stats import t

    values = np.asarray(values, dtype=np.float64)
    n = values.shape[axis]
    mean = values.mean(axis)
    if n < 2:
        return mean, mean, mean
    sem = values.std(axis, ddof=1) / np.sqrt(n)
    half = t.ppf(0.5 + level / 2, n - 1) * sem
    return mean, mean - half, mean + half
