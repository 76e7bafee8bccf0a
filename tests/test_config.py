"""Tests of brainalign.config: cross-section checks of the shipped config and derived values."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from brainalign import config as C

ROOT = Path(__file__).resolve().parents[1]
CONFIG_PATH = ROOT / "config" / "config.yaml"
SCHEMA_PATH = ROOT / "workflow" / "schemas" / "config.schema.yaml"
PRESETS = sorted((ROOT / "config" / "examples").glob("*.yaml"))


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


def _validator():
    jsonschema = pytest.importorskip("jsonschema")
    with open(SCHEMA_PATH) as f:
        return jsonschema.Draft202012Validator(yaml.safe_load(f))


def test_shipped_config_validates_against_the_schema(base_config):
    errors = [e.message for e in _validator().iter_errors(base_config)]
    assert not errors


def test_presets_exist():
    assert {p.name for p in PRESETS} >= {"millet2022.yaml", "huth.yaml"}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_validates_and_passes_cross_checks(preset):
    with open(preset) as f:
        cfg = yaml.safe_load(f)
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in _validator().iter_errors(cfg)]
    assert not errors, errors
    assert cfg["demo"]["enabled"] is False
    C.check(cfg, str(preset))  # no model download: the demo is off


def test_preset_choices():
    with open(ROOT / "config" / "examples" / "millet2022.yaml") as f:
        millet = yaml.safe_load(f)
    assert millet["features"]["window_s"] == 5 and millet["features"]["context_s"] == 10
    assert millet["alignment"]["method"] == "hrf"
    assert millet["alignment"]["hrf_model"] == "glover"
    sources = {m["source"] for m in millet["models"].values()}
    assert sources == {"facebook/wav2vec2-base", "random"}
    assert {m.get("architecture") for m in millet["models"].values()} == {"wav2vec2"}
    with open(ROOT / "config" / "examples" / "huth.yaml") as f:
        huth = yaml.safe_load(f)
    assert huth["features"]["mode"] == "causal" and huth["features"]["context_s"] == 16
    assert huth["alignment"]["method"] == "lanczos"
    assert huth["alignment"]["fir_delays"] == [1, 2, 3, 4]


def test_schema_rejects_bad_alignment_and_onsets(base_config):
    v = _validator()
    for bad in ({"alignment": {"method": "sinc"}},
                {"alignment": {"method": "lanczos", "lanczos_window": 0}},
                {"alignment": {"method": "lanczos", "lanczos_window": 2.5}},
                {"onsets": {"1": "10 s"}}):
        cfg = {**copy.deepcopy(base_config), **bad}
        assert list(v.iter_errors(cfg)), bad
    # negative: the stimulus began before the run's first kept volume (aligned, cropped)
    cfg = {**copy.deepcopy(base_config), "onsets": {"1": 4.5, "2": 0, "3": -2.0}}
    cfg["alignment"] = {"method": "lanczos", "lanczos_window": 4}
    assert not list(v.iter_errors(cfg))


def test_onsets_default_to_zero_and_are_looked_up_per_run(cfg):
    assert C.run_onset(cfg, "1") == 0.0
    del cfg["onsets"]
    assert C.run_onset(cfg, "1") == 0.0 and C.stimulus_onset(cfg, "part1") == 0.0
    cfg["onsets"] = {"2": 3.0, 3: 1.5}  # an unquoted YAML run label is an int
    C.check(cfg)
    assert C.run_onset(cfg, "2") == 3.0 and C.run_onset(cfg, 2) == 3.0
    assert C.run_onset(cfg, "3") == 1.5 and C.run_onset(cfg, "4") == 0.0
    assert C.stimulus_onset(cfg, "part2") == 3.0 and C.stimulus_onset(cfg, "part1") == 0.0
    assert C.stimulus_onset(cfg, "unheard") == 0.0


def test_runs_of_one_stimulus_must_share_their_onset(cfg):
    cfg["runs"]["5"] = "part2"  # a second run of part2
    cfg["onsets"] = {"2": 3.0, "5": 3.0}
    C.check(cfg)
    assert C.stimulus_onset(cfg, "part2") == 3.0
    cfg["onsets"] = {"2": 3.0}  # run 5 defaults to 0
    with pytest.raises(C.ConfigError, match=r"my/config.yaml: stimulus 'part2' starts 0 s into "
                                            r"run 5 but 3 s into run 2.*same `onsets` value"):
        C.check(cfg, "my/config.yaml")
    # sub-TR jitter (TR 1.5 s: tolerance 0.15 s) is absorbed: one onset, the median
    cfg["onsets"] = {"2": 3.0, "5": 3.1}
    C.check(cfg)
    assert C.stimulus_onset(cfg, "part2") == pytest.approx(3.05)
    ds = C.dataset(cfg)
    assert [r.onset for r in ds.runs if r.stimulus == "part2"] == pytest.approx([3.05] * 6)
    cfg["onsets"] = {"2": 3.0, "5": 3.16}
    with pytest.raises(C.ConfigError, match=r"spread of 0.16 s.*a tenth of the TR \(0.15 s\)"):
        C.check(cfg)


def test_onset_of_an_unknown_run_is_named(cfg):
    cfg["onsets"] = {"7": 2.0}
    with pytest.raises(C.ConfigError, match=r"onsets.7 names a run that is not a key of `runs`"):
        C.check(cfg)


def test_model_layer_selection(cfg):
    cfg["models"]["wav2vec2-random"]["layers"] = [12, 0, 3, 6, 9]
    C.check(cfg)
    assert C.model_layers(cfg) == {"wav2vec2-random": ["00", "03", "06", "09", "12"]}
    assert C.model_spec(cfg, "wav2vec2-random").layers == [12, 0, 3, 6, 9]


def test_selected_layer_beyond_the_model_is_named(cfg):
    cfg["models"]["wav2vec2-random"]["layers"] = [0, 13, 20]
    with pytest.raises(C.ConfigError) as exc:
        C.check(cfg, "my/config.yaml")
    msg = str(exc.value)
    assert "my/config.yaml" in msg and "models.wav2vec2-random.layers" in msg
    assert "[13, 20]" in msg and "0..12" in msg


def test_planted_layer_must_be_selected(cfg):
    cfg["models"]["wav2vec2-random"]["layers"] = [0, 3, 6, 9]  # demo plants IFG at 12
    with pytest.raises(C.ConfigError, match=r"demo.planted.IFG = 12.*layers \[0, 3, 6, 9\]"):
        C.check(cfg)


def test_causal_mode_without_right_context(cfg):
    cfg["features"].update(mode="causal", right_context_s=1.0)
    with pytest.raises(C.ConfigError, match="features.right_context_s = 1.0.*causal"):
        C.check(cfg)
    cfg["features"]["right_context_s"] = 0.0
    C.check(cfg)


def test_schema_accepts_new_feature_and_model_keys(cfg):
    import jsonschema

    schema_path = CONFIG_PATH.parents[1] / "workflow" / "schemas" / "config.schema.yaml"
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    assert cfg["features"]["mode"] == "windowed" and cfg["features"]["right_context_s"] == 0.0
    cfg["models"]["wav2vec2-random"]["layers"] = [0, 6, 12]
    jsonschema.validate(cfg, schema)
    for key, bad in [("mode", "streaming"), ("right_context_s", -1)]:
        broken = copy.deepcopy(cfg)
        broken["features"][key] = bad
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)
    for bad in ([-1], [], [1.5], [2, 2]):
        broken = copy.deepcopy(cfg)
        broken["models"]["wav2vec2-random"]["layers"] = bad
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)


def test_cv_scheme_per_subject_and_its_description():
    cfg = {"tr": 1.5, "encoding": {}}
    assert C.cv_scheme(cfg, 3) == "runs" and C.cv_scheme(cfg, 2) == "blocks"
    assert C.run_blocks(cfg, 1, 0) == (5, 8)  # 22 s between blocks: 8 volumes each side
    assert C.cv_description(cfg, 4) == "nested leave-one-run-out cross-validation (4 runs)"
    text = C.cv_description(cfg, 2)
    assert text.startswith("block cross-validation (encoding.cv.scheme auto: 2 runs cut into "
                           "5 contiguous blocks") and "24 s left out" in text
    cfg["encoding"]["cv"] = {"scheme": "blocks", "n_folds": 3, "gap_s": 0}
    assert C.cv_scheme(cfg, 6) == "blocks" and C.run_blocks(cfg, 6, 5) == (1, 0)
    assert C.run_blocks(cfg, 1, 0) == (3, 0)
