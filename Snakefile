# brainalign: which layer of a speech model best explains each cortical region's fMRI response.
# Data flow (all outputs under results/):
#   stimuli (.wav) -> features/{model}/{stimulus}.h5 -> aligned/{model}/{stimulus}.h5
#   fMRIPrep BOLD  -> sub-{subject}/bold/ -> sub-{subject}/encoding/{model}/ (one fit per layer)
#   all subjects' cleaned BOLD -> group/ceiling/ (inter-subject-correlation noise ceiling)
#   -> sub-{subject}/rois/{model}/ -> sub-{subject}/report/ and group/{model}/
import os

from snakemake.utils import min_version, validate

min_version("8.0")


# The default config (the demo) applies only when no --configfile is given: a user's config
# replaces it whole instead of being merged into the demo's models and ROIs.
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/alignment.smk"
include: "workflow/rules/bold.smk"
include: "workflow/rules/encoding.smk"
include: "workflow/rules/ceiling.smk"
include: "workflow/rules/rois.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        expand(
            "results/sub-{subject}/report/sub-{subject}_model-{model}.html",
            subject=SUBJECTS,
            model=MODELS,
        ),
        expand("results/group/{model}/group_report.html", model=MODELS),
        demo_outputs(),
        projection_targets(),
        comparison_targets(),  # model comparison page when >= 2 models
