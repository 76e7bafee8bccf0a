# Reports: a self-contained HTML page per subject and one for the group.


rule subject_report:
    input:
        mask=MASK,
        scores=layer_scores,
        roi_scores="results/sub-{subject}/rois/{model}/sub-{subject}_roi-scores.tsv",
        best="results/sub-{subject}/rois/{model}/sub-{subject}_best-layer.tsv",
        best_map=stat_maps("results/sub-{subject}/rois/{model}/sub-{subject}_desc-bestlayer_map"),
        best_r=stat_maps("results/sub-{subject}/rois/{model}/sub-{subject}_desc-bestlayer_stat-r"),
        significant=stat_maps(
            "results/sub-{subject}/rois/{model}/sub-{subject}_desc-significant_mask"
        ),
        cka="results/features/{model}/layer_cka.tsv",
        # volumes with project_to_fsaverage: the best-layer map on fsaverage5, drawn inflated
        projected=subject_projection,
    output:
        report(
            "results/sub-{subject}/report/sub-{subject}_model-{model}.html",
            caption="../report/subject.rst",
            category="Subjects",
        ),
    log:
        "logs/report/sub-{subject}_{model}.log",
    conda:
        "../envs/brainalign.yaml"
    params:
        layers=lambda wc: LAYERS[wc.model],
        alphas=config["encoding"]["alphas"],
        kind=KIND,
        fdr_q=config["encoding"]["fdr_q"],
        # the subject's folds, as encoding.cv chose them
        cv=lambda wc: cv_description(wc.subject),
    script:
        "../scripts/subject_report.py"


rule group_report:
    input:
        scores="results/group/{model}/group_roi-scores.tsv",
        best="results/group/{model}/group_best-layer.tsv",
        cka="results/features/{model}/layer_cka.tsv",
        recovery=demo_outputs(),
        ceiling=group_ceiling_map("stat-r"),
        usable=group_ceiling_map("mask"),
        masks=expand(MASK, subject=SUBJECTS),
        # the group maps (rule group_maps), drawn as the input kind draws them
        mean_r=GROUP_MAPS["mean_r"],
        best_map=GROUP_MAPS["best"],
        share=GROUP_MAPS["share"],
    output:
        report(
            "results/group/{model}/group_report.html",
            caption="../report/group.rst",
            category="Group",
        ),
    log:
        "logs/report/group_{model}.log",
    conda:
        "../envs/brainalign.yaml"
    params:
        group=config["group"],
        layers=lambda wc: LAYERS[wc.model],
        fdr_q=config["encoding"]["fdr_q"],
        # volumes: the group best-layer map also sampled on fsaverage5 and drawn inflated
        project=PROJECT,
        kind=KIND,
    script:
        "../scripts/group_report.py"


# ---- Model comparison: only when two or more models are configured ----


rule compare_models:
    input:
        roi_scores=expand(
            "results/sub-{subject}/rois/{model}/sub-{subject}_roi-scores.tsv",
            subject=SUBJECTS,
            model=MODELS,
        ),
    output:
        table="results/group/model_comparison.tsv",
        page=report(
            "results/group/model_comparison.html",
            caption="../report/comparison.rst",
            category="Group",
        ),
    log:
        "logs/report/model_comparison.log",
    conda:
        "../envs/brainalign.yaml"
    params:
        subjects=SUBJECTS,
        models=MODELS,
    script:
        "../scripts/compare_models_report.py"
