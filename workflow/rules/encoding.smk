# Encoding: per subject x model x layer, nested leave-one-run-out ridge, held-out r per voxel.


rule fit_layer:
    input:
        mask="results/sub-{subject}/bold/sub-{subject}_desc-brain_mask.nii.gz",
        bold=expand("results/sub-{{subject}}/bold/sub-{{subject}}_run-{run}_bold.npy", run=RUNS),
        confounds=expand(
            "results/sub-{{subject}}/bold/sub-{{subject}}_run-{run}_confounds.npy", run=RUNS
        ),
        features=expand(
            "results/aligned/{{model}}/{stimulus}.h5", stimulus=run_stimuli()
        ),
    output:
        scores="results/sub-{subject}/encoding/{model}/sub-{subject}_layer-{layer}_scores.npz",
        r="results/sub-{subject}/encoding/{model}/sub-{subject}_layer-{layer}_stat-r.nii.gz",
        alpha="results/sub-{subject}/encoding/{model}/sub-{subject}_layer-{layer}_stat-alpha.nii.gz",
    log:
        "logs/encoding/sub-{subject}_{model}_layer-{layer}.log",
    conda:
        "../envs/brainalign.yaml"
    params:
        tr=config["tr"],
        encoding=config["encoding"],
    resources:
        mem_mb=6000,
    script:
        "../scripts/fit_layer.py"
