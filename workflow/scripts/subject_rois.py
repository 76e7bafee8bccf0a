"""Rule subject_rois: all layers' scores -> per-ROI profile, best layer per ROI and per voxel."""

import nibabel as nib
import numpy as np

from brainalign import rois, stats
from brainalign.io import load_npz, save_img, save_tsv, setup_logging, unmask

setup_logging(snakemake.log[0])
rcfg = snakemake.params.rois
mask_img = nib.load(snakemake.input.mask)
in_mask = np.asarray(mask_img.dataobj) > 0
layers = snakemake.params.layers  # the order of the scores inputs
scores = [load_npz(p) for p in snakemake.input.scores]
layer_r = np.stack([s["r"] for s in scores])
significant = stats.significant_voxels(np.stack([s["p"] for s in scores]),
                                       snakemake.params.fdr_q)
names = rois.atlas_labels(rcfg["atlas"], rcfg.get("labels_file"))
labels = np.asarray(nib.load(snakemake.input.atlas[0]).dataobj)[in_mask]
masks = rois.roi_masks(labels, names, rcfg["groups"])
table = rois.roi_layer_scores(layer_r, masks, layers)
save_tsv(table, snakemake.output.roi_scores)
save_tsv(rois.best_layer_per_roi(table), snakemake.output.best)
best_voxel = rois.voxel_best_layer(layer_r, significant, layers)
save_img(unmask(best_voxel, mask_img, fill=-1, dtype=np.int16), snakemake.output.best_map)
save_img(unmask(significant.astype(np.uint8), mask_img, dtype=np.uint8),
         snakemake.output.significant)
