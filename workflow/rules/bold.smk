# BOLD: each run masked, trimmed to its stimulus, detrended and z-scored within the run; its
# fMRIPrep confounds (if configured) trimmed alike, for regression inside the encoding folds.


rule prepare_bold:
    input:
        bold=lambda wc: [bold_path(wc.subject, r) for r in RUNS],
        mask=lambda wc: [mask_path(wc.subject, r) for r in RUNS],
        audio=[config["stimuli"][s] for s in run_stimuli()],
        confounds=confound_inputs,
    output:
        mask="results/sub-{subject}/bold/sub-{subject}_desc-brain_mask.nii.gz",
        runs=expand("results/sub-{{subject}}/bold/sub-{{subject}}_run-{run}_bold.npy", run=RUNS),
        confounds=expand(
            "results/sub-{{subject}}/bold/sub-{{subject}}_run-{run}_confounds.npy", run=RUNS
        ),
    log:
        "logs/bold/sub-{subject}.log",
    conda:
        "../envs/brainalign.yaml"
    params:
        tr=config["tr"],
        bold=config["bold"],
        # stimulus onset (s after the first kept volume) of each run, in run order
        onsets=[bacfg.run_onset(config, r) for r in RUNS],
    resources:
        mem_mb=4000,
    script:
        "../scripts/prepare_bold.py"
