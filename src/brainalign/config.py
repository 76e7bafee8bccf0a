"""Config checks beyond the JSON schema: cross-references between sections, and derived values
(penalty grid, model specs, layer lists) that the rule files use."""

from __future__ import annotations

from typing import Any

import numpy as np

from .features import ModelSpec, layer_ids


class ConfigError(ValueError):
    """A configuration that is well-formed but inconsistent."""


def check(config: dict[str, Any], path: str = "config/config.yaml") -> None:
    """Cross-section consistency; raises ConfigError naming the key and the fix."""
    for run, stim in config["runs"].items():
        if stim not in config["stimuli"]:
            raise ConfigError(f"{path}: runs.{run} names stimulus '{stim}', which is not a key "
                              f"of `stimuli` ({', '.join(config['stimuli'])}).")
    for name, entry in config["models"].items():
        if entry["source"] == "random" and not entry.get("architecture"):
            raise ConfigError(f"{path}: models.{name} has `source: random` but no "
                              "`architecture` (wav2vec2, hubert, wavlm, data2vec-audio, whisper).")
    demo = config["demo"]
    if demo["enabled"]:
        for key in ("text", "model", "resolution_mm", "planted", "snr"):
            if key not in demo:
                raise ConfigError(f"{path}: demo.{key} is required when demo.enabled is true.")
        if demo["model"] not in config["models"]:
            raise ConfigError(f"{path}: demo.model '{demo['model']}' is not a key of `models`.")
        n = len(layer_ids(model_spec(config, demo["model"])))
        for roi, layer in demo["planted"].items():
            if roi not in config["rois"]["groups"]:
                raise ConfigError(f"{path}: demo.planted names ROI '{roi}', which is not in "
                                  "rois.groups.")
            if layer >= n:
                raise ConfigError(f"{path}: demo.planted.{roi} = {layer}, but model "
                                  f"'{demo['model']}' has layers 0..{n - 1}.")


def alphas(grid: dict[str, Any]) -> np.ndarray:
    """Ridge penalty grid (log-spaced) from the ``encoding.alphas`` section."""
    return np.logspace(grid["min_log10"], grid["max_log10"], grid["n"])


def model_spec(config: dict[str, Any], name: str) -> ModelSpec:
    return ModelSpec.from_config(name, config["models"][name])


def model_layers(config: dict[str, Any]) -> dict[str, list[str]]:
    """{model name: layer wildcard values}, read from each model's config (no weights)."""
    return {name: layer_ids(model_spec(config, name)) for name in config["models"]}
