"""Rule group_maps: subjects' r maps per layer and significance masks in one space (one
template grid, fsaverage surface or parcellation) -> group maps over the targets every subject
kept: mean r per layer (one map per layer), share of subjects in which each target is
significant, and the group best layer (the layer with the highest subject-mean r, at targets
significant in more than half of the subjects); ``targets.group_maps``."""

import logging

import numpy as np

from brainalign.io import setup_logging
from brainalign.targets import for_kind, group_maps

setup_logging(snakemake.log[0])
targets = for_kind(snakemake.params.kind)
layers = snakemake.params.layers
masks = [targets.load(p) for p in snakemake.input.masks]
n_sub, n_layers = len(masks), len(layers)
n_files = len(targets.map_files("map"))  # files per map: one, or a GIFTI pair
r_files = snakemake.input.r_maps  # subject-major, layers in order
r_maps = [[r_files[(s * n_layers + j) * n_files: (s * n_layers + j + 1) * n_files]
           for j in range(n_layers)] for s in range(n_sub)]
sig_files = snakemake.input.significant  # subject-major
significant = [sig_files[s * n_files: (s + 1) * n_files] for s in range(n_sub)]
maps = group_maps(masks, r_maps, significant, layers)
logging.getLogger("group_maps").info(
    "%d %s kept by all %d subjects; %d significant in more than half of them get a group best "
    "layer", maps.common.n_targets, targets.noun, n_sub, int((maps.best >= 0).sum()))
everywhere = maps.common.restrict(np.ones(maps.best.size, bool))
everywhere.write_maps(maps.mean_r, [f"layer-{layer}" for layer in layers], snakemake.output.mean_r)
everywhere.write_map(maps.best.astype(targets.label_dtype), snakemake.output.best,
                     dtype=targets.label_dtype)
everywhere.write_map(maps.share.astype(np.float32), snakemake.output.share)
