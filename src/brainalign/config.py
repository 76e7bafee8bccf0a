"""Config checks beyond the JSON schema: cross-references between sections, and derived values
(penalty grid, model specs, layer lists) that the rule files use."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from .features import ModelError, ModelSpec, layer_ids, load_model_config, n_layers


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
    first_run: dict[str, str] = {}
    for run, stim in (config.get("runs") or {}).items():
        other = first_run.setdefault(stim, run)
        if run_onset(config, run) != run_onset(config, other):
            raise ConfigError(
                f"{path}: runs {other} and {run} both hear stimulus '{stim}' but have different "
                f"onsets ({run_onset(config, other)} s and {run_onset(config, run)} s); features "
                "are aligned once per stimulus, so runs of the same stimulus need the same "
                "`onsets` value.")
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
        n = n_layers(load_model_config(spec))
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


def stimulus_onset(config: dict[str, Any], stimulus: str) -> float:
    """The onset shared by every run hearing ``stimulus`` (0 if no run hears it); `check`
    guarantees those runs agree."""
    runs = [r for r, s in config["runs"].items() if s == stimulus]
    return run_onset(config, runs[0]) if runs else 0.0


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

    ``key`` labels the run in result file names; ``targets`` is the BOLD NIfTI (volume), the
    left and right GIFTI (surface) or the parcel TSV (parcels); ``onset`` is the stimulus onset
    in seconds after the run's first kept volume.
    """

    subject: str
    key: str
    targets: tuple[str, ...]
    mask: str | None
    stimulus: str
    onset: float


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


def dataset(config: dict[str, Any], path: str = "config/config.yaml") -> Dataset:
    """The runs of the configured dataset, discovered (``bids``) or listed; raises ConfigError
    (or BidsError) naming the file or key and the fix."""
    from .bids import BidsError

    try:
        ds = _bids_dataset(config, path) if config.get("bids") else _listed_dataset(config, path)
    except BidsError as err:
        raise ConfigError(f"{path}: {err}") from err
    min_runs = 3  # outer leave-one-run-out, and inner leave-one-run-out on >= 2 runs
    if (config.get("bids") or {}).get("drop_subjects_with_few_runs", False):
        few = [s for s in ds.subjects if len(ds.subject_runs(s)) < min_runs]
        if few:
            logging.getLogger("brainalign.config").warning(
                "%d subject(s) with fewer than %d runs dropped: %s", len(few), min_runs,
                ", ".join(few))
        ds.runs = [r for r in ds.runs if r.subject not in few]
        if not ds.runs:
            raise ConfigError(f"{path}: no subject has {min_runs} or more runs matching the "
                              "bids filters; widen `bids.tasks`.")
    for subject in ds.subjects:
        keys = [r.key for r in ds.subject_runs(subject)]
        if len(keys) < min_runs:
            raise ConfigError(f"{path}: sub-{subject} has {len(keys)} run(s) ({', '.join(keys)});"
                              f" nested leave-one-run-out needs at least {min_runs}. Add it to "
                              "`bids.exclude_subjects` or widen the task/run filters.")
    first: dict[str, Run] = {}
    for run in ds.runs:
        other = first.setdefault(run.stimulus, run)
        if abs(run.onset - other.onset) > 1e-6:
            raise ConfigError(
                f"{path}: stimulus '{run.stimulus}' starts {other.onset} s into run "
                f"{other.key} of sub-{other.subject} but {run.onset} s into run {run.key} of "
                f"sub-{run.subject}; features are aligned once per stimulus, so every run of a "
                "stimulus needs the same onset (trim the runs with `bold.start_volume` or fix "
                "the events/onsets).")
    return ds


def _listed_dataset(config: dict[str, Any], path: str) -> Dataset:
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
    return Dataset("volume", runs, dict(config["stimuli"]))


def _bids_dataset(config: dict[str, Any], path: str) -> Dataset:
    from pathlib import Path

    from .bids import BidsError, discover_runs, events_stimulus, find_events

    b = config["bids"]
    found = discover_runs(b["root"], b.get("target", "volume"), b["space"],
                          None if b.get("res") is None else str(b["res"]), b.get("desc"),
                          [str(s) for s in b.get("subjects") or []],
                          [str(s) for s in b.get("exclude_subjects") or []],
                          b.get("tasks"), [str(s) for s in b.get("sessions") or []],
                          [str(r) for r in b.get("runs") or []])
    skip_s = config.get("bold", {}).get("start_volume", 0) * config["tr"]
    stimuli = dict(config.get("stimuli") or {})
    table = {str(k): v for k, v in (b.get("stimulus_table") or {}).items()}
    onsets = {str(k): float(v) for k, v in (config.get("onsets") or {}).items()}
    raw = Path(b.get("raw") or b["root"])
    stim_dir = Path(b.get("stimuli_dir") or raw / "stimuli")
    runs = []
    for fr in found:
        if b.get("stimuli_from", "events") == "table":
            stim = table.get(fr.key, table.get(fr.task))
            if stim is None:
                raise ConfigError(f"{path}: bids.stimulus_table has no entry for run "
                                  f"'{fr.key}' (task '{fr.task}') of sub-{fr.subject} "
                                  f"({fr.targets[0]}); add one (keys: run key or task label).")
            if stim not in stimuli:
                raise ConfigError(f"{path}: bids.stimulus_table maps '{fr.key}' to stimulus "
                                  f"'{stim}', which is not a key of `stimuli`.")
            onset = onsets.get(fr.key, onsets.get(fr.task, 0.0))
        else:
            events = find_events(raw, fr)
            if events is None:
                raise BidsError(f"{fr.targets[0]}: no events.tsv for this run under {raw} (next "
                                "to the raw run or at the dataset root); set `bids.raw` to the "
                                "raw BIDS dataset, or use `bids.stimuli_from: table`.")
            stim, audio, onset = events_stimulus(str(events), str(stim_dir))
            if stimuli.setdefault(stim, audio) != audio:
                raise BidsError(f"{events}: stimulus name '{stim}' stands for both "
                                f"{stimuli[stim]} and {audio}; rename one of the files.")
            onset -= skip_s
            if onset < 0:
                raise BidsError(f"{events}: stimulus starts at {onset + skip_s} s, before the "
                                f"first kept volume (bold.start_volume = "
                                f"{config['bold']['start_volume']}); lower bold.start_volume.")
        runs.append(Run(fr.subject, fr.key, fr.targets, fr.mask, stim, onset))
    heard = dict.fromkeys(r.stimulus for r in runs)  # only these are extracted
    return Dataset(b.get("target", "volume"), runs, {s: stimuli[s] for s in heard})
