"""Tests of brainalign.alignment: model frames -> one feature row per fMRI volume."""

from __future__ import annotations

import numpy as np
import pytest
from schema_defaults import schema_defaults

from brainalign import alignment
from brainalign.alignment import AlignOptions as A

FRAME_S = 0.02  # 20 ms model frames


def frames(duration_s: float, frame_s: float = FRAME_S) -> np.ndarray:
    """Frame centre times covering ``duration_s`` seconds."""
    return np.arange(int(round(duration_s / frame_s))) * frame_s + frame_s / 2


@pytest.mark.parametrize(("duration", "t_r", "expected"), [
    (10.0, 2.0, 5),     # exact multiple: no extra volume
    (10.1, 2.0, 6),     # a little over: one more volume covers the tail
    (9.9, 2.0, 5),
    (0.5, 1.5, 1),
    (4.5, 1.5, 3),      # 4.5 / 1.5 = 3.0000000000000004 in floating point, still 3
    (100.0, 0.8, 125),
])
def test_n_volumes(duration, t_r, expected):
    assert alignment.n_volumes(duration, t_r) == expected


def test_bin_mean_averages_frames_in_each_bin():
    times = np.array([0.1, 0.3, 0.9, 1.2, 1.4, 1.6, 2.5])
    values = np.array([[1, 10], [3, 20], [5, 30], [7, 0], [9, 0], [11, 6], [100, 100]], float)
    out = alignment.bin_mean(times, values, bin_s=1.0, n_bins=3)
    np.testing.assert_allclose(out, [[3, 20], [9, 2], [100, 100]])


def test_bin_mean_fills_empty_bins_forward_and_ignores_out_of_range():
    times = np.array([-0.5, 0.5, 2.5, 9.0])  # bin 1 empty; -0.5 and 9.0 outside [0, 4)
    values = np.array([[50.0], [2.0], [4.0], [70.0]])
    out = alignment.bin_mean(times, values, bin_s=1.0, n_bins=4)
    np.testing.assert_allclose(out[:, 0], [2.0, 2.0, 4.0, 4.0])
    # nothing before the first frame: zero
    out = alignment.bin_mean(np.array([2.5]), np.array([[3.0]]), 1.0, 4)
    np.testing.assert_allclose(out[:, 0], [0.0, 0.0, 3.0, 3.0])


def test_hrf_kernel_is_normalised_and_peaks_near_5s():
    for t_r in (0.8, 1.5, 2.0):
        k = alignment.hrf_kernel(t_r, 10, "glover")
        assert k.sum() == pytest.approx(1.0)
        assert 4.5 < k.argmax() * t_r / 10 < 5.5
        assert k.min() < 0  # the undershoot


@pytest.mark.parametrize("t_r", [1.0, 1.5, 2.0])
def test_impulse_response_peaks_5s_later_at_the_right_volume(t_r):
    duration = 40.0
    n_vols = alignment.n_volumes(duration, t_r)
    times = frames(duration)
    values = np.zeros((times.size, 1))
    onset = 6.0
    hit = np.searchsorted(times, onset)
    values[hit] = 1.0  # one nonzero frame
    out = alignment.hrf_features(times, values, t_r, n_vols)
    assert out.shape == (n_vols, 1) and out.dtype == np.float32
    vol_times = (np.arange(n_vols) + 0.5) * t_r  # slice_time_ref = 0.5
    peak_t = vol_times[out[:, 0].argmax()]
    delay = peak_t - times[hit]
    # the Glover HRF peaks ~5.1 s after the event; the volume grid samples it every TR
    assert abs(delay - 5.1) <= t_r / 2 + 0.1
    expected_vol = int(np.argmin(np.abs(vol_times - (times[hit] + 5.1))))
    assert out[:, 0].argmax() == expected_vol
    # causal: no response at volumes acquired before the event
    assert out[:, 0].max() > 0
    assert np.all(np.abs(out[vol_times < times[hit], 0]) < 1e-6 * out[:, 0].max())


def test_slice_time_reference_shifts_sampling_by_a_fraction_of_tr():
    t_r, duration = 2.0, 30.0
    times = frames(duration)
    values = np.zeros((times.size, 1))
    hit = np.searchsorted(times, 5.0)  # the frame at 5.01 s, in fine bin [5.0, 5.2) s
    values[hit] = 1.0
    n_vols = alignment.n_volumes(duration, t_r)
    early = alignment.hrf_features(times, values, t_r, n_vols, slice_time_ref=0.0)[:, 0]
    late = alignment.hrf_features(times, values, t_r, n_vols, slice_time_ref=0.5)[:, 0]
    kernel = alignment.hrf_kernel(t_r, 10)  # sampled every 0.2 s
    # the fine bin averages 10 frames, one of them 1; volume 5 is sampled at 10 s (ref 0), i.e.
    # 5 s after the event (kernel sample 25), or at 11 s (ref 0.5), 6 s after it (sample 30)
    assert early[5] == pytest.approx(kernel[25] / 10, rel=1e-4)
    assert late[5] == pytest.approx(kernel[30] / 10, rel=1e-4)
    # the whole response is the kernel, delayed by the event time and scaled by the bin mean
    vols = np.arange(3, n_vols)
    np.testing.assert_allclose(early[vols], kernel[vols * 10 - 25] / 10, rtol=1e-4, atol=1e-9)


def test_sustained_input_reaches_its_level_after_the_hrf_rise():
    t_r, duration = 1.5, 60.0
    times = frames(duration)
    values = np.full((times.size, 2), [1.0, -3.0])
    out = alignment.hrf_features(times, values, t_r, alignment.n_volumes(duration, t_r))
    # the kernel sums to one: a long block converges to the block's value (the undershoot
    # makes the first 30 s slightly different)
    np.testing.assert_allclose(out[-5:], np.tile([1.0, -3.0], (5, 1)), rtol=1e-2)
    assert out[0, 0] < 0.2  # still rising at the first volume


def test_fir_features_shift_by_exactly_the_delays():
    t_r, n_vols = 2.0, 8
    times = frames(n_vols * t_r)
    per_tr = np.arange(1, n_vols + 1, dtype=float)  # volume k has value k + 1 during its TR
    values = np.stack([per_tr[(times // t_r).astype(int)],
                       -per_tr[(times // t_r).astype(int)]], axis=1)
    delays = [0, 2, 3]
    out = alignment.fir_features(times, values, t_r, n_vols, delays)
    assert out.shape == (n_vols, 2 * len(delays))
    for j, d in enumerate(delays):
        expected = np.zeros(n_vols)
        expected[d:] = per_tr[: n_vols - d]
        np.testing.assert_allclose(out[:, 2 * j], expected)
        np.testing.assert_allclose(out[:, 2 * j + 1], -expected)


def test_fir_delay_longer_than_run_gives_zeros():
    times = frames(6.0)
    out = alignment.fir_features(times, np.ones((times.size, 1)), 2.0, 3, [1, 5])
    np.testing.assert_allclose(out[:, 0], [0, 1, 1])
    np.testing.assert_allclose(out[:, 1], 0)


def test_align_dispatches_and_rejects_unknown_method():
    t_r, duration = 1.5, 30.0
    times = frames(duration)
    values = np.random.default_rng(0).standard_normal((times.size, 3))
    n_vols = alignment.n_volumes(duration, t_r)
    hrf = alignment.align(times, values, t_r, duration, A(method="hrf"))
    centred = values - values.mean(0)  # align centres each feature over the stimulus first
    np.testing.assert_allclose(hrf, alignment.hrf_features(times, centred, t_r, n_vols),
                               rtol=1e-5, atol=1e-7)
    raw = alignment.align(times, values, t_r, duration, A(method="hrf", center=False))
    np.testing.assert_allclose(raw, alignment.hrf_features(times, values, t_r, n_vols))
    fir = alignment.align(times, values, t_r, duration, A(method="fir", delays=(1, 2)))
    assert fir.shape == (n_vols, 6)
    spm = alignment.align(times, values, t_r, duration, A(method="hrf", hrf_model="spm"))
    assert spm.shape == hrf.shape and not np.allclose(spm, hrf)
    with pytest.raises(ValueError, match="unknown alignment method 'boxcar'"):
        alignment.align(times, values, t_r, duration, A(method="boxcar"))


def test_lanczos_kernel():
    a = 3
    assert alignment.lanczos_kernel(np.array([0.0]), a)[0] == pytest.approx(1.0)
    np.testing.assert_allclose(alignment.lanczos_kernel(np.array([-2.0, -1.0, 1.0, 2.0]), a), 0,
                               atol=1e-12)
    np.testing.assert_allclose(alignment.lanczos_kernel(np.array([-3.0, 3.0, 4.5]), a), 0)
    x = np.array([0.3, 1.7, 2.5])
    np.testing.assert_allclose(alignment.lanczos_kernel(x, a), np.sinc(x) * np.sinc(x / a))
    np.testing.assert_allclose(alignment.lanczos_kernel(-x, a), alignment.lanczos_kernel(x, a))


def _interior(n_vols, t_r, duration, window=3, slice_time_ref=0.5):
    """Volumes whose whole Lanczos window (window * t_r either side) lies inside the stimulus."""
    t = (np.arange(n_vols) + slice_time_ref) * t_r
    return (t - window * t_r >= 0) & (t + window * t_r <= duration)


@pytest.mark.parametrize("t_r", [1.5, 2.0])
def test_lanczos_reproduces_a_slow_sinusoid_at_the_volume_times(t_r):
    duration, freq = 300.0, 0.2 / (2 * t_r)  # a fifth of the TR grid's Nyquist frequency
    times = frames(duration)
    values = np.stack([np.sin(2 * np.pi * freq * times), np.cos(2 * np.pi * freq * times)], 1)
    n_vols = alignment.n_volumes(duration, t_r)
    out = alignment.lanczos_features(times, values, t_r, n_vols, delays=[0])
    vol_t = (np.arange(n_vols) + 0.5) * t_r
    truth = np.stack([np.sin(2 * np.pi * freq * vol_t), np.cos(2 * np.pi * freq * vol_t)], 1)
    inside = _interior(n_vols, t_r, duration)
    assert inside.sum() > 100
    for j in range(2):
        assert np.corrcoef(out[inside, j], truth[inside, j])[0, 1] > 0.99
        assert np.corrcoef(out[:, j], truth[:, j])[0, 1] > 0.99  # edges included
    np.testing.assert_allclose(out[inside], truth[inside], atol=0.03)  # the amplitude too


def test_lanczos_removes_frequencies_above_the_tr_nyquist():
    t_r, duration = 2.0, 300.0
    times = frames(duration)
    values = np.sin(2 * np.pi * 0.4 * times)[:, None]  # Nyquist of a 2 s grid: 0.25 Hz
    n_vols = alignment.n_volumes(duration, t_r)
    out = alignment.lanczos_features(times, values, t_r, n_vols, delays=[0])
    inside = _interior(n_vols, t_r, duration)
    assert np.abs(out[inside]).max() < 0.05  # no aliasing of the fast oscillation


def test_lanczos_keeps_a_constant_and_tapers_at_the_stimulus_edges():
    t_r, duration = 1.5, 60.0
    times = frames(duration)
    values = np.full((times.size, 2), [2.0, -0.5])
    n_vols = alignment.n_volumes(duration, t_r)
    out = alignment.lanczos_features(times, values, t_r, n_vols, delays=[0])
    inside = _interior(n_vols, t_r, duration)
    np.testing.assert_allclose(out[inside], np.tile([2.0, -0.5], (inside.sum(), 1)), rtol=1e-3)
    # no frames before onset or after the end (silence): the edges fall towards zero
    assert 0.3 * 2.0 < out[0, 0] < 2.0 and 0.3 * 2.0 < out[-1, 0] < 2.0
    # jittered frame times (weights are normalised by the mean frame spacing): still constant
    jitter = np.random.default_rng(1).uniform(-0.4, 0.4, times.size) * FRAME_S
    out = alignment.lanczos_features(times + jitter, values, t_r, n_vols, delays=[0])
    np.testing.assert_allclose(out[inside], np.tile([2.0, -0.5], (inside.sum(), 1)), rtol=0.01)


def test_align_lanczos_shape_and_fir_delays():
    t_r, duration = 1.5, 30.0
    times = frames(duration)
    values = np.random.default_rng(0).standard_normal((times.size, 3))
    n_vols = alignment.n_volumes(duration, t_r)
    out = alignment.align(times, values, t_r, duration, A(method="lanczos", delays=(1, 2, 3, 4)))
    assert out.shape == (n_vols, 3 * 4) and out.dtype == np.float32
    plain = alignment.lanczos_features(times, values - values.mean(0), t_r, n_vols, delays=[0])
    for j, d in enumerate([1, 2, 3, 4]):
        block = out[:, 3 * j:3 * (j + 1)]
        np.testing.assert_allclose(block[:d], 0)
        np.testing.assert_allclose(block[d:], plain[: n_vols - d])
    # default delays: the Huth lab's 1..4 volumes; the window is a parameter
    assert alignment.align(times, values, t_r, duration, A(method="lanczos")).shape == (n_vols, 12)
    wide = alignment.align(times, values, t_r, duration, A(method="lanczos", lanczos_window=5))
    assert wide.shape == out.shape and not np.allclose(wide, out)


@pytest.mark.parametrize("method", ["hrf", "fir", "lanczos"])
def test_onset_shifts_the_response_by_whole_volumes(method):
    t_r, duration, onset = 1.5, 30.0, 3.0  # onset = 2 volumes
    times = frames(duration)
    values = np.zeros((times.size, 1))
    values[np.searchsorted(times, 6.0)] = 1.0  # an impulse 6 s into the stimulus
    opts = A(method=method, delays=(1, 2))
    base = alignment.align(times, values, t_r, duration, opts)
    late = alignment.align(times, values, t_r, duration, opts, onset_s=onset)
    assert base.shape[0] == alignment.n_volumes(duration, t_r)
    assert late.shape == (alignment.n_volumes(duration + onset, t_r), base.shape[1])
    assert late.shape[0] == base.shape[0] + 2
    assert np.abs(base).max() > 0
    np.testing.assert_allclose(late[2:], base, rtol=1e-5, atol=1e-7 * np.abs(base).max())
    np.testing.assert_allclose(late[:2], 0, atol=1e-7 * np.abs(base).max())
    assert late[:, 0].argmax() == base[:, 0].argmax() + 2


@pytest.mark.parametrize("method", ["hrf", "fir", "lanczos"])
@pytest.mark.parametrize(("onset", "dropped"), [(3.0, 4), (0.0, 5), (2.3, 2), (0.4, 1)])
def test_stimulus_begun_before_the_first_kept_volume_is_cropped_from_the_full_run(
        method, onset, dropped):
    """Known answer: a run whose first ``dropped`` volumes were removed after the audio
    started (a negative onset) gets exactly the rows of the full run's features from volume
    ``dropped`` on, HRF and delay history included; and the same first analysed volume, counted
    from the true onset (volumes within exclude_onset_s of it stay out, later ones stay in)."""
    t_r, duration, delays = 1.5, 40.0, [1, 2, 3, 4]
    times = frames(duration)
    values = 2.0 + np.random.default_rng(0).standard_normal((times.size, 3))
    opts = A(method=method, delays=tuple(delays))
    full = alignment.align(times, values, t_r, duration, opts, onset_s=onset)
    cut_onset = onset - dropped * t_r
    cut = alignment.align(times, values, t_r, duration, opts, onset_s=cut_onset)
    assert cut_onset < 0 and cut.shape == (full.shape[0] - dropped, full.shape[1])
    assert cut.shape[0] == alignment.n_volumes(duration + cut_onset, t_r)
    scale = np.abs(full).max()
    np.testing.assert_allclose(cut, full[dropped:], rtol=1e-5, atol=1e-5 * scale)
    for exclude in (0.0, 5.0, 20.0):
        f_full = alignment.first_volume(onset, t_r, exclude, method, delays)
        f_cut = alignment.first_volume(cut_onset, t_r, exclude, method, delays)
        assert f_cut == max(0, f_full - dropped), (exclude, f_full, f_cut)
        # the analysed rows are the full run's analysed rows (those after the cut)
        np.testing.assert_allclose(cut[f_cut:], full[max(f_full, dropped):], rtol=1e-5,
                                   atol=1e-5 * scale)


def test_first_volume_counts_the_onset_transient_from_the_true_onset():
    # stimulus began 6 s before the first kept volume (TR 1.5): 20 s transient -> 14 s left,
    # ceil(14 / 1.5) = 10 volumes out; a run starting 30 s in keeps every volume
    assert alignment.first_volume(-6.0, 1.5, 20.0) == 10
    assert alignment.first_volume(-30.0, 1.5, 20.0) == 0
    assert alignment.first_volume(-3.0, 1.5, 0.0, "fir", [1, 2, 3, 4]) == 2
    assert alignment.first_volume(-9.0, 1.5, 0.0, "fir", [1, 2, 3, 4]) == 0


def test_stimulus_ended_before_the_run_is_rejected():
    times = frames(10.0)
    with pytest.raises(ValueError, match="ends before the run's first kept volume"):
        alignment.align(times, np.ones((times.size, 1)), 1.5, 10.0, onset_s=-10.0)


def test_first_volume_leaves_out_silence_onset_and_rows_without_history():
    # HRF: the silence before the onset and exclude_onset_s after it, in whole volumes
    assert alignment.first_volume(0.0, 1.5, 20.0) == 14  # ceil(20 / 1.5)
    assert alignment.first_volume(3.0, 1.5, 0.0) == 2
    assert alignment.first_volume(3.0, 1.5, 20.0, "hrf") == 16  # ceil(23 / 1.5)
    # FIR / Lanczos: at least every delay after the onset, whatever exclude_onset_s says
    assert alignment.first_volume(0.0, 2.0, 0.0, "fir", [1, 2, 3, 4]) == 4
    assert alignment.first_volume(3.0, 1.5, 0.0, "lanczos", [2, 6]) == 2 + 6
    assert alignment.first_volume(0.0, 2.0, 20.0, "fir", [1, 2, 3, 4]) == 10
    with pytest.raises(ValueError, match="must be >= 0"):
        alignment.first_volume(0.0, 2.0, -1.0)


@pytest.mark.parametrize("method", ["fir", "lanczos"])
def test_kept_fir_rows_have_every_delayed_copy_from_the_stimulus(method):
    """Features with a large mean (as real activations have): before the fix, the first rows'
    delayed copies were zeros standing in for the missing history, marking every run's start.
    From first_volume on, every delayed copy comes from inside the stimulus."""
    t_r, duration, onset, delays = 1.5, 30.0, 3.0, [1, 2, 3, 4]
    times = frames(duration)
    values = 5.0 + np.random.default_rng(0).standard_normal((times.size, 2))
    raw = alignment.align(times, values, t_r, duration,
                          A(method=method, delays=tuple(delays), center=False), onset_s=onset)
    first = alignment.first_volume(onset, t_r, 0.0, method, delays)
    assert (raw[:first] == 0).any()  # what the left-out rows would have carried
    assert (np.abs(raw[first:]) > 1.0).all()  # every copy is stimulus: mean 5, never zero
    centred = alignment.align(times, values, t_r, duration,
                              A(method=method, delays=tuple(delays)), onset_s=onset)
    assert abs(centred[first:].mean()) < 0.5  # and, centred, no offset marks the run


def test_align_centres_so_an_onset_ramp_cannot_mark_the_run_start():
    """Uncentred activations convolved from silence: the first 20 volumes hold a large share of
    the feature variance (a ramp up to the features' mean, the same in every run); centred on
    the stimulus mean, they hold about their share of the time."""
    t_r, duration = 1.0, 160.0
    times = frames(duration)
    values = 3.0 + np.random.default_rng(1).standard_normal((times.size, 4))
    n = alignment.n_volumes(duration, t_r)

    def onset_share(x):
        x = x - x.mean(0)
        return float((x[:20] ** 2).sum() / (x**2).sum())

    assert onset_share(alignment.align(times, values, t_r, duration, A(center=False))) > 0.5
    assert onset_share(alignment.align(times, values, t_r, duration)) < 3 * 20 / n


def test_seconds_to_volumes_rounds_to_the_nearest_volume():
    assert alignment.seconds_to_volumes(15.0, 2.0) == 8  # 7.5 volumes: round half to even
    assert alignment.seconds_to_volumes(14.0, 1.5) == 9
    assert alignment.seconds_to_volumes(0.0, 2.0) == 0


def test_analysed_rows_keeps_the_analysed_volumes_of_a_run():
    # row k of aligned features is volume k of the stimulus grid; the rows kept are those of
    # the BOLD volumes analysed (from `first` on), so row j matches analysed volume j
    features = np.arange(40, dtype=np.float32).reshape(20, 2)
    kept = alignment.analysed_rows(features, first=3, n_analysed=12)
    np.testing.assert_array_equal(kept[:, 0], np.arange(3, 15) * 2)
    assert kept.shape == (12, 2)
    # a run that stopped early: fewer rows than asked, left for split_blocks to report
    assert len(alignment.analysed_rows(features, first=15, n_analysed=12)) == 5
    with pytest.raises(ValueError, match="must be >= 0"):
        alignment.analysed_rows(features, first=-1, n_analysed=3)


def test_align_options_from_config_follow_the_schema():
    section = {"method": "fir", "hrf_model": "spm", "fir_delays": [2, 5],
               "slice_time_ref": 0.0, "lanczos_window": 4}
    assert A.from_config(section) == A(method="fir", hrf_model="spm", delays=(2, 5),
                                       slice_time_ref=0.0, lanczos_window=4, center=True)
    # the library's defaults are the schema's (which requires only the method)
    defaults = schema_defaults("alignment")
    assert A.from_config({"method": "hrf", **defaults}) == A()
    assert A.from_config({**defaults, "method": "lanczos"}) == A(method="lanczos")
