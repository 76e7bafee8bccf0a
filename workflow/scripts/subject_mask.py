"""Rule subject_mask: a subject's targets. Volume: the intersection of the per-run fMRIPrep
brain masks. Surface: the vertices finite and non-constant in every run."""

import logging

from brainalign import surface
from brainalign.bold import subject_mask
from brainalign.io import save_img, save_npz, setup_logging

setup_logging(snakemake.log[0])
if snakemake.params.kind == "volume":
    save_img(subject_mask(list(snakemake.input.mask)), snakemake.output[0])
else:
    keep, n_left = surface.vertex_mask(list(snakemake.params.runs), snakemake.params.space)
    logging.getLogger("subject_mask").info("%d of %d vertices kept (finite and varying in every "
                                           "run)", keep.sum(), keep.size)
    save_npz(snakemake.output[0], keep=keep, n_left=n_left)
