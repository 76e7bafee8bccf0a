"""Across-subject summaries for the reports: group maps per layer and paired model comparison.

Group maps average each layer's held-out r maps over subjects on a shared grid (e.g. MNI space);
the group best layer of a voxel is taken where most subjects found the voxel significant. Models
are compared per ROI on each subject's peak r over layers, with paired statistics across subjects
(every subject is measured under every model).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as sps

from .rois import best_layer_per_roi, voxel_best_layer
from .stats import mean_ci


def group_layer_maps(layer_r: np.ndarray, significant: np.ndarray, layers: list[str],
                     min_share: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean r per layer over subjects and the best layer of the mean, per voxel.

    Parameters
    ----------
    layer_r : array of shape (n_subjects, n_layers, n_voxels), held-out r
    significant : bool array of shape (n_subjects, n_voxels), each subject's significance mask
    layers : the layer numbers of the rows of ``layer_r``
    min_share : a voxel gets a group best layer when more than this share of subjects found it
        significant

    Returns
    -------
    mean_r : (n_layers, n_voxels) mean over subjects
    best : (n_voxels,) layer number of the highest mean r, -1 where not significant in most
    share : (n_voxels,) share of subjects in which the voxel is significant
    """
    layer_r = np.asarray(layer_r, dtype=np.float64)
    if layer_r.ndim != 3 or significant.shape != (layer_r.shape[0], layer_r.shape[2]):
        raise ValueError(f"layer_r {layer_r.shape} and significant {significant.shape} do not "
                         "match as (subjects, layers, voxels) and (subjects, voxels).")
    mean_r = layer_r.mean(0)
    share = np.asarray(significant, dtype=np.float64).mean(0)
    best = voxel_best_layer(mean_r, share > min_share, layers)
    return mean_r, best, share


def group_vertex_maps(layer_r: np.ndarray, keep: np.ndarray, significant: np.ndarray,
                      layers: list[str], min_share: float = 0.5
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`group_layer_maps` on one surface (e.g. fsaverage5) whose subjects kept different
    vertices (the medial wall and vertices outside a subject's field of view drop out): the
    group maps cover the vertices every subject kept.

    Parameters
    ----------
    layer_r : array of shape (n_subjects, n_layers, n_vertices), held-out r over all vertices
    keep : bool array of shape (n_subjects, n_vertices), each subject's analysed vertices
    significant : bool array of shape (n_subjects, n_vertices), each subject's significance mask

    Returns
    -------
    mean_r : (n_layers, n_vertices) mean over subjects, 0 off the common vertices
    best : (n_vertices,) group best layer, -1 off the common vertices or where the vertex is
        significant in at most ``min_share`` of the subjects
    share : (n_vertices,) share of subjects in which the vertex is significant
    common : (n_vertices,) bool, the vertices every subject kept
    """
    keep = np.asarray(keep, dtype=bool)
    significant = np.asarray(significant, dtype=bool) & keep
    common = keep.all(0)
    mean_r = np.zeros(np.shape(layer_r)[1:], np.float64)
    best = np.full(common.size, -1, np.int16)
    if common.any():
        mean_r[:, common], best[common], _ = group_layer_maps(
            np.asarray(layer_r)[:, :, common], significant[:, common], layers, min_share)
    return mean_r, best, significant.mean(0), common


def roi_peak_r(tables: dict[tuple[str, str], pd.DataFrame]) -> pd.DataFrame:
    """Each subject's peak r over layers per ROI and model.

    Parameters
    ----------
    tables : (subject, model) -> that subject's ROI x layer table (columns roi, layer, mean_r)

    Returns
    -------
    DataFrame with columns subject, model, roi, peak_r, peak_layer
    """
    rows = [{"subject": subject, "model": model, "roi": best.roi,
             "peak_r": float(best.best_r), "peak_layer": int(best.best_layer)}
            for (subject, model), table in tables.items()
            for best in best_layer_per_roi(table).itertuples()]
    return pd.DataFrame(rows)


def paired_model_comparison(peaks: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Paired comparison of every pair of models per ROI, across subjects.

    Parameters
    ----------
    peaks : output of :func:`roi_peak_r` (one row per subject, model and ROI)

    Returns
    -------
    DataFrame with one row per ROI and model pair: model_a, model_b, n_subjects, mean_a, mean_b,
    mean_diff (a - b), ci_low, ci_high (t interval of the paired difference), t, p (two-sided
    paired t-test; NaN with fewer than 2 subjects), wins_a (subjects where a scores higher).
    """
    models = list(dict.fromkeys(peaks["model"]))
    wide = peaks.pivot_table(index=["roi", "subject"], columns="model", values="peak_r")
    rows = []
    for roi in dict.fromkeys(peaks["roi"]):
        sub = wide.loc[roi]
        for a, b in combinations(models, 2):
            pair = sub[[a, b]].dropna()
            diff = (pair[a] - pair[b]).to_numpy()
            n = len(diff)
            mean, low, high = mean_ci(diff, level=level) if n else (np.nan,) * 3
            if n >= 2 and np.ptp(diff) > 0:
                t, p = sps.ttest_rel(pair[a], pair[b])
            else:
                t, p = np.nan, np.nan
            rows.append({"roi": roi, "model_a": a, "model_b": b, "n_subjects": n,
                         "mean_a": float(pair[a].mean()), "mean_b": float(pair[b].mean()),
                         "mean_diff": float(mean), "ci_low": float(low), "ci_high": float(high),
                         "t": float(t), "p": float(p), "wins_a": int((diff > 0).sum())})
    return pd.DataFrame(rows)
