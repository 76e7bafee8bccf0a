# Reports: a self-contained HTML page per subject and one for the group.


rule subject_report:
    input:
        mask=MASK,
        scores=layer_scores,
        roi_scores="results/sub-{subject}/rois/{model}/sub-{subject}_roi-scores.tsv",
        best="results/sub-{subject}/rois/{model}/sub-{subject}_best-layer.tsv",
        best_map=stat_maps("results/sub-{subject}/rois/{model}/sub-{subject}_desc-bestlayer_map"),
        best_r=stat_maps("results/sub-{subject}/rois/{model}/sub-{subject}_desc-bestlayer_stat-r"),
        cka="results/features/{model}/layer_cka.tsv",
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
    script:
        "../scripts/subject_report.py"


rule group_report:
    input:
        scores="results/group/{model}/group_roi-scores.tsv",
        best="results/group/{model}/group_best-layer.tsv",
        cka="results/features/{model}/layer_cka.tsv",
        recovery=demo_targets(),
        ceiling=group_ceiling_map(),
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
        group=config.get("group", {}),
    script:
        "../scripts/group_report.py"
