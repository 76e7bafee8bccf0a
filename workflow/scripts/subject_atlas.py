"""Rule subject_atlas: the configured atlas resampled (nearest) onto the subject's BOLD grid."""

import logging

import nibabel as nib
import numpy as np

from brainalign.io import save_img, setup_logging
from brainalign.rois import load_atlas, resample_labels

setup_logging(snakemake.log[0])
rcfg = snakemake.params.rois
atlas, _ = load_atlas(rcfg["atlas"], rcfg.get("threshold", 25), rcfg.get("labels_file"))
mask = nib.load(snakemake.input.mask)
if atlas.shape[:3] != mask.shape[:3] or not np.allclose(atlas.affine, mask.affine, atol=1e-3):
    logging.getLogger("subject_atlas").info(
        "atlas %s (grid %s, voxel %s mm) resampled (nearest neighbour) onto the BOLD grid %s "
        "(voxel %s mm)", rcfg["atlas"], atlas.shape[:3], np.round(atlas.header.get_zooms()[:3], 2),
        mask.shape[:3], np.round(mask.header.get_zooms()[:3], 2))
save_img(resample_labels(atlas, mask), snakemake.output[0])
