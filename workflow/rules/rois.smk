# ROIs: atlas on each subject's grid, mean r per ROI and layer, best layer per ROI and voxel
# (chosen on training-run scores, scored on held-out runs), ceiling-normalised scores, and the
# group statistics across subjects.


rule subject_atlas:
    input:
        mask="results/sub-{subject}/bold/sub-{subject}_desc-brain_mask.nii.gz",
    output:
        "results/sub-{subject}/rois/sub-{subject}_atlas-{atlas}_dseg.nii.gz",
    log:
        "logs/rois/sub-{subject}_atlas-{atlas}.log",
    conda:
        "../envs/brainalign.yaml"
    params:
        rois=config["rois"],
    resources:
        mem_mb=3000,
    script:
        "../scripts/subject_atlas.py"


rule subject_rois:
    input:
        mask="results/sub-{subject}/bold/sub-{subject}_desc-brain_mask.nii.gz",
        atlas=expand(
            "results/sub-{{subject}}/rois/sub-{{subject}}_atlas-{atlas}_dseg.nii.gz",
            atlas=ATLAS_NAME,
        ),
        scores=layer_scores,
        ceiling=subject_ceiling,
    output:
        roi_scores="results/sub-{subject}/rois/{model}/sub-{subject}_roi-scores.tsv",
        best="results/sub-{subject}/rois/{model}/sub-{subject}_best-layer.tsv",
        best_map="results/sub-{subject}/rois/{model}/sub-{subject}_desc-bestlayer_map.nii.gz",
        best_stability="results/sub-{subject}/rois/{model}/sub-{subject}_desc-bestlayerstability_map.nii.gz",
        best_r="results/sub-{subject}/rois/{model}/sub-{subject}_desc-bestlayer_stat-r.nii.gz",
        best_normalised="results/sub-{subject}/rois/{model}/sub-{subject}_desc-bestlayer_stat-normalisedr.nii.gz",
        significant="results/sub-{subject}/rois/{model}/sub-{subject}_desc-significant_mask.nii.gz",
    log:
        "logs/rois/sub-{subject}_{model}.log",
    conda:
        "../envs/brainalign.yaml"
    params:
        rois=config["rois"],
        fdr_q=config["encoding"].get("fdr_q", 0.05),
        layers=lambda wc: LAYERS[wc.model],
        ceiling=CEILING,
    script:
        "../scripts/subject_rois.py"


rule group_rois:
    input:
        scores=expand(
            "results/sub-{subject}/rois/{{model}}/sub-{subject}_roi-scores.tsv",
            subject=SUBJECTS,
        ),
        best=expand(
            "results/sub-{subject}/rois/{{model}}/sub-{subject}_best-layer.tsv",
            subject=SUBJECTS,
        ),
    output:
        scores="results/group/{model}/group_roi-scores.tsv",
        best="results/group/{model}/group_best-layer.tsv",
    log:
        "logs/rois/group_{model}.log",
    conda:
        "../envs/brainalign.yaml"
    params:
        group=config.get("group", {}),
    script:
        "../scripts/group_rois.py"
