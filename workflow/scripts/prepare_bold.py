"""Rule prepare_bold: one run (volume, surface pair or parcel TSV) + the subject's mask -> one
cleaned (n_volumes, n_targets) array, and its fMRIPrep confounds trimmed alike (regressed out
later, inside the encoding folds)."""

from brainalign import parcels, surface
from brainalign.alignment import n_volumes
from brainalign.audio import audio_duration
from brainalign.bold import check_acquired_volumes, load_run, load_run_confounds
from brainalign.io import save_npy, setup_logging
from brainalign.targets import load_mask

setup_logging(snakemake.log[0])
t_r, bcfg = snakemake.params.tr, snakemake.params.bold
# the run covers the silence before stimulus onset, then the stimulus
n_vols = n_volumes(audio_duration(snakemake.input.audio) + snakemake.params.onset, t_r)
clean = dict(start_volume=bcfg.get("start_volume", 0),
             max_extra_volumes=bcfg.get("max_extra_volumes", 20),
             max_missing_volumes=bcfg.get("max_missing_volumes", 0),
             detrend=bcfg.get("detrend", True), standardize=bcfg.get("standardize", True))
# a run cut after acquisition (fewer volumes than its raw run or confounds rows) may have lost
# its first volumes, which would misalign the stimulus
check_acquired_volumes(snakemake.input.bold, n_vols, t_r, clean["start_volume"],
                       snakemake.params.raw)
mask = load_mask(snakemake.input.mask)
if mask.is_parcels:
    data = parcels.load_run(snakemake.input.bold[0], mask.keep, n_vols, t_r, targets="parcels",
                            **clean)
elif mask.is_surface:
    data = surface.load_run(tuple(snakemake.input.bold), mask.keep, n_vols, t_r,
                            targets="vertices", **clean)
else:
    data = load_run(snakemake.input.bold[0], mask.img, n_vols, t_r, **clean)
ccfg = bcfg.get("confounds", {})
confounds = load_run_confounds(list(snakemake.input.bold), n_vols, ccfg.get("strategy", []),
                               start_volume=clean["start_volume"],
                               motion=ccfg.get("motion", "basic"),
                               wm_csf=ccfg.get("wm_csf", "basic"),
                               global_signal=ccfg.get("global_signal", "basic"))
save_npy(data, snakemake.output.bold)
save_npy(confounds[: len(data)], snakemake.output.confounds)  # a short run: trimmed alike
