# Shared names: subjects, runs, models and their layers, and path helpers for the rules.
import brainalign.config as bacfg

bacfg.check(config)

SUBJECTS = list(config["subjects"])
RUNS = list(config["runs"])
MODELS = list(config["models"])
STIMULI = list(config["stimuli"])
LAYERS = bacfg.model_layers(config)


wildcard_constraints:
    subject="[A-Za-z0-9]+",
    run="[A-Za-z0-9]+",
    model="[A-Za-z0-9_.-]+",
    layer="[0-9]+",
    stimulus="[A-Za-z0-9_-]+",
    atlas="[A-Za-z0-9_]+",


def bold_path(subject, run):
    return config["bold_template"].format(
        subject=subject, task=config["task"], run=run, space=config["space"]
    )


def mask_path(subject, run):
    return config["mask_template"].format(
        subject=subject, task=config["task"], run=run, space=config["space"]
    )


def run_stimuli():
    """Stimulus name of each run, in run order."""
    return [config["runs"][r] for r in RUNS]


def layer_scores(wildcards):
    return expand(
        "results/sub-{subject}/encoding/{model}/sub-{subject}_layer-{layer}_scores.npz",
        subject=wildcards.subject,
        model=wildcards.model,
        layer=LAYERS[wildcards.model],
    )


# packaged atlases keep their name in file names; a user's atlas file is "custom"
ATLAS_NAME = (
    config["rois"]["atlas"]
    if config["rois"]["atlas"] in ("harvard_oxford", "destrieux")
    else "custom"
)


# The embedded demo's truth files (rules in demo.smk).
DEMO = config["demo"]
TRUTH = "results/demo/truth/sub-{subject}_desc-truth_rois.tsv"
SIGNAL_LAYER = "results/demo/truth/sub-{subject}_desc-signal_layer.nii.gz"


def demo_targets():
    if not DEMO["enabled"]:
        return []
    return ["results/group/demo_recovery.tsv"]


# ---- Model comparison (issue 6): a page comparing models, when two or more are configured ----
def comparison_targets():
    if len(MODELS) < 2:
        return []
    return ["results/group/model_comparison.html"]
