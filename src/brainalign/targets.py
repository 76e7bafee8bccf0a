"""What the encoding targets are, read from the subject's mask file: brain-mask voxels of a
NIfTI grid (volume), kept vertices of an fsaverage surface pair (surface, ``.npz`` mask), or kept
parcels of parcel time-series TSVs (parcels, ``.npz`` mask with the parcel names). Maps over the
targets are written back in the input's own format (NIfTI, GIFTI pair, or a TSV per parcel)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd


@dataclass
class TargetMask:
    """The targets of one subject.

    Attributes
    ----------
    keep : bool array over the grid's voxels (flattened) or the surface's vertices (L then R)
    img : the NIfTI mask (volume) or None
    n_left : left-hemisphere vertices (surface) or 0
    names : parcel names (parcels) or None
    """

    keep: np.ndarray
    img: nib.Nifti1Image | None = None
    n_left: int = 0
    names: list[str] | None = None

    @property
    def is_parcels(self) -> bool:
        return self.names is not None

    @property
    def is_surface(self) -> bool:
        return self.img is None and self.names is None

    @property
    def noun(self) -> str:
        return "parcels" if self.is_parcels else "vertices" if self.is_surface else "voxels"

    @property
    def n_targets(self) -> int:
        return int(self.keep.sum())

    def save(self, values: np.ndarray, paths: list[str | Path], fill: float = 0.0,
             dtype=np.float32) -> None:
        """Values over the targets (n_targets,) -> one NIfTI, a left/right GIFTI pair, or a TSV
        (parcel, value) with ``fill`` for dropped parcels."""
        from .io import save_img, save_tsv, unmask
        from .surface import save_maps

        if self.is_parcels:
            (path,) = paths
            full = np.full(self.keep.size, fill, dtype=dtype)
            full[self.keep] = values
            save_tsv(pd.DataFrame({"parcel": self.names, "value": full}), path)
        elif self.is_surface:
            save_maps(np.asarray(values), self.keep, self.n_left, paths, fill, dtype)
        else:
            (path,) = paths
            save_img(unmask(values, self.img, fill=fill, dtype=dtype), path)


def load_mask(path: str | Path) -> TargetMask:
    if str(path).endswith(".npz"):
        with np.load(path) as f:
            if "names" in f.files:
                return TargetMask(f["keep"].astype(bool), None, 0, [str(n) for n in f["names"]])
            return TargetMask(f["keep"].astype(bool), None, int(f["n_left"]))
    img = nib.load(str(path))
    return TargetMask(np.asarray(img.dataobj).ravel() > 0, img)
