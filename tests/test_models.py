"""Tests of brainalign.models: what a config's model entry means, read without loading weights
(and, for the layer count the DAG needs, without importing torch)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from brainalign import models

ROOT = Path(__file__).resolve().parents[1]
WHISPER_DIR = ROOT.parent / "shared" / "models" / "whisper-tiny.en"


@pytest.mark.parametrize("arch", models.RANDOM_ARCHITECTURES)
@pytest.mark.parametrize("overrides", [{}, {"num_hidden_layers": 3, "encoder_layers": 2}])
def test_layer_count_agrees_with_transformers(arch, overrides):
    spec = models.ModelSpec("m", "random", arch, 0, dict(overrides))
    assert models.layer_count(spec) == models.n_layers(models.load_model_config(spec))


def test_layer_count_of_a_local_model_reads_its_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "hubert",
                                                      "num_hidden_layers": 7}))
    assert models.layer_count(models.ModelSpec("m", str(tmp_path))) == 8
    if WHISPER_DIR.is_dir():  # the real Whisper tiny.en: 4 encoder layers
        spec = models.ModelSpec("w", str(WHISPER_DIR))
        assert models.layer_count(spec) == models.n_layers(models.load_model_config(spec)) == 5
    assert models.layer_ids(models.ModelSpec("m", str(tmp_path), layers=[7, 2])) == ["02", "07"]


def test_unknown_models_are_named_with_the_fix(tmp_path):
    with pytest.raises(models.ModelError, match="unknown architecture 'gpt2'"):
        models.layer_count(models.ModelSpec("m", "random", "gpt2"))
    with pytest.raises(models.ModelError, match="model 'm': cannot load"):
        models.layer_count(models.ModelSpec("m", str(tmp_path / "nowhere")))


def test_the_layer_count_does_not_import_torch():
    code = ("import sys; from brainalign import config, models; "
            "print(models.layer_count(models.ModelSpec('m', 'random', 'wav2vec2'))); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["13", "False"]


def test_building_the_dag_imports_neither_torch_nor_transformers():
    # what the Snakefile and its rule files import (the `import brainalign...` lines of every
    # .smk file) and call on a config at parse time, plus the torch-free rule modules: parsing
    # the workflow and the CKA rule must not pay for torch or transformers
    smk = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
    imports = sorted({line.strip() for path in smk for line in path.read_text().splitlines()
                      if re.match(r"\s*(import|from) brainalign", line)})
    assert any("brainalign.config" in line for line in imports)
    config = {**yaml.safe_load((ROOT / "config" / "config.yaml").read_text()),
              **yaml.safe_load((ROOT / "tests" / "data" / "config_tiny.yaml").read_text())}
    code = "\n".join([
        "import json, sys", *imports,
        "import brainalign.config, brainalign.similarity, brainalign.windows",
        f"config = json.loads({json.dumps(json.dumps(config))})",
        "print(brainalign.config.model_layers(config))",
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.splitlines()
    assert out[-1] == "[]"
    assert "'wav2vec2-random': ['00', '01', '02', '03', '04', '05', '06']" in out[0]
