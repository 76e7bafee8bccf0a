"""Parcel targets: datasets published at ROI level, one TSV per subject x run with one column
per parcel and one row per volume (e.g. ``*_desc-schaefer400_timeseries.tsv``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .bold import BoldError, CleanOptions, check_tr, clean_series, varying_targets


def read_run(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """A run's parcel time series (n_volumes, n_parcels), float32, and the parcel names."""
    path = Path(path)
    if not path.exists():
        raise BoldError(f"{path}: parcel time-series file not found; check `bids.root` and "
                        "`bids.desc`.")
    table = pd.read_csv(path, sep="\t")
    if table.shape[1] == 0 or table.shape[0] < 2:
        raise BoldError(f"{path}: expected one column per parcel and one row per volume, got "
                        f"shape {table.shape}.")
    non_numeric = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    if non_numeric:
        raise BoldError(f"{path}: column(s) {non_numeric[:5]} are not numeric; the file must "
                        "hold only parcel time series (one column per parcel).")
    return table.to_numpy(np.float32), [str(c) for c in table.columns]


def sidecar_tr(path: str | Path) -> float | None:
    """Repetition time (s) from the run's BIDS sidecar (``*_timeseries.json`` beside the TSV):
    ``RepetitionTime``, else 1 / ``SamplingFrequency``; None without a sidecar or either key."""
    sidecar = Path(path).with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text())
    except ValueError as err:
        raise BoldError(f"{sidecar}: not valid JSON ({err}); fix or remove the sidecar.") from err
    if meta.get("RepetitionTime"):
        return float(meta["RepetitionTime"])
    if meta.get("SamplingFrequency"):
        return 1.0 / float(meta["SamplingFrequency"])
    return None


def parcel_mask(paths: list[str | Path]) -> tuple[np.ndarray, list[str]]:
    """Parcels finite and varying in every run; all runs must have the same columns.

    Returns
    -------
    keep : bool array of shape (n_parcels,)
    names : the parcel names (column order)
    """
    keep, names = None, None
    for path in paths:
        data, cols = read_run(path)
        if names is None:
            names = cols
        elif cols != names:
            raise BoldError(f"{path}: its columns differ from {paths[0]}'s; every run of a "
                            "subject must list the same parcels in the same order.")
        keep = varying_targets(data, keep)
    if keep is None or not keep.any():
        raise BoldError(f"{paths[0]}: no parcel is finite and varying in every run.")
    return keep, names


def load_run(path: str | Path, keep: np.ndarray, n_vols: int, t_r: float,
             options: CleanOptions | None = None) -> np.ndarray:
    """A run's kept parcels, trimmed and cleaned (``options``: see bold.clean_series).

    Returns
    -------
    bold : array of shape (n_kept_volumes, keep.sum()), float32
    """
    check_tr(path, sidecar_tr(path), t_r, "its sidecar JSON")
    data, _ = read_run(path)
    if data.shape[1] != keep.size:
        raise BoldError(f"{path}: {data.shape[1]} parcels, the subject's other runs have "
                        f"{keep.size}.")
    return clean_series(data[:, keep], path, n_vols, t_r, options, targets="parcels")
