"""Rule fit_layer: one layer's features -> every voxel's held-out encoding score (one subject)."""

import dataclasses
import logging
import resource
import time

import numpy as np

from brainalign.alignment import analysed_rows
from brainalign.config import alphas
from brainalign.encoding import Backend, FitOptions, fit_layer, split_blocks
from brainalign.io import read_layer, save_npz, setup_logging
from brainalign.targets import for_kind

setup_logging(snakemake.log[0])
logger = logging.getLogger("fit_layer")
t_r, enc = snakemake.params.tr, snakemake.params.encoding
layer = snakemake.wildcards.layer
# per run: its cleaned blocks (the whole run under leave-one-run-out), and their volumes
bounds = [np.load(f) for f in snakemake.input.blocks]
# the features' rows of the analysed volumes, up to the last block's end
x_runs = [analysed_rows(read_layer(f, layer), first, int(b[-1, 1]))
          for f, b, first in zip(snakemake.input.features, bounds,
                                 snakemake.params.first_volumes, strict=True)]
x_runs, y_runs, confounds = split_blocks(
    x_runs, [np.load(f) for f in snakemake.input.bold],
    [np.load(f) for f in snakemake.input.confounds], bounds)
if len(y_runs) > len(bounds):
    logger.info("block cross-validation: %d run(s) cut into %d contiguous blocks of %s "
                "volumes (encoding.cv), each a fold", len(bounds), len(y_runs),
                "/".join(str(len(y)) for y in y_runs))
if not any(c.shape[1] for c in confounds):
    confounds = None
options = FitOptions.from_config(enc, t_r)
backend = Backend(options.backend)
start = time.perf_counter()
logger.info("layer %s: %d runs, %d volumes, %d features, %d voxels, %s confounds, backend %s",
            layer, len(x_runs), sum(len(x) for x in x_runs), x_runs[0].shape[1],
            y_runs[0].shape[1], 0 if confounds is None else confounds[0].shape[1], backend)


def progress(message: str) -> None:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    logger.info("%s (%.1f s, peak RSS %.0f MB)", message, time.perf_counter() - start, rss)


scores = fit_layer(x_runs, y_runs, alphas(enc["alphas"]),
                   dataclasses.replace(options, backend=backend), confounds=confounds,
                   progress=progress)
logger.info("layer %s: mean r %.4f, max r %.4f; tested at the common penalty %s: mean r %.4f",
            layer, scores.r.mean(), scores.r.max(),
            ", ".join(f"{a:g}" for a in scores.alpha_common), scores.r_common.mean())
progress("done")
# the null draws as float16 (8 MB for 80 000 voxels x 50 permutations, half of float32):
# rounding moves a draw by < 0.12 % of the null's SD (tests/test_rois.py)
save_npz(snakemake.output.scores, **{**vars(scores), "r_null": scores.r_null.astype(np.float16)})
mask = for_kind(snakemake.params.kind).load(snakemake.input.mask)  # maps in the input's format
mask.write_map(scores.r, snakemake.output.r)
mask.write_map(np.exp(np.log(scores.alpha).mean(0)), snakemake.output.alpha)
