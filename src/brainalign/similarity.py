"""Representational similarity of a model's layers (linear CKA between consecutive layers),
from the feature files alone: numpy and h5py, no torch."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .alignment import bin_mean
from .io import read_frame_times, read_layer


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) between two representations
    of the same samples, x (n_samples, p) and y (n_samples, q)."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    xty = np.linalg.norm(x.T @ y) ** 2
    return float(xty / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def layer_similarity(paths: list[str | Path], t_r: float) -> pd.DataFrame:
    """Linear CKA between consecutive layers, on TR-averaged activations of all ``paths``."""
    with h5py.File(paths[0], "r") as h5:
        n = int(h5.attrs["n_layers"])
    pooled = []
    for layer in range(n):
        parts = []
        for p in paths:
            times, values = read_frame_times(p), read_layer(p, layer)
            parts.append(bin_mean(times, values, t_r, int(np.ceil(times[-1] / t_r))))
        pooled.append(np.concatenate(parts))
    return pd.DataFrame([{"layer_a": i, "layer_b": i + 1,
                          "linear_cka": linear_cka(pooled[i], pooled[i + 1])}
                         for i in range(n - 1)])
