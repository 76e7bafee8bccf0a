"""Rule subject_atlas: the configured atlas resampled (nearest) onto the subject's BOLD grid."""

import nibabel as nib

from brainalign.io import save_img, setup_logging
from brainalign.rois import load_atlas, resample_labels

setup_logging(snakemake.log[0])
rcfg = snakemake.params.rois
atlas, _ = load_atlas(rcfg["atlas"], rcfg.get("threshold", 25), rcfg.get("labels_file"))
save_img(resample_labels(atlas, nib.load(snakemake.input.mask)), snakemake.output[0])
