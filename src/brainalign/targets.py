"""What the encoding targets are, read from the subject's mask file: brain-mask voxels of a
NIfTI grid (volume) or kept vertices of an fsaverage surface pair (surface, ``.npz`` mask).
Maps over the targets are written back in the input's own format (NIfTI or GIFTI pair)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np


@dataclass
class TargetMask:
    """The targets of one subject.

    Attributes
    ----------
    keep : bool array over the grid's voxels (flattened) or the surface's vertices (L then R)
    img : the NIfTI mask (volume) or None
    n_left : left-hemisphere vertices (surface) or 0
    """

    keep: np.ndarray
    img: nib.Nifti1Image | None = None
    n_left: int = 0

    @property
    def is_surface(self) -> bool:
        return self.img is None

    @property
    def n_targets(self) -> int:
        return int(self.keep.sum())

    def save(self, values: np.ndarray, paths: list[str | Path], fill: float = 0.0,
             dtype=np.float32) -> None:
        """Values over the targets (n_targets,) -> one NIfTI, or a left/right GIFTI pair."""
        from .io import save_img, unmask
        from .surface import save_maps

        if self.is_surface:
            save_maps(np.asarray(values), self.keep, self.n_left, paths, fill, dtype)
        else:
            (path,) = paths
            save_img(unmask(values, self.img, fill=fill, dtype=dtype), path)


def load_mask(path: str | Path) -> TargetMask:
    if str(path).endswith(".npz"):
        with np.load(path) as f:
            return TargetMask(f["keep"].astype(bool), None, int(f["n_left"]))
    img = nib.load(str(path))
    return TargetMask(np.asarray(img.dataobj).ravel() > 0, img)
