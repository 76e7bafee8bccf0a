"""Rule subject_mask: a subject's per-run fMRIPrep brain masks -> their intersection."""

from brainalign.bold import subject_mask
from brainalign.io import save_img, setup_logging

setup_logging(snakemake.log[0])
save_img(subject_mask(list(snakemake.input.mask)), snakemake.output[0])
