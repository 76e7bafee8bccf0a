"""Parcel targets: parcel time series, one TSV per run (a column per parcel)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .base import GroupPage, SubjectPage, Targets, read_label_table

if TYPE_CHECKING:
    from ..bids import BidsFilters
    from ..bold import CleanOptions


class ParcelTargets(Targets):
    """Parcels finite and varying in every run; maps are TSV tables (``parcel``, ``value``).

    Attributes
    ----------
    names : every parcel's name (the runs' column order)
    """

    kind = "parcels"
    noun = "parcels"
    space_name = "parcellation"
    mask_suffix = ".npz"
    map_suffix = ".tsv"
    atlas_suffix = ".npz"
    roi_origin = ("ROIs are the parcels of the input time series and the configured groups of "
                  "them.")
    # runs: *[_space-<space>]_desc-<desc>_timeseries.tsv
    suffixes = ("timeseries",)
    extensions = (".tsv",)
    several_hint = "set `bids.desc` to pick one"

    def __init__(self, keep: np.ndarray, names: list[str]) -> None:
        self.keep = np.asarray(keep, dtype=bool)
        self.names = [str(n) for n in names]

    @classmethod
    def fit(cls, runs: list[list[str]], masks: list[str], space: str | None = None
            ) -> ParcelTargets:
        """Parcels finite and varying in every run (``parcels.parcel_mask``)."""
        from ..parcels import parcel_mask

        keep, names = parcel_mask([files[0] for files in runs])
        cls.log_kept(keep)
        return cls(keep, names)

    @classmethod
    def matches(cls, entities: dict[str, str], filters: BidsFilters) -> bool:
        """A time-series table with the ``desc`` of ``bids.desc``, in the space or without a
        ``space`` entity."""
        return (cls.is_run_file(entities) and entities.get("desc") == filters.desc
                and entities.get("space", filters.space) == filters.space)

    @classmethod
    def load(cls, path: str | Path) -> ParcelTargets:
        with np.load(path) as f:
            return cls(f["keep"].astype(bool), [str(n) for n in f["names"]])

    def save(self, path: str | Path) -> None:
        from ..io import save_npz

        save_npz(path, keep=self.keep, names=np.array(self.names))

    def restrict(self, keep: np.ndarray) -> ParcelTargets:
        return ParcelTargets(keep, self.names)

    def same_space(self, other: Targets) -> bool:
        return isinstance(other, ParcelTargets) and other.names == self.names

    def transform(self, files: list[str], n_vols: int, t_r: float,
                  options: CleanOptions | None = None) -> np.ndarray:
        from ..parcels import load_run

        (path,) = files
        return load_run(path, self.keep, n_vols, t_r, options)

    def inverse_transform(self, values: np.ndarray, fill: float = 0.0, dtype: type = np.float32
                          ) -> pd.DataFrame:
        """A table of every parcel (``parcel``) and its ``value``."""
        full = self.full(values, fill, dtype)
        return pd.DataFrame({"parcel": self.names, "value": full})

    def save_map(self, image: pd.DataFrame, path: str | Path) -> None:
        from ..io import save_tsv

        save_tsv(image, path)

    def write_maps(self, values: np.ndarray, names: list[str], paths: list[str | Path]) -> None:
        """One table: ``parcel``, then a column per map."""
        (path,) = paths
        columns = dict(zip(names, np.asarray(values, dtype=np.float32), strict=True))
        self.save_map(pd.DataFrame({"parcel": self.names, **columns}), path)

    @classmethod
    def read_map(cls, paths: list[str | Path]) -> np.ndarray:
        (path,) = paths
        table = pd.read_csv(path, sep="\t").drop(columns="parcel")
        if list(table.columns) == ["value"]:
            return table["value"].to_numpy()
        return table.to_numpy().T

    @classmethod
    def check_atlas(cls, atlas: str, space: str | None = None) -> str:
        """Any name: the parcels are the ROIs, the atlas only names result files."""
        from ..rois import packaged_name

        return packaged_name(atlas) or "custom"

    def write_atlas(self, rois: dict, path: str | Path) -> None:
        """Every parcel is its own label."""
        from ..io import save_npz

        labels = np.arange(1, len(self.names) + 1, dtype=np.int32)
        save_npz(path, labels=labels, values=labels, names=np.array(self.names))

    def atlas(self, path: str | Path, rois: dict) -> tuple[np.ndarray, dict[int, str]]:
        return read_label_table(path, self.keep)

    def roi_groups(self, groups: dict[str, list[str]]) -> dict[str, list[str]]:
        """Every kept parcel, then the configured groups of parcels."""
        return {**{n: [n] for n, k in zip(self.names, self.keep, strict=True) if k}, **groups}

    def subject_sections(self, page: SubjectPage) -> list[str]:
        """Where the per-parcel tables are (the ROI tables show every parcel)."""
        return ["<h2>Best-layer map</h2>" + page.flat_html
                + f"<p>{page.n_sig} parcels predicted above chance; per-parcel r and best layer "
                "are in <code>*_stat-r.tsv</code> and <code>*_desc-bestlayer_map.tsv</code>.</p>"]

    def group_sections(self, page: GroupPage) -> list[str]:
        """Nothing beside the ROI tables and profiles (every parcel is an ROI); the group maps
        are tables."""
        return []
