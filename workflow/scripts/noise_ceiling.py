"""Rule noise_ceiling: every subject's cleaned BOLD runs -> noise ceiling per voxel (inter-subject
correlation, or split-half reliability of a repeated stimulus)."""

import logging

import numpy as np

from brainalign.ceiling import (
    CeilingOptions,
    common_volumes,
    repeat_pairs,
    shared_targets,
    subject_ceilings,
)
from brainalign.io import save_npz, setup_logging
from brainalign.targets import for_kind

setup_logging(snakemake.log[0])
ccfg, match_labels = snakemake.params.ceiling, snakemake.params.match_labels
shared, index = shared_targets(for_kind(snakemake.params.kind), list(snakemake.input.masks))
paths = iter(snakemake.input.bold)  # subject-major, as match_labels
runs = [[np.load(next(paths), mmap_mode="r") for _ in names] for names in match_labels]
paths = iter(snakemake.input.confounds)
confounds = [[np.load(next(paths)) for _ in names] for names in match_labels]
paths = iter(snakemake.input.blocks)
bounds = [[np.load(next(paths)) for _ in names] for names in match_labels]
# runs of one stimulus compared on the volumes they all kept (block CV drops border volumes)
runs, confounds = common_volumes(runs, confounds, bounds, snakemake.params.stimuli)
options = CeilingOptions.from_config(ccfg, snakemake.params.tr, n_threads=snakemake.threads)
ceil, per_subject = subject_ceilings(runs, index, options,
                                     pairs=repeat_pairs(snakemake.params.run_stimuli),
                                     stimuli=match_labels, confounds=confounds)
logging.getLogger("noise_ceiling").info(
    "%d subjects, %d shared %s: median ceiling %.3f, %d usable", len(runs),
    ceil.group_isc.size, shared.noun, np.nanmedian(ceil.group_ceiling), ceil.usable.sum())
for out, arrays in zip(snakemake.output.subjects, per_subject, strict=True):
    save_npz(out, **arrays)
# maps over the shared targets: NIfTI, a GIFTI pair or a parcel TSV, as the inputs
shared.write_map(ceil.group_isc, snakemake.output.isc, fill=np.nan)
shared.write_map(ceil.group_ceiling, snakemake.output.ceiling, fill=np.nan)
shared.write_map(ceil.usable.astype(np.uint8), snakemake.output.usable, dtype=np.uint8)
