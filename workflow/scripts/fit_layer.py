"""Rule fit_layer: one layer's features -> every voxel's held-out encoding score (one subject)."""

import logging

import numpy as np

from brainalign.config import alphas
from brainalign.encoding import fit_layer
from brainalign.io import load_layer_h5, save_npz, setup_logging
from brainalign.targets import load_mask

setup_logging(snakemake.log[0])
t_r, enc = snakemake.params.tr, snakemake.params.encoding
layer = snakemake.wildcards.layer
y_runs = [np.load(f) for f in snakemake.input.bold]
# a run that stopped early (bold.max_missing_volumes) is shorter than its stimulus's features
x_runs = [load_layer_h5(f, layer)[: len(y)]
          for f, y in zip(snakemake.input.features, y_runs, strict=True)]
scores = fit_layer(x_runs, y_runs, alphas(enc["alphas"]),
                   n_permutations=enc.get("n_permutations", 50),
                   min_shift=max(1, round(enc.get("min_shift_s", 15.0) / t_r)),
                   batch_voxels=enc.get("batch_voxels", 20000))
logging.getLogger("fit_layer").info("layer %s: mean r %.4f, max r %.4f", layer,
                                    scores.r.mean(), scores.r.max())
save_npz(snakemake.output.scores, **vars(scores))
mask = load_mask(snakemake.input.mask)  # NIfTI maps, or GIFTI per hemisphere on surfaces
mask.save(scores.r, snakemake.output.r)
mask.save(np.exp(np.log(scores.alpha).mean(0)), snakemake.output.alpha)
