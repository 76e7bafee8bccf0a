"""Feature stage: every layer's activations of a speech model for one stimulus.

Layer 0 is the model's input representation (the CNN feature-encoder output for wav2vec2-family
models, the embedding output for the Whisper encoder); layers 1..N are the transformer layers.
Three extraction modes (``features.mode`` in the config):

``windowed`` (default)
    Long audio is cut into windows of ``window_s`` seconds, each run with ``context_s`` seconds of
    left context and ``right_context_s`` seconds of right context (both clipped at the ends of the
    story, never wrapped around); only the window's own frames are kept, so every frame is
    computed once, and memory stays bounded by the batch, not the story.
``causal``
    The same windows with right context 0: a frame of the window that starts at time ``s`` is
    computed from the audio in ``[s - context_s, s + window_s]`` (plus the CNN receptive field of
    the window's last frame). So a frame at time ``t`` sees between ``context_s`` and
    ``context_s + window_s`` seconds of past and at most ``window_s`` seconds of future; with a
    small ``window_s`` (one frame, 0.02 s, for strictly causal frames; or about a TR) every frame
    sees essentially only the past ``context_s`` seconds (Antonello et al. 2023 style). The cost
    grows as ``(context_s + window_s) / window_s``.
``whole``
    One pass over the whole stimulus (``window_s`` and ``context_s`` are ignored): every frame
    sees all of the story. Transformer memory grows quadratically with the stimulus length, and
    fixed-length models (Whisper: 30 s) refuse stimuli longer than their input.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import ctypes.util
import functools
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch

from .audio import TARGET_SR
from .cpu_kernels import optimise_for_cpu

log = logging.getLogger(__name__)

#: architectures that ``source: random`` can build from a config alone (offline)
RANDOM_ARCHITECTURES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "whisper")
#: values of ``features.mode``
MODES = ("windowed", "causal", "whole")
#: values of LayerExtractor's ``precision`` (``features.precision`` in the config)
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
#: autocast dtype of each reduced precision
_AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelError(ValueError):
    """A model that cannot be loaded or used as configured."""


@dataclass
class ModelSpec:
    """One model entry of the config.

    ``source`` is a Hugging Face hub id, a local directory, or ``"random"`` (seeded random
    initialisation of ``architecture``, with ``config_overrides`` applied to its default config).
    ``layers`` selects the layers the workflow fits (None: all); extraction writes all of them.
    """

    name: str
    source: str
    architecture: str | None = None
    seed: int = 0
    config_overrides: dict[str, Any] = field(default_factory=dict)
    layers: list[int] | None = None

    @classmethod
    def from_config(cls, name: str, entry: dict[str, Any]) -> ModelSpec:
        layers = entry.get("layers")
        return cls(name=name, source=entry["source"], architecture=entry.get("architecture"),
                   seed=int(entry.get("seed", 0)),
                   config_overrides=dict(entry.get("config_overrides", {}) or {}),
                   layers=None if layers is None else [int(i) for i in layers])


@dataclass(frozen=True)
class FrameGeometry:
    """Where a model's output frames sit in the input: frame k of a chunk starting at sample a is
    centred at sample ``a + k * stride + offset``; it needs ``margin`` samples after its start."""

    stride: int
    offset: float
    margin: int
    max_input: int | None = None  # fixed input length (Whisper: 30 s), None when unbounded


def _random_config(arch: str, overrides: dict[str, Any]):
    from transformers import (
        Data2VecAudioConfig,
        HubertConfig,
        Wav2Vec2Config,
        WavLMConfig,
        WhisperConfig,
    )

    classes = {"wav2vec2": Wav2Vec2Config, "hubert": HubertConfig, "wavlm": WavLMConfig,
               "data2vec-audio": Data2VecAudioConfig, "whisper": WhisperConfig}
    if arch not in classes:
        raise ModelError(f"unknown architecture '{arch}' for a random model; choose one of "
                         f"{', '.join(RANDOM_ARCHITECTURES)}.")
    return classes[arch](**overrides)


def load_model_config(spec: ModelSpec):
    """The transformers config of ``spec`` without loading weights (cheap; used at DAG time)."""
    if spec.source == "random":
        if not spec.architecture:
            raise ModelError(f"model '{spec.name}': `source: random` needs `architecture` "
                             f"(one of {', '.join(RANDOM_ARCHITECTURES)}).")
        return _random_config(spec.architecture, spec.config_overrides)
    if spec.source not in _LOADED_CONFIGS:
        _LOADED_CONFIGS[spec.source] = _load_pretrained_config(spec)
    # a copy: models built from it change their config (attention implementation)
    return copy.deepcopy(_LOADED_CONFIGS[spec.source])


#: configs read from the hub or disk, by source (the DAG asks for each model's several times)
_LOADED_CONFIGS: dict[str, Any] = {}


def _load_pretrained_config(spec: ModelSpec):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(spec.source)
    except (OSError, ValueError) as err:
        local = Path(spec.source).exists()
        where = ("the local directory has no usable config.json" if local else
                 "it is not a local directory, and the Hugging Face hub did not provide it "
                 "(no network, or no such model id)")
        raise ModelError(
            f"model '{spec.name}': cannot load '{spec.source}': {where}. Check the id or path; on "
            f"a machine without internet, download it once elsewhere (`hf download "
            f"{spec.source}`) and set `source` to the local copy.") from err


def is_whisper(config) -> bool:
    return getattr(config, "model_type", "") == "whisper"


def n_layers(config) -> int:
    """Number of layers brainalign reads out: the input representation plus each transformer
    layer."""
    if is_whisper(config):
        return int(config.encoder_layers) + 1
    return int(config.num_hidden_layers) + 1


def layer_ids(spec: ModelSpec) -> list[str]:
    """Layer wildcard values (``"00"``, ``"01"``, ...) for ``spec``: all layers, or the selected
    ``spec.layers`` (sorted, validated against the model's layer count)."""
    n = n_layers(load_model_config(spec))
    if spec.layers is None:
        return [f"{i:02d}" for i in range(n)]
    if not spec.layers:
        raise ModelError(f"model '{spec.name}': `layers` is empty; list some of 0..{n - 1}, or "
                         "remove the key to use all layers.")
    bad = sorted({i for i in spec.layers if not 0 <= i < n})
    if bad:
        raise ModelError(f"model '{spec.name}': `layers` {bad} out of range; this model has "
                         f"layers 0..{n - 1} (0 = input representation, 1..{n - 1} = "
                         "transformer layers).")
    return [f"{i:02d}" for i in sorted(set(spec.layers))]


def frame_geometry(config) -> FrameGeometry:
    """Output-frame geometry of a model, derived from its config."""
    if is_whisper(config):
        # log-mel hop 160 samples, then a stride-2 conv: 20 ms frames centred on 320 k samples
        return FrameGeometry(stride=320, offset=0.0, margin=360,
                             max_input=int(config.max_source_positions) * 320)
    kernels, strides = list(config.conv_kernel), list(config.conv_stride)
    receptive, jump = 1, 1
    for k, s in zip(kernels, strides, strict=True):
        receptive += (k - 1) * jump
        jump *= s
    return FrameGeometry(stride=jump, offset=receptive / 2, margin=receptive - jump)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (x86 AVX512-BF16 or AMX-BF16; Linux
    /proc/cpuinfo), where bfloat16 matmuls run about twice as fast as float32 ones."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def cuda_has_bf16() -> bool:
    """Whether the visible CUDA GPU computes in bfloat16 (Ampere and later)."""
    try:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    except (RuntimeError, AssertionError):
        return False


def resolve_precision(precision: str, device_type: str) -> str:
    """The compute precision ``"auto"`` stands for on ``device_type`` (others unchanged):
    bfloat16 on CUDA GPUs that have it, float16 on older ones (V100, T4), bfloat16 on CPUs with
    native bfloat16, float32 elsewhere."""
    if precision != "auto":
        return precision
    if device_type == "cuda":
        return "bfloat16" if cuda_has_bf16() else "float16"
    if device_type == "cpu" and cpu_has_native_bf16():
        return "bfloat16"
    return "float32"


@functools.cache
def retain_freed_memory() -> bool:
    """Keep memory freed by large tensors in the process heap instead of unmapping it (glibc).

    glibc serves every allocation above 32 MB with a fresh ``mmap`` and returns it on free, so
    each batch of windows pays page faults to zero its activation buffers again; keeping the
    heap measured 10-14% faster extraction on 2 CPU cores (benchmarks/features.py). The process
    keeps its peak memory (bounded by the batch) until it exits. Returns False where there is no
    glibc ``mallopt`` (macOS, musl), where nothing changes.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


class LayerExtractor:
    """A loaded speech model that returns all its layers for batches of audio chunks.

    ``precision``: ``"float32"`` runs the model as loaded; ``"bfloat16"`` (or ``"float16"``)
    runs it under ``torch.autocast`` in that type (matmuls and convolutions in it,
    normalisations and softmax in float32); ``"auto"`` (the default) picks bfloat16 on CUDA GPUs
    that have it and float16 on older ones, bfloat16 on CPUs with native bfloat16 arithmetic
    (see :func:`cpu_has_native_bf16`), float32 elsewhere. Activations are
    returned as float32 either way; bfloat16 features correlate > 0.999 with float32 ones
    (tests/test_features.py) and are stored as float16 by default anyway.

    ``cpu_kernels``: on CPU, swap in brainalign's faster convolution and attention paths
    (:mod:`brainalign.cpu_kernels`; same values up to rounding). False runs the model exactly as
    transformers built it.
    """

    def __init__(self, spec: ModelSpec, device: str | None = None,
                 precision: str = "auto", cpu_kernels: bool = True):
        from transformers import AutoFeatureExtractor, AutoModel, WhisperModel

        self.spec = spec
        self.config = load_model_config(spec)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device_type = torch.device(self.device).type
        if precision not in PRECISIONS:
            raise ModelError(f"model '{spec.name}': precision '{precision}' is not one of "
                             f"{', '.join(PRECISIONS)}.")
        self.precision = resolve_precision(precision, self.device_type)
        self.whisper = is_whisper(self.config)
        if spec.source == "random":
            torch.manual_seed(spec.seed)
            model = (WhisperModel(self.config) if self.whisper
                     else AutoModel.from_config(self.config))
            self.feature_extractor = self._default_feature_extractor()
        else:
            try:
                model = (WhisperModel if self.whisper else AutoModel).from_pretrained(spec.source)
            except OSError as err:
                raise ModelError(f"model '{spec.name}': cannot load weights from "
                                 f"'{spec.source}' ({err}).") from err
            try:
                self.feature_extractor = AutoFeatureExtractor.from_pretrained(spec.source)
            except OSError:
                self.feature_extractor = self._default_feature_extractor()
        if self.whisper:
            model = model.get_encoder()
        self.model = model.to(self.device).eval()
        if cpu_kernels and self.device_type == "cpu":
            changed = optimise_for_cpu(self.model, self.precision)
            log.info("model '%s' on CPU: %s", spec.name, ", ".join(changed) or "as loaded")
        self.geometry = frame_geometry(self.config)
        self.n_layers = n_layers(self.config)

    def _default_feature_extractor(self):
        from transformers import Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

        if self.whisper:
            return WhisperFeatureExtractor(feature_size=self.config.num_mel_bins)
        return Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False)

    def _autocast(self):
        if self.precision in _AUTOCAST_DTYPES:
            return torch.autocast(device_type=self.device_type,
                                  dtype=_AUTOCAST_DTYPES[self.precision])
        return contextlib.nullcontext()

    @torch.inference_mode()
    def __call__(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        """All layers for equal-length ``chunks``: a list of n_layers arrays of shape
        (n_chunks, n_frames, n_features)."""
        # the front end (waveform normalisation, Whisper's log-mel) stays in float32
        fe = self.feature_extractor(chunks, sampling_rate=TARGET_SR, return_tensors="pt")
        with self._autocast():
            return self._forward(fe)

    def _forward(self, fe) -> list[np.ndarray]:
        if self.whisper:
            out = self.model(fe["input_features"].to(self.device), output_hidden_states=True)
            states = list(out.hidden_states)
        else:
            conv_out: list[torch.Tensor] = []
            hook = self.model.feature_extractor.register_forward_hook(
                lambda _m, _i, o: conv_out.append(o.transpose(1, 2)))
            try:
                out = self.model(fe["input_values"].to(self.device), output_hidden_states=True)
            finally:
                hook.remove()
            # wav2vec2-like models return the (layer-normed) CNN output; HuBERT does not
            cnn = getattr(out, "extract_features", None)
            states = [conv_out[0] if cnn is None else cnn] + list(out.hidden_states[1:])
        return [s.float().cpu().numpy() for s in states]


@dataclass(frozen=True)
class Window:
    """One chunk of the stimulus: input samples [start, stop), whose output frames
    [keep_from, keep_from + n_keep) are the global frames [first_frame, first_frame + n_keep)."""

    start: int
    stop: int
    keep_from: int
    n_keep: int
    first_frame: int


def n_frames_total(n_samples: int, geom: FrameGeometry) -> int:
    """Frames a single pass over the whole input yields (each with its full receptive field)."""
    if n_samples < geom.stride + geom.margin:
        return 0
    return (n_samples - geom.stride - geom.margin) // geom.stride + 1


def plan_windows(n_samples: int, geom: FrameGeometry, window_s: float, context_s: float,
                 sr: int = TARGET_SR, *, right_context_s: float = 0.0,
                 mode: str = "windowed") -> list[Window]:
    """Cut ``n_samples`` of audio into windows with left and right context (no wrap-around).

    Window input is ``[s0 - context_s, s0 + window_s + right_context_s)`` (clipped to the audio,
    plus the receptive field of the last kept frame); its kept frames are those of
    ``[s0, s0 + window_s)``. ``mode`` is one of :data:`MODES` (see the module docstring):
    ``causal`` requires ``right_context_s == 0``; ``whole`` gives one window of all the audio.
    """
    if mode not in MODES:
        raise ValueError(f"mode '{mode}' is not one of {', '.join(MODES)}.")
    if right_context_s < 0 or context_s < 0:
        raise ValueError("context_s and right_context_s must be >= 0.")
    total = n_frames_total(n_samples, geom)
    if mode == "whole":
        if geom.max_input is not None and n_samples > geom.max_input:
            raise ModelError(
                f"mode 'whole': the stimulus ({n_samples / sr:.1f} s) is longer than the "
                f"model's fixed input length of {geom.max_input / sr:.0f} s; use "
                "`features.mode: windowed` (or causal) for this model.")
        return [Window(0, n_samples, 0, total, 0)] if total else []
    if mode == "causal" and right_context_s > 0:
        raise ValueError(f"mode 'causal' needs right_context_s = 0 (got {right_context_s}); "
                         "use mode 'windowed' for right context.")
    win = max(1, round(window_s * sr / geom.stride)) * geom.stride
    ctx = round(context_s * sr / geom.stride) * geom.stride
    rctx = round(right_context_s * sr / geom.stride) * geom.stride
    if geom.max_input is not None and ctx + win + rctx + geom.margin > geom.max_input:
        what = "window_s + context_s" + (" + right_context_s" if rctx else "")
        # the last kept frame reads `margin` samples past the window, and the sum is counted
        # in whole frames (stride)
        limit = (geom.max_input - geom.margin) // geom.stride * geom.stride
        raise ModelError(
            f"{what} = {(ctx + win + rctx) / sr:.2f} s (in whole {geom.stride / sr:g} s frames) "
            f"must be at most {limit / sr:.2f} s: the model's fixed input is "
            f"{geom.max_input / sr:g} s and its last frame reads {geom.margin / sr:g} s past the "
            "window (its receptive field); shorten them.")
    windows = []
    for s0 in range(0, total * geom.stride, win):
        start = max(0, s0 - ctx)
        first = s0 // geom.stride
        n_keep = min(win // geom.stride, total - first)
        stop = min(n_samples, s0 + n_keep * geom.stride + geom.margin + rctx)
        windows.append(Window(start, stop, (s0 - start) // geom.stride, n_keep, first))
    return windows


def iter_layer_batches(extractor: LayerExtractor, audio: np.ndarray, window_s: float,
                       context_s: float, batch_size: int = 4, *, right_context_s: float = 0.0,
                       mode: str = "windowed"
                       ) -> Iterator[tuple[list[Window], list[list[np.ndarray]]]]:
    """Yield (windows, per-window list of layer arrays (n_keep, n_features)) batch by batch.

    Windows of equal input length are batched together (all but the first and last, usually).
    """
    try:
        windows = plan_windows(len(audio), extractor.geometry, window_s, context_s,
                               right_context_s=right_context_s, mode=mode)
    except ModelError as err:
        raise ModelError(f"model '{extractor.spec.name}': {err}") from err
    if extractor.device_type == "cpu":
        retain_freed_memory()
    groups: dict[tuple[int, int], list[Window]] = {}
    for w in windows:
        groups.setdefault((w.stop - w.start, w.keep_from), []).append(w)
    for group in groups.values():
        for i in range(0, len(group), batch_size):
            batch = group[i:i + batch_size]
            states = extractor([audio[w.start:w.stop] for w in batch])
            kept = [[layer[b, w.keep_from:w.keep_from + w.n_keep] for layer in states]
                    for b, w in enumerate(batch)]
            yield batch, kept


def frame_times(n_frames: int, geom: FrameGeometry, sr: int = TARGET_SR) -> np.ndarray:
    """Centre time (s) of each global output frame."""
    return (np.arange(n_frames) * geom.stride + geom.offset) / sr


def extract_features(extractor: LayerExtractor, audio: np.ndarray, out_path: str | Path,
                     window_s: float, context_s: float, batch_size: int = 4,
                     dtype: str = "float16", *, right_context_s: float = 0.0,
                     mode: str = "windowed") -> None:
    """Write every layer of ``audio`` to an HDF5 file, one dataset per layer.

    ``mode`` and ``right_context_s``: see the module docstring and :func:`plan_windows`.

    The file holds ``frame_times`` (n_frames,) and ``layer-XX`` (n_frames, n_features) datasets,
    so a single layer can be read without loading the others. Written to a temporary name and
    renamed at the end: an interrupted run leaves no half-written file.
    """
    out_path = Path(out_path)
    tmp = out_path.with_suffix(".tmp.h5")
    geom = extractor.geometry
    total = n_frames_total(len(audio), geom)
    if total == 0:
        raise ModelError(f"{out_path}: stimulus too short for the model (<{geom.stride} samples).")
    batches = iter_layer_batches(extractor, audio, window_s, context_s, batch_size,
                                 right_context_s=right_context_s, mode=mode)
    try:
        _write_layers(tmp, batches, extractor, audio, out_path.name, total, dtype,
                      dict(window_s=window_s, context_s=context_s,
                           right_context_s=right_context_s, mode=mode,
                           precision=extractor.precision))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out_path)


def _write_layers(path: Path, batches, extractor: LayerExtractor, audio: np.ndarray,
                  label: str, total: int, dtype: str, settings: dict[str, Any]) -> None:
    from tqdm import tqdm

    geom = extractor.geometry
    datasets: dict[int, Any] = {}
    with h5py.File(path, "w") as h5:
        h5.create_dataset("frame_times", data=frame_times(total, geom))
        h5.attrs.update(model=extractor.spec.name, source=extractor.spec.source,
                        n_layers=extractor.n_layers, duration_s=len(audio) / TARGET_SR,
                        **settings)
        duration = len(audio) / TARGET_SR
        bar = tqdm(total=round(duration), unit="s-audio", mininterval=5,
                   desc=f"{extractor.spec.name}", disable=None)
        done, next_report, start = 0.0, 0.0, time.perf_counter()
        for batch, kept in batches:
            for w, layers in zip(batch, kept, strict=True):
                for i, arr in enumerate(layers):
                    if i not in datasets:
                        datasets[i] = h5.create_dataset(
                            f"layer-{i:02d}", shape=(total, arr.shape[1]), dtype=dtype,
                            chunks=(min(total, 1024), arr.shape[1]))
                    datasets[i][w.first_frame:w.first_frame + w.n_keep] = arr
                bar.update(w.n_keep * geom.stride / TARGET_SR)
                done += w.n_keep * geom.stride / TARGET_SR
            if done >= next_report:  # progress in the (non-tty) rule log
                elapsed = time.perf_counter() - start
                log.info("%s: %.0f / %.0f s of audio (%.1f s-audio/s)", label, done,
                         duration, done / max(elapsed, 1e-9))
                next_report += duration / 10
        bar.close()


def read_layer(path: str | Path, layer: str | int) -> tuple[np.ndarray, np.ndarray]:
    """(frame_times (n_frames,), activations (n_frames, n_features) float32) of one layer."""
    name = f"layer-{int(layer):02d}"
    with h5py.File(path, "r") as h5:
        if name not in h5:
            have = sorted(k for k in h5 if k != "frame_times")
            raise KeyError(f"{path}: no dataset '{name}' (has {have}).")
        return h5["frame_times"][:], h5[name][:].astype(np.float32)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) between two representations
    of the same samples, x (n_samples, p) and y (n_samples, q)."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    xty = np.linalg.norm(x.T @ y) ** 2
    return float(xty / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def layer_similarity(paths: list[str | Path], t_r: float) -> pd.DataFrame:
    """Linear CKA between consecutive layers, on TR-averaged activations of all ``paths``."""
    from .alignment import bin_mean

    with h5py.File(paths[0], "r") as h5:
        n = int(h5.attrs["n_layers"])
    pooled = []
    for layer in range(n):
        parts = []
        for p in paths:
            times, values = read_layer(p, layer)
            parts.append(bin_mean(times, values, t_r, int(np.ceil(times[-1] / t_r))))
        pooled.append(np.concatenate(parts))
    return pd.DataFrame([{"layer_a": i, "layer_b": i + 1,
                          "linear_cka": linear_cka(pooled[i], pooled[i + 1])}
                         for i in range(n - 1)])
