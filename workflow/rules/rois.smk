# ROIs: atlas on each subject's grid, mean r per ROI and layer, best layer per ROI and voxel
# (chosen on training-run scores, scored on held-out runs) and whether it may be claimed (ROI
# test against the permutation null, layers told apart by CKA), ceiling-normalised scores, and
# the group statistics across subjects.


rule subject_atlas:
    input:
        mask=MASK,
    output:
        ATLAS_FILE,
    log:
        "logs/rois/sub-{subject}_atlas-{atlas}.log",
    conda:
        "../envs/brainalign.yaml"
    params:
        rois=config["rois"],
        kind=KIND,
    resources:
        mem_mb=3000,
    script:
        "../scripts/subject_atlas.py"


rule subject_rois:
    input:
        mask=MASK,
        atlas=lambda wc: ATLAS_FILE.format(subject=wc.subject, atlas=ATLAS_NAME),
        scores=layer_scores,
        ceiling=subject_ceiling,
        # layers that cannot be told apart get no best layer
        cka="results/features/{model}/layer_cka.tsv",
    output:
        roi_scores="results/sub-{subject}/rois/{model}/sub-{subject}_roi-scores.tsv",
        best="results/sub-{subject}/rois/{model}/sub-{subject}_best-layer.tsv",
        # ROI-mean permutation null draws per layer, for the fixed-effects group test
        roi_null="results/sub-{subject}/rois/{model}/sub-{subject}_roi-null.npz",
        best_map=stat_maps("results/sub-{subject}/rois/{model}/sub-{subject}_desc-bestlayer_map"),
        best_stability=stat_maps(
            "results/sub-{subject}/rois/{model}/sub-{subject}_desc-bestlayerstability_map"
        ),
        best_r=stat_maps("results/sub-{subject}/rois/{model}/sub-{subject}_desc-bestlayer_stat-r"),
        best_normalised=stat_maps(
            "results/sub-{subject}/rois/{model}/sub-{subject}_desc-bestlayer_stat-normalisedr"
        ),
        significant=stat_maps(
            "results/sub-{subject}/rois/{model}/sub-{subject}_desc-significant_mask"
        ),
    log:
        "logs/rois/sub-{subject}_{model}.log",
    conda:
        "../envs/brainalign.yaml"
    params:
        rois=config["rois"],
        fdr_q=config["encoding"]["fdr_q"],
        layers=lambda wc: LAYERS[wc.model],
        ceiling=CEILING,
        kind=KIND,
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
        nulls=expand(
            "results/sub-{subject}/rois/{{model}}/sub-{subject}_roi-null.npz",
            subject=SUBJECTS,
        ),
        cka="results/features/{model}/layer_cka.tsv",
    output:
        scores="results/group/{model}/group_roi-scores.tsv",
        best="results/group/{model}/group_best-layer.tsv",
    log:
        "logs/rois/group_{model}.log",
    conda:
        "../envs/brainalign.yaml"
    params:
        group=config["group"],
    script:
        "../scripts/group_rois.py"


# Group maps over the targets every subject kept (one template grid, surface or parcellation).
rule group_maps:
    input:
        masks=expand(MASK, subject=SUBJECTS),
        # subject-major (a GIFTI pair: L then R)
        significant=lambda wc: [
            path
            for s in SUBJECTS
            for path in stat_maps(
                f"results/sub-{s}/rois/{wc.model}/sub-{s}_desc-significant_mask"
            )
        ],
        # subject-major, layers in order (a GIFTI pair: L then R)
        r_maps=lambda wc: [
            path
            for s in SUBJECTS
            for layer in LAYERS[wc.model]
            for path in stat_maps(
                f"results/sub-{s}/encoding/{wc.model}/sub-{s}_layer-{layer}_stat-r"
            )
        ],
    output:
        mean_r=GROUP_MAPS["mean_r"],
        best=GROUP_MAPS["best"],
        share=GROUP_MAPS["share"],
    log:
        "logs/rois/group_{model}_maps.log",
    conda:
        "../envs/brainalign.yaml"
    params:
        layers=lambda wc: LAYERS[wc.model],
        kind=KIND,
    script:
        "../scripts/group_maps.py"


# Best-layer maps on fsaverage5 for display (project_to_fsaverage; MNI-space volumes only).
rule project_best_layer:
    input:
        best_map="results/sub-{subject}/rois/{model}/sub-{subject}_desc-bestlayer_map.nii.gz",
    output:
        expand(
            "results/sub-{{subject}}/rois/{{model}}/sub-{{subject}}_space-fsaverage5_desc-bestlayer_hemi-{hemi}_map.func.gii",
            hemi=["L", "R"],
        ),
    log:
        "logs/rois/sub-{subject}_{model}_fsaverage.log",
    conda:
        "../envs/brainalign.yaml"
    script:
        "../scripts/project_best_layer.py"
