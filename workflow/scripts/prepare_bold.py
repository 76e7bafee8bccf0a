"""Rule prepare_bold: a subject's fMRIPrep runs -> brain mask + one cleaned array per run."""

from brainalign.alignment import n_volumes
from brainalign.audio import audio_duration
from brainalign.bold import load_run, load_run_confounds, subject_mask
from brainalign.io import save_img, save_npy, setup_logging

setup_logging(snakemake.log[0])
t_r, bcfg = snakemake.params.tr, snakemake.params.bold
mask_img = subject_mask(list(snakemake.input.mask))
ccfg = bcfg.get("confounds", {})
for bold, audio, onset, out, conf_out in zip(
        snakemake.input.bold, snakemake.input.audio, snakemake.params.onsets,
        snakemake.output.runs, snakemake.output.confounds, strict=True):
    # the run covers the silence before stimulus onset, then the stimulus
    n_vols = n_volumes(audio_duration(audio) + onset, t_r)
    data = load_run(bold, mask_img, n_vols, t_r,
                    start_volume=bcfg.get("start_volume", 0),
                    max_extra_volumes=bcfg.get("max_extra_volumes", 20),
                    detrend=bcfg.get("detrend", True),
                    standardize=bcfg.get("standardize", True))
    confounds = load_run_confounds(bold, n_vols, ccfg.get("strategy", []),
                                   start_volume=bcfg.get("start_volume", 0),
                                   motion=ccfg.get("motion", "basic"),
                                   wm_csf=ccfg.get("wm_csf", "basic"),
                                   global_signal=ccfg.get("global_signal", "basic"))
    save_npy(out, data)
    save_npy(conf_out, confounds)
save_img(mask_img, snakemake.output.mask)
