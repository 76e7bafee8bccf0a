"""Rule subject_rois: all layers' scores -> per-ROI profile, best layer per ROI and per voxel."""

import nibabel as nib
import numpy as np

from brainalign import rois, stats
from brainalign.io import load_npz, save_tsv, setup_logging
from brainalign.targets import load_mask

setup_logging(snakemake.log[0])
rcfg = snakemake.params.rois
mask = load_mask(snakemake.input.mask)  # brain-mask voxels, or kept surface vertices
layers = snakemake.params.layers  # the order of the scores inputs
scores = [load_npz(p) for p in snakemake.input.scores]
layer_r = np.stack([s["r"] for s in scores])
significant = stats.significant_voxels(np.stack([s["p"] for s in scores]),
                                       snakemake.params.fdr_q)
groups = dict(rcfg["groups"])
if mask.is_parcels:  # per-parcel scores too, besides the configured groups of parcels
    groups = {**{n: [n] for n, k in zip(mask.names, mask.keep, strict=True) if k}, **groups}
if mask.is_surface or mask.is_parcels:
    atlas = load_npz(snakemake.input.atlas)
    names = dict(zip(atlas["values"].tolist(), atlas["names"].tolist(), strict=True))
    labels = atlas["labels"][mask.keep]
else:
    names = rois.atlas_labels(rcfg["atlas"], rcfg.get("labels_file"))
    labels = np.asarray(nib.load(snakemake.input.atlas).dataobj).ravel()[mask.keep]
masks = rois.roi_masks(labels, names, groups)
table = rois.roi_layer_scores(layer_r, masks, layers)
save_tsv(table, snakemake.output.roi_scores)
save_tsv(rois.best_layer_per_roi(table), snakemake.output.best)
best_voxel = rois.voxel_best_layer(layer_r, significant, layers)
# GIFTI label-like maps hold int32; NIfTI keeps the compact types
int_type, flag_type = (np.int16, np.uint8) if mask.img is not None else (np.int32, np.int32)
mask.save(best_voxel, snakemake.output.best_map, fill=-1, dtype=int_type)
mask.save(significant.astype(flag_type), snakemake.output.significant, dtype=flag_type)
