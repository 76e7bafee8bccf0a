"""Tests of the Python API (brainalign/__init__.py, brainalign.api): the README's example runs as
written and recovers its planted layer; the array and file paths of extraction agree."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import brainalign as ba
from brainalign import io
from brainalign.models import ModelError

ROOT = Path(__file__).resolve().parents[1]
TINY = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2,
        "intermediate_size": 64, "conv_dim": (32,) * 7, "num_conv_pos_embeddings": 16}


def readme_api_example() -> str:
    section = (ROOT / "README.md").read_text().split("\n## Python API\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


@pytest.mark.slow
def test_readme_api_example_recovers_the_planted_layer(capsys):
    code = readme_api_example()
    assert 10 <= sum(1 for line in code.splitlines() if line.strip()) <= 25
    namespace: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)
    best, fits, rois = namespace["best"], namespace["fits"], namespace["rois"]
    assert list(rois) == ["driven", "noise"]
    # the ROI driven by layer 3 picks layer 3 in every fold, with a clearly positive
    # held-out r; layer 3 predicts its targets, and the noise targets are not significant
    assert best.layer[0] == 3 and best.stability[0] == 1.0
    assert best.independent_r[0] > 0.3 and abs(best.independent_r[1]) < 0.1
    assert (fits[3].p[rois["driven"]] < 0.05).mean() > 0.9
    assert (fits[3].p[rois["noise"]] < 0.05).mean() < 0.15
    assert fits[3].r[rois["driven"]].mean() > fits[0].r[rois["driven"]].mean()
    assert "[3" in capsys.readouterr().out


def test_import_brainalign_is_light():
    code = ("import sys, brainalign as ba; ba.FitOptions; ba.best_layer; ba.align_layers; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
    assert sorted(ba._API) == sorted(ba.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        ba.nothing  # noqa: B018


def test_extract_layers_arrays_match_the_workflow_file(tmp_path):
    spec = ba.ModelSpec("tiny", "random", "wav2vec2", 0, TINY)
    model = ba.LayerExtractor(spec, device="cpu", precision="float32")
    audio = ba.speech_like(7.0, seed=4)
    windows = ba.WindowOptions(window_s=2.0, context_s=1.0)
    layers = ba.extract_layers(model, audio, options=windows)
    stored = ba.extract_layers(model, audio, tmp_path / "f.h5", windows, dtype="float32")
    assert len(layers.values) == model.n_layers == 4 and layers.duration_s == 7.0
    np.testing.assert_array_equal(layers.frame_times, stored.frame_times)
    for a, b in zip(layers.values, stored.values, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.shape == (len(layers.frame_times), 32)
    np.testing.assert_array_equal(io.read_layer(tmp_path / "f.h5", 2), layers.values[2])
    # aligned: one row per volume of the stimulus, each layer its own features
    aligned = ba.align_layers(layers, t_r=1.0)
    assert [a.shape for a in aligned] == [(7, 32)] * 4
    fir = ba.align_layers(layers, t_r=1.0,
                           options=ba.AlignOptions(method="fir", delays=(1, 2)))
    assert fir[0].shape == (7, 64)
    with pytest.raises(ModelError, match="too short"):
        ba.extract_layers(model, audio[:100])
