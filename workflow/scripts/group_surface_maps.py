"""Rule group_surface_maps: subjects' GIFTI r maps per layer and significance masks on one
fsaverage surface -> group maps on it: mean r per layer (one data array per layer), share of
subjects in which each vertex is significant, and the group best layer per vertex (the layer
with the highest subject-mean r, at vertices significant in more than half of the subjects)."""

import logging

import numpy as np

from brainalign import surface
from brainalign.compare import group_vertex_maps
from brainalign.io import setup_logging
from brainalign.targets import load_mask

setup_logging(snakemake.log[0])
logger = logging.getLogger("group_surface_maps")
layers = snakemake.params.layers
masks = [load_mask(p) for p in snakemake.input.masks]
n_left = {m.n_left for m in masks}
if len(n_left) > 1 or len({m.keep.size for m in masks}) > 1:
    raise ValueError(f"{snakemake.input.masks[0]}: the subjects' surfaces differ ("
                     f"{sorted(n_left)} left-hemisphere vertices); group maps need every "
                     "subject on one fsaverage surface (bids.space).")
(n_left,) = n_left
n_sub, n_layers = len(masks), len(layers)
r_files = snakemake.input.r_maps  # subject-major, layers in order, L then R
layer_r = np.stack([[surface.read_maps(r_files[2 * (s * n_layers + j): 2 * (s * n_layers + j) + 2])
                     for j in range(n_layers)] for s in range(n_sub)])
sig_files = snakemake.input.significant  # subject-major, L then R
significant = np.stack([surface.read_maps(sig_files[2 * s: 2 * s + 2]) > 0
                        for s in range(n_sub)])
mean_r, best, share, common = group_vertex_maps(layer_r, np.stack([m.keep for m in masks]),
                                                significant, layers)
logger.info("%d vertices kept by all %d subjects; %d significant in more than half of them "
            "get a group best layer", int(common.sum()), n_sub, int((best >= 0).sum()))
surface.save_layer_maps(mean_r, n_left, [f"layer-{layer}" for layer in layers],
                        snakemake.output.mean_r)
everywhere = np.ones(best.size, bool)
surface.save_maps(best.astype(np.int32), everywhere, n_left, snakemake.output.best,
                  dtype=np.int32)
surface.save_maps(share.astype(np.float32), everywhere, n_left, snakemake.output.share)
