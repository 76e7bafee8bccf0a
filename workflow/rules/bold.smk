# BOLD: the subject's brain mask (intersection over runs), then each run masked, trimmed to its
# stimulus (without the silence before it and its onset transient), detrended and z-scored
# within the run; its fMRIPrep confounds (if configured) trimmed and cleaned alike, for
# regression inside the encoding folds.


rule subject_mask:
    input:
        # the runs are inputs too: a missing run is reported before any job starts
        bold=lambda wc: [t for r in subject_runs(wc.subject) for t in r.files],
        mask=lambda wc: [r.mask for r in subject_runs(wc.subject) if r.mask],
    output:
        MASK,
    log:
        "logs/bold/sub-{subject}_mask.log",
    conda:
        "../envs/brainalign.yaml"
    params:
        kind=KIND,
        space=(config.get("bids") or {}).get("space"),
        # surface runs as (left, right) pairs, in run order
        runs=lambda wc: [r.files for r in subject_runs(wc.subject)],
    script:
        "../scripts/subject_mask.py"


rule prepare_bold:
    input:
        bold=lambda wc: DATASET.run(wc.subject, wc.run).files,
        mask=MASK,
        audio=lambda wc: stimulus_file(DATASET.run(wc.subject, wc.run).stimulus),
        confounds=confound_inputs,
    output:
        bold="results/sub-{subject}/bold/sub-{subject}_run-{run}_bold.npy",
        confounds="results/sub-{subject}/bold/sub-{subject}_run-{run}_confounds.npy",
        # [start, stop) of each cross-validation block in the run's analysed volumes
        blocks="results/sub-{subject}/bold/sub-{subject}_run-{run}_blocks.npy",
    log:
        "logs/bold/sub-{subject}_run-{run}.log",
    conda:
        "../envs/brainalign.yaml"
    params:
        tr=config["tr"],
        bold=config["bold"],
        # stimulus onset (s after the first kept volume)
        onset=lambda wc: DATASET.run(wc.subject, wc.run).onset,
        first_volume=lambda wc: first_volume(wc.subject, wc.run),
        # the raw BIDS run, if found: its volume count is what was acquired
        raw=lambda wc: DATASET.run(wc.subject, wc.run).raw,
        # (blocks, gap volumes each side): (1, 0) under leave-one-run-out
        blocks=lambda wc: run_blocks(wc.subject, wc.run),
        kind=KIND,
    resources:
        mem_mb=4000,
    script:
        "../scripts/prepare_bold.py"
