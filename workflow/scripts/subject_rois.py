"""Rule subject_rois: all layers' scores -> per-ROI profile, best layer per ROI and per voxel
(chosen on inner-CV scores of each outer fold's training runs, scored on its held-out run), the
ROI tests against the permutation null that say whether a best layer may be claimed, the ROI
null draws the group test needs, and ceiling-normalised scores where a noise ceiling is given."""

import logging

import numpy as np
import pandas as pd

from brainalign import rois, stats
from brainalign.io import load_npz, save_npz, save_tsv, setup_logging
from brainalign.targets import for_kind

setup_logging(snakemake.log[0])
logger = logging.getLogger("subject_rois")
rcfg = snakemake.params.rois
mask = for_kind(snakemake.params.kind).load(snakemake.input.mask)
layers = snakemake.params.layers  # the order of the scores inputs
scores = [load_npz(p) for p in snakemake.input.scores]
for path, s in zip(snakemake.input.scores, scores, strict=True):
    for key, what in (("inner_r2", "inner-CV scores"), ("r_null", "permutation null draws"),
                      ("r_common", "the tested statistic")):
        if key not in s:
            raise ValueError(f"{path}: no `{key}` ({what}); it was written by an older "
                             "version of fit_layer. Delete it and rerun to refit that layer.")
layer_r = np.stack([s["r"] for s in scores])
r_folds = np.stack([s["r_folds"] for s in scores])  # (n_layers, n_folds, n_voxels)
inner = np.stack([s["inner_r2"] for s in scores])
significant = stats.significant_voxels(np.stack([s["p"] for s in scores]),
                                       snakemake.params.fdr_q)
labels, names = mask.atlas(snakemake.input.atlas, rcfg)
masks = rois.roi_masks(labels, names, mask.roi_groups(rcfg["groups"]))
fdr_q = snakemake.params.fdr_q
numbers = [int(v) for v in layers]
# mean r per ROI and layer, and the statistic the permutation null is of (held-out r at the
# layer's common penalty)
table = rois.roi_layer_scores(layer_r, masks, layers,
                              tested=np.stack([s["r_common"] for s in scores]))
roi_null = np.stack([rois.roi_null_draws(s["r_null"], masks) for s in scores])
order = np.argsort(numbers)  # roi_tests wants layers in increasing order
table, per_roi = rois.roi_tests(table, roi_null[order], fdr_q)
best = stats.crossfit_best_layer(rois.roi_fold_scores(inner, masks),
                                 rois.roi_fold_scores(r_folds, masks), layers)
best_table = rois.best_layer_table(best, list(masks), [int(m.sum()) for m in masks.values()])
cka = pd.read_csv(snakemake.input.cka, sep="\t")
best_table = rois.add_reliability(best_table, per_roi, sorted(numbers), cka, fdr_q)
groups = stats.layer_groups(numbers, rois.consecutive_cka(cka))
flat = stats.all_layers_indistinguishable(groups)
logger.info("%d of %d ROIs have a reliable best layer (ROI-mean r against the ROI-mean "
            "permutation null, Simes over layers, FDR q = %g over ROIs)",
            int(best_table["reliable"].sum()), len(best_table), fdr_q)
if flat:
    logger.warning("layers %d..%d are indistinguishable (consecutive linear CKA >= %g): no "
                   "best layer is claimed for any ROI or voxel; the best-layer map is empty",
                   groups[0][0], groups[0][-1], stats.CKA_INDISTINGUISHABLE)
voxel = stats.crossfit_best_layer(inner, r_folds, layers)
if snakemake.input.ceiling:
    ceil = load_npz(snakemake.input.ceiling[0])
    ccfg = snakemake.params.ceiling
    usable = ceil["usable"] & (ceil["ceiling"] >= ccfg["min_ceiling"])
    roi_ceil = rois.roi_ceiling(ceil["ceiling"], usable, masks, ccfg["min_ceiling"])
    table = rois.add_normalised(table, roi_ceil, "mean_r")
    best_table = rois.add_normalised(best_table, roi_ceil, "independent_r")
    voxel_norm = stats.normalise_by_ceiling(voxel.independent_r, ceil["ceiling"], usable)
else:
    voxel_norm = np.full(layer_r.shape[1], np.nan)
save_tsv(table, snakemake.output.roi_scores)
save_tsv(best_table, snakemake.output.best)
# float32: 50 permutations x 13 layers x 100 ROIs is 260 kB
save_npz(snakemake.output.roi_null, null=roi_null.astype(np.float32),
         rois=np.array(list(masks)), layers=np.array(numbers))
best_voxel = np.where(significant & ~flat, voxel.layer, -1)
int_type, flag_type = mask.label_dtype, mask.flag_dtype
mask.write_map(best_voxel.astype(int_type), snakemake.output.best_map, fill=-1, dtype=int_type)
mask.write_map(voxel.stability, snakemake.output.best_stability)
mask.write_map(voxel.independent_r, snakemake.output.best_r)
mask.write_map(voxel_norm, snakemake.output.best_normalised, fill=np.nan)
mask.write_map(significant.astype(flag_type), snakemake.output.significant, dtype=flag_type)
