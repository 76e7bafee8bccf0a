# Shared names: subjects, runs, models and their layers, and path helpers for the rules.
import brainalign.bold as bold_lib
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


def confounds_path(subject, run):
    """fMRIPrep's confounds TSV beside a BOLD run."""
    return str(bold_lib.confounds_path(bold_path(subject, run)))


def confound_inputs(wildcards):
    """The runs' confounds TSVs when a confound strategy is configured, else nothing."""
    if not config["bold"].get("confounds", {}).get("strategy"):
        return []
    return [confounds_path(wildcards.subject, r) for r in RUNS]


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


# The noise ceiling (rules in ceiling.smk); off with `ceiling.method: none`.
CEILING = config.get("ceiling", {})


def subject_ceiling(wildcards):
    """The subject's ceiling file, or nothing when the ceiling is switched off."""
    if CEILING.get("method", "isc") == "none":
        return []
    return [f"results/group/ceiling/sub-{wildcards.subject}_desc-ceiling.npz"]


def group_ceiling_map():
    """The group noise-ceiling map and its usable-voxel mask, or nothing when the ceiling is
    switched off."""
    if CEILING.get("method", "isc") == "none":
        return []
    return [
        "results/group/ceiling/group_desc-ceiling_stat-r.nii.gz",
        "results/group/ceiling/group_desc-ceiling_mask.nii.gz",
    ]
