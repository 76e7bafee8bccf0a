"""Tests of the feature stage (brainalign.features, .precision, .windows, .similarity): speech-model
layers, windowed extraction, precision probe, HDF5 storage, CKA."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from schema_defaults import schema_defaults

from brainalign import features as F
from brainalign import io
from brainalign import models as M
from brainalign import precision as P
from brainalign import similarity as S
from brainalign import windows as W
from brainalign.audio import TARGET_SR
from brainalign.cpu_kernels import packed_linear
from brainalign.windows import WindowOptions

ROOT = Path(__file__).resolve().parents[1]

TINY = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2,
        "intermediate_size": 64, "conv_dim": (32,) * 7}
WHISPER_DIR = Path(__file__).resolve().parents[2] / "shared" / "models" / "whisper-tiny.en"
W2V_GEOM = M.FrameGeometry(stride=320, offset=200.0, margin=80)  # wav2vec2 defaults


@pytest.fixture(autouse=True)
def probe_cache(tmp_path, monkeypatch) -> Path:
    """Precision-probe decisions cached per test, never in the user's ~/.cache."""
    monkeypatch.setenv("BRAINALIGN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def tiny_spec(**extra) -> M.ModelSpec:
    return M.ModelSpec("tiny", "random", "wav2vec2", 0, {**TINY, **extra})


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A gliding, amplitude-modulated tone in noise at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * TARGET_SR)) / TARGET_SR
    x = 0.3 * np.sin(2 * np.pi * (150 + 80 * t) * t) * (1 + np.sin(2 * np.pi * 4 * t)) / 2
    return (x + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_extractor():
    ex = F.LayerExtractor(tiny_spec(), device="cpu", precision="float32")
    ex.feature_extractor.do_normalize = False  # per-chunk normalisation off: chunks comparable
    return ex


@pytest.fixture(scope="module")
def tiny_h5(tiny_extractor, tmp_path_factory):
    audio = speech_like(3.0)
    path = tmp_path_factory.mktemp("feat") / "stim.h5"
    F.extract_features(tiny_extractor, audio, path,
                       WindowOptions(window_s=1.0, context_s=0.5, batch_size=2), dtype="float32")
    return path, audio


# ------------------------------------------------------------------------------ geometry
def test_frame_geometry_of_wav2vec2_matches_its_output_length(tiny_extractor):
    geom = tiny_extractor.geometry
    assert geom == W2V_GEOM  # receptive field 400 samples (25 ms), hop 320 (20 ms)
    for n in (400, 719, 720, 1039, 4321):
        out = tiny_extractor([speech_like(n / TARGET_SR)[:n]])
        assert out[0].shape[1] == W.n_frames_total(n, geom), n
    assert W.n_frames_total(399, geom) == 0


@pytest.mark.parametrize(("geom", "n_samples", "window_s", "context_s"), [
    (W2V_GEOM, 80_000, 1.0, 0.5),
    (W2V_GEOM, 80_000, 10.0, 5.0),    # one window longer than the audio
    (W2V_GEOM, 81_234, 2.0, 0.0),     # no context; ragged end
    (W2V_GEOM, 160_000, 0.3, 3.0),    # context longer than the window
    (W2V_GEOM, 1_000, 1.0, 0.5),      # a couple of frames only
    (M.FrameGeometry(320, 0.0, 360, 480_000), 64_000, 2.0, 1.0),  # Whisper
    (M.FrameGeometry(320, 0.0, 360, 480_000), 1_000_000, 20.0, 8.0),
])
def test_plan_windows_covers_every_frame_once_without_wraparound(geom, n_samples, window_s,
                                                                 context_s):
    windows = W.plan_windows(n_samples, geom, window_s, context_s)
    total = W.n_frames_total(n_samples, geom)
    covered = np.zeros(total, int)
    for w in windows:
        covered[w.first_frame:w.first_frame + w.n_keep] += 1
        # no wrap-around: chunks lie inside the audio, in order
        assert 0 <= w.start < w.stop <= n_samples
        # the kept frames are the chunk's own frames, each with its full receptive field
        assert W.n_frames_total(w.stop - w.start, geom) >= w.keep_from + w.n_keep
        assert w.start + w.keep_from * geom.stride == w.first_frame * geom.stride
        # left context as configured, or all the audio there is
        ctx = round(context_s * TARGET_SR / geom.stride) * geom.stride
        assert w.keep_from * geom.stride == min(ctx, w.first_frame * geom.stride)
    np.testing.assert_array_equal(covered, 1)
    first = windows[0]
    assert first.start == 0 and first.keep_from == 0 and first.first_frame == 0
    assert [w.first_frame for w in windows] == sorted(w.first_frame for w in windows)


def test_plan_windows_refuses_windows_beyond_whisper_input():
    geom = M.FrameGeometry(320, 0.0, 360, 480_000)
    with pytest.raises(M.ModelError, match="fixed input is 30 s"):
        W.plan_windows(1_000_000, geom, window_s=25.0, context_s=10.0)
    # exactly 30 s fails on the receptive-field margin, which the message must state
    with pytest.raises(M.ModelError) as err:
        W.plan_windows(1_000_000, geom, window_s=10.0, context_s=12.0, right_context_s=8.0)
    msg = str(err.value)
    assert "window_s + context_s + right_context_s = 30.00 s" in msg
    assert "at most 29.96 s" in msg and "0.0225 s past the window" in msg
    # and the stated limit is the real one: 29.96 s passes, 29.98 s does not
    W.plan_windows(1_000_000, geom, window_s=10.0, context_s=12.0, right_context_s=7.96)
    with pytest.raises(M.ModelError, match="at most 29.96 s"):
        W.plan_windows(1_000_000, geom, window_s=10.0, context_s=12.0, right_context_s=7.98)


def test_frame_times_are_20ms_apart_and_centred():
    t = W.frame_times(5, W2V_GEOM)
    np.testing.assert_allclose(np.diff(t), 0.02)
    assert t[0] == pytest.approx(200 / TARGET_SR)  # centre of the first 25 ms receptive field


# -------------------------------------------------------------------- windowed extraction
def test_extract_features_file_layout(tiny_h5, tiny_extractor):
    path, audio = tiny_h5
    total = W.n_frames_total(len(audio), tiny_extractor.geometry)
    with h5py.File(path, "r") as h5:
        assert sorted(h5) == ["frame_times", "layer-00", "layer-01", "layer-02", "layer-03"]
        assert h5.attrs["n_layers"] == 4 and h5.attrs["model"] == "tiny"
        assert h5.attrs["duration_s"] == pytest.approx(3.0)
        assert h5["layer-02"].shape == (total, 32)
    times, values = io.read_frame_times(path), io.read_layer(path, "01")
    assert values.dtype == np.float32 and values.shape == (total, 32)
    np.testing.assert_allclose(np.diff(times), 0.020, atol=1e-9)
    assert np.isfinite(values).all()
    # no temporary file left behind
    assert not path.with_suffix(".tmp.h5").exists()


def test_first_window_equals_single_pass_over_its_chunk(tiny_h5, tiny_extractor):
    path, audio = tiny_h5
    w = W.plan_windows(len(audio), tiny_extractor.geometry, 1.0, 0.5)[0]
    single = tiny_extractor([audio[w.start:w.stop]])
    for layer in range(4):
        values = io.read_layer(path, layer)
        np.testing.assert_allclose(values[:w.n_keep], single[layer][0, :w.n_keep],
                                   rtol=1e-4, atol=1e-5)


def test_later_windows_use_left_context(tiny_h5, tiny_extractor):
    path, audio = tiny_h5
    w = W.plan_windows(len(audio), tiny_extractor.geometry, 1.0, 0.5)[1]
    assert w.keep_from > 0
    with_context = tiny_extractor([audio[w.start:w.stop]])
    values = io.read_layer(path, 3)
    kept = values[w.first_frame:w.first_frame + w.n_keep]
    np.testing.assert_allclose(kept, with_context[3][0, w.keep_from:w.keep_from + w.n_keep],
                               rtol=1e-4, atol=1e-5)
    # running the window alone (no context) gives different transformer states
    alone = tiny_extractor([audio[w.first_frame * 320:w.stop]])
    assert not np.allclose(kept, alone[3][0, :w.n_keep], atol=1e-3)


def test_windowed_local_layer_equals_whole_pass_for_every_frame():
    # With a per-frame LayerNorm feature encoder (no GroupNorm over time) and no input
    # normalisation, layer 0 is a purely local function of the audio: windowing must then
    # reproduce a single pass over the whole stimulus exactly, for every window.
    ex = F.LayerExtractor(tiny_spec(feat_extract_norm="layer"), device="cpu", precision="float32")
    ex.feature_extractor.do_normalize = False
    audio = speech_like(2.5, seed=1)
    frames = {}
    for batch, kept in F.iter_layer_batches(
            ex, audio, WindowOptions(window_s=0.4, context_s=0.2, batch_size=3)):
        for w, layers in zip(batch, kept, strict=True):
            frames[w.first_frame] = layers[0]
    stitched = np.concatenate([frames[k] for k in sorted(frames)])
    whole = ex([audio])[0][0]
    assert stitched.shape == whole.shape
    np.testing.assert_allclose(stitched, whole, rtol=1e-4, atol=1e-5)


def test_float16_storage_and_short_stimulus(tiny_extractor, tmp_path):
    audio = speech_like(1.0)
    path = tmp_path / "half.h5"
    F.extract_features(tiny_extractor, audio, path, WindowOptions(window_s=0.5, context_s=0.2))
    with h5py.File(path, "r") as h5:
        assert h5["layer-00"].dtype == np.float16
    values = io.read_layer(path, 0)
    assert values.dtype == np.float32
    ref = tiny_extractor([audio[:W.plan_windows(len(audio), tiny_extractor.geometry, 0.5,
                                                0.2)[0].stop]])[0][0]
    np.testing.assert_allclose(values[:25], ref[:25], rtol=1e-2, atol=1e-2)
    with pytest.raises(M.ModelError, match="too short"):
        F.extract_features(tiny_extractor, audio[:300], tmp_path / "short.h5",
                           WindowOptions(0.5, 0.2))


def test_read_layer_missing_layer_raises_keyerror(tiny_h5):
    path, _ = tiny_h5
    with pytest.raises(KeyError) as exc:
        io.read_layer(path, 7)
    assert "layer-07" in str(exc.value) and str(path) in str(exc.value)


# ------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("arch", [
    "wavlm", "data2vec-audio", "hubert", "wav2vec2",
])
def test_random_architectures_give_every_layer(arch):
    ex = F.LayerExtractor(M.ModelSpec("t", "random", arch, 0, dict(TINY)), device="cpu",
                          precision="float32")
    ex.feature_extractor.do_normalize = False
    audio = speech_like(0.5)
    out = ex([audio, audio[::-1].copy()])
    n = W.n_frames_total(len(audio), ex.geometry)
    assert len(out) == ex.n_layers == 4
    assert [o.shape for o in out] == [(2, n, 32)] * 4
    assert not np.allclose(out[1][0], out[1][1])  # the two chunks are different audio


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_random_whisper_encoder_layers(precision):
    overrides = {"d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2,
                 "encoder_ffn_dim": 64, "decoder_layers": 1, "decoder_attention_heads": 2,
                 "decoder_ffn_dim": 64}
    spec = M.ModelSpec("w", "random", "whisper", 0, overrides)
    assert M.layer_ids(spec) == ["00", "01", "02"]
    ex = F.LayerExtractor(spec, device="cpu", precision=precision)
    assert ex.geometry == M.FrameGeometry(320, 0.0, 360, 480_000)
    out = ex([speech_like(1.0)])  # the log-mel front end stays float32 under bfloat16
    # the encoder always sees 30 s (padded): 1500 frames of 20 ms, cropped by the windows
    assert [o.shape for o in out] == [(1, 1500, 32)] * 3
    assert all(o.dtype == np.float32 and np.isfinite(o).all() for o in out)


def test_layer_ids_of_tiny_spec():
    assert M.layer_ids(tiny_spec()) == ["00", "01", "02", "03"]


def test_model_spec_from_config():
    spec = M.ModelSpec.from_config("m", {"source": "random", "architecture": "hubert",
                                         "config_overrides": None})
    assert spec == M.ModelSpec("m", "random", "hubert", 0, {})
    assert M.n_layers(M.load_model_config(spec)) == 13  # hubert-base: 12 layers + input


def test_random_model_config_errors():
    with pytest.raises(M.ModelError, match="needs `architecture`"):
        M.load_model_config(M.ModelSpec("m", "random"))
    with pytest.raises(M.ModelError, match="unknown architecture 'conformer'"):
        M.load_model_config(M.ModelSpec("m", "random", "conformer"))


def test_unknown_hub_id_raises_model_error_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(M.ModelError) as exc:
        M.load_model_config(M.ModelSpec("ghost", "no-such-org/no-such-model"))
    assert "no-such-org/no-such-model" in str(exc.value)
    assert "model 'ghost'" in str(exc.value)


def test_local_directory_without_config_raises_model_error(tmp_path):
    with pytest.raises(M.ModelError, match="no usable config.json"):
        M.load_model_config(M.ModelSpec("empty", str(tmp_path)))


# ---------------------------------------------------------------------------------- CKA
def test_linear_cka_invariances():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 10)) @ rng.standard_normal((10, 10))
    q, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    assert S.linear_cka(x, x) == pytest.approx(1.0)
    # orthogonal rotation, isotropic scaling and translation leave CKA at 1
    assert S.linear_cka(x, 3.7 * x @ q + 5.0) == pytest.approx(1.0, abs=1e-6)
    # a wider copy (rotated into more dimensions) too
    q2, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    assert S.linear_cka(x, x @ q2[:10]) == pytest.approx(1.0, abs=1e-6)
    # independent representations: near 0
    y = rng.standard_normal((500, 10))
    assert S.linear_cka(x, y) < 0.1
    assert S.linear_cka(x, y) == pytest.approx(S.linear_cka(y, x))
    # a noisy copy sits in between
    mid = S.linear_cka(x, x + 2 * rng.standard_normal(x.shape) * x.std())
    assert 0.1 < mid < 0.95


def test_layer_similarity_on_handmade_files(tmp_path):
    rng = np.random.default_rng(1)
    rotation = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    paths = []
    for s in range(2):  # two stimuli, pooled
        n = 1500  # 30 s of 20 ms frames
        base = rng.standard_normal((n, 6))
        # layer 1: a rotated, scaled copy of layer 0; layer 2: unrelated
        layers = [base, 2 * base @ rotation, rng.standard_normal((n, 6))]
        path = tmp_path / f"s{s}.h5"
        with h5py.File(path, "w") as h5:
            h5.create_dataset("frame_times", data=W.frame_times(n, W2V_GEOM))
            for i, arr in enumerate(layers):
                h5.create_dataset(f"layer-{i:02d}", data=arr.astype(np.float16))
            h5.attrs["n_layers"] = 3
        paths.append(path)
    sim = S.layer_similarity(paths, t_r=0.5)
    assert sim[["layer_a", "layer_b"]].values.tolist() == [[0, 1], [1, 2]]
    assert sim["linear_cka"].iloc[0] == pytest.approx(1.0, abs=1e-3)
    assert sim["linear_cka"].iloc[1] < 0.3


# ----------------------------------------------------------------------- real Whisper tiny
def test_pretrained_whisper_tiny_en_layers(tmp_path):
    if not WHISPER_DIR.is_dir():
        pytest.skip(f"{WHISPER_DIR} not present")
    spec = M.ModelSpec("whisper", str(WHISPER_DIR))
    assert M.layer_ids(spec) == ["00", "01", "02", "03", "04"]
    ex = F.LayerExtractor(spec, device="cpu", precision="float32")
    assert ex.n_layers == 5
    assert ex.geometry.stride == 320 and ex.geometry.max_input == 30 * TARGET_SR
    audio = speech_like(4.0, seed=2)
    path = tmp_path / "whisper.h5"
    F.extract_features(ex, audio, path, WindowOptions(window_s=2.0, context_s=1.0),
                       dtype="float32")
    total = W.n_frames_total(len(audio), ex.geometry)
    assert 195 <= total <= 200  # ~4 s of 20 ms frames
    outs = [io.read_layer(path, layer) for layer in range(5)]
    for values in outs:
        assert values.shape == (total, 384) and np.isfinite(values).all()
    np.testing.assert_allclose(np.diff(io.read_frame_times(path)), 0.020, atol=1e-9)
    # the first window's frames are those of a single pass over its chunk (padded to 30 s)
    w = W.plan_windows(len(audio), ex.geometry, 2.0, 1.0)[0]
    single = ex([audio[w.start:w.stop]])
    for layer in (0, 4):
        np.testing.assert_allclose(outs[layer][:w.n_keep], single[layer][0, :w.n_keep],
                                   rtol=1e-3, atol=1e-3)
    # the pretrained layers are distinct representations, not copies
    assert S.linear_cka(outs[0], outs[4]) < 0.99
    # real weights under bfloat16: every channel still correlates > 0.998 with float32
    bf16 = F.LayerExtractor(spec, device="cpu", precision="bfloat16")([audio])
    full = ex([audio])
    for a, b in zip(full, bf16, strict=True):
        a, b = a[0, :total], b[0, :total]
        live = np.flatnonzero(a.std(0) > 1e-3)
        assert min(np.corrcoef(a[:, j], b[:, j])[0, 1] for j in live) > 0.998


# ------------------------------------------------------------- right context and modes
@pytest.fixture(scope="module")
def local_extractor():
    """Tiny wav2vec2 whose CNN is per-frame (LayerNorm, no GroupNorm over time), unnormalised."""
    ex = F.LayerExtractor(tiny_spec(feat_extract_norm="layer"), device="cpu", precision="float32")
    ex.feature_extractor.do_normalize = False
    return ex


def stitch(extractor, audio, **kwargs) -> list[np.ndarray]:
    """Per-layer (n_frames, n_features) arrays assembled from iter_layer_batches."""
    parts: dict[int, list[np.ndarray]] = {}
    for batch, kept in F.iter_layer_batches(extractor, audio, WindowOptions(**kwargs)):
        for w, layers in zip(batch, kept, strict=True):
            parts[w.first_frame] = layers
    order = sorted(parts)
    return [np.concatenate([parts[k][i] for k in order]) for i in range(extractor.n_layers)]


@pytest.mark.parametrize(("n_samples", "window_s", "context_s", "right_s"), [
    (80_000, 1.0, 0.5, 0.5),
    (81_234, 0.3, 0.0, 2.0),      # right context longer than the window; ragged end
    (80_000, 10.0, 5.0, 1.0),     # one window longer than the audio
    (1_000, 1.0, 0.5, 0.5),
])
def test_plan_windows_right_context(n_samples, window_s, context_s, right_s):
    geom = W2V_GEOM
    windows = W.plan_windows(n_samples, geom, window_s, context_s, right_context_s=right_s)
    total = W.n_frames_total(n_samples, geom)
    covered = np.zeros(total, int)
    rctx = round(right_s * TARGET_SR / geom.stride) * geom.stride
    for w in windows:
        covered[w.first_frame:w.first_frame + w.n_keep] += 1
        assert 0 <= w.start < w.stop <= n_samples
        end_of_kept = (w.first_frame + w.n_keep) * geom.stride + geom.margin
        # right context as configured, clipped at the end of the audio
        assert w.stop == min(n_samples, end_of_kept + rctx)
        assert W.n_frames_total(w.stop - w.start, geom) >= w.keep_from + w.n_keep
    np.testing.assert_array_equal(covered, 1)
    # without right context the plan is the old one, exactly
    assert W.plan_windows(n_samples, geom, window_s, context_s, right_context_s=0.0) == \
        W.plan_windows(n_samples, geom, window_s, context_s)


def test_full_left_and_right_context_equals_single_pass_for_every_layer(local_extractor,
                                                                       tmp_path):
    audio = speech_like(2.0, seed=3)
    whole = local_extractor([audio])
    path = tmp_path / "ctx.h5"
    F.extract_features(local_extractor, audio, path,
                       WindowOptions(window_s=0.4, context_s=3.0, right_context_s=3.0,
                                     batch_size=3), dtype="float32")
    for layer in range(local_extractor.n_layers):
        values = io.read_layer(path, layer)
        assert values.shape == whole[layer][0].shape
        np.testing.assert_allclose(values, whole[layer][0], rtol=1e-4, atol=1e-4)
    with h5py.File(path, "r") as h5:
        assert h5.attrs["right_context_s"] == 3.0 and h5.attrs["mode"] == "windowed"


def test_right_context_is_fed_but_not_kept(local_extractor):
    audio = speech_like(2.0, seed=4)
    kwargs = dict(window_s=0.5, context_s=0.2, batch_size=2)
    with_right = stitch(local_extractor, audio, right_context_s=0.5, **kwargs)
    without = stitch(local_extractor, audio, **kwargs)
    w = W.plan_windows(len(audio), local_extractor.geometry, 0.5, 0.2, right_context_s=0.5)[1]
    single = local_extractor([audio[w.start:w.stop]])
    sl = slice(w.first_frame, w.first_frame + w.n_keep)
    np.testing.assert_allclose(with_right[3][sl], single[3][0, w.keep_from:w.keep_from + w.n_keep],
                               rtol=1e-4, atol=1e-5)
    assert not np.allclose(with_right[3][sl], without[3][sl], atol=1e-3)
    # layer 0 is local: right context leaves it unchanged
    np.testing.assert_allclose(with_right[0], without[0], rtol=1e-4, atol=1e-5)


def test_causal_mode_frames_do_not_see_beyond_window(tiny_extractor):
    audio = speech_like(3.0, seed=5)
    cut = 2 * TARGET_SR  # audio changes from 2.0 s on
    changed = audio.copy()
    changed[cut:] = speech_like(1.0, seed=6)
    kw = dict(window_s=0.1, context_s=0.5, batch_size=8)
    geom = tiny_extractor.geometry
    times = W.frame_times(W.n_frames_total(len(audio), geom), geom)
    # a frame at t sees audio up to t + window_s (+ its 25 ms receptive field) only
    past = times < cut / TARGET_SR - 0.1 - 0.025
    causal = [stitch(tiny_extractor, x, mode="causal", **kw)[3] for x in (audio, changed)]
    np.testing.assert_array_equal(causal[0][past], causal[1][past])
    assert not np.allclose(causal[0][~past], causal[1][~past])
    # windowed with right context does look ahead
    ahead = [stitch(tiny_extractor, x, right_context_s=1.0, **kw)[3] for x in (audio, changed)]
    assert not np.allclose(ahead[0][past], ahead[1][past])
    with pytest.raises(ValueError, match="causal.*right_context_s = 0"):
        W.plan_windows(len(audio), geom, 0.1, 0.5, right_context_s=0.5, mode="causal")
    with pytest.raises(ValueError, match="not one of windowed, causal, whole"):
        W.plan_windows(len(audio), geom, 0.1, 0.5, mode="streaming")


def test_whole_mode_is_one_pass(tiny_extractor, tmp_path):
    audio = speech_like(1.5, seed=7)
    (w,) = W.plan_windows(len(audio), tiny_extractor.geometry, 0.2, 0.1, mode="whole")
    assert (w.start, w.stop, w.keep_from, w.first_frame) == (0, len(audio), 0, 0)
    path = tmp_path / "whole.h5"
    F.extract_features(tiny_extractor, audio, path, WindowOptions(0.2, 0.1, mode="whole"),
                       dtype="float32")
    whole = tiny_extractor([audio])
    for layer in (0, 3):
        values = io.read_layer(path, layer)
        np.testing.assert_allclose(values, whole[layer][0], rtol=1e-5, atol=1e-6)


def test_whole_mode_refuses_long_stimulus_for_whisper(tmp_path):
    from types import SimpleNamespace

    geom = M.FrameGeometry(320, 0.0, 360, 480_000)
    assert len(W.plan_windows(480_000, geom, 1.0, 0.0, mode="whole")) == 1
    fake = SimpleNamespace(geometry=geom, spec=M.ModelSpec("whisper-x", "x"))
    with pytest.raises(M.ModelError) as exc:
        next(F.iter_layer_batches(fake, np.zeros(40 * TARGET_SR, np.float32),
                                  WindowOptions(1.0, 0.0, mode="whole")))
    msg = str(exc.value)
    assert "model 'whisper-x'" in msg and "40.0 s" in msg and "fixed input length of 30 s" in msg
    assert "features.mode: windowed" in msg
    with pytest.raises(M.ModelError, match="right_context_s = 31.00 s .* must be at most 29.96 s"):
        W.plan_windows(1_000_000, geom, 20.0, 5.0, right_context_s=6.0)


# ------------------------------------------------------------------------- frame times
def test_frame_times_locate_clicks(local_extractor, tmp_path):
    clicks = np.arange(0.31, 2.6, 0.5)  # every 0.5 s, not on the frame grid
    audio = np.zeros(3 * TARGET_SR, np.float32)
    audio[np.round(clicks * TARGET_SR).astype(int)] = 1.0
    path = tmp_path / "clicks.h5"
    F.extract_features(local_extractor, audio, path, WindowOptions(window_s=0.4, context_s=0.2),
                       dtype="float32")
    times, values = io.read_frame_times(path), io.read_layer(path, 0)
    energy = (values ** 2).sum(1)
    change = np.abs(energy - np.median(energy))
    for c in clicks:
        near = np.flatnonzero(np.abs(times - c) < 0.25)
        peak = times[near[np.argmax(change[near])]]
        assert abs(peak - c) <= 0.020, (c, peak)


# ---------------------------------------------------------------------- layer selection
def test_layer_selection():
    assert M.layer_ids(M.ModelSpec("t", "random", "wav2vec2", 0, dict(TINY), [3, 0])) == \
        ["00", "03"]
    spec = M.ModelSpec.from_config("m", {"source": "random", "architecture": "hubert",
                                         "layers": [12, 6]})
    assert spec.layers == [12, 6] and M.layer_ids(spec) == ["06", "12"]
    with pytest.raises(M.ModelError, match=r"model 'm': `layers` \[13\] out of range.*0\.\.12"):
        M.layer_ids(M.ModelSpec("m", "random", "hubert", layers=[0, 13]))
    with pytest.raises(M.ModelError, match="`layers` is empty"):
        M.layer_ids(M.ModelSpec("m", "random", "hubert", layers=[]))


# ---------------------------------------------------------------------------- precision
def test_precision_auto_picks_bfloat16_only_where_it_is_native(monkeypatch, tiny_extractor):
    assert tiny_extractor.precision == "float32" and tiny_extractor.probe is None
    assert isinstance(tiny_extractor._autocast(), contextlib.nullcontext)
    with pytest.raises(M.ModelError, match="precision 'float8'"):
        F.LayerExtractor(tiny_spec(), device="cpu", precision="float8")
    for has_bf16, expected in ((True, "bfloat16"), (False, "float16")):  # V100, T4: float16
        monkeypatch.setattr(P, "cuda_has_bf16", lambda has_bf16=has_bf16: has_bf16)
        assert P.resolve_precision("auto", "cuda") == expected
    assert P.resolve_precision("float32", "cuda") == "float32"
    for native in (False, True):
        monkeypatch.setattr(P, "cpu_has_native_bf16", lambda native=native: native)
        expected = "bfloat16" if native else "float32"
        assert P.resolve_precision("auto", "cpu") == expected
        ex = F.LayerExtractor(tiny_spec(), device="cpu")
        assert ex.requested_precision == "auto"
        # bfloat16 is probed first, and kept only if the probe accepts it
        assert (ex.probe is not None) == native
        assert ex.precision == (expected if ex.probe is None or ex.probe.accepted
                                else "float32")


def test_float16_autocast_runs_and_matches_float32():
    """float16 (for GPUs without bfloat16; runs on the CPU too): rounding-level changes only
    (where the probe accepts it; float32 where not), and no CPU kernels substituted (they are
    bfloat16-only)."""
    audio = speech_like(2.0, seed=5)
    ref = F.LayerExtractor(tiny_spec(), device="cpu", precision="float32")([audio])
    half = F.LayerExtractor(tiny_spec(), device="cpu", precision="float16")
    assert half.requested_precision == "float16" and half.probe.precision == "float16"
    assert half.precision == ("float16" if half.probe.accepted else "float32")
    if half.probe.accepted:
        assert half._autocast().fast_dtype == torch.float16
    # float16 runs as loaded; its float32 fallback as the float32 model (packed linear layers)
    assert all(vars(m)["forward"].func is packed_linear and half.precision == "float32"
               for m in half.model.modules() if "forward" in vars(m))
    for a, b in zip(ref, half([audio]), strict=True):
        assert b.dtype == np.float32 and np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999
        assert np.array_equal(a, b) == (half.precision == "float32")


def per_channel_r(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r per channel over the channels of ``a`` that vary."""
    keep = np.flatnonzero(a.std(0) > 1e-3)
    assert keep.size > 10
    return np.array([np.corrcoef(a[:, j], b[:, j])[0, 1] for j in keep])


def extract_to(tmp_path: Path, extractor: F.LayerExtractor, audio: np.ndarray, name: str
               ) -> tuple[list[np.ndarray], dict]:
    """Every layer of ``audio`` through extract_features, and the file's attributes."""
    path = tmp_path / f"{name}.h5"
    F.extract_features(extractor, audio, path, WindowOptions(window_s=1.0, context_s=1.0),
                       dtype="float32")
    with h5py.File(path) as h5:
        attrs = dict(h5.attrs)
    return [io.read_layer(path, i) for i in range(extractor.n_layers)], attrs


def test_bfloat16_features_match_float32(tmp_path):
    """bfloat16 is used only once the probe accepts it; then every layer's features correlate
    > 0.999 with float32 ones, channel by channel. Where the probe falls back (a CPU whose
    bfloat16 kernels are wrong for this model) the features are float32 ones. Either way the
    file records the requested and effective precision and the probe's per-layer r."""
    audio = speech_like(4.0, seed=3)
    ref, attrs32 = extract_to(tmp_path, F.LayerExtractor(tiny_spec(), device="cpu",
                                                         precision="float32"), audio, "f32")
    assert attrs32["precision"] == attrs32["precision_effective"] == "float32"
    assert attrs32["precision_requested"] == "float32"
    assert attrs32["precision_probe"] == "not probed"
    ex = F.LayerExtractor(tiny_spec(), device="cpu", precision="bfloat16")
    out, attrs = extract_to(tmp_path, ex, audio, "bf16")
    effective = attrs["precision_effective"]
    assert attrs["precision_requested"] == "bfloat16" and attrs["precision"] == effective
    assert effective == ex.precision and effective in ("bfloat16", "float32")
    q01 = attrs["precision_probe_q01_r"]
    assert q01.shape == attrs["precision_probe_min_r"].shape == (ex.n_layers,)
    assert (attrs["precision_probe_min_r"] <= q01).all()
    accepted = bool((q01 >= P.PROBE_MIN_R).all())
    assert attrs["precision_probe"] == f"bfloat16 {'accepted' if accepted else 'rejected'}"
    assert effective == ("bfloat16" if accepted else "float32")
    for a, b in zip(ref, out, strict=True):
        assert per_channel_r(a, b).min() > 0.999
        assert np.array_equal(a, b) == (effective == "float32")  # bfloat16 ran iff accepted


def test_probe_audio_is_deterministic_speech_like():
    a = P.probe_audio()
    np.testing.assert_array_equal(a, P.probe_audio())
    assert a.dtype == np.float32 and a.size == P.PROBE_SECONDS * TARGET_SR
    assert np.abs(a).max() == pytest.approx(0.5)
    # syllables and pauses: 20 ms frames of near-silence and of voice both present
    rms = np.sqrt((a[: a.size // 320 * 320].reshape(-1, 320) ** 2).mean(1))
    assert (rms < 0.01).mean() > 0.15 and (rms > 0.05).mean() > 0.3


def test_channel_correlations_ignore_constant_channels_and_flag_broken_ones():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((200, 5))
    ref[:, 4] = 3.0  # constant: ignored
    test = ref + 0.01 * rng.standard_normal(ref.shape)
    test[:, 1] = rng.standard_normal(200)  # unrelated
    test[:, 2] = 1.0  # constant where the reference varies
    test[5, 3] = np.nan  # not finite
    r = P.channel_correlations(ref, test)
    assert r.shape == (4,)
    assert r[0] > 0.999 and abs(r[1]) < 0.25 and r[2] == 0 and r[3] == 0


def broken_grouped_conv(monkeypatch) -> None:
    """Make torch's grouped convolutions return garbage under CPU autocast, as bfloat16
    convolutions with narrow groups do on Intel AMX CPUs (torch 2.13); float32 ones stay
    right."""
    for name in ("conv1d", "conv2d"):
        real = getattr(torch.nn.functional, name)

        def broken(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                   real=real):
            out = real(input, weight, bias, stride, padding, dilation, groups)
            if groups > 1 and torch.is_autocast_enabled("cpu"):
                g = torch.Generator().manual_seed(0)
                noise = torch.randn(out.shape, generator=g)
                return (noise * out.float().std()).to(out.dtype)
            return out

        monkeypatch.setattr(torch.nn.functional, name, broken)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == P.log.name and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("requested", ["auto", "bfloat16"])
def test_broken_bfloat16_kernel_falls_back_to_float32(monkeypatch, tmp_path, caplog, requested):
    """The broken case for real: torch's own bfloat16 grouped convolution (the positional
    convolution) returns garbage; the probe sees it in the transformer layers and the model runs
    in float32, with one warning, recorded in the file, giving float32's features exactly."""
    monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: True)  # auto means bfloat16
    audio = speech_like(2.0, seed=8)
    ref, _ = extract_to(tmp_path, F.LayerExtractor(tiny_spec(), device="cpu",
                                                   precision="float32"), audio, "f32")
    broken_grouped_conv(monkeypatch)
    caplog.set_level(logging.INFO, logger=P.log.name)
    ex = F.LayerExtractor(tiny_spec(), device="cpu", precision=requested, cpu_kernels=False)
    assert ex.precision == "float32" and ex.probe.precision == "bfloat16"
    assert not ex.probe.accepted and not ex.probe.cached
    # the CNN (layer 0) has no grouped convolution; every transformer layer gets the garbage
    # (added to the residual stream, so a typical channel keeps r ~0.7, as on Intel CPUs)
    assert ex.probe.failing_layers == [1, 2, 3]
    assert ex.probe.quantile_r[0] > 0.999 and max(ex.probe.median_r[1:]) < 0.9
    (warning,) = warnings_of(caplog)
    assert "model 'tiny'" in warning and "bfloat16" in warning and "float32 instead" in warning
    assert "layers 1 (r " in warning and "3 (r " in warning
    out, attrs = extract_to(tmp_path, ex, audio, "fallback")
    assert attrs["precision"] == attrs["precision_effective"] == "float32"
    assert attrs["precision_requested"] == requested
    assert attrs["precision_probe"] == "bfloat16 rejected"
    assert (attrs["precision_probe_q01_r"][1:] < P.PROBE_MIN_R).all()
    for a, b in zip(ref, out, strict=True):
        np.testing.assert_array_equal(a, b)
    # the cached rejection: no probe, the same single warning
    caplog.clear()
    again = F.LayerExtractor(tiny_spec(), device="cpu", precision=requested, cpu_kernels=False)
    assert again.precision == "float32" and again.probe.cached
    assert len(warnings_of(caplog)) == 1 and "cached decision" in warnings_of(caplog)[0]


def test_probe_decision_is_cached_per_model_device_and_torch_version(monkeypatch, probe_cache,
                                                                     tmp_path):
    calls: list[str] = []
    real = P.probe_precision

    def counting(extractor, precision, **kwargs):
        calls.append(extractor.spec.name)
        return real(extractor, precision, **kwargs)

    monkeypatch.setattr(P, "probe_precision", counting)

    def make(**extra) -> F.LayerExtractor:
        return F.LayerExtractor(tiny_spec(**extra), device="cpu", precision="bfloat16")

    first = make()
    assert len(calls) == 1 and not first.probe.cached
    (entry,) = (probe_cache / "precision-probe").glob("*.json")
    key = json.loads(entry.read_text())["key"]
    assert key["device"].startswith("cpu: ") and key["torch"] == torch.__version__
    assert key["precision"] == "bfloat16" and key["cpu_kernels"] is True
    second = make()
    assert len(calls) == 1 and second.probe.cached
    assert second.probe.to_dict() == first.probe.to_dict()
    assert second.precision == first.precision
    # another model, another torch, another CPU, no kernels: probed again
    make(num_hidden_layers=2)
    assert len(calls) == 2
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    make()
    assert len(calls) == 3
    monkeypatch.setattr(P, "cpu_model_name", lambda: "Intel(R) Xeon(R) Platinum 8480+")
    make()
    assert len(calls) == 4
    F.LayerExtractor(tiny_spec(), device="cpu", precision="bfloat16", cpu_kernels=False)
    assert len(calls) == 5
    make()
    assert len(calls) == 5
    # a corrupt cache file (or one holding another key) is ignored, and replaced
    entries = sorted((probe_cache / "precision-probe").glob("*.json"))
    assert len(entries) == 5
    for text in ("{not json", json.dumps({"key": {"other": 1}, "probe": {}}), "[]"):
        for e in entries:
            e.write_text(text)
        assert not make().probe.cached
    assert len(calls) == 8 and make().probe.cached
    # an unwritable cache (its directory is a file) does not stop extraction
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setenv("BRAINALIGN_CACHE_DIR", str(blocker / "cache"))
    ex = make()
    assert len(calls) == 9 and ex.probe is not None
    assert len(ex([speech_like(0.5)])) == ex.n_layers


def test_retaining_freed_memory_leaves_results_unchanged(tiny_extractor):
    audio = speech_like(2.0, seed=4)
    before = tiny_extractor([audio])
    F.retain_freed_memory()
    after = tiny_extractor([audio])
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_pretrained_config_is_read_once_and_handed_out_as_copies(monkeypatch, tmp_path):
    from transformers import AutoConfig, Wav2Vec2Config

    calls = []

    def fake(source, *args, **kwargs):
        calls.append(source)
        return Wav2Vec2Config(num_hidden_layers=3)

    monkeypatch.setattr(AutoConfig, "from_pretrained", fake)
    spec = M.ModelSpec("m", str(tmp_path / "model"))
    first = M.load_model_config(spec)
    first._attn_implementation = "eager"  # what building a model may do to its config
    assert M.layer_ids(spec) == ["00", "01", "02", "03"]
    assert M.load_model_config(spec)._attn_implementation != "eager"
    assert calls == [str(tmp_path / "model")]


def test_window_options_from_config_follow_the_schema():
    section = {"window_s": 4.0, "context_s": 2.0, "mode": "causal", "right_context_s": 0.0,
               "batch_size": 8, "dtype": "float32", "precision": "auto"}
    assert WindowOptions.from_config(section) == WindowOptions(4.0, 2.0, 0.0, "causal", 8)
    # the library's defaults are the schema's (window_s and context_s, which the schema
    # requires, are config/config.yaml's)
    shipped = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["features"]
    filled = {**schema_defaults("features"), "window_s": shipped["window_s"],
              "context_s": shipped["context_s"]}
    assert WindowOptions.from_config(filled) == WindowOptions()
