"""Tests of brainalign.bold: a 4D fMRIPrep-style run -> masked, trimmed, cleaned array."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from schema_defaults import schema_defaults
from scipy.signal import detrend as scipy_detrend

from brainalign import bold
from brainalign.bold import CleanOptions as C

AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
SHAPE = (7, 6, 5)
T_R = 2.0


def make_mask(shape=SHAPE, affine=AFFINE) -> nib.Nifti1Image:
    m = np.zeros(shape, np.uint8)
    m[1:-1, 1:-1, 1:-1] = 1
    return nib.Nifti1Image(m, affine)


def write_run(path, data: np.ndarray, affine=AFFINE, t_r: float | None = None) -> str:
    img = nib.Nifti1Image(data.astype(np.float32), affine)
    if t_r is not None:
        img.header.set_xyzt_units("mm", "sec")
        img.header.set_zooms((*img.header.get_zooms()[:3], t_r))
    nib.save(img, str(path))
    return str(path)


def synthetic_run(n_t: int, seed: int = 0, drift: float = 0.0, signal: np.ndarray | None = None
                  ) -> np.ndarray:
    """BOLD-like 4D data: voxel baselines ~1000, unit noise, optional drift and shared signal."""
    rng = np.random.default_rng(seed)
    data = 1000 + 50 * rng.random(SHAPE)[..., None] + rng.standard_normal((*SHAPE, n_t))
    data = data + drift * np.linspace(0, 1, n_t)
    if signal is not None:
        data = data + signal
    return data


def test_load_run_shape_zscore_and_trim(tmp_path):
    n_vols, start = 40, 3
    data = synthetic_run(start + n_vols + 5)
    data[..., :start] += 500  # dummy scans far from steady state
    path = write_run(tmp_path / "bold.nii.gz", data)
    mask = make_mask()
    n_mask = int(np.asarray(mask.dataobj).sum())

    out = bold.load_run(path, mask, n_vols, T_R, C(start_volume=start))
    assert out.shape == (n_vols, n_mask) and out.dtype == np.float32
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(0, ddof=1), 1, atol=1e-4)

    # exactly the stimulus volumes, linearly detrended and z-scored within the run
    kept = data[np.asarray(mask.dataobj) > 0][:, start:start + n_vols].T
    ref = scipy_detrend(kept, axis=0)
    ref = ref / ref.std(0, ddof=1)
    np.testing.assert_allclose(out, ref, atol=1e-3)


def test_load_run_removes_planted_linear_drift(tmp_path):
    n_vols = 60
    t = np.arange(n_vols)
    slow = np.sin(2 * np.pi * t / 15.0)  # a stimulus-like signal shared by all voxels
    data = synthetic_run(n_vols, seed=1, drift=40.0, signal=2 * slow)
    path = write_run(tmp_path / "drift.nii.gz", data)
    mask = make_mask()
    trend = (t - t.mean()) / t.std()

    raw = bold.load_run(path, mask, n_vols, T_R, C(detrend=False))
    # without detrending the drift (40 noise SDs over the run) dominates every voxel
    assert np.mean(raw.T @ trend / n_vols) > 0.9

    out = bold.load_run(path, mask, n_vols, T_R)
    corr_trend = out.T @ trend / (n_vols - 1)
    np.testing.assert_allclose(corr_trend, 0, atol=1e-4)
    # ... while the signal survives
    corr_signal = out.T @ ((slow - slow.mean()) / slow.std()) / (n_vols - 1)
    assert corr_signal.mean() > 0.75


def test_load_run_accepts_extra_volumes_up_to_limit(tmp_path):
    n_vols = 30
    path = write_run(tmp_path / "extra.nii.gz", synthetic_run(n_vols + 4))
    out = bold.load_run(path, make_mask(), n_vols, T_R, C(max_extra_volumes=4))
    assert out.shape[0] == n_vols


def assert_bold_error(path, *fragments, mask_img=None, **options):
    """``load_run`` of a 30-volume stimulus refused, naming the file and ``fragments``;
    ``options``: :class:`bold.CleanOptions` fields."""
    with pytest.raises(bold.BoldError) as exc:
        bold.load_run(path, mask_img or make_mask(), 30, T_R, C(**options))
    msg = str(exc.value)
    assert str(path) in msg
    for f in fragments:
        assert f in msg


def test_error_too_few_volumes(tmp_path):
    path = write_run(tmp_path / "short.nii.gz", synthetic_run(25))
    assert_bold_error(path, "has 25 volumes", "needs 30")


def test_error_too_few_after_start_volume(tmp_path):
    path = write_run(tmp_path / "dummies.nii.gz", synthetic_run(32))
    assert_bold_error(path, "start volume 4", start_volume=4)


def test_error_too_many_volumes(tmp_path):
    path = write_run(tmp_path / "long.nii.gz", synthetic_run(30 + 21))
    assert_bold_error(path, "has 51 volumes", "at most 20 extra")
    path = write_run(tmp_path / "long2.nii.gz", synthetic_run(30 + 3))
    assert_bold_error(path, "at most 2 extra", max_extra_volumes=2)


def test_error_nan_voxels_inside_mask(tmp_path):
    data = synthetic_run(30)
    data[2, 2, 2, 7] = np.nan  # inside the mask
    data[3, 3, 2, :] = np.nan
    path = write_run(tmp_path / "nan.nii.gz", data)
    assert_bold_error(path, "2 voxels inside the brain mask contain NaN")


def test_nan_outside_mask_is_ignored(tmp_path):
    data = synthetic_run(30)
    data[0, 0, 0, :] = np.nan  # outside the mask
    path = write_run(tmp_path / "nan_out.nii.gz", data)
    out = bold.load_run(path, make_mask(), 30, T_R)
    assert np.isfinite(out).all()


def test_error_3d_image(tmp_path):
    path = write_run(tmp_path / "three_d.nii.gz", synthetic_run(1)[..., 0])
    assert_bold_error(path, "expected a 4D BOLD series", "3D")


def test_error_mask_on_another_grid(tmp_path):
    path = write_run(tmp_path / "grid.nii.gz", synthetic_run(30))
    assert_bold_error(path, "does not match its brain mask", mask_img=make_mask(shape=(7, 6, 6)))
    shifted = AFFINE.copy()
    shifted[:3, 3] = [2.0, 0.0, 0.0]  # same shape, half a voxel off
    assert_bold_error(path, "does not match its brain mask", mask_img=make_mask(affine=shifted))


def test_error_missing_run(tmp_path):
    assert_bold_error(tmp_path / "absent.nii.gz", "not found")


def test_error_header_tr_disagrees_with_config(tmp_path):
    path = write_run(tmp_path / "tr.nii.gz", synthetic_run(30), t_r=2.5)
    assert_bold_error(path, "header TR is 2.5")
    # the right TR in the header is accepted
    ok = write_run(tmp_path / "tr_ok.nii.gz", synthetic_run(30), t_r=T_R)
    assert bold.load_run(ok, make_mask(), 30, T_R).shape[0] == 30


def test_subject_mask_is_the_intersection(tmp_path):
    a = np.zeros(SHAPE, np.uint8)
    a[1:5, 1:5, 1:4] = 1
    b = np.zeros(SHAPE, np.uint8)
    b[2:6, 0:4, 1:4] = 1
    c = np.ones(SHAPE, np.uint8)
    paths = []
    for name, m in zip("abc", (a, b, c), strict=True):
        paths.append(tmp_path / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(m, AFFINE), str(paths[-1]))
    out = bold.subject_mask(paths)
    np.testing.assert_array_equal(np.asarray(out.dataobj), (a & b & c))
    np.testing.assert_allclose(out.affine, AFFINE)
    assert np.asarray(out.dataobj).sum() == 3 * 3 * 3


def test_subject_mask_errors(tmp_path):
    a = np.zeros(SHAPE, np.uint8)
    a[:2] = 1
    b = np.zeros(SHAPE, np.uint8)
    b[4:] = 1
    pa, pb, pc = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz", tmp_path / "c.nii.gz"
    nib.save(nib.Nifti1Image(a, AFFINE), str(pa))
    nib.save(nib.Nifti1Image(b, AFFINE), str(pb))
    nib.save(nib.Nifti1Image(a, np.diag([2.0, 2.0, 2.0, 1.0])), str(pc))
    with pytest.raises(bold.BoldError, match="empty"):
        bold.subject_mask([pa, pb])
    with pytest.raises(bold.BoldError) as exc:
        bold.subject_mask([pa, pc])
    assert str(pc) in str(exc.value) and "different grid" in str(exc.value)


# ------------------------------------------------------------------------------- confounds
FMRIPREP_NAME = "sub-01_task-story_run-1_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"


def test_confounds_path_follows_fmriprep_names(tmp_path):
    assert bold.confounds_path(tmp_path / FMRIPREP_NAME) == (
        tmp_path / "sub-01_task-story_run-1_desc-confounds_timeseries.tsv")
    assert bold.confounds_path("a/sub-2_task-x_run-3_space-T1w_res-2_desc-preproc_bold.nii") \
        .name == "sub-2_task-x_run-3_desc-confounds_timeseries.tsv"
    with pytest.raises(bold.BoldError, match="not an fMRIPrep BOLD file name"):
        bold.confounds_path(tmp_path / "bold.nii.gz")


def test_confounds_path_takes_the_older_fmriprep_names_too(tmp_path):
    """Released derivatives (fMRIPrep < 20.2, e.g. Narratives) name the confounds
    desc-confounds_regressors.tsv; surfaces of fMRIPrep < 21 have no _bold suffix; parcel
    time series find their run's confounds by the run's entities."""
    run = "sub-001_task-pieman_run-1"
    old = tmp_path / f"{run}_desc-confounds_regressors.tsv"
    new = tmp_path / f"{run}_desc-confounds_timeseries.tsv"
    names = [f"{run}_space-MNI152NLin2009cAsym_res-native_desc-preproc_bold.nii.gz",
             f"{run}_space-fsaverage6_hemi-L.func.gii", f"{run}_hemi-R_space-fsaverage6_bold"
             ".func.gii", f"{run}_space-MNI152NLin2009cAsym_desc-schaefer400_timeseries.tsv",
             f"{run}_desc-schaefer400_timeseries.tsv"]
    for name in names:  # nothing there yet: the current name (what an error names)
        assert bold.confounds_path(tmp_path / name) == new
    old.touch()
    for name in names:
        assert bold.confounds_path(tmp_path / name) == old
    new.touch()  # both: the current one
    assert bold.confounds_path(tmp_path / names[0]) == new
    with pytest.raises(bold.BoldError, match="not an fMRIPrep BOLD file name"):
        bold.confounds_path(tmp_path / f"{run}_desc-preproc_T1w.nii.gz")


def test_confounds_of_older_names_surfaces_and_parcels_load_alike(tmp_path):
    """The same confounds table under the older name, beside a res-native volume, an older
    fMRIPrep surface pair (which nilearn's own name check refuses) and a parcel TSV, loads to
    the same regressors as the current name beside a current volume."""
    path, _ = write_fmriprep_run(tmp_path, 60)
    want = bold.load_run_confounds(path, slice(4, 54), ["motion", "wm_csf", "high_pass"], T_R)
    table = bold.confounds_path(path)
    run = "sub-001_task-pieman_run-1"
    other = tmp_path / "released"
    other.mkdir()
    (other / f"{run}_desc-confounds_regressors.tsv").write_bytes(table.read_bytes())
    vol = write_run(other / f"{run}_space-MNI152NLin2009cAsym_res-native_desc-preproc_bold"
                    ".nii.gz", synthetic_run(60), t_r=T_R)
    gifti = []
    for hemi in ("L", "R"):
        img = nib.GiftiImage(darrays=[nib.gifti.GiftiDataArray(
            np.zeros(5, np.float32), intent="NIFTI_INTENT_TIME_SERIES") for _ in range(60)])
        gifti.append(other / f"{run}_space-fsaverage6_hemi-{hemi}.func.gii")
        nib.save(img, gifti[-1])
    parcels = other / f"{run}_desc-schaefer_timeseries.tsv"
    pd.DataFrame(np.random.default_rng(0).standard_normal((60, 3)),
                 columns=["a", "b", "c"]).to_csv(parcels, sep="\t", index=False)
    for run_files in (vol, [str(p) for p in gifti], str(parcels)):
        got = bold.load_run_confounds(run_files, slice(4, 54), ["motion", "wm_csf", "high_pass"],
                                      T_R)
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_parcel_confounds_span_a_motion_artefact_in_the_parcels(tmp_path):
    """A parcel run whose time series are a drifting motion artefact: its confounds (found by
    the run's entities beside the TSV), trimmed and cleaned by the same functions as a volume
    run's, span the cleaned parcels exactly."""
    from brainalign import parcels

    path, motion = write_fmriprep_run(tmp_path, 60)
    rng = np.random.default_rng(3)
    moved = motion + np.linspace(0, 3, 60)[:, None] * rng.standard_normal(6)
    tsv = bold.confounds_path(path)
    table = pd.read_csv(tsv, sep="\t")
    table[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]] = moved
    table.to_csv(tsv, sep="\t", index=False, na_rep="n/a")
    run = tmp_path / "sub-01_task-story_run-1_desc-schaefer_timeseries.tsv"
    pd.DataFrame(100 + moved @ rng.standard_normal((6, 8)),
                 columns=[f"p{i}" for i in range(8)]).to_csv(run, sep="\t", index=False)
    y = parcels.load_run(run, np.ones(8, bool), 50, T_R,
                         C(start_volume=4, first_volume=0, max_extra_volumes=6))
    confounds = bold.load_run_confounds(str(run), slice(4, 54), ["motion"], T_R)
    assert y.shape == (50, 8) and confounds.shape == (50, 6)
    left = bold.regress_out(y, confounds)
    assert (left**2).sum() / (y**2).sum() < 1e-6
    # without the confounds the artefact is all of the signal
    assert (bold.regress_out(y, confounds[:, :0])**2).sum() / (y**2).sum() > 0.99


def write_fmriprep_run(tmp_path, n_t: int, n_rows: int | None = None) -> tuple[str, np.ndarray]:
    """A BOLD run with fMRIPrep's name and a confounds TSV of ``n_rows`` rows beside it."""
    from brainalign import simulate

    rng = np.random.default_rng(0)
    path = write_run(tmp_path / FMRIPREP_NAME, synthetic_run(n_t), t_r=T_R)
    motion = simulate.simulate_motion(rng, n_rows or n_t)
    table = simulate.confounds_table(motion, rng.standard_normal((n_rows or n_t, 30)), T_R, rng)
    simulate.write_confounds(table, path)
    return path, motion


def test_load_run_confounds_strategies_and_trimming(tmp_path):
    path, motion = write_fmriprep_run(tmp_path, 60)
    out = bold.load_run_confounds(path, slice(4, 54), ["motion"], T_R)
    assert out.shape == (50, 6) and out.dtype == np.float32
    # nilearn sorts columns by name (rot_*, trans_*); trimmed like the BOLD (volumes 4..53),
    # then detrended within those volumes exactly as the BOLD is (not z-scored: see
    # test_encoding's drifting motion artefact)
    trimmed = motion[4:54][:, [3, 4, 5, 0, 1, 2]]
    np.testing.assert_allclose(out, scipy_detrend(trimmed, axis=0), atol=1e-4)
    np.testing.assert_allclose(out, bold.clean_signals(trimmed, T_R, standardize=False),
                               atol=1e-4)
    # bold.detrend: false: as loaded (nilearn demeans over the whole run), trimmed
    raw = bold.load_run_confounds(path, slice(4, 54), ["motion"], T_R, detrend=False)
    np.testing.assert_allclose(raw, trimmed - motion.mean(0)[[3, 4, 5, 0, 1, 2]], atol=1e-4)
    full = bold.load_run_confounds(path, slice(0, 50), ["motion", "wm_csf", "high_pass"], T_R,
                                   motion="full")
    n_cos = int(np.floor(2 * 60 * T_R / 128))
    assert full.shape == (50, 24 + 2 + n_cos) and np.isfinite(full).all()
    assert bold.load_run_confounds(path, slice(0, 50), [], T_R).shape == (50, 0)
    with pytest.raises(bold.BoldError, match="unknown confound strategies"):
        bold.load_run_confounds(path, slice(0, 50), ["scrub"], T_R)


def test_confounds_cleaned_like_the_bold_span_a_drifting_motion_artefact(tmp_path):
    """A run whose BOLD is a motion artefact (linear in the six motion parameters, which
    drift): after both are trimmed and cleaned alike, the confounds span the cleaned BOLD
    exactly, so regressing them out leaves nothing."""
    import pandas as pd

    path, motion = write_fmriprep_run(tmp_path, 60)
    rng = np.random.default_rng(3)
    moved = motion + np.linspace(0, 3, 60)[:, None] * rng.standard_normal(6)  # slow drift
    tsv = bold.confounds_path(path)
    table = pd.read_csv(tsv, sep="\t")
    table[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]] = moved
    table.to_csv(tsv, sep="\t", index=False, na_rep="n/a")
    artefact = moved @ rng.standard_normal((6, 20))
    y = bold.clean_signals(artefact[4:54], T_R)  # the BOLD as prepare_bold cleans it
    confounds = bold.load_run_confounds(path, slice(4, 54), ["motion"], T_R)
    left = bold.regress_out(y, confounds)
    assert (left**2).sum() / (y**2).sum() < 1e-6


def test_load_run_confounds_errors_name_the_file_and_the_fix(tmp_path):
    path, _ = write_fmriprep_run(tmp_path, 60, n_rows=55)  # a truncated TSV
    tsv = bold.confounds_path(path)
    with pytest.raises(bold.BoldError, match="has 55 rows but .* has 60 volumes") as err:
        bold.load_run_confounds(path, slice(0, 50), ["motion"], T_R)
    assert str(tsv) in str(err.value)
    tsv.unlink()
    with pytest.raises(bold.BoldError, match="confounds file not found") as err:
        bold.load_run_confounds(path, slice(0, 50), ["motion"], T_R)
    assert str(tsv) in str(err.value) and "strategy: []" in str(err.value)


def test_short_run_within_tolerance_is_kept_at_its_length(tmp_path, caplog):
    path = write_run(tmp_path / "short2.nii.gz", synthetic_run(28))
    with caplog.at_level("WARNING", logger="brainalign.bold"):
        out = bold.load_run(path, make_mask(), 30, T_R, C(max_missing_volumes=2))
    assert out.shape[0] == 28
    # kept on an assumption nothing in the run can confirm: it is said, with the stakes
    (rec,) = caplog.records
    msg = rec.getMessage()
    assert msg.startswith(f"{path}: 2 volume(s) short of its stimulus (28 of 30)")
    assert "missing volumes are at the END" in msg and "misaligned by 4 s" in msg
    assert_bold_error(path, "has 28 volumes", "1 missing allowed", "bold.max_missing_volumes",
                      max_missing_volumes=1)


def test_error_constant_voxels_inside_mask(tmp_path):
    data = synthetic_run(30)
    data[2, 2, 2, :] = 0.0  # e.g. a voxel outside the field of view
    data[3, 2, 2, :] = 517.0
    path = write_run(tmp_path / "const.nii.gz", data)
    assert_bold_error(path, "2 voxels inside the brain mask are constant over the run",
                      "exclude them from the mask")


def test_confound_columns_missing_from_the_tsv_are_named(tmp_path):
    path, _ = write_fmriprep_run(tmp_path, 60)
    tsv = bold.confounds_path(path)
    table = pd.read_csv(tsv, sep="\t")
    table.drop(columns=["global_signal", "trans_x_derivative1"]).to_csv(tsv, sep="\t",
                                                                        index=False)
    with pytest.raises(bold.BoldError) as err:
        bold.load_run_confounds(path, slice(0, 50), ["motion", "global_signal"], T_R)
    msg = str(err.value)
    assert msg.startswith(f"{tsv}: lacks global_signal, which `bold.confounds.strategy` "
                          "[motion (basic), global_signal (basic)] needs")
    with pytest.raises(bold.BoldError, match="lacks trans_x_derivative1, which .*motion "
                                             r"\(derivatives\)"):
        bold.load_run_confounds(path, slice(0, 50), ["motion"], T_R, motion="derivatives")
    with pytest.raises(bold.BoldError, match=r"lacks a_comp_cor_\*"):
        bold.load_run_confounds(path, slice(0, 50), ["high_pass", "compcor"], T_R)
    # what the file has still loads
    assert bold.load_run_confounds(path, slice(0, 50), ["motion", "wm_csf"], T_R).shape == (50, 8)


def truncate(path, keep: float = 0.5) -> None:
    """Cut a file as an interrupted download leaves it."""
    data = open(path, "rb").read()
    open(path, "wb").write(data[:int(len(data) * keep)])


@pytest.mark.parametrize("name", ["cut.nii.gz", "cut.nii"])
def test_truncated_run_is_named_with_the_fix(tmp_path, name):
    path = write_run(tmp_path / name, synthetic_run(30), t_r=T_R)
    truncate(path)
    assert nib.load(path).shape == (*SHAPE, 30)  # the header still reads: the data does not
    assert_bold_error(path, "the BOLD run file is truncated or corrupt", "fetch it again")
    if name.endswith(".gz"):
        assert_bold_error(path, "EOFError: Compressed file ended")
    truncate(path, keep=0.01)  # not even a header
    assert_bold_error(path, "truncated or corrupt", "fetch it again")


def test_truncated_mask_is_named_with_the_fix(tmp_path):
    ok = tmp_path / "a_mask.nii.gz"
    nib.save(make_mask(), ok)
    cut = tmp_path / "b_mask.nii.gz"
    img = nib.Nifti1Image(np.random.default_rng(0).integers(0, 2, (40, 40, 40)).astype(np.uint8),
                          AFFINE)
    nib.save(img, cut)
    truncate(cut)
    with pytest.raises(bold.BoldError) as err:
        bold.subject_mask([ok, cut])
    msg = str(err.value)
    assert msg.startswith(f"{cut}: the brain mask file is truncated or corrupt")
    assert "fetch it again" in msg


def test_run_cut_after_acquisition_is_not_taken_for_a_scan_that_stopped_early(tmp_path,
                                                                              caplog):
    # 60 volumes acquired (confounds TSV: 60 rows); the first 5 were removed afterwards, the
    # audio is whole: max_missing_volumes = 5 would accept it, 10 s off
    path, _ = write_fmriprep_run(tmp_path, 60)
    tsv = bold.confounds_path(path)
    full = nib.load(path)
    full = nib.Nifti1Image(np.asarray(full.dataobj), full.affine, full.header)  # in memory
    write_run(path, np.asarray(full.dataobj)[..., 5:], t_r=T_R)
    with pytest.raises(bold.BoldError) as err:
        bold.check_acquired_volumes([path], 58, T_R)
    msg = str(err.value)
    assert msg.startswith(f"{path}: 3 volume(s) short of its stimulus, and it has 55 volumes "
                          f"where its fMRIPrep confounds file ({tsv}) has 60")
    assert "misalign the stimulus by 10 s" in msg and "untrimmed run" in msg
    # the raw BIDS run is evidence too (fMRIPrep keeps every volume), without a TSV
    tsv.unlink()
    raw = tmp_path / "raw_bold.nii.gz"
    nib.save(full, raw)
    with pytest.raises(bold.BoldError,
                       match=r"where its raw BIDS run \(.*raw_bold.nii.gz\) has 60"):
        bold.check_acquired_volumes([path], 58, T_R, raw=raw)
    # a cut run that still covers its stimulus is kept, with the assumption said
    with caplog.at_level("WARNING", logger="brainalign.bold"):
        bold.check_acquired_volumes([path], 50, T_R, raw=raw)
    (rec,) = caplog.records
    assert "5 volume(s) were removed after acquisition" in rec.getMessage()
    assert "removed at the END" in rec.getMessage()
    # no evidence of a cut: a scan that stopped early is max_missing_volumes' business
    bold.check_acquired_volumes([path], 58, T_R, raw=tmp_path / "absent_bold.nii.gz")
    raw.write_bytes(b"not fetched")  # an unreadable raw run is no evidence
    bold.check_acquired_volumes([path], 58, T_R, raw=raw)
    assert bold.n_volumes_in(tmp_path / "x.txt") is None


def test_blocks_cover_the_run_with_gaps_at_inner_borders_only():
    assert bold.blocks_per_run(1, 5) == [5]
    assert bold.blocks_per_run(2, 5) == [3, 2]
    assert bold.blocks_per_run(4, 3) == [1, 1, 1, 1]  # never less than a block a run
    blocks = bold.block_slices(100, 4, 3)
    assert [(b.start, b.stop) for b in blocks] == [(0, 22), (28, 47), (53, 72), (78, 100)]
    assert bold.block_slices(50, 1, 5) == [slice(0, 50)]  # a whole run keeps every volume
    with pytest.raises(bold.BoldError, match="encoding.cv.n_folds"):
        bold.block_slices(60, 5, 4)  # blocks of 12 - 8 = 4 volumes


def test_blocks_are_cleaned_on_their_own_volumes():
    """A block's cleaned values depend on that block alone (no detrending across borders)."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((90, 3)).cumsum(0)
    blocks = bold.block_slices(90, 3, 2)
    cleaned = bold.clean_blocks(data, 2.0, blocks)
    changed = data.copy()
    changed[blocks[2]] += 100 * rng.standard_normal((len(range(90)[blocks[2]]), 3))
    again = bold.clean_blocks(changed, 2.0, blocks)
    for a, b in zip(cleaned[:2], again[:2], strict=True):
        np.testing.assert_array_equal(a, b)
    for block, c in zip(blocks, cleaned, strict=True):
        np.testing.assert_allclose(c, bold.clean_signals(data[block], 2.0), rtol=1e-5,
                                   atol=1e-5)
        np.testing.assert_allclose(c.mean(0), 0, atol=1e-5)


def test_run_cut_after_the_audio_started_is_prepared_as_the_full_run(tmp_path):
    """Known answer for a stimulus that began before the first kept volume: a run whose first
    4 volumes were dropped (onset 3 s -> 3 - 4 * TR = -5 s) gives, as prepare_bold and
    fit_layer cut them, the same BOLD and the same feature rows as the full run, with the
    onset transient (exclude_onset_s) counted from the true onset."""
    from brainalign import alignment

    duration, onset, dropped, exclude = 60.0, 3.0, 4, 20.0
    times = np.arange(int(duration / 0.02)) * 0.02 + 0.01
    values = np.random.default_rng(1).standard_normal((times.size, 3))
    n_full = alignment.n_volumes(duration + onset, T_R)
    data = synthetic_run(n_full + 2, drift=30.0)
    full_path = write_run(tmp_path / "full.nii.gz", data, t_r=T_R)
    cut_path = write_run(tmp_path / "cut.nii.gz", data[..., dropped:], t_r=T_R)
    prepared = {}
    for name, path, o in (("full", full_path, onset), ("cut", cut_path, onset - dropped * T_R)):
        first = alignment.first_volume(o, T_R, exclude)  # common.smk's first_volume
        n_vols = alignment.n_volumes(duration + o, T_R)  # prepare_bold's
        y = bold.load_run(path, make_mask(), n_vols, T_R, C(first_volume=first))
        x = alignment.align(times, values, T_R, duration, onset_s=o)[first:first + len(y)]
        prepared[name] = (first, y, x)
    assert prepared["full"][0] == 12 and prepared["cut"][0] == 12 - dropped
    np.testing.assert_allclose(prepared["cut"][1], prepared["full"][1], atol=1e-5)
    np.testing.assert_allclose(prepared["cut"][2], prepared["full"][2], rtol=1e-5, atol=1e-7)
    assert len(prepared["cut"][1]) == n_full - 12


def test_clean_options_from_config_follow_the_schema():
    section = {"start_volume": 3, "exclude_onset_s": 10.0, "max_extra_volumes": 5,
               "max_missing_volumes": 2, "detrend": False, "standardize": False,
               "confounds": {"strategy": []}}
    assert C.from_config(section, first_volume=7) == C(
        start_volume=3, max_extra_volumes=5, max_missing_volumes=2, first_volume=7,
        detrend=False, standardize=False)
    # the library's defaults are the schema's
    assert C.from_config(schema_defaults("bold")) == C()
