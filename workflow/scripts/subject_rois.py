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
rcfg, fdr_q = snakemake.params.rois, snakemake.params.fdr_q
mask = for_kind(snakemake.params.kind).load(snakemake.input.mask)
layers = snakemake.params.layers  # the order of the scores inputs
labels, names = mask.atlas(snakemake.input.atlas, rcfg)
masks = rois.roi_masks(labels, names, mask.roi_groups(rcfg["groups"]))
summary = rois.subject_summary(
    [load_npz(p) for p in snakemake.input.scores], layers, masks,
    pd.read_csv(snakemake.input.cka, sep="\t"), fdr_q,
    ceiling=load_npz(snakemake.input.ceiling[0]) if snakemake.input.ceiling else None,
    min_ceiling=snakemake.params.ceiling["min_ceiling"], paths=list(snakemake.input.scores))
logger.info("%d of %d ROIs have a reliable best layer (ROI-mean r against the ROI-mean "
            "permutation null, Simes over layers, FDR q = %g over ROIs)",
            int(summary.best["reliable"].sum()), len(summary.best), fdr_q)
if summary.flat:
    first, last = summary.layer_groups[0][0], summary.layer_groups[0][-1]
    logger.warning("layers %d..%d are indistinguishable (consecutive linear CKA >= %g): no "
                   "best layer is claimed for any ROI or voxel; the best-layer map is empty",
                   first, last, stats.CKA_INDISTINGUISHABLE)
save_tsv(summary.table, snakemake.output.roi_scores)
save_tsv(summary.best, snakemake.output.best)
# float32: 50 permutations x 13 layers x 100 ROIs is 260 kB
save_npz(snakemake.output.roi_null, null=summary.roi_null.astype(np.float32),
         rois=np.array(list(masks)), layers=np.array([int(v) for v in layers]))
int_type, flag_type = mask.label_dtype, mask.flag_dtype
mask.write_map(summary.best_target.astype(int_type), snakemake.output.best_map, fill=-1,
               dtype=int_type)
mask.write_map(summary.stability, snakemake.output.best_stability)
mask.write_map(summary.independent_r, snakemake.output.best_r)
mask.write_map(summary.normalised_r, snakemake.output.best_normalised, fill=np.nan)
mask.write_map(summary.significant.astype(flag_type), snakemake.output.significant,
               dtype=flag_type)
