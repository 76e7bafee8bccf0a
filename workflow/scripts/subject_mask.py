"""Rule subject_mask: a subject's targets. Volume: the intersection of the per-run fMRIPrep
brain masks. Surface / parcels: the vertices / parcels finite and non-constant in every run."""

import logging

import numpy as np

from brainalign import parcels, surface
from brainalign.bold import subject_mask
from brainalign.io import save_img, save_npz, setup_logging

setup_logging(snakemake.log[0])
if snakemake.params.kind == "volume":
    save_img(subject_mask(list(snakemake.input.mask)), snakemake.output[0])
elif snakemake.params.kind == "parcels":
    keep, names = parcels.parcel_mask([r[0] for r in snakemake.params.runs])
    logging.getLogger("subject_mask").info("%d of %d parcels kept (finite and varying in every "
                                           "run)", keep.sum(), keep.size)
    save_npz(snakemake.output[0], keep=keep, names=np.array(names))
else:
    keep, n_left = surface.vertex_mask(list(snakemake.params.runs), snakemake.params.space)
    logging.getLogger("subject_mask").info("%d of %d vertices kept (finite and varying in every "
                                           "run)", keep.sum(), keep.size)
    save_npz(snakemake.output[0], keep=keep, n_left=n_left)
