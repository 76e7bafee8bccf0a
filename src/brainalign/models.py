"""Speech models as the config names them: what a model entry means, its transformers config
(read without weights, cheap) and what follows from it (layers, frame geometry).

Kept apart from :mod:`brainalign.features` so that building the workflow's DAG (which asks for
every model's layer count) does not import torch.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: architectures that ``source: random`` can build from a config alone (offline)
RANDOM_ARCHITECTURES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "whisper")


class ModelError(ValueError):
    """A model that cannot be loaded or used as configured."""


@dataclass
class ModelSpec:
    """One model entry of the config.

    ``source`` is a Hugging Face hub id, a local directory, or ``"random"`` (seeded random
    initialisation of ``architecture``, with ``config_overrides`` applied to its default config).
    ``layers`` selects the layers the workflow fits (None: all); extraction writes all of them.
    """

    name: str
    source: str
    architecture: str | None = None
    seed: int = 0
    config_overrides: dict[str, Any] = field(default_factory=dict)
    layers: list[int] | None = None

    @classmethod
    def from_config(cls, name: str, entry: dict[str, Any]) -> ModelSpec:
        layers = entry.get("layers")
        return cls(name=name, source=entry["source"], architecture=entry.get("architecture"),
                   seed=int(entry.get("seed", 0)),
                   config_overrides=dict(entry.get("config_overrides", {}) or {}),
                   layers=None if layers is None else [int(i) for i in layers])


@dataclass(frozen=True)
class FrameGeometry:
    """Where a model's output frames sit in the input: frame k of a chunk starting at sample a is
    centred at sample ``a + k * stride + offset``; it needs ``margin`` samples after its start."""

    stride: int
    offset: float
    margin: int
    max_input: int | None = None  # fixed input length (Whisper: 30 s), None when unbounded


def _random_config(arch: str, overrides: dict[str, Any]):
    from transformers import (
        Data2VecAudioConfig,
        HubertConfig,
        Wav2Vec2Config,
        WavLMConfig,
        WhisperConfig,
    )

    classes = {"wav2vec2": Wav2Vec2Config, "hubert": HubertConfig, "wavlm": WavLMConfig,
               "data2vec-audio": Data2VecAudioConfig, "whisper": WhisperConfig}
    if arch not in classes:
        raise ModelError(f"unknown architecture '{arch}' for a random model; choose one of "
                         f"{', '.join(RANDOM_ARCHITECTURES)}.")
    return classes[arch](**overrides)


def load_model_config(spec: ModelSpec):
    """The transformers config of ``spec`` without loading weights (cheap; used at DAG time)."""
    if spec.source == "random":
        if not spec.architecture:
            raise ModelError(f"model '{spec.name}': `source: random` needs `architecture` "
                             f"(one of {', '.join(RANDOM_ARCHITECTURES)}).")
        return _random_config(spec.architecture, spec.config_overrides)
    if spec.source not in _LOADED_CONFIGS:
        _LOADED_CONFIGS[spec.source] = _load_pretrained_config(spec)
    # a copy: models built from it change their config (attention implementation)
    return copy.deepcopy(_LOADED_CONFIGS[spec.source])


#: configs read from the hub or disk, by source (the DAG asks for each model's several times)
_LOADED_CONFIGS: dict[str, Any] = {}


def _load_pretrained_config(spec: ModelSpec):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(spec.source)
    except (OSError, ValueError) as err:
        local = Path(spec.source).exists()
        where = ("the local directory has no usable config.json" if local else
                 "it is not a local directory, and the Hugging Face hub did not provide it "
                 "(no network, or no such model id)")
        raise ModelError(
            f"model '{spec.name}': cannot load '{spec.source}': {where}. Check the id or path; on "
            f"a machine without internet, download it once elsewhere (`hf download "
            f"{spec.source}`) and set `source` to the local copy.") from err


def is_whisper(config) -> bool:
    return getattr(config, "model_type", "") == "whisper"


def n_layers(config) -> int:
    """Number of layers brainalign reads out: the input representation plus each transformer
    layer."""
    if is_whisper(config):
        return int(config.encoder_layers) + 1
    return int(config.num_hidden_layers) + 1


#: transformer layers of each random architecture at transformers' defaults (its config
#: classes' ``num_hidden_layers``; Whisper: ``encoder_layers``), checked against transformers
#: by the tests
DEFAULT_DEPTH = {"wav2vec2": 12, "hubert": 12, "wavlm": 12, "data2vec-audio": 12, "whisper": 4}


def layer_count(spec: ModelSpec) -> int:
    """:func:`n_layers` of ``spec``'s model read from its ``config.json`` (or, for a random
    model, from its architecture's default and overrides) without transformers, which imports
    torch: the workflow's DAG, built for every job a cluster runs, asks for it."""
    if spec.source == "random":
        if spec.architecture not in DEFAULT_DEPTH:
            load_model_config(spec)  # raises the ModelError that names the architectures
        depth = spec.config_overrides.get("num_hidden_layers")  # Whisper's alias wins, too
        if depth is None and spec.architecture == "whisper":
            depth = spec.config_overrides.get("encoder_layers")
        return int(DEFAULT_DEPTH[spec.architecture] if depth is None else depth) + 1
    local = Path(spec.source)
    path = local / "config.json" if local.is_dir() else None
    if path is None:
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(spec.source, "config.json"))
        except Exception:  # the hub's many errors: fall back to transformers' own message
            return n_layers(load_model_config(spec))
    try:
        entry = json.loads(path.read_text())
        key = "encoder_layers" if entry.get("model_type") == "whisper" else "num_hidden_layers"
        return int(entry[key]) + 1
    except (OSError, ValueError, KeyError):
        return n_layers(load_model_config(spec))


def layer_ids(spec: ModelSpec) -> list[str]:
    """Layer wildcard values (``"00"``, ``"01"``, ...) for ``spec``: all layers, or the selected
    ``spec.layers`` (sorted, validated against the model's layer count)."""
    n = layer_count(spec)
    if spec.layers is None:
        return [f"{i:02d}" for i in range(n)]
    if not spec.layers:
        raise ModelError(f"model '{spec.name}': `layers` is empty; list some of 0..{n - 1}, or "
                         "remove the key to use all layers.")
    bad = sorted({i for i in spec.layers if not 0 <= i < n})
    if bad:
        raise ModelError(f"model '{spec.name}': `layers` {bad} out of range; this model has "
                         f"layers 0..{n - 1} (0 = input representation, 1..{n - 1} = "
                         "transformer layers).")
    return [f"{i:02d}" for i in sorted(set(spec.layers))]


def frame_geometry(config) -> FrameGeometry:
    """Output-frame geometry of a model, derived from its config."""
    if is_whisper(config):
        # log-mel hop 160 samples, then a stride-2 conv: 20 ms frames centred on 320 k samples
        return FrameGeometry(stride=320, offset=0.0, margin=360,
                             max_input=int(config.max_source_positions) * 320)
    kernels, strides = list(config.conv_kernel), list(config.conv_stride)
    receptive, jump = 1, 1
    for k, s in zip(kernels, strides, strict=True):
        receptive += (k - 1) * jump
        jump *= s
    return FrameGeometry(stride=jump, offset=receptive / 2, margin=receptive - jump)
