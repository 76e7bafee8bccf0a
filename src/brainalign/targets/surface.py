"""Surface targets: the vertices of an fsaverage surface pair (GIFTI runs, left and right)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .base import DRAWN_ON, GroupPage, SubjectPage, Targets, read_label_table

if TYPE_CHECKING:
    from ..bids import BidsFilters
    from ..bold import CleanOptions


class SurfaceTargets(Targets):
    """Vertices finite and varying in every run, left hemisphere then right; maps are a GIFTI
    pair (``*_hemi-L_*.func.gii``, ``*_hemi-R_*``).

    Attributes
    ----------
    n_left : vertices of the left hemisphere
    """

    kind = "surface"
    noun = "vertices"
    space_name = "surface"
    mask_suffix = ".npz"
    map_suffix = ".func.gii"
    atlas_suffix = ".npz"
    roi_origin = "ROIs from the configured surface atlas, on the input surface."
    # runs: *_hemi-{L,R}_space-<space>_bold.func.gii, entities in any order (fMRIPrep < 21
    # wrote *_space-<space>_hemi-L.func.gii, without a suffix)
    suffixes = ("bold", "")
    extensions = (".func.gii",)

    def __init__(self, keep: np.ndarray, n_left: int) -> None:
        self.keep = np.asarray(keep, dtype=bool)
        self.n_left = int(n_left)

    @classmethod
    def fit(cls, runs: list[list[str]], masks: list[str], space: str | None = None
            ) -> SurfaceTargets:
        """Vertices finite and varying in every run; the vertex count must match ``space``
        (``surface.vertex_mask``)."""
        from ..surface import vertex_mask

        keep, n_left = vertex_mask([tuple(r) for r in runs], space)
        cls.log_kept(keep)
        return cls(keep, n_left)

    @classmethod
    def matches(cls, entities: dict[str, str], filters: BidsFilters) -> bool:
        """A hemisphere's GIFTI (``hemi-L`` or ``hemi-R``) in the space."""
        return super().matches(entities, filters) and entities.get("hemi") in ("L", "R")

    @classmethod
    def run_files(cls, members: list[tuple[Path, dict[str, str]]],
                  files: list[tuple[Path, dict[str, str]]], filters: BidsFilters
                  ) -> tuple[tuple[str, ...], str | None]:
        """The left then the right hemisphere's GIFTI; no mask."""
        from ..bids import BidsError

        hemis = {e["hemi"]: p for p, e in members}
        if len(members) != 2 or set(hemis) != {"L", "R"}:
            names = ", ".join(sorted(p.name for p, _ in members))
            raise BidsError(f"{members[0][0].parent}: expected one left and one right "
                            f"hemisphere file for this run, found: {names}.")
        return (str(hemis["L"]), str(hemis["R"])), None

    @classmethod
    def load(cls, path: str | Path) -> SurfaceTargets:
        with np.load(path) as f:
            return cls(f["keep"].astype(bool), int(f["n_left"]))

    def save(self, path: str | Path) -> None:
        from ..io import save_npz

        save_npz(path, keep=self.keep, n_left=self.n_left)

    def restrict(self, keep: np.ndarray) -> SurfaceTargets:
        return SurfaceTargets(keep, self.n_left)

    def same_space(self, other: Targets) -> bool:
        return (isinstance(other, SurfaceTargets) and other.keep.size == self.keep.size
                and other.n_left == self.n_left)

    def transform(self, files: list[str], n_vols: int, t_r: float,
                  options: CleanOptions | None = None) -> np.ndarray:
        from ..surface import load_run

        return load_run(tuple(files), self.keep, n_vols, t_r, options)

    def inverse_transform(self, values: np.ndarray, fill: float = 0.0, dtype: type = np.float32
                          ) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) values over all vertices of each hemisphere."""
        full = self.full(values, fill, dtype)
        return full[:self.n_left], full[self.n_left:]

    def write_map(self, values: np.ndarray, paths: list[str | Path], fill: float = 0.0,
                  dtype: type = np.float32) -> None:
        from ..surface import save_maps

        save_maps(np.asarray(values), self.keep, self.n_left, paths, fill, dtype)

    def write_maps(self, values: np.ndarray, names: list[str], paths: list[str | Path]) -> None:
        """A GIFTI per hemisphere holding one named data array per map."""
        from ..surface import save_layer_maps

        save_layer_maps(values, self.n_left, names, paths)

    @classmethod
    def read_map(cls, paths: list[str | Path]) -> np.ndarray:
        from ..surface import read_maps

        return read_maps(paths)

    @classmethod
    def map_files(cls, prefix: str) -> list[str]:
        """A GIFTI per hemisphere: ``<head>_hemi-L_<last>.func.gii``, then ``hemi-R``."""
        head, _, last = prefix.rpartition("_")
        return [f"{head}_hemi-{h}_{last}{cls.map_suffix}" for h in ("L", "R")]

    @classmethod
    def atlas_choices(cls) -> str:
        """The atlases ``rois.atlas`` may name for surface input, in words."""
        from ..surface import PACKAGED, SCHAEFER

        named = [n for n in PACKAGED if n not in SCHAEFER]
        return (f"{', '.join(named)} (alias hcp-mmp1), schaefer-N-K (N = 100, 200, ..., 1000 "
                "parcels; K = 7 or 17 networks, e.g. schaefer-400-7), or a path with {hemi} "
                "(L/R) or {fs_hemi} (lh/rh) naming two GIFTI label / FreeSurfer .annot files")

    @classmethod
    def check_atlas(cls, atlas: str, space: str | None = None) -> str:
        """A packaged surface atlas (``surface.PACKAGED``, any spelling; the fsaverage ones
        only where ``space`` is fsaverage5, fsaverage6 or fsaverage) or a user's pair of label
        files (``custom``); a volume atlas or an unknown name is refused."""
        from ..rois import PACKAGED as VOLUME
        from ..rois import packaged_name, user_atlas
        from ..surface import DENSITIES, FSAVERAGE_ATLASES

        name = packaged_name(atlas)
        if name is None:
            return user_atlas(atlas, cls.kind, cls.atlas_choices())
        if name in VOLUME:
            raise ValueError(f"rois.atlas: '{atlas}' is a volume (MNI) atlas, but the BOLD is on "
                             f"a surface; use {cls.atlas_choices()}.")
        if space and name in FSAVERAGE_ATLASES and space not in DENSITIES.values():
            raise ValueError(f"rois.atlas: '{atlas}' is packaged for the fsaverage5, fsaverage6 "
                             f"and fsaverage surfaces, but bids.space is '{space}'; use runs in "
                             "one of those spaces, or your own atlas on this surface (a path "
                             "with {hemi}).")
        return name

    def write_atlas(self, rois: dict, path: str | Path) -> None:
        """The atlas's vertex labels (refused on another surface density) and their names."""
        from ..io import save_npz
        from ..surface import load_atlas

        labels, names = load_atlas(rois["atlas"], self.n_left, self.keep.size - self.n_left,
                                   rois.get("labels_file"))
        logging.getLogger(__name__).info(
            "surface atlas %s: %d labels on %d vertices", rois["atlas"], len(names), labels.size)
        save_npz(path, labels=labels, values=np.array(list(names), dtype=np.int32),
                 names=np.array(list(names.values())))

    def atlas(self, path: str | Path, rois: dict) -> tuple[np.ndarray, dict[int, str]]:
        return read_label_table(path, self.keep)

    def subject_sections(self, page: SubjectPage) -> list[str]:
        """The best layer per vertex on the inflated cortex."""
        from .. import report

        cortex_html = "" if page.flat else report.surface_best_layer_figure(
            page.best_map, int(page.layers[-1]) + 1,
            "Best layer per vertex on the inflated cortex (fsaverage5; left and right "
            "hemispheres, lateral and medial views), at the vertices predicted above chance by "
            "some layer (circular-shift permutation null refitted per shift, Simes over layers, "
            f"FDR q &le; {page.fdr_q:g} over vertices): the layer chosen most often over the "
            "outer folds, each fold choosing on inner-CV scores of its training data. "
            f"{DRAWN_ON}")
        return ["<h2>Best-layer map</h2>" + page.flat_html
                + f"<p>{page.n_sig} vertices predicted above chance; best-layer and r maps are "
                "GIFTI files on the input surface (<code>*_hemi-L_*.func.gii</code>, "
                "<code>*_hemi-R_*</code>).</p>" + cortex_html]

    def group_sections(self, page: GroupPage) -> list[str]:
        """The group best-layer map on the inflated cortex."""
        from .. import report

        if page.flat:
            return ["<h2>Group best-layer map</h2>" + page.flat_html]
        return ["<h2>Group best-layer map</h2>" + report.surface_best_layer_figure(
            page.best, int(page.layers[-1]) + 1,
            "Layer with the highest subject-averaged held-out r per vertex, at the vertices "
            f"called significant (Simes over layers, FDR q &le; {page.fdr_q:g} within each "
            f"subject) in more than half of the {page.n_subjects} subjects and analysed in all "
            "of them, on the inflated cortex (fsaverage5; left and right hemispheres, lateral "
            "and medial views). Colours: one per layer, as in the subject maps; grey: sulcal "
            "depth, where no layer is shown. On the subjects' surface: "
            "<code>group_desc-bestlayer_hemi-L_map.func.gii</code> (and <code>hemi-R</code>; "
            "-1 where none), the subject-mean r of every layer "
            "<code>group_desc-layers_hemi-L_stat-r.func.gii</code> (one data array per layer) "
            "and the share of subjects in which each vertex is significant "
            "<code>group_desc-significantshare_hemi-L_map.func.gii</code>.")]
