"""Tests of brainalign.ceiling: shared voxels across subjects' masks and the per-subject ISC
noise ceiling, on simulated data with a known shared signal."""

from __future__ import annotations

from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
from schema_defaults import schema_defaults

from brainalign import ceiling, stats
from brainalign.ceiling import CeilingOptions
from brainalign.targets import ParcelTargets, SurfaceTargets, VolumeTargets

OPTS50 = CeilingOptions(n_permutations=50, min_shift=10)


def _mask(tmp_path, name, data, affine=None):
    path = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.uint8), np.eye(4) if affine is None else affine),
             str(path))
    return path


def test_shared_targets_intersect_brain_masks_and_index_each_subject(tmp_path):
    a = np.zeros((3, 3, 3), bool)
    a[0] = True  # 9 voxels
    b = np.zeros((3, 3, 3), bool)
    b[0, :2] = True  # 6 voxels, all inside a
    b[2, 0, 0] = True
    targets, index = ceiling.shared_targets(VolumeTargets, [_mask(tmp_path, "a", a),
                                                            _mask(tmp_path, "b", b)])
    shared = np.asarray(targets.img.dataobj) > 0
    assert shared.sum() == 6 and (shared == (a & b)).all()
    # subject a's mask voxels in C order: the first 6 of its 9 are shared
    np.testing.assert_array_equal(index[0], np.arange(6))
    np.testing.assert_array_equal(index[1], np.arange(6))  # b's 7th voxel is not shared


def test_shared_targets_reject_different_grids(tmp_path):
    a = np.ones((3, 3, 3), bool)
    moved = np.eye(4)
    moved[0, 3] = 2.0
    with pytest.raises(ValueError, match="b.nii.gz: its voxels.*ceiling.method: none"):
        ceiling.shared_targets(VolumeTargets, [_mask(tmp_path, "a", a),
                                               _mask(tmp_path, "b", a, moved)])


def test_subject_ceilings_match_the_planted_reliability():
    rng = np.random.default_rng(0)
    n_sub, n_runs, n_t, rho = 4, 2, 300, 0.25
    n_shared, n_noise = 150, 150
    signal = [rng.standard_normal((n_t, n_shared)) for _ in range(n_runs)]
    runs, index = [], []
    for s in range(n_sub):
        own_extra = s + 1  # voxels only this subject has, placed first
        runs.append([np.hstack([rng.standard_normal((n_t, own_extra)),
                                np.sqrt(rho) * sig + np.sqrt(1 - rho)
                                * rng.standard_normal((n_t, n_shared)),
                                rng.standard_normal((n_t, n_noise))]) for sig in signal])
        index.append(np.arange(own_extra, own_extra + n_shared + n_noise))
    ceil, per_subject = ceiling.subject_ceilings(runs, index, OPTS50)
    np.testing.assert_allclose(ceil.group_ceiling[:n_shared].mean(), np.sqrt(rho), atol=0.02)
    assert ceil.usable[:n_shared].mean() > 0.95 and ceil.usable[n_shared:].mean() <= 0.05
    for s, arrays in enumerate(per_subject):
        assert arrays["ceiling"].shape == (s + 1 + n_shared + n_noise,)
        assert np.isnan(arrays["ceiling"][:s + 1]).all() and not arrays["usable"][:s + 1].any()
        np.testing.assert_allclose(np.nanmean(arrays["ceiling"][s + 1:s + 1 + n_shared]),
                                   np.sqrt(rho), atol=0.03)


def test_repeat_pairs_from_run_stimuli():
    assert ceiling.repeat_pairs(["a", "b", "a", "c", "b"]) == [(0, 2), (1, 4)]
    assert ceiling.repeat_pairs(["a", "b", "c"]) == []


def test_repeat_ceiling_sees_idiosyncratic_responses_that_isc_misses():
    rng = np.random.default_rng(1)
    n_t, n_vox, rho = 300, 200, 0.4
    runs, index = [], []
    for _ in range(3):
        # each subject's own stimulus-locked response (no shared tuning), heard twice:
        # runs 0 and 2 play stimulus "a", run 1 plays "b"
        own = {stim: rng.standard_normal((n_t, n_vox)) for stim in "ab"}
        runs.append([np.sqrt(rho) * own[stim] + np.sqrt(1 - rho)
                     * rng.standard_normal((n_t, n_vox)) for stim in "aba"])
        index.append(np.arange(n_vox))
    pairs = ceiling.repeat_pairs(["a", "b", "a"])
    rep, per_subject = ceiling.subject_ceilings(runs, index, replace(OPTS50, method="repeat"),
                                                pairs=pairs)
    np.testing.assert_allclose(rep.group_ceiling.mean(), np.sqrt(rho), atol=0.03)
    assert rep.usable.mean() > 0.95
    np.testing.assert_allclose(np.mean([s["ceiling"].mean() for s in per_subject]),
                               np.sqrt(rho), atol=0.03)
    isc, _ = ceiling.subject_ceilings(runs, index, OPTS50)
    assert isc.usable.mean() <= 0.05  # nothing shared across subjects
    with pytest.raises(ValueError, match="no stimulus is heard in two runs"):
        ceiling.subject_ceilings(runs, index, CeilingOptions(method="repeat"), pairs=[])


def test_story_ceilings_for_subjects_who_heard_different_stories():
    """BIDS datasets: story a heard by subjects 0-2, b by all four, c by 2-3, d by subject 3
    alone (skipped); subject 1's run of b stopped 3 volumes early. Ceilings still come out at
    sqrt(rho) for every subject, and noise voxels stay unusable."""
    rng = np.random.default_rng(3)
    n_t, n_sig, n_noise, rho = 200, 150, 150, 0.25
    heard = {"a": [0, 1, 2], "b": [0, 1, 2, 3], "c": [2, 3], "d": [3]}
    signal = {story: rng.standard_normal((n_t, n_sig)) for story in heard}
    runs = [[] for _ in range(4)]
    stimuli = [[] for _ in range(4)]
    for story, subjects in heard.items():
        for k in subjects:
            bold = np.hstack([np.sqrt(rho) * signal[story] + np.sqrt(1 - rho)
                              * rng.standard_normal((n_t, n_sig)),
                              rng.standard_normal((n_t, n_noise))])
            runs[k].append(bold[:-3] if (story, k) == ("b", 1) else bold)
            stimuli[k].append(story)
    index = [np.arange(n_sig + n_noise)] * 4
    ceil, per_subject = ceiling.subject_ceilings(runs, index, OPTS50, stimuli=stimuli)
    np.testing.assert_allclose(ceil.group_ceiling[:n_sig].mean(), np.sqrt(rho), atol=0.03)
    assert ceil.usable[:n_sig].mean() > 0.95 and ceil.usable[n_sig:].mean() <= 0.05
    for arrays in per_subject:
        np.testing.assert_allclose(arrays["ceiling"][:n_sig].mean(), np.sqrt(rho), atol=0.04)
    # in blocks of voxels (as for a whole brain): the same ceilings, FDR over all voxels
    blocks, _ = ceiling.subject_ceilings(runs, index, replace(OPTS50, chunk_voxels=64),
                                         stimuli=stimuli)
    for field in ("isc", "ceiling", "group_ceiling", "p", "usable"):
        np.testing.assert_allclose(getattr(blocks, field), getattr(ceil, field), atol=1e-9)
    # subjects who all heard the same stories: the story path is the run-by-run path
    same = [r[:2] for r in runs[:3]]
    opts20 = CeilingOptions(n_permutations=20, min_shift=10)
    by_run, _ = ceiling.subject_ceilings(same, index[:3], opts20)
    by_story, _ = ceiling.subject_ceilings(same, index[:3], opts20, stimuli=[["a", "b"]] * 3)
    np.testing.assert_allclose(by_story.ceiling, by_run.ceiling, atol=1e-6)
    np.testing.assert_allclose(by_story.p, by_run.p, atol=1e-9)
    direct = stats.isc_ceiling(same, n_permutations=20, min_shift=10)
    np.testing.assert_allclose(by_story.ceiling, direct.ceiling, atol=1e-6)
    np.testing.assert_allclose(by_story.p, direct.p, atol=1e-9)
    # nobody shares a story: no ceiling, and no error
    alone, _ = ceiling.subject_ceilings([[runs[3][2]]], index[:1],
                                        CeilingOptions(n_permutations=10, min_shift=10),
                                        stimuli=[["d"]])
    assert np.isnan(alone.group_ceiling).all() and not alone.usable.any()


def motion_confounded_subjects(seed: int = 5):
    """4 subjects x 3 runs of 120 volumes: voxels 0-59 carry a stimulus-driven signal shared by
    the subjects; voxels 60-239 are noise plus a motion artefact exactly linear in each run's
    six motion parameters, part of which follows the story's loudness (shared by everyone who
    heard it) and which drift within the run. Returns the BOLD and confounds as prepare_bold
    writes them (the BOLD detrended and z-scored, the confounds detrended)."""
    from brainalign.bold import clean_signals

    rng = np.random.default_rng(seed)
    n_t, n_sig, n_noise = 120, 60, 180
    loudness = [np.convolve(rng.standard_normal(n_t), np.ones(5) / 5, "same") for _ in range(3)]
    signal = [rng.standard_normal((n_t, n_sig)) for _ in range(3)]
    loadings = rng.standard_normal((6, n_noise)) / np.sqrt(6)  # template space: one pattern
    runs, confounds = [], []
    for _ in range(4):
        s_runs, s_conf = [], []
        for run in range(3):
            drift = 3 * np.linspace(0, 1, n_t)[:, None] * rng.standard_normal(6)
            motion = (np.outer(loudness[run], rng.uniform(0.5, 1.5, 6))
                      + np.cumsum(0.05 * rng.standard_normal((n_t, 6)), 0) + drift)
            raw = rng.standard_normal((n_t, n_sig + n_noise))
            raw[:, :n_sig] += signal[run]
            raw[:, n_sig:] += 2 * motion @ loadings
            s_runs.append(clean_signals(raw, 1.5).astype(np.float32))
            s_conf.append(clean_signals(motion, 1.5, standardize=False).astype(np.float32))
        runs.append(s_runs)
        confounds.append(s_conf)
    return runs, confounds, n_sig


def test_ceiling_regresses_the_configured_confounds_out_first():
    """A motion artefact shared across subjects (it follows the story's loudness) passes for
    stimulus-driven signal in the inter-subject correlation (76-84 % of the noise voxels
    usable over seeds); with the confounds regressed out of each run first, the noise voxels
    are only the false discoveries FDR allows (0-4 of 180 over seeds, for 60 true ones), and
    the real signal's ceiling stays usable."""
    runs, confounds, n_sig = motion_confounded_subjects()
    index = [np.arange(runs[0][0].shape[1])] * len(runs)
    raw, _ = ceiling.subject_ceilings(runs, index, OPTS50)
    assert raw.usable[n_sig:].mean() > 0.5  # the defect: motion counted as signal
    clean, per_subject = ceiling.subject_ceilings(runs, index, OPTS50, confounds=confounds)
    assert clean.usable[:n_sig].mean() > 0.95
    false = int(clean.usable[n_sig:].sum())
    assert false / clean.usable.sum() <= 0.1  # q = 0.05 (FDR), with room for one draw
    assert per_subject[0]["usable"][n_sig:].sum() == false
    # two threads over blocks of voxels: the same numbers
    threaded, _ = ceiling.subject_ceilings(runs, index, replace(OPTS50, n_threads=2),
                                           confounds=confounds)
    np.testing.assert_allclose(threaded.group_ceiling, clean.group_ceiling, rtol=1e-12)
    np.testing.assert_allclose(threaded.p, clean.p, rtol=1e-10)


def test_shared_targets_of_surface_and_parcel_masks(tmp_path):
    """Vertices (or parcels) every subject kept, and each subject's columns of them; masks of
    another surface are refused naming the file."""
    from brainalign.ceiling import shared_targets

    keep_a = np.zeros(20, bool)
    keep_a[[1, 2, 3, 5, 8, 13]] = True
    keep_b = np.zeros(20, bool)
    keep_b[[2, 3, 5, 7, 13, 19]] = True
    paths = []
    for name, keep in (("a", keep_a), ("b", keep_b)):
        paths.append(tmp_path / f"{name}.npz")
        np.savez(paths[-1], keep=keep, n_left=10)
    shared, index = shared_targets(SurfaceTargets, paths)
    assert shared.n_left == 10
    np.testing.assert_array_equal(np.flatnonzero(shared.keep), [2, 3, 5, 13])
    np.testing.assert_array_equal(index[0], [1, 2, 3, 5])  # columns of a's BOLD
    np.testing.assert_array_equal(index[1], [0, 1, 2, 4])
    np.savez(tmp_path / "other.npz", keep=np.ones(30, bool), n_left=15)
    with pytest.raises(ValueError, match="other.npz.*one, or set `ceiling.method: none`"):
        shared_targets(SurfaceTargets, [paths[0], tmp_path / "other.npz"])
    names = ["A", "B", "C"]
    for name, keep in (("p", [True, False, True]), ("q", [True, True, True])):
        np.savez(tmp_path / f"{name}.npz", keep=np.array(keep), names=np.array(names))
    shared, index = shared_targets(ParcelTargets, [tmp_path / "p.npz", tmp_path / "q.npz"])
    assert shared.names == names
    np.testing.assert_array_equal(shared.keep, [True, False, True])
    np.testing.assert_array_equal(index[1], [0, 2])


def test_common_volumes_keep_the_runs_of_a_stimulus_in_sync():
    """One subject's run whole, another's cut into two blocks (volumes 4-5 dropped): both are
    compared on volumes 0-3 and 6-9, row for row."""
    from brainalign.ceiling import common_volumes

    whole = np.arange(10, dtype=float)[:, None]
    blocked = np.concatenate([whole[:4], whole[6:]])  # rows of volumes 0-3, 6-9
    runs, conf = common_volumes(
        [[whole], [blocked]], [[whole * 2], [blocked * 2]],
        [[np.array([[0, 10]])], [np.array([[0, 4], [6, 10]])]], [["story"], ["story"]])
    for sub in (0, 1):
        np.testing.assert_array_equal(runs[sub][0][:, 0], [0, 1, 2, 3, 6, 7, 8, 9])
        np.testing.assert_array_equal(conf[sub][0][:, 0], [0, 2, 4, 6, 12, 14, 16, 18])
    assert runs[1][0] is blocked  # already in sync: not copied


def test_ceiling_options_from_config_follow_the_schema():
    section = {"method": "repeat", "n_permutations": 100, "min_shift_s": 20.0, "fdr_q": 0.01,
               "min_ceiling": 0.2}
    assert CeilingOptions.from_config(section, 2.0, n_threads=4) == CeilingOptions(
        method="repeat", n_permutations=100, min_shift=10, fdr_q=0.01, min_ceiling=0.2,
        n_threads=4)
    # at least one volume of shift, however long the TR
    defaults = schema_defaults("ceiling")
    assert CeilingOptions.from_config({**defaults, "min_shift_s": 0.5}, 2.0).min_shift == 1
    # the library's defaults are the schema's (min_shift: 15 s at TR 1.5 s)
    assert CeilingOptions.from_config(defaults, 1.5) == CeilingOptions()
