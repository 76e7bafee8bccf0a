"""Tests of brainalign.parcels and parcel targets in brainalign.targets: one TSV per subject x
run with one column per parcel."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from brainalign import parcels
from brainalign.bold import BoldError, CleanOptions
from brainalign.targets import ParcelTargets


def write(path, data: np.ndarray, names: list[str]) -> str:
    pd.DataFrame(data, columns=names).to_csv(path, sep="\t", index=False)
    return str(path)


def test_read_and_clean_a_parcel_run(tmp_path):
    rng = np.random.default_rng(0)
    data = 50 + rng.standard_normal((40, 3)) + np.linspace(0, 5, 40)[:, None]
    path = write(tmp_path / "run.tsv", data, ["A1_L", "A1_R", "V1"])
    values, names = parcels.read_run(path)
    assert names == ["A1_L", "A1_R", "V1"] and values.shape == (40, 3)
    out = parcels.load_run(path, np.array([True, False, True]), 36, 1.0,
                           CleanOptions(start_volume=2))
    assert out.shape == (36, 2)
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(0, ddof=1), 1, atol=1e-4)


def test_parcel_mask_drops_constant_parcels_and_needs_the_same_columns(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((30, 3))
    b = rng.standard_normal((30, 3))
    b[:, 1] = 7.0  # constant in run b only
    pa = write(tmp_path / "a.tsv", a, ["x", "y", "z"])
    pb = write(tmp_path / "b.tsv", b, ["x", "y", "z"])
    keep, names = parcels.parcel_mask([pa, pb])
    assert keep.tolist() == [True, False, True] and names == ["x", "y", "z"]
    pc = write(tmp_path / "c.tsv", a, ["x", "z", "y"])
    with pytest.raises(BoldError, match="c.tsv: its columns differ.*same parcels in the same "
                                        "order"):
        parcels.parcel_mask([pa, pc])


def test_bad_parcel_files(tmp_path):
    bad = tmp_path / "bad.tsv"
    pd.DataFrame({"onset": ["a", "b", "c"], "x": [1.0, 2.0, 3.0]}).to_csv(bad, sep="\t",
                                                                          index=False)
    with pytest.raises(BoldError, match=r"bad.tsv: column\(s\) \['onset'\] are not numeric"):
        parcels.read_run(bad)
    with pytest.raises(BoldError, match="absent.tsv: parcel time-series file not found"):
        parcels.read_run(tmp_path / "absent.tsv")
    short = write(tmp_path / "short.tsv", np.random.default_rng(0).standard_normal((20, 2)),
                  ["x", "y"])
    with pytest.raises(BoldError, match="short.tsv: has 20 volumes; its stimulus needs 30"):
        parcels.load_run(short, np.ones(2, bool), 30, 1.0)


def test_parcel_maps_are_tsv_tables(tmp_path):
    np.savez(tmp_path / "mask.npz", keep=np.array([True, False, True]),
             names=np.array(["A1_L", "A1_R", "V1"]))
    mask = ParcelTargets.load(tmp_path / "mask.npz")
    assert mask.names == ["A1_L", "A1_R", "V1"] and mask.n_targets == 2
    mask.write_map(np.array([0.5, 0.25]), [tmp_path / "r.tsv"], fill=np.nan)
    table = pd.read_csv(tmp_path / "r.tsv", sep="\t")
    assert table["parcel"].tolist() == ["A1_L", "A1_R", "V1"]
    np.testing.assert_array_equal(table["value"].to_numpy(), [0.5, np.nan, 0.25])


def test_sidecar_tr_must_match_the_config(tmp_path):
    data = np.random.default_rng(0).standard_normal((40, 2))
    path = write(tmp_path / "sub-01_task-x_desc-schaefer_timeseries.tsv", data, ["a", "b"])
    keep = np.ones(2, bool)
    assert parcels.load_run(path, keep, 40, 1.1).shape == (40, 2)  # no sidecar: not checked
    sidecar = tmp_path / "sub-01_task-x_desc-schaefer_timeseries.json"
    sidecar.write_text(json.dumps({"RepetitionTime": 1.0}))
    with pytest.raises(BoldError) as err:
        parcels.load_run(path, keep, 40, 1.1)  # would otherwise keep 40 of 40 rows silently
    msg = str(err.value)
    assert msg.startswith(path) and "sidecar JSON gives a TR of 1 s" in msg
    assert "config says tr: 1.1; set `tr`" in msg
    assert parcels.load_run(path, keep, 40, 1.0).shape == (40, 2)
    sidecar.write_text(json.dumps({"SamplingFrequency": 0.5}))  # the physio-style key
    with pytest.raises(BoldError, match="TR of 2 s"):
        parcels.load_run(path, keep, 40, 1.0)
