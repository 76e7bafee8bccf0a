"""Rule prepare_bold: one fMRIPrep run + the subject's brain mask -> one cleaned array."""

import nibabel as nib

from brainalign.alignment import n_volumes
from brainalign.audio import audio_duration
from brainalign.bold import load_run
from brainalign.io import save_npy, setup_logging

setup_logging(snakemake.log[0])
t_r, bcfg = snakemake.params.tr, snakemake.params.bold
# the run covers the silence before stimulus onset, then the stimulus
n_vols = n_volumes(audio_duration(snakemake.input.audio) + snakemake.params.onset, t_r)
data = load_run(snakemake.input.bold[0], nib.load(snakemake.input.mask), n_vols, t_r,
                start_volume=bcfg.get("start_volume", 0),
                max_extra_volumes=bcfg.get("max_extra_volumes", 20),
                max_missing_volumes=bcfg.get("max_missing_volumes", 0),
                detrend=bcfg.get("detrend", True),
                standardize=bcfg.get("standardize", True))
save_npy(data, snakemake.output[0])
