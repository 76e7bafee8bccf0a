"""Volume targets: the voxels of fMRIPrep's brain mask on the BOLD grid (NIfTI runs)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from .base import DRAWN_ON, GroupPage, SubjectPage, Targets

if TYPE_CHECKING:
    from ..bids import BidsFilters
    from ..bold import CleanOptions

P_SHOW = 0.001  # subject r maps show voxels whose layer predicts them at uncorrected p < P_SHOW


class VolumeTargets(Targets):
    """Brain-mask voxels of one NIfTI grid; maps are NIfTI images on that grid.

    Attributes
    ----------
    img : the mask image (uint8, 1 inside)
    """

    kind = "volume"
    noun = "voxels"
    space_name = "grid"
    mask_suffix = ".nii.gz"
    map_suffix = ".nii.gz"
    atlas_suffix = ".nii.gz"
    label_dtype = np.int16  # NIfTI keeps the compact types
    flag_dtype = np.uint8
    projectable = True
    roi_origin = "ROIs from the configured atlas, resampled to this subject's BOLD grid."
    # runs: *_space-<space>[_res-<res>]_desc-preproc_bold.nii[.gz] and their brain masks
    suffixes = ("bold",)
    extensions = (".nii.gz", ".nii")
    space_keys = "`bids.space` / `bids.res`"
    several_hint = "set `bids.res` to pick one resolution"

    def __init__(self, img: nib.Nifti1Image) -> None:
        self.img = img
        self.keep = np.asarray(img.dataobj).ravel() > 0

    @classmethod
    def fit(cls, runs: list[list[str]], masks: list[str], space: str | None = None
            ) -> VolumeTargets:
        """The intersection of the runs' fMRIPrep brain masks (``bold.subject_mask``)."""
        from ..bold import subject_mask

        return cls(subject_mask(list(masks)))

    @classmethod
    def matches(cls, entities: dict[str, str], filters: BidsFilters) -> bool:
        """A ``desc-preproc`` BOLD in the space, at the resolution ``bids.res`` where set."""
        return (super().matches(entities, filters) and entities.get("desc") == "preproc"
                and (filters.res is None or entities.get("res") == filters.res))

    @classmethod
    def run_files(cls, members: list[tuple[Path, dict[str, str]]],
                  files: list[tuple[Path, dict[str, str]]], filters: BidsFilters
                  ) -> tuple[tuple[str, ...], str | None]:
        """The BOLD NIfTI and fMRIPrep's brain mask of the run (``desc-brain_mask``, same run
        entities, space and resolution)."""
        from ..bids import BidsError, run_id

        bold, _ = super().run_files(members, files, filters)
        path, ent = members[0]
        masks = {(run_id(e), e.get("res")): p for p, e in files
                 if e["suffix"] == "mask" and e.get("desc") == "brain"
                 and e.get("space") == filters.space and e["extension"] in cls.extensions}
        mask = masks.get((run_id(ent), ent.get("res")))
        if mask is None:
            raise BidsError(f"{path}: no brain mask next to it (expected the same name with "
                            "desc-brain_mask); fMRIPrep writes one per run.")
        return bold, str(mask)

    @classmethod
    def load(cls, path: str | Path) -> VolumeTargets:
        from ..bold import readable

        with readable(path, "brain mask"):
            return cls(nib.load(str(path)))

    def save(self, path: str | Path) -> None:
        from ..io import save_img

        save_img(self.img, path)

    def restrict(self, keep: np.ndarray) -> VolumeTargets:
        return VolumeTargets(nib.Nifti1Image(
            np.asarray(keep).reshape(self.img.shape[:3]).astype(np.uint8), self.img.affine))

    def same_space(self, other: Targets) -> bool:
        from ..bold import same_grid

        return isinstance(other, VolumeTargets) and same_grid(self.img, other.img)

    def transform(self, files: list[str], n_vols: int, t_r: float,
                  options: CleanOptions | None = None) -> np.ndarray:
        from ..bold import load_run

        (path,) = files
        return load_run(path, self.img, n_vols, t_r, options)

    def inverse_transform(self, values: np.ndarray, fill: float = 0.0, dtype: type = np.float32
                          ) -> nib.Nifti1Image:
        from ..io import unmask

        return unmask(values, self.img, fill=fill, dtype=dtype)

    def save_map(self, image: nib.Nifti1Image, path: str | Path) -> None:
        from ..io import save_img

        save_img(image, path)

    def write_maps(self, values: np.ndarray, names: list[str], paths: list[str | Path]) -> None:
        """One 4D NIfTI, a volume per map (in ``names`` order)."""
        (path,) = paths
        data = np.asarray(values, dtype=np.float32).reshape(len(names), *self.img.shape[:3])
        self.save_map(nib.Nifti1Image(np.moveaxis(data, 0, -1), self.img.affine), path)

    @classmethod
    def read_map(cls, paths: list[str | Path]) -> np.ndarray:
        from ..bold import readable

        (path,) = paths
        with readable(path, "map"):
            data = np.asarray(nib.load(str(path)).dataobj)
        if data.ndim == 4:
            return np.moveaxis(data, -1, 0).reshape(data.shape[3], -1)
        return data.ravel()

    @classmethod
    def atlas_choices(cls) -> str:
        """The atlases ``rois.atlas`` may name for volume input, in words."""
        from ..rois import PACKAGED

        return f"{', '.join(PACKAGED)}, or a labelled NIfTI path (+ rois.labels_file)"

    @classmethod
    def check_atlas(cls, atlas: str, space: str | None = None) -> str:
        """A packaged volume atlas (``rois.PACKAGED``, any spelling) or a labelled NIfTI file
        (``custom``); a surface atlas or an unknown name is refused."""
        from ..rois import packaged_name, user_atlas
        from ..surface import PACKAGED as SURFACE

        name = packaged_name(atlas)
        if name is None:
            return user_atlas(atlas, cls.kind, cls.atlas_choices())
        if name in SURFACE:
            raise ValueError(f"rois.atlas: '{atlas}' is a surface atlas (fsaverage5/fsaverage6 "
                             "vertices), but the BOLD is a volume; set bids.target: surface with "
                             "fsaverage5/fsaverage6 runs, or use a volume atlas: "
                             f"{cls.atlas_choices()} (hcpex is the Glasser HCP-MMP1 cortex in "
                             "MNI space).")
        return name

    def write_atlas(self, rois: dict, path: str | Path) -> None:
        """The atlas resampled (nearest neighbour) onto the BOLD grid, with a log line when the
        grids differ."""
        from ..bold import same_grid
        from ..io import save_img
        from ..rois import load_atlas, resample_labels

        atlas, _ = load_atlas(rois["atlas"], rois.get("threshold", 25), rois.get("labels_file"))
        img = self.img
        if not same_grid(atlas, img):
            logging.getLogger(__name__).info(
                "atlas %s (grid %s, voxel %s mm) resampled (nearest neighbour) onto the BOLD "
                "grid %s (voxel %s mm)", rois["atlas"], atlas.shape[:3],
                np.round(atlas.header.get_zooms()[:3], 2), img.shape[:3],
                np.round(img.header.get_zooms()[:3], 2))
        save_img(resample_labels(atlas, img), path)

    def atlas(self, path: str | Path, rois: dict) -> tuple[np.ndarray, dict[int, str]]:
        from ..rois import atlas_labels

        names = atlas_labels(rois["atlas"], rois.get("labels_file"))
        return np.asarray(nib.load(str(path)).dataobj).ravel()[self.keep], names

    def subject_sections(self, page: SubjectPage) -> list[str]:
        """Glass brains of the best layer, its independent r and each layer's r, interactive
        views of the peak r, and the best layer on fsaverage5 where projected."""
        from .. import report

        layers, scores = page.layers, page.scores
        vmax = float(max(np.percentile(s["r"], 99.9) for s in scores))
        r_imgs = [(layer, self.inverse_transform(np.where(s["p"] < P_SHOW, s["r"], 0.0)))
                  for layer, s in zip(layers, scores, strict=True)]
        maps = "".join(report.img_tag(b, f"layer {layer}") for layer, b in
                       zip(layers, report.layer_map_pngs(r_imgs, vmax), strict=True))
        n_colours = int(layers[-1]) + 1  # one colour per layer number
        cortex_html = ""
        if page.projected and not page.flat:
            cortex_html = ("<h2>Best-layer map on the cortex</h2>"
                           + report.surface_best_layer_figure(
                page.projected, n_colours,
                "The best-layer map above sampled on fsaverage5 (<code>project_to_fsaverage"
                "</code>: the most frequent label between the white and pial surfaces, nilearn "
                "<code>vol_to_surf</code>; meaningful for MNI-space data only) and drawn on the "
                f"inflated cortex (lateral and medial views). {DRAWN_ON} The GIFTI files are "
                "<code>rois/*_space-fsaverage5_desc-bestlayer_hemi-L_map.func.gii</code> (and "
                "<code>hemi-R</code>)."))
        significant = self.read_map(page.significant)[self.keep] > 0
        peak_r = np.max([s["r"] for s in scores], axis=0)
        if significant.any():
            peak_r = np.where(significant, peak_r, 0.0)
            shown = f"at the {page.n_sig} significant voxels (same test as the best-layer map)"
        else:  # nothing survives the test: show the map unthresholded rather than an empty view
            shown = ("unthresholded (no voxel passed the significance test of the best-layer "
                     "map); only r above 0.05 coloured")
        return [
            "<h2>Best-layer map</h2>" + page.flat_html + report.figure(
                report.best_layer_png(nib.load(page.best_map[0]), n_colours),
                f"Best layer per voxel, shown for the {page.n_sig} voxels predicted above "
                "chance by some layer (circular-shift permutation null refitted per shift, "
                f"Simes over layers, FDR q &le; {page.fdr_q:g} over voxels): the layer chosen "
                "most often over the outer folds, each fold "
                "choosing on inner-CV scores of its training runs. The share of folds that "
                "agree and the chosen layers' held-out r are the NIfTI maps "
                "<code>rois/*_desc-bestlayerstability_map.nii.gz</code> and "
                "<code>rois/*_desc-bestlayer_stat-r.nii.gz</code>.") + cortex_html,
            "<h2>Best layer's independent held-out r</h2>" + report.figure(
                report.stat_map_png(nib.load(page.best_r[0]), "independent r of best layer"),
                "Held-out r of each fold's chosen layer on that fold's held-out run, averaged "
                "over folds (all voxels, unthresholded): unlike the maximum over layers of the "
                "same scores, it is not inflated by the choice (about 0 on noise)."),
            "<h2>Held-out r maps per layer</h2><div class='grid'>" + maps + "</div>"
            f"<p>Glass-brain maximum projections of voxelwise held-out r (colour scale 0 to "
            f"{vmax:.2f}, shared across layers), for voxels this layer predicts at uncorrected "
            f"p &lt; {P_SHOW} (permutation null); the unthresholded maps are the NIfTI files "
            "<code>encoding/*_stat-r.nii.gz</code>.</p>",
            "<h2>Interactive views</h2>" + report.interactive_views(
                self.inverse_transform(peak_r), "peak held-out r", vmax,
                threshold=1e-3 if significant.any() else 0.05)
            + f"<p>Peak held-out Pearson r over layers (unitless), {shown}; drag to rotate, "
            "scroll to zoom. Top: slices of the "
            "volume on MNI152. Bottom: the volume sampled between the white and pial surfaces "
            "of fsaverage5 (nilearn <code>vol_to_surf</code>, valid for MNI-space data) and "
            "shown on the inflated surface.</p>",
        ]

    def group_sections(self, page: GroupPage) -> list[str]:
        """Glass brains of the group best layer (and on fsaverage5 where asked) and of the
        subject-mean r per layer, interactive views of the peak, and the noise ceiling."""
        from .. import report
        from ..surface import project_volume

        layers, n_colours = page.layers, int(page.layers[-1]) + 1
        common = np.logical_and.reduce([VolumeTargets.load(p).keep for p in page.masks])
        mean_r = self.read_map(page.mean_r)[:, common].astype(np.float64)
        best = self.read_map(page.best)
        consistent = self.read_map(page.share)[common] > 0.5
        shown = consistent if consistent.any() else np.ones_like(consistent)
        where = ("at the voxels significant in most subjects" if consistent.any() else
                 "unthresholded (no voxel significant in most subjects)")
        grid = self.restrict(common)
        vmax = float(max(np.percentile(mean_r, 99.9), 1e-3))
        maps = "".join(report.img_tag(b, f"layer {layer}") for layer, b in zip(
            layers, report.layer_map_pngs(
                [(layer, grid.inverse_transform(np.where(shown, mean_r[j], 0.0)))
                 for j, layer in enumerate(layers)], vmax), strict=True))
        best_img = nib.Nifti1Image(best.reshape(self.img.shape[:3]).astype(np.int16),
                                   self.img.affine)
        map_html = ("<h2>Group best-layer map</h2>" + page.flat_html) if page.flat else (
            "<h2>Group best-layer map</h2>" + report.figure(
                report.best_layer_png(best_img, n_colours),
                "Layer with the highest subject-averaged held-out r, at the "
                f"{int(consistent.sum())} voxels called significant (Simes over layers, FDR q "
                f"&le; {page.fdr_q:g} within each subject) in more than half of the "
                f"{page.n_subjects} subjects; {int(common.sum())} voxels inside every subject's "
                "brain mask.")
            + (report.figure(report.surface_best_layer_png(
                *(v.astype(int) for v in project_volume(
                    best_img, "fsaverage5", interpolation="nearest_most_frequent")), n_colours),
                "The group best-layer map sampled on fsaverage5 (<code>project_to_fsaverage"
                "</code>: the most frequent label between the white and pial surfaces, nilearn "
                "<code>vol_to_surf</code>; meaningful for MNI-space data only), on the inflated "
                "cortex (lateral and medial views); grey: sulcal depth, where no layer is "
                "shown.") if page.project else ""))
        sections = [
            map_html
            + "<h2>Group r maps per layer</h2><div class='grid'>" + maps + "</div>"
            f"<p>Glass-brain maximum projections of the held-out Pearson r (unitless) averaged "
            f"over {page.n_subjects} subjects, per layer, on one colour scale (0 to {vmax:.2f})"
            f", {where}. The maps are <code>group_desc-layers_stat-r.nii.gz</code> (a volume "
            "per layer), <code>group_desc-bestlayer_map.nii.gz</code> and "
            "<code>group_desc-significantshare_map.nii.gz</code>.</p>"
            + "<h2>Interactive views</h2>" + report.interactive_views(
                grid.inverse_transform(np.where(shown, mean_r.max(0), 0.0)), "group peak r",
                vmax, threshold=1e-3 if consistent.any() else 0.05)
            + "<p>Peak over layers of the subject-averaged held-out r (unitless), "
            + where + (", only r above 0.05 coloured" if not consistent.any() else "")
            + "; slices on MNI152 (top) and the volume sampled between the white and pial "
            "surfaces of fsaverage5, shown inflated (bottom).</p>"]
        if page.ceiling:
            ceiling_img = nib.load(page.ceiling[0])
            usable = np.asarray(nib.load(page.usable[0]).dataobj) > 0
            shown_ceiling = nib.Nifti1Image(
                np.where(usable, np.asarray(ceiling_img.dataobj), 0.0), ceiling_img.affine)
            sections.append(
                "<h2>Noise ceiling</h2>" + report.figure(
                    report.stat_map_png(shown_ceiling,
                                        f"noise ceiling ({int(usable.sum())} usable voxels)"),
                    "Highest r a stimulus model could reach per voxel, estimated from the "
                    "leave-one-subject-out inter-subject correlation of the same cleaned BOLD "
                    "the models are scored on (each run, then averaged over runs and subjects), "
                    "corrected for the noise left in the other subjects' mean (shared-signal "
                    "model, Spearman-Brown). It only counts responses shared across subjects: "
                    "idiosyncratic but stimulus-driven responses lower it (normalised scores "
                    "above 1 are possible), and so does anatomical misalignment. Shown only "
                    "where it is usable: significant (circular shifts of the subjects against "
                    "each other, FDR over voxels) and at least <code>ceiling.min_ceiling</code>; "
                    "the unthresholded map is "
                    "<code>group/ceiling/group_desc-ceiling_stat-r.nii.gz</code>."))
        return sections
