"""Config checks beyond the JSON schema: cross-references between sections, and derived values
(penalty grid, model specs, layer lists) that the rule files use."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .models import ModelError, ModelSpec, layer_count, layer_ids

if TYPE_CHECKING:
    from .bids import BidsRun


class ConfigError(ValueError):
    """A configuration that is well-formed but inconsistent."""


def check(config: dict[str, Any], path: str = "config/config.yaml") -> None:
    """Cross-section consistency; raises ConfigError naming the key and the fix."""
    for run, stim in (config.get("runs") or {}).items():
        if stim not in config["stimuli"]:
            raise ConfigError(f"{path}: runs.{run} names stimulus '{stim}', which is not a key "
                              f"of `stimuli` ({', '.join(config['stimuli'])}).")
    onsets = config.get("onsets") or {}
    for run in onsets if not config.get("bids") else []:
        if str(run) not in {str(r) for r in config["runs"]}:
            raise ConfigError(f"{path}: onsets.{run} names a run that is not a key of `runs` "
                              f"({', '.join(config['runs'])}).")
    if not config.get("bids"):
        for stim in dict.fromkeys((config.get("runs") or {}).values()):
            stimulus_onset(config, stim, path)
    for name, entry in config["models"].items():
        if entry["source"] == "random" and not entry.get("architecture"):
            raise ConfigError(f"{path}: models.{name} has `source: random` but no "
                              "`architecture` (wav2vec2, hubert, wavlm, data2vec-audio, whisper).")
        if entry.get("layers") is not None:
            try:
                layer_ids(model_spec(config, name))
            except ModelError as err:
                raise ConfigError(f"{path}: models.{name}.layers: {err}") from err
    features = config["features"]
    if features.get("mode", "windowed") == "causal" and features.get("right_context_s", 0) > 0:
        raise ConfigError(f"{path}: features.right_context_s = {features['right_context_s']}, "
                          "but features.mode is causal (no right context); set it to 0, or use "
                          "mode: windowed.")
    demo = config["demo"]
    if demo["enabled"] and config.get("bids"):
        raise ConfigError(f"{path}: demo.enabled is true but a `bids` section is set; the demo "
                          "writes its own runs, so set demo.enabled: false for real data.")
    if demo["enabled"]:
        for key in ("text", "model", "resolution_mm", "planted", "snr"):
            if key not in demo:
                raise ConfigError(f"{path}: demo.{key} is required when demo.enabled is true.")
        if demo["model"] not in config["models"]:
            raise ConfigError(f"{path}: demo.model '{demo['model']}' is not a key of `models`.")
        spec = model_spec(config, demo["model"])
        n = layer_count(spec)
        for roi, layer in demo["planted"].items():
            if roi not in config["rois"]["groups"]:
                raise ConfigError(f"{path}: demo.planted names ROI '{roi}', which is not in "
                                  "rois.groups.")
            if layer >= n:
                raise ConfigError(f"{path}: demo.planted.{roi} = {layer}, but model "
                                  f"'{demo['model']}' has layers 0..{n - 1}.")
            if spec.layers is not None and layer not in spec.layers:
                raise ConfigError(f"{path}: demo.planted.{roi} = {layer}, but models."
                                  f"{demo['model']}.layers {spec.layers} does not fit it; add "
                                  "it to the list.")


def run_onset(config: dict[str, Any], run: str) -> float:
    """Seconds after the run's first kept volume at which its stimulus starts (``onsets``,
    default 0)."""
    onsets = {str(k): v for k, v in (config.get("onsets") or {}).items()}
    return float(onsets.get(str(run), 0.0))


def stimulus_onset(config: dict[str, Any], stimulus: str,
                   path: str = "config/config.yaml") -> float:
    """The onset used for every run hearing ``stimulus`` (listed runs; 0 if no run hears it):
    the median of their `onsets`, which must agree within :data:`ONSET_TOLERANCE_TR`."""
    runs = {f"run {r}": run_onset(config, r) for r, s in config["runs"].items() if s == stimulus}
    if not runs:
        return 0.0
    return shared_onset(stimulus, runs, config["tr"], path,
                        lambda far: "Give those runs the same `onsets` value as the others.")[0]


#: How far (in TRs) the onsets of one stimulus may differ across its runs. Features are aligned
#: once per stimulus, at one onset; a shift of a tenth of a TR leaves the HRF-convolved features
#: almost unchanged (r >= 0.996 between shifted and unshifted Glover-convolved white-noise
#: features sampled at TR 0.7-2 s, the worst case: speech features are smoother) and is below
#: what slice timing already spreads over each volume (a whole TR). Such jitter comes from
#: trigger logs; a larger difference is a different lead-in and would misalign the features.
ONSET_TOLERANCE_TR = 0.1


def shared_onset(stimulus: str, onsets: dict[str, float], t_r: float, path: str,
                 fix: Callable[[list[str]], str]) -> tuple[float, float]:
    """The one onset used for all runs of ``stimulus``, and the spread it stands for.

    Parameters
    ----------
    onsets : {run label (for messages): onset in s}, at least one
    fix : the remedy named when the spread is too large, given the labels of the runs farthest
        from the median

    Returns
    -------
    onset : the median onset (s)
    spread : max - min onset (s), at most ``ONSET_TOLERANCE_TR * t_r``; otherwise ConfigError
        naming the runs farthest from the median and ``fix``.
    """
    values = np.array(list(onsets.values()), dtype=float)
    median = float(np.median(values))
    spread = float(values.max() - values.min())
    tol = ONSET_TOLERANCE_TR * t_r
    if spread > tol + 1e-9:
        lo, hi = min(onsets, key=onsets.__getitem__), max(onsets, key=onsets.__getitem__)
        far = sorted((lab for lab, v in onsets.items() if abs(v - median) > tol / 2),
                     key=lambda lab: -abs(onsets[lab] - median))
        listed = ", ".join(f"{lab} ({onsets[lab]:g} s)" for lab in far[:5])
        raise ConfigError(
            f"{path}: stimulus '{stimulus}' starts {onsets[lo]:g} s into {lo} but "
            f"{onsets[hi]:g} s into {hi} (a spread of {spread:.3g} s). Features are aligned "
            f"once per stimulus, at one onset, which tolerates a spread of a tenth of the TR "
            f"({tol:.3g} s). Farthest from the median onset ({median:g} s): {listed}"
            + (f" and {len(far) - 5} more" if len(far) > 5 else "") + f". {fix(far)}")
    return median, spread


def alphas(grid: dict[str, Any]) -> np.ndarray:
    """Ridge penalty grid (log-spaced) from the ``encoding.alphas`` section."""
    return np.logspace(grid["min_log10"], grid["max_log10"], grid["n"])


def model_spec(config: dict[str, Any], name: str) -> ModelSpec:
    return ModelSpec.from_config(name, config["models"][name])


def model_layers(config: dict[str, Any]) -> dict[str, list[str]]:
    """{model name: layer wildcard values}, read from each model's config (no weights): all
    layers, or those listed in the model's ``layers``."""
    return {name: layer_ids(model_spec(config, name)) for name in config["models"]}


# ---------------------------------------------------------------------------------------------
# The dataset: which runs each subject has, where their files are, which stimulus each heard.
# Two sources: explicit lists (`subjects`, `runs`, `bold_template`, `mask_template`; the demo
# uses them) or discovery of a BIDS fMRIPrep tree (`bids` section).

@dataclass(frozen=True)
class Run:
    """One run of one subject.

    ``key`` labels the run in result file names; ``files`` are its BOLD: the NIfTI (volume), the
    left and right GIFTI (surface) or the parcel TSV (parcels); ``onset`` is the stimulus onset
    in seconds after the run's first kept volume; ``raw`` is the raw BIDS run, when found (its
    volume count is what was acquired).
    """

    subject: str
    key: str
    files: tuple[str, ...]
    mask: str | None
    stimulus: str
    onset: float
    raw: str | None = None


@dataclass
class Dataset:
    """Every run of every subject, and the audio file of every stimulus they heard."""

    kind: str
    runs: list[Run]
    stimuli: dict[str, str]

    @property
    def subjects(self) -> list[str]:
        return list(dict.fromkeys(r.subject for r in self.runs))

    def subject_runs(self, subject: str) -> list[Run]:
        return [r for r in self.runs if r.subject == subject]

    def run(self, subject: str, key: str) -> Run:
        return next(r for r in self.runs if r.subject == subject and r.key == key)

    def stimulus_onset(self, stimulus: str) -> float:
        """Onset shared by all runs of ``stimulus`` (checked by `dataset`), 0 if unheard."""
        return next((r.onset for r in self.runs if r.stimulus == stimulus), 0.0)


#: runs nested leave-one-run-out needs: one held out, two for choosing the ridge penalty
MIN_RUNS = 3


def cv_settings(config: dict[str, Any]) -> dict[str, Any]:
    """``encoding.cv`` with its defaults (scheme auto, 5 folds, 22 s gap)."""
    cv = (config.get("encoding") or {}).get("cv") or {}
    return {"scheme": cv.get("scheme", "auto"), "n_folds": int(cv.get("n_folds", 5)),
            "gap_s": float(cv.get("gap_s", 22.0))}


def cv_scheme(config: dict[str, Any], n_runs: int) -> str:
    """The folds of a subject with ``n_runs`` runs: "runs" (leave-one-run-out) or "blocks"
    (contiguous blocks of its runs); ``auto`` takes runs from MIN_RUNS runs on."""
    scheme = cv_settings(config)["scheme"]
    if scheme == "auto":
        return "runs" if n_runs >= MIN_RUNS else "blocks"
    return scheme


def run_blocks(config: dict[str, Any], n_runs: int, index: int) -> tuple[int, int]:
    """For run ``index`` of a subject with ``n_runs`` runs: how many contiguous blocks it is
    cut into (1 under the runs scheme) and the volumes dropped on each side of every border
    between two of its blocks (half of ``encoding.cv.gap_s``, rounded up)."""
    from .bold import blocks_per_run

    if cv_scheme(config, n_runs) == "runs":
        return 1, 0
    cv = cv_settings(config)
    gap = int(np.ceil(cv["gap_s"] / 2 / float(config["tr"]) - 1e-9))
    return blocks_per_run(n_runs, cv["n_folds"])[index], gap


def cv_description(config: dict[str, Any], n_runs: int) -> str:
    """One phrase saying how a subject's folds are made (for its report)."""
    scheme = cv_settings(config)["scheme"]
    if cv_scheme(config, n_runs) == "runs":
        return f"nested leave-one-run-out cross-validation ({n_runs} runs)"
    n_blocks = sum(run_blocks(config, n_runs, i)[0] for i in range(n_runs))
    gap = run_blocks(config, n_runs, 0)[1]
    return (f"block cross-validation (encoding.cv.scheme {scheme}: {n_runs} "
            f"run{'s' if n_runs > 1 else ''} cut into {n_blocks} contiguous blocks, each cleaned "
            f"on its own, {2 * gap * float(config['tr']):g} s left out around each border "
            "between blocks; folds held out one at a time, the penalty chosen by "
            "leave-one-block-out inside the training blocks)")


def dataset(config: dict[str, Any], path: str = "config/config.yaml") -> Dataset:
    """The runs of the configured dataset, discovered (``bids``) or listed; raises ConfigError
    (or BidsError) naming the file or key and the fix."""
    from .bids import BidsError

    try:
        ds = _bids_dataset(config, path) if config.get("bids") else _listed_dataset(config, path)
    except BidsError as err:
        raise ConfigError(f"{path}: {err}") from err
    min_runs = MIN_RUNS if cv_settings(config)["scheme"] == "runs" else 1
    if (config.get("bids") or {}).get("drop_subjects_with_few_runs", False):
        few = [s for s in ds.subjects if len(ds.subject_runs(s)) < min_runs]
        if few:
            logging.getLogger("brainalign.config").warning(
                "%d subject(s) with fewer than %d runs dropped: %s", len(few), min_runs,
                ", ".join(few))
        if len(few) == len(ds.subjects):
            counts = Counter(len(ds.subject_runs(s)) for s in few)
            have = "; ".join(f"{n} subject(s) with {k} run(s)" for k, n in sorted(counts.items()))
            raise ConfigError(
                f"{path}: no subject has {min_runs} or more runs matching the bids filters "
                f"({have}). Nested leave-one-run-out cross-validation needs at least {min_runs} "
                "runs per subject (one held out, two for choosing the ridge penalty). If the "
                "subjects have more runs than were "
                "found (other tasks, sessions or runs), widen `bids.tasks` / `bids.sessions` / "
                "`bids.runs`; otherwise set `encoding.cv.scheme: auto` (or `blocks`), which "
                "cuts one- and two-run subjects into contiguous blocks.")
        ds.runs = [r for r in ds.runs if r.subject not in few]
    for subject in ds.subjects:
        keys = [r.key for r in ds.subject_runs(subject)]
        if len(keys) < min_runs:
            raise ConfigError(f"{path}: sub-{subject} has {len(keys)} run(s) ({', '.join(keys)});"
                              f" nested leave-one-run-out (`encoding.cv.scheme: runs`) needs at "
                              f"least {min_runs}. Set `encoding.cv.scheme: auto` to cut one- and "
                              "two-run subjects into contiguous blocks, or add it to "
                              "`bids.exclude_subjects`.")
    blocked = [s for s in ds.subjects if cv_scheme(config, len(ds.subject_runs(s))) == "blocks"]
    if blocked:
        cv = cv_settings(config)
        logging.getLogger("brainalign.config").info(
            "block cross-validation (encoding.cv.scheme: %s; %d contiguous blocks, %g s left out "
            "between blocks) for %d of %d subject(s): %s", cv["scheme"], cv["n_folds"],
            cv["gap_s"], len(blocked), len(ds.subjects), ", ".join(blocked))
    _share_onsets(ds, config, path)
    return ds


def _share_onsets(ds: Dataset, config: dict[str, Any], path: str) -> None:
    """Give every run of a stimulus the stimulus's one onset (the median of its runs' onsets;
    see :func:`shared_onset`), logging the largest spread that was absorbed."""
    bids = config.get("bids") or {}
    from_events = bool(bids) and bids.get("stimuli_from", "events") == "events"
    by_stim: dict[str, dict[str, Run]] = {}
    for r in ds.runs:
        by_stim.setdefault(r.stimulus, {})[f"run {r.key} of sub-{r.subject}"] = r
    onset: dict[str, float] = {}
    worst = ("", 0.0)
    for stim, runs in by_stim.items():
        def fix(far: list[str], runs: dict[str, Run] = runs) -> str:
            if not from_events:
                return "Give those runs the same `onsets` value as the others."
            subjects = ", ".join(dict.fromkeys(runs[lab].subject for lab in far))
            return ("Correct the onsets in those runs' events.tsv if they are wrong, or leave "
                    f"those subjects out with `bids.exclude_subjects: [{subjects}]`.")

        labels = {lab: r.onset for lab, r in runs.items()}
        onset[stim], spread = shared_onset(stim, labels, config["tr"], path, fix)
        if spread > worst[1]:
            worst = (stim, spread)
    if worst[1] > 1e-9:
        logging.getLogger("brainalign.config").warning(
            "stimulus onsets differ across runs by up to %.0f ms (stimulus '%s'), within the "
            "tolerance of a tenth of the TR (%.0f ms); each stimulus is aligned at the median "
            "onset of its runs", 1000 * worst[1], worst[0],
            1000 * ONSET_TOLERANCE_TR * config["tr"])
    ds.runs = [replace(r, onset=onset[r.stimulus]) for r in ds.runs]


def _listed_dataset(config: dict[str, Any], path: str) -> Dataset:
    """The runs listed in the config (``bold_template`` and ``mask_template``): volume input."""
    from .targets import VolumeTargets

    for key in ("subjects", "runs", "bold_template", "mask_template", "task", "space"):
        if key not in config:
            raise ConfigError(f"{path}: `{key}` is required unless a `bids` section discovers "
                              "the runs.")
    dup = sorted({s for s in config["subjects"] if config["subjects"].count(s) > 1})
    if dup:
        raise ConfigError(f"{path}: subjects lists {dup} more than once; list each subject once.")
    runs = []
    for subject in config["subjects"]:
        for key, stim in config["runs"].items():
            fill = {"subject": subject, "task": config["task"], "run": key,
                    "space": config["space"]}
            runs.append(Run(str(subject), str(key), (config["bold_template"].format(**fill),),
                            config["mask_template"].format(**fill), stim,
                            run_onset(config, key)))
    return Dataset(VolumeTargets.kind, runs, dict(config["stimuli"]))


def _bids_dataset(config: dict[str, Any], path: str) -> Dataset:
    from .bids import (
        BidsError,
        BidsFilters,
        SeveralStimuliError,
        discover_runs,
        events_stimulus,
        find_events,
        raw_bold,
    )

    b = config["bids"]
    filters = BidsFilters.from_config(b)
    found = discover_runs(b["root"], filters)
    skip_s = config.get("bold", {}).get("start_volume", 0) * config["tr"]
    stimuli = dict(config.get("stimuli") or {})
    table = {str(k): v for k, v in (b.get("stimulus_table") or {}).items()}
    onsets = {str(k): float(v) for k, v in (config.get("onsets") or {}).items()}
    raw = Path(b.get("raw") or b["root"])
    stim_dir = Path(b.get("stimuli_dir") or raw / "stimuli")
    runs, no_events, several = [], [], []
    for fr in found:
        if b.get("stimuli_from", "events") == "table":
            stim = table.get(fr.key, table.get(fr.task))
            if stim is None:
                raise ConfigError(f"{path}: bids.stimulus_table has no entry for run "
                                  f"'{fr.key}' (task '{fr.task}') of sub-{fr.subject} "
                                  f"({fr.files[0]}); add one (keys: run key or task label).")
            if stim not in stimuli:
                raise ConfigError(f"{path}: bids.stimulus_table maps '{fr.key}' to stimulus "
                                  f"'{stim}', which is not a key of `stimuli`.")
            onset = onsets.get(fr.key, onsets.get(fr.task, 0.0))
        else:
            events = find_events(raw, fr)
            if events is None:
                no_events.append(fr)
                continue
            try:
                stim, audio, onset = events_stimulus(str(events), str(stim_dir))
            except SeveralStimuliError:
                several.append(fr)
                continue
            if stimuli.setdefault(stim, audio) != audio:
                raise BidsError(f"{events}: stimulus name '{stim}' stands for both "
                                f"{stimuli[stim]} and {audio}; rename one of the files.")
            # may be negative: the audio started before the first kept volume (cropped)
            onset -= skip_s
        found_raw = raw_bold(raw, fr)
        runs.append(Run(fr.subject, fr.key, fr.files, fr.mask, stim, onset,
                        None if found_raw is None else str(found_raw)))
    if no_events:
        raise BidsError(_no_events_message(no_events, found, raw))
    if several:
        _log_several_stimuli(several, found, raw, bool(runs))
    early = [r for r in runs if r.onset < 0]
    if early:
        logging.getLogger("brainalign.config").info(
            "%d run(s) start after their stimulus began (e.g. run %s of sub-%s, %.3g s after "
            "the audio's start): their features are those of the whole stimulus, cropped to "
            "the kept volumes", len(early), early[0].key, early[0].subject, -early[0].onset)
    heard = dict.fromkeys(r.stimulus for r in runs)  # only these are extracted
    return Dataset(filters.kind, runs, {s: stimuli[s] for s in heard})


def _log_several_stimuli(several: list[BidsRun], found: list[BidsRun], raw: Path,
                         any_left: bool) -> None:
    """One warning for the runs left out because their events name several audio files (by
    task; e.g. Narratives' schema runs), or an error when no run is left."""
    from .bids import BidsError

    tasks = list(dict.fromkeys(r.task for r in several))
    out = {(r.subject, r.key) for r in several}
    whole = [t for t in tasks if all(r.task != t or (r.subject, r.key) in out for r in found)]
    msg = (f"{len(several)} run(s) of {len({r.subject for r in several})} subject(s) left out, "
           f"task(s) {', '.join(repr(t) for t in tasks)}: their events.tsv (under {raw}) name "
           "several audio files in one run (e.g. several stories, or a movie), and brainalign "
           "maps each run to one stimulus. ")
    if not any_left:
        raise BidsError(msg + "No run is left: map the runs in `bids.stimulus_table` "
                        "(`bids.stimuli_from: table`) or split them into one run per story.")
    logging.getLogger("brainalign.config").warning(
        "%s%s", msg, f"List the other tasks in `bids.tasks` to silence this (leaving out "
        f"{', '.join(whole)})." if whole else "Split those runs into one run per story to "
        "analyse them.")


def _no_events_message(no_events: list[BidsRun], found: list[BidsRun], raw: Path) -> str:
    """Runs without events, by task, and the `bids.tasks` list that keeps only tasks whose runs
    all have events (a rest run in the same tree is the usual cause)."""
    missing = list(dict.fromkeys(r.task for r in no_events))
    ok = sorted({r.task for r in found} - set(missing))
    n_subjects = len({r.subject for r in no_events})
    tasks = ", ".join(f"'{t}'" for t in missing)
    msg = (f"{no_events[0].files[0]}: no events.tsv for {len(no_events)} run(s) of "
           f"{n_subjects} subject(s), task(s) {tasks}, under {raw} (looked next to each raw "
           "run and at the dataset root). ")
    if ok:
        msg += ("If those runs heard no stimulus (e.g. rest), keep only the tasks with events: "
                f"`bids.tasks: [{', '.join(ok)}]`. ")
    return msg + ("If they did, set `bids.raw` to the raw BIDS dataset holding their events, "
                  "or map runs to stimuli with `bids.stimuli_from: table`.")
