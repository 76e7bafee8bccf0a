"""Tests of brainalign.config: cross-section checks of the shipped config and derived values."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from brainalign import config as C

CONFIG_PATH = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


@pytest.fixture(scope="module")
def base_config():
    with open(CONFIG_PATH) as f:
        return yaml.safe_load(f)


@pytest.fixture
def cfg(base_config):
    return copy.deepcopy(base_config)


def test_shipped_config_passes(cfg):
    C.check(cfg, str(CONFIG_PATH))


def test_run_with_unknown_stimulus_is_named(cfg):
    cfg["runs"]["5"] = "part5"
    with pytest.raises(C.ConfigError) as exc:
        C.check(cfg, "my/config.yaml")
    msg = str(exc.value)
    assert "my/config.yaml" in msg and "runs.5" in msg and "'part5'" in msg
    assert "part1" in msg  # lists the valid stimuli


def test_planted_roi_not_in_groups_is_named(cfg):
    cfg["demo"]["planted"]["A1"] = 2
    with pytest.raises(C.ConfigError) as exc:
        C.check(cfg)
    assert "demo.planted" in str(exc.value) and "'A1'" in str(exc.value)
    assert "rois.groups" in str(exc.value)


def test_planted_layer_beyond_the_model_is_named(cfg):
    cfg["demo"]["planted"]["IFG"] = 13  # wav2vec2-base has layers 0..12
    with pytest.raises(C.ConfigError, match=r"demo.planted.IFG = 13.*layers 0..12"):
        C.check(cfg)


def test_planted_rois_are_not_checked_when_demo_disabled(cfg):
    cfg["demo"]["planted"]["A1"] = 2
    cfg["demo"]["enabled"] = False
    C.check(cfg)


def test_other_cross_references(cfg):
    bad = copy.deepcopy(cfg)
    del bad["models"]["wav2vec2-random"]["architecture"]
    with pytest.raises(C.ConfigError, match="models.wav2vec2-random has `source: random`"):
        C.check(bad)
    bad = copy.deepcopy(cfg)
    bad["demo"]["model"] = "hubert-large"
    with pytest.raises(C.ConfigError, match="demo.model 'hubert-large'"):
        C.check(bad)
    bad = copy.deepcopy(cfg)
    del bad["demo"]["snr"]
    with pytest.raises(C.ConfigError, match="demo.snr is required"):
        C.check(bad)


def test_alpha_grid(cfg):
    a = C.alphas(cfg["encoding"]["alphas"])
    assert len(a) == 17 and a[0] == pytest.approx(0.1) and a[-1] == pytest.approx(1e7)
    np.testing.assert_allclose(np.diff(np.log10(a)), 0.5)


def test_model_layers_from_config_alone(cfg):
    spec = C.model_spec(cfg, "wav2vec2-random")
    assert spec.architecture == "wav2vec2" and spec.config_overrides == {"initializer_range": 0.2}
    # wav2vec2-base: CNN encoder output + 12 transformer layers
    assert C.model_layers(cfg) == {"wav2vec2-random": [f"{i:02d}" for i in range(13)]}
