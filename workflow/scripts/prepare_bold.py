"""Rule prepare_bold: a subject's fMRIPrep runs -> brain mask + one cleaned array per run."""

import numpy as np

from brainalign.alignment import n_volumes
from brainalign.audio import audio_duration
from brainalign.bold import load_run, subject_mask
from brainalign.io import save_img, setup_logging

setup_logging(snakemake.log[0])
t_r, bcfg = snakemake.params.tr, snakemake.params.bold
mask_img = subject_mask(list(snakemake.input.mask))
for bold, audio, onset, out in zip(snakemake.input.bold, snakemake.input.audio,
                                   snakemake.params.onsets, snakemake.output.runs, strict=True):
    # the run covers the silence before stimulus onset, then the stimulus
    data = load_run(bold, mask_img, n_volumes(audio_duration(audio) + onset, t_r), t_r,
                    start_volume=bcfg.get("start_volume", 0),
                    max_extra_volumes=bcfg.get("max_extra_volumes", 20),
                    detrend=bcfg.get("detrend", True),
                    standardize=bcfg.get("standardize", True))
    np.save(out, data)
save_img(mask_img, snakemake.output.mask)
