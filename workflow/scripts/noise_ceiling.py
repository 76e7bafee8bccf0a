"""Rule noise_ceiling: every subject's cleaned BOLD runs -> noise ceiling per voxel (inter-subject
correlation, or split-half reliability of a repeated stimulus)."""

import logging

import numpy as np

from brainalign.ceiling import repeat_pairs, shared_voxels, subject_ceilings
from brainalign.io import save_img, save_npz, setup_logging, unmask

setup_logging(snakemake.log[0])
ccfg, stories = snakemake.params.ceiling, snakemake.params.stories
shared_img, index = shared_voxels(list(snakemake.input.masks))
paths = iter(snakemake.input.bold)  # subject-major, as stories
runs = [[np.load(next(paths), mmap_mode="r") for _ in names] for names in stories]
ceil, per_subject = subject_ceilings(
    runs, index, n_permutations=ccfg.get("n_permutations", 200),
    min_shift=max(1, round(ccfg.get("min_shift_s", 15.0) / snakemake.params.tr)),
    q=ccfg.get("fdr_q", 0.05), min_ceiling=ccfg.get("min_ceiling", 0.1),
    method=ccfg.get("method", "isc"), pairs=repeat_pairs(snakemake.params.run_stimuli),
    stimuli=stories)
logging.getLogger("noise_ceiling").info(
    "%d subjects, %d shared voxels: median ceiling %.3f, %d usable voxels", len(runs),
    ceil.group_isc.size, np.nanmedian(ceil.group_ceiling), ceil.usable.sum())
for out, arrays in zip(snakemake.output.subjects, per_subject, strict=True):
    save_npz(out, **arrays)
save_img(unmask(ceil.group_isc, shared_img, fill=np.nan), snakemake.output.isc)
save_img(unmask(ceil.group_ceiling, shared_img, fill=np.nan), snakemake.output.ceiling)
save_img(unmask(ceil.usable.astype(np.uint8), shared_img, dtype=np.uint8),
         snakemake.output.usable)
