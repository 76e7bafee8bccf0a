"""Config checks beyond the JSON schema: cross-references between sections, and derived values
(penalty grid, model specs, layer lists) that the rule files use."""

from __future__ import annotations

from typing import Any

import numpy as np

from .features import ModelError, ModelSpec, layer_ids, load_model_config, n_layers


class ConfigError(ValueError):
    """A configuration that is well-formed but inconsistent."""


def check(config: dict[str, Any], path: str = "config/config.yaml") -> None:
    """Cross-section consistency; raises ConfigError naming the key and the fix."""
    for run, stim in config["runs"].items():
        if stim not in config["stimuli"]:
            raise ConfigError(f"{path}: runs.{run} names stimulus '{stim}', which is not a key "
                              f"of `stimuli` ({', '.join(config['stimuli'])}).")
    onsets = config.get("onsets") or {}
    for run in onsets:
        if str(run) not in {str(r) for r in config["runs"]}:
            raise ConfigError(f"{path}: onsets.{run} names a run that is not a key of `runs` "
                              f"({', '.join(config['runs'])}).")
    first_run: dict[str, str] = {}
    for run, stim in config["runs"].items():
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
