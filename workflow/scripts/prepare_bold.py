"""Rule prepare_bold: one run (volume, surface pair or parcel TSV) + the subject's mask -> one
cleaned (n_volumes, n_targets) array over the analysed volumes, and its fMRIPrep confounds
trimmed and cleaned alike (regressed out later, inside the encoding folds)."""

import logging
from dataclasses import replace

import numpy as np

from brainalign.alignment import n_volumes
from brainalign.audio import audio_duration
from brainalign.bold import (
    CleanOptions,
    check_acquired_volumes,
    clean_run_in_blocks,
    load_run_confounds,
)
from brainalign.io import save_npy, setup_logging
from brainalign.targets import for_kind

setup_logging(snakemake.log[0])
t_r, bcfg = snakemake.params.tr, snakemake.params.bold
# the run covers the silence before stimulus onset, then the stimulus
n_vols = n_volumes(audio_duration(snakemake.input.audio) + snakemake.params.onset, t_r)
# silence + onset transient, left out before cleaning
options = CleanOptions.from_config(bcfg, first_volume=snakemake.params.first_volume)
n_blocks, gap = snakemake.params.blocks  # (1, 0): the whole run, for leave-one-run-out
# with blocks, every cleaning step waits until the run is cut (no step may span a border)
whole = n_blocks == 1
run_options = replace(options, detrend=options.detrend and whole,
                      standardize=options.standardize and whole)
# a run cut after acquisition (fewer volumes than its raw run or confounds rows) may have lost
# its first volumes, which would misalign the stimulus
check_acquired_volumes(snakemake.input.bold, n_vols, t_r, options.start_volume,
                       snakemake.params.raw)
targets = for_kind(snakemake.params.kind).load(snakemake.input.mask)
data = targets.transform(list(snakemake.input.bold), n_vols, t_r, run_options)
ccfg = bcfg["confounds"]
start = options.start_volume + options.first_volume
confounds = load_run_confounds(list(snakemake.input.bold), slice(start, start + len(data)),
                               ccfg["strategy"], t_r, detrend=run_options.detrend,
                               motion=ccfg["motion"],
                               wm_csf=ccfg["wm_csf"], global_signal=ccfg["global_signal"])
if whole:
    blocks = np.array([[0, len(data)]])
else:
    data, confounds, blocks = clean_run_in_blocks(data, confounds, t_r, n_blocks, gap, options,
                                                  path=snakemake.input.bold[0])
    logging.getLogger("prepare_bold").info(
        "block cross-validation: %d blocks of volumes %s (gap %d volumes each side), each "
        "cleaned on its own", n_blocks, ", ".join(f"{a}-{b - 1}" for a, b in blocks), gap)
save_npy(data, snakemake.output.bold)
save_npy(confounds, snakemake.output.confounds)
save_npy(blocks, snakemake.output.blocks)
