# Shared names: subjects, runs, models and their layers, and path helpers for the rules.
import brainalign.alignment as align_lib
import brainalign.bold as bold_lib
import brainalign.config as bacfg
from brainalign.targets import for_kind

bacfg.check(config)

# --- dataset: runs per subject, listed in the config or discovered in a BIDS tree ---
DATASET = bacfg.dataset(
    config, str(workflow.configfiles[-1]) if workflow.configfiles else "config"
)
SUBJECTS = DATASET.subjects
# the explicit run list, shared by all subjects (the demo writes one file per listed run)
RUNS = [str(r) for r in config.get("runs") or {}] if not config.get("bids") else []
STIMULI = list(DATASET.stimuli)
KIND = DATASET.kind  # the name of the input kind, passed to the scripts
# the input kind's class (brainalign.targets): its files' suffixes, how runs become targets
TARGETS = for_kind(KIND)
# the subject's targets: brain mask (NIfTI), or kept fsaverage vertices / parcels (npz)
MASK = f"results/sub-{{subject}}/bold/sub-{{subject}}_desc-brain_mask{TARGETS.mask_suffix}"
# maps sampled on fsaverage5 for display (project_to_fsaverage; MNI-space volumes)
PROJECT = TARGETS.projectable and config["project_to_fsaverage"]


def stat_maps(prefix):
    """A map's file(s): one NIfTI, a GIFTI per hemisphere on the input surface, or a TSV of
    parcels."""
    return TARGETS.map_files(prefix)


def projection_targets():
    """Best-layer maps sampled on fsaverage5 (project_to_fsaverage)."""
    if not PROJECT:
        return []
    return expand(
        "results/sub-{subject}/rois/{model}/sub-{subject}_space-fsaverage5_desc-bestlayer_hemi-{hemi}_map.func.gii",
        subject=SUBJECTS,
        model=MODELS,
        hemi=["L", "R"],
    )


def subject_projection(wildcards):
    """The subject's best-layer map sampled on fsaverage5 (project_to_fsaverage), or nothing."""
    if not PROJECT:
        return []
    return expand(
        "results/sub-{subject}/rois/{model}/sub-{subject}_space-fsaverage5_desc-bestlayer_hemi-{hemi}_map.func.gii",
        subject=wildcards.subject,
        model=wildcards.model,
        hemi=["L", "R"],
    )


# group maps over the targets all subjects kept (rule group_maps)
GROUP_MAPS = {
    key: stat_maps(f"results/group/{{model}}/group_desc-{desc}_{suffix}")
    for key, desc, suffix in (
        ("mean_r", "layers", "stat-r"),
        ("best", "bestlayer", "map"),
        ("share", "significantshare", "map"),
    )
}


# --- end dataset ---
MODELS = list(config["models"])
LAYERS = bacfg.model_layers(config)


wildcard_constraints:
    subject="[A-Za-z0-9]+",
    run="[A-Za-z0-9-]+",
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
    """fMRIPrep's confounds TSV beside a listed BOLD run."""
    return str(bold_lib.confounds_path(bold_path(subject, run)))


def confound_inputs(wildcards):
    """fMRIPrep's confounds TSV beside the run when a confound strategy is configured, else
    nothing."""
    if not config["bold"]["confounds"]["strategy"]:
        return []
    run = DATASET.run(wildcards.subject, wildcards.run)
    return [str(bold_lib.confounds_path(run.files[0]))]


def run_stimuli():
    """Stimulus name of each listed run, in run order (explicit run lists: the demo)."""
    return [config["runs"][r] for r in RUNS]


def subject_runs(subject):
    """The runs of one subject (brainalign.config.Run), in a fixed order."""
    return DATASET.subject_runs(subject)


def stimulus_file(stimulus):
    return DATASET.stimuli[stimulus]


def first_volume(subject, run):
    """First analysed volume of a run (after bold.start_volume): the silence before its
    stimulus, the onset transient (bold.exclude_onset_s) and, with FIR/Lanczos delays, the rows
    without full history are left out of the BOLD and the features alike."""
    acfg = config["alignment"]
    return align_lib.first_volume(
        DATASET.run(subject, run).onset,
        config["tr"],
        config["bold"]["exclude_onset_s"],
        acfg["method"],
        acfg["fir_delays"],
    )


def run_blocks(subject, run):
    """(blocks, gap volumes each side) of a run: 1 and 0 under leave-one-run-out, else the
    contiguous blocks it is cut into for block cross-validation (encoding.cv)."""
    keys = [r.key for r in subject_runs(subject)]
    return bacfg.run_blocks(config, len(keys), keys.index(run))


def cv_description(subject):
    """How the subject's folds were made, for its report."""
    return bacfg.cv_description(config, len(subject_runs(subject)))


def layer_scores(wildcards):
    return expand(
        "results/sub-{subject}/encoding/{model}/sub-{subject}_layer-{layer}_scores.npz",
        subject=wildcards.subject,
        model=wildcards.model,
        layer=LAYERS[wildcards.model],
    )


# packaged atlases keep their canonical name in file names (schaefer-400-7 -> schaefer_400_7);
# a user's atlas file is "custom". A name that does not suit the input is refused here.
try:
    ATLAS_NAME = TARGETS.check_atlas(
        config["rois"]["atlas"], (config.get("bids") or {}).get("space")
    )
except ValueError as err:
    raise bacfg.ConfigError(f"{(workflow.configfiles or ['config'])[-1]}: {err}") from err
# label image on the subject's grid (volume), or labels + names over the vertices (surface)
ATLAS_FILE = (
    f"results/sub-{{subject}}/rois/sub-{{subject}}_atlas-{{atlas}}_dseg{TARGETS.atlas_suffix}"
)


# The embedded demo's truth files (rules in demo.smk).
DEMO = config["demo"]
TRUTH = "results/demo/truth/sub-{subject}_desc-truth_rois.tsv"
SIGNAL_LAYER = "results/demo/truth/sub-{subject}_desc-signal_layer.nii.gz"


def demo_outputs():
    if not DEMO["enabled"]:
        return []
    return ["results/group/demo_recovery.tsv"]


# The noise ceiling (rules in ceiling.smk); off with `ceiling.method: none`. Volume data in one
# template space: the ISC ceiling from the subjects who heard each story (explicit run lists or
# BIDS-discovered runs); the repeated-stimulus ceiling needs an explicit run list. Surfaces
# (one fsaverage mesh) and parcels (one parcellation) alike, on the targets all subjects kept.
CEILING = config["ceiling"]
CEILING_ON = CEILING["method"] == "isc" or (
    CEILING["method"] == "repeat" and bool(RUNS)
)


def ceiling_bold(kind="bold"):
    """Every subject's prepared BOLD runs (or their confounds: kind="confounds"),
    subject-major, in each subject's run order."""
    return [
        f"results/sub-{s}/bold/sub-{s}_run-{r.key}_{kind}.npy"
        for s in SUBJECTS
        for r in subject_runs(s)
    ]


def ceiling_match_labels():
    """Per subject, the label each of its runs (the order of ceiling_bold) is matched on across
    subjects: the run key in an explicit run list (every subject's runs in sync), else its
    story (BIDS: subjects may have heard different stories)."""
    return [[r.key if RUNS else r.stimulus for r in subject_runs(s)] for s in SUBJECTS]


def subject_ceiling(wildcards):
    """The subject's ceiling file, or nothing when the ceiling is switched off."""
    if not CEILING_ON:
        return []
    return [f"results/group/ceiling/sub-{wildcards.subject}_desc-ceiling.npz"]


def group_ceiling_map(name):
    """The group noise-ceiling map (name="stat-r") or its usable-target mask (name="mask"), or
    nothing when the ceiling is switched off."""
    if not CEILING_ON:
        return []
    return stat_maps(f"results/group/ceiling/group_desc-ceiling_{name}")


# ---- Model comparison: a page comparing models, when two or more are configured ----
def comparison_targets():
    if len(MODELS) < 2:
        return []
    return ["results/group/model_comparison.html"]
