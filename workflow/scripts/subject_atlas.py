"""Rule subject_atlas: the configured atlas on the subject's targets. Volume: resampled
(nearest) onto the BOLD grid, with a log line when the grids differ. Surface: the atlas's
vertex labels (refused on another surface density) and their names. Parcels: the parcels."""

import logging

import numpy as np

from brainalign import surface
from brainalign.bold import same_grid
from brainalign.io import save_img, save_npz, setup_logging
from brainalign.rois import load_atlas, resample_labels
from brainalign.targets import load_mask

setup_logging(snakemake.log[0])
log = logging.getLogger("subject_atlas")
rcfg = snakemake.params.rois
mask = load_mask(snakemake.input.mask)
if mask.is_parcels:  # every parcel is its own label
    labels = np.arange(1, len(mask.names) + 1, dtype=np.int32)
    save_npz(snakemake.output[0], labels=labels, values=labels, names=np.array(mask.names))
elif mask.is_surface:
    labels, names = surface.load_atlas(rcfg["atlas"], mask.n_left, mask.keep.size - mask.n_left,
                                       rcfg.get("labels_file"))
    log.info("surface atlas %s: %d labels on %d vertices", rcfg["atlas"], len(names), labels.size)
    save_npz(snakemake.output[0], labels=labels, values=np.array(list(names), dtype=np.int32),
             names=np.array(list(names.values())))
else:
    atlas, _ = load_atlas(rcfg["atlas"], rcfg.get("threshold", 25), rcfg.get("labels_file"))
    img = mask.img
    if not same_grid(atlas, img):
        log.info("atlas %s (grid %s, voxel %s mm) resampled (nearest neighbour) onto the BOLD "
                 "grid %s (voxel %s mm)", rcfg["atlas"], atlas.shape[:3],
                 np.round(atlas.header.get_zooms()[:3], 2), img.shape[:3],
                 np.round(img.header.get_zooms()[:3], 2))
    save_img(resample_labels(atlas, img), snakemake.output[0])
