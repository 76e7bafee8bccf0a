"""File edges: atomic writes and round trips, and rule scripts' logs."""

import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainalign import io


def test_npz_and_tsv_round_trip_without_temporaries(tmp_path):
    io.save_npz(tmp_path / "a" / "s.npz", r=np.arange(3.0), p=np.ones(3))
    back = io.load_npz(tmp_path / "a" / "s.npz")
    np.testing.assert_array_equal(back["r"], [0, 1, 2])
    io.save_tsv(pd.DataFrame({"roi": ["HG"], "r": [0.25]}), tmp_path / "t.tsv")
    assert pd.read_csv(tmp_path / "t.tsv", sep="\t")["r"].iloc[0] == 0.25
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["s.npz", "t.tsv"]


def test_unmask_places_values_and_layers_h5(tmp_path):
    mask = np.zeros((3, 3, 3), np.uint8)
    mask[1, 1, :] = 1
    mask_img = nib.Nifti1Image(mask, np.eye(4))
    img = io.unmask(np.array([1.0, 2.0, 3.0]), mask_img, fill=-1)
    data = np.asarray(img.dataobj)
    np.testing.assert_array_equal(data[1, 1], [1, 2, 3])
    assert (data[0] == -1).all()
    io.save_img(img, tmp_path / "x.nii.gz")
    assert np.allclose(nib.load(tmp_path / "x.nii.gz").get_fdata()[1, 1], [1, 2, 3])
    io.save_layers_h5(tmp_path / "f.h5", {0: np.ones((4, 2)), 12: np.zeros((4, 5))}, t_r=1.5)
    assert io.read_layer(tmp_path / "f.h5", "12").shape == (4, 5)
    back = io.read_layer(tmp_path / "f.h5", 0)
    assert back.dtype == np.float32 and (back == 1).all()
    with pytest.raises(KeyError, match="layer-03.*layer-00', 'layer-12"):
        io.read_layer(tmp_path / "f.h5", 3)


def test_atomic_path_leaves_only_the_target(tmp_path):
    target = tmp_path / "out" / "scores.nii.gz"
    with io.atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".nii.gz") and tmp != target
        tmp.write_text("done")
    assert target.read_text() == "done"
    assert [p.name for p in target.parent.iterdir()] == ["scores.nii.gz"]


def test_atomic_path_failed_writer_leaves_nothing(tmp_path):
    target = tmp_path / "scores.npz"
    with pytest.raises(RuntimeError, match="writer failed"), io.atomic_path(target) as tmp:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []
    # a failed rewrite keeps the previous complete file
    io.save_npz(target, r=np.arange(3.0))
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("writer failed")
    np.testing.assert_array_equal(io.load_npz(target)["r"], [0, 1, 2])
    assert [p.name for p in tmp_path.iterdir()] == ["scores.npz"]


def test_uncaught_error_of_a_rule_script_reaches_its_log(tmp_path):
    # a rule script calls setup_logging first; the error that stops it must end its log file
    log = tmp_path / "logs" / "rule.log"
    script = ("import logging\n"
              "from brainalign.io import setup_logging\n"
              f"setup_logging({str(log)!r})\n"
              "logging.getLogger('step').info('reading the run')\n"
              "raise ValueError('/data/x.tsv: lacks global_signal')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    text = log.read_text()
    assert "reading the run" in text and "Traceback" in text
    assert text.rstrip().splitlines()[-1] == "ValueError: /data/x.tsv: lacks global_signal"
    assert proc.stderr.count("ValueError: /data/x.tsv") == 1  # stderr keeps it, once
