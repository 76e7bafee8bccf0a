# Encoding: per subject x model x layer, nested leave-one-run-out (or leave-one-block-out) ridge,
# held-out r per voxel.


rule fit_layer:
    input:
        mask=MASK,
        # the subject's runs, and the aligned features of each run's stimulus, in one order
        bold=lambda wc: [
            f"results/sub-{wc.subject}/bold/sub-{wc.subject}_run-{r.key}_bold.npy"
            for r in subject_runs(wc.subject)
        ],
        features=lambda wc: [
            f"results/aligned/{wc.model}/{r.stimulus}.h5" for r in subject_runs(wc.subject)
        ],
        confounds=lambda wc: [
            f"results/sub-{wc.subject}/bold/sub-{wc.subject}_run-{r.key}_confounds.npy"
            for r in subject_runs(wc.subject)
        ],
        # the folds: each run whole (leave-one-run-out) or its contiguous blocks (encoding.cv)
        blocks=lambda wc: [
            f"results/sub-{wc.subject}/bold/sub-{wc.subject}_run-{r.key}_blocks.npy"
            for r in subject_runs(wc.subject)
        ],
    output:
        scores="results/sub-{subject}/encoding/{model}/sub-{subject}_layer-{layer}_scores.npz",
        r=stat_maps("results/sub-{subject}/encoding/{model}/sub-{subject}_layer-{layer}_stat-r"),
        alpha=stat_maps(
            "results/sub-{subject}/encoding/{model}/sub-{subject}_layer-{layer}_stat-alpha"
        ),
    log:
        "logs/encoding/sub-{subject}_{model}_layer-{layer}.log",
    conda:
        "../envs/brainalign.yaml"
    params:
        tr=config["tr"],
        encoding=config["encoding"],
        # per run, the first analysed volume: the features' rows are cut like the BOLD's
        first_volumes=lambda wc: [first_volume(wc.subject, r.key) for r in subject_runs(wc.subject)],
        kind=KIND,
    resources:
        mem_mb=6000,
    script:
        "../scripts/fit_layer.py"
