"""Rule project_best_layer: a subject's MNI-space best-layer map -> fsaverage5 GIFTI pair
(most frequent label between the white and pial surfaces), for display."""

import nibabel as nib
import numpy as np

from brainalign import surface
from brainalign.io import setup_logging

setup_logging(snakemake.log[0])
left, right = surface.project_volume(nib.load(snakemake.input.best_map), "fsaverage5",
                                     interpolation="nearest_most_frequent")
values = np.concatenate([left, right]).astype(np.int32)
surface.save_maps(values, np.ones(values.size, bool), left.size, list(snakemake.output),
                  dtype=np.int32)
