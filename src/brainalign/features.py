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
import ctypes
import ctypes.util
import functools
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch

from .audio import TARGET_SR
from .cpu_kernels import optimise_for_cpu, restore_as_loaded
from .io import read_layer  # noqa: F401  (re-exported: the extraction API names it)
from .models import (  # noqa: F401  (re-exported: the extraction API names them)
    RANDOM_ARCHITECTURES,
    FrameGeometry,
    ModelError,
    ModelSpec,
    frame_geometry,
    is_whisper,
    layer_ids,
    load_model_config,
    n_layers,
)

log = logging.getLogger(__name__)

#: values of ``features.mode``
MODES = ("windowed", "causal", "whole")
#: values of LayerExtractor's ``precision`` (``features.precision`` in the config)
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
#: autocast dtype of each reduced precision
_AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


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


# ------------------------------------------------------------------------- precision probe
#: a reduced precision is kept only if, in every layer, the PROBE_QUANTILE quantile of the
#: per-channel r with float32 reaches this (see :func:`probe_precision` for why 0.99)
PROBE_MIN_R = 0.99
#: the per-layer statistic compared with PROBE_MIN_R: 99 % of a layer's channels must pass
PROBE_QUANTILE = 0.01
#: length of the probe clip (s)
PROBE_SECONDS = 4.0
#: part of the cache key: bump it when the clip or the criterion changes
PROBE_VERSION = 1


def probe_audio(seconds: float = PROBE_SECONDS, sr: int = TARGET_SR) -> np.ndarray:
    """A deterministic speech-like clip, (n_samples,) float32 with peak 0.5.

    Syllables of 120-320 ms (voiced: a pitch glide within 90-250 Hz, harmonics shaped by three
    vowel formants; some start with a fricative noise burst) separated by 40-250 ms pauses, over
    a faint noise floor: pitch, formants, onsets and silences, as in speech, so every layer's
    channels vary over the clip.
    """
    rng = np.random.default_rng(20_240_611)
    n = int(round(seconds * sr))
    out = np.zeros(n)
    t0 = int(0.1 * sr)
    while True:
        length = int(rng.uniform(0.12, 0.32) * sr)
        if t0 + length > n - int(0.05 * sr):
            break
        t = np.arange(length) / sr
        f0 = np.linspace(rng.uniform(90, 250), rng.uniform(90, 250), length)
        phase = 2 * np.pi * np.cumsum(f0) / sr
        formants = (rng.uniform(300, 850), rng.uniform(900, 2300), rng.uniform(2400, 3200))
        voiced = np.zeros(length)
        for k in range(1, int(4000 / f0.max()) + 1):
            gain = sum(1 / (1 + ((k * f0 - f) / 80.0) ** 2) for f in formants)
            voiced += gain * np.sin(k * phase) / k**0.5
        envelope = np.sin(np.pi * t / t[-1]) ** 0.5 * rng.uniform(0.4, 1.0)
        syllable = voiced / np.abs(voiced).max() * envelope
        if rng.random() < 0.4:  # fricative onset: high-passed noise burst
            burst = np.diff(rng.standard_normal(int(0.06 * sr) + 1)) * 0.15
            syllable[:burst.size] += burst * np.hanning(burst.size)
        out[t0:t0 + length] = syllable
        t0 += length + int(rng.uniform(0.04, 0.25) * sr)
    out += 1e-3 * rng.standard_normal(n)
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def channel_correlations(ref: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Pearson r of each channel of ``ref`` (n_frames, n_channels) with the same channel of
    ``test``, over the channels that vary in ``ref`` (std above 1e-3 of the layer's median
    channel std: a near-constant channel carries no signal to lose). r is 0 where ``test`` is
    constant or not finite. Returns (n_varying,)."""
    a = ref.astype(np.float64)
    b = test.astype(np.float64)
    sd = a.std(0)
    live = sd > 1e-3 * (np.median(sd) or sd.max())
    a = a[:, live] - a[:, live].mean(0)
    b = b[:, live] - b[:, live].mean(0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        r = (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))
    return np.where(np.isfinite(r), r, 0.0)


@dataclass(frozen=True)
class PrecisionProbe:
    """Outcome of :func:`probe_precision`: per layer (0..n_layers-1), the minimum, the
    PROBE_QUANTILE quantile and the median of the per-channel r between the layer computed in
    ``precision`` and in float32 on the probe clip. ``cached``: read from the probe cache."""

    precision: str
    min_r: tuple[float, ...]
    quantile_r: tuple[float, ...]
    median_r: tuple[float, ...]
    threshold: float = PROBE_MIN_R
    cached: bool = False

    @property
    def failing_layers(self) -> list[int]:
        return [i for i, r in enumerate(self.quantile_r) if not r >= self.threshold]

    @property
    def accepted(self) -> bool:
        return not self.failing_layers

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "min_r": list(self.min_r),
                "quantile_r": list(self.quantile_r), "median_r": list(self.median_r),
                "threshold": self.threshold}

    @classmethod
    def from_dict(cls, d: dict[str, Any], cached: bool = False) -> PrecisionProbe:
        return cls(precision=str(d["precision"]), min_r=tuple(map(float, d["min_r"])),
                   quantile_r=tuple(map(float, d["quantile_r"])),
                   median_r=tuple(map(float, d["median_r"])), threshold=float(d["threshold"]),
                   cached=cached)


def probe_precision(extractor: LayerExtractor, precision: str,
                    seconds: float = PROBE_SECONDS) -> PrecisionProbe:
    """Compare every layer of ``extractor``'s model in ``precision`` (bfloat16 or float16
    autocast, on its device, with whatever kernels it has) with float32, on :func:`probe_audio`.

    Accepted when in every layer 99 % of the channels (the ``PROBE_QUANTILE`` quantile)
    correlate >= ``PROBE_MIN_R`` = 0.99 with their float32 values. Why 0.99: a feature channel
    that correlates rho with its exact value caps the r a voxel can reach through it at about
    rho times the exact one, so 0.99 costs at most 1 % of an encoding r (0.003 of a good 0.3),
    inside cross-validation noise. Rounding alone stays far above it (smallest layer quantile,
    AMD Zen 4, torch 2.13): real Whisper tiny.en 0.9995, the tiny test models 0.9999. What
    must be refused falls far below: torch's bfloat16 convolution with 4 channels per group on
    Intel AMX CPUs (relative error ~1) took the tiny test model's channels down to r 0.949
    (a garbage positional convolution, simulated in the tests: 0.54), and a model that
    amplifies rounding, such as the demo's random wav2vec2 (initializer_range 0.2: chaotic),
    gives 0.83 in layer 2 and r near 0 from layer 4 on (here; median 0.27-0.88 on Intel AMX).
    The quantile rather than the minimum: a few channels that barely vary over a 4 s clip may
    lose more to rounding without mattering; a broken operation or an unstable model moves
    whole layers.
    """
    audio = probe_audio(seconds)
    n = n_frames_total(len(audio), extractor.geometry)
    ref = extractor.run([audio], "float32")
    test = extractor.run([audio], precision)
    stats = []
    for a, b in zip(ref, test, strict=True):
        r = channel_correlations(a[0, :n], b[0, :n])
        if r.size == 0:  # nothing varies: nothing to lose
            r = np.ones(1)
        stats.append((float(r.min()), float(np.quantile(r, PROBE_QUANTILE)),
                      float(np.median(r))))
    lo, q, med = zip(*stats, strict=True)
    return PrecisionProbe(precision, lo, q, med)


def cache_dir() -> Path:
    """brainalign's cache directory: ``$BRAINALIGN_CACHE_DIR``, else ``~/.cache/brainalign``."""
    return Path(os.environ.get("BRAINALIGN_CACHE_DIR") or Path.home() / ".cache" / "brainalign")


@functools.cache
def _cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    """``"cpu: <CPU model>"`` or ``"cuda: <GPU name>"``: what a precision decision depends on."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    if dev.type == "cpu":
        return f"cpu: {_cpu_model_name()}"
    return dev.type


def probe_key(spec: ModelSpec, device: str, precision: str, cpu_kernels: bool
              ) -> dict[str, Any]:
    """What a probe's outcome depends on: the model, the device, the library versions, the
    precision, the CPU kernels, and the probe itself."""
    import transformers

    source = spec.source
    if source != "random" and Path(source).exists():
        source = str(Path(source).resolve())
    return {"probe_version": PROBE_VERSION, "threshold": PROBE_MIN_R,
            "quantile": PROBE_QUANTILE, "source": source, "architecture": spec.architecture,
            "seed": spec.seed, "config_overrides": spec.config_overrides,
            "device": device_name(device), "torch": torch.__version__,
            "transformers": transformers.__version__, "precision": precision,
            "cpu_kernels": cpu_kernels}


def _probe_cache_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return cache_dir() / "precision-probe" / f"{digest[:32]}.json"


def read_cached_probe(key: dict[str, Any]) -> PrecisionProbe | None:
    """The cached probe for ``key``; None when absent, unreadable or corrupt."""
    path = _probe_cache_path(key)
    try:
        entry = json.loads(path.read_text())
        if json.loads(json.dumps(key, default=str)) != entry["key"]:
            return None
        return PrecisionProbe.from_dict(entry["probe"], cached=True)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.info("ignoring unreadable precision-probe cache %s (%s)", path, err)
        return None


def write_cached_probe(key: dict[str, Any], probe: PrecisionProbe) -> None:
    """Store ``probe`` under ``key`` (one small JSON file per key, written to a temporary name
    and renamed, so parallel jobs never read half a file); a cache that cannot be written only
    means probing again next time."""
    path = _probe_cache_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"key": key, "probe": probe.to_dict()}, f, default=str)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        log.info("cannot write the precision-probe cache %s (%s); set BRAINALIGN_CACHE_DIR "
                 "to a writable directory to avoid probing again", path, err)


class LayerExtractor:
    """A loaded speech model that returns all its layers for batches of audio chunks.

    ``precision``: ``"float32"`` runs the model as loaded; ``"bfloat16"`` (or ``"float16"``)
    runs it under ``torch.autocast`` in that type (matmuls and convolutions in it,
    normalisations and softmax in float32); ``"auto"`` (the default) picks bfloat16 on CUDA GPUs
    that have it and float16 on older ones, bfloat16 on CPUs with native bfloat16 arithmetic
    (see :func:`cpu_has_native_bf16`), float32 elsewhere. A reduced precision is used only once
    :func:`probe_precision` has verified it for this model on this device (decision cached per
    model, device, torch and transformers version: :func:`probe_key`); otherwise the model runs
    in float32, with one warning. ``requested_precision`` is what was asked, ``precision`` what
    runs, ``probe`` the probe's outcome (None when float32 was asked for or resolved).
    Activations are returned as float32 either way.

    ``cpu_kernels``: on CPU, swap in brainalign's faster convolution and attention paths
    (:mod:`brainalign.cpu_kernels`; same values up to rounding). False runs the model exactly as
    transformers built it.
    """

    def __init__(self, spec: ModelSpec, device: str | None = None,
                 precision: str = "auto", cpu_kernels: bool = True):
        # WhisperModel only for Whisper: importing its module costs ~4 s on every job
        from transformers import AutoFeatureExtractor, AutoModel

        self.spec = spec
        self.config = load_model_config(spec)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device_type = torch.device(self.device).type
        if precision not in PRECISIONS:
            raise ModelError(f"model '{spec.name}': precision '{precision}' is not one of "
                             f"{', '.join(PRECISIONS)}.")
        self.requested_precision = precision
        self.precision = resolve_precision(precision, self.device_type)
        self.probe: PrecisionProbe | None = None
        self.whisper = is_whisper(self.config)
        if self.whisper:
            from transformers import WhisperModel
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
        self.geometry = frame_geometry(self.config)
        self.n_layers = n_layers(self.config)
        cpu_kernels = cpu_kernels and self.device_type == "cpu"
        changed = optimise_for_cpu(self.model, self.precision) if cpu_kernels else []
        if self.precision in _AUTOCAST_DTYPES:
            self.probe = self._verified_probe(cpu_kernels)
            if not self.probe.accepted:
                self.precision = "float32"
                if changed:
                    restore_as_loaded(self.model)
                    changed = []
        if cpu_kernels:
            log.info("model '%s' on CPU: %s", spec.name, ", ".join(changed) or "as loaded")

    def _verified_probe(self, cpu_kernels: bool) -> PrecisionProbe:
        """The cached or fresh probe of ``self.precision``, logged in one line."""
        key = probe_key(self.spec, self.device, self.precision, cpu_kernels)
        probe = read_cached_probe(key)
        if probe is None:
            probe = probe_precision(self, self.precision)
            write_cached_probe(key, probe)
        where = (f"{device_name(self.device)}, torch {torch.__version__}"
                 + (", cached decision" if probe.cached else ""))
        if probe.accepted:
            log.info("model '%s': %s verified against float32 (per-channel r >= %.4f in 99%% "
                     "of channels, every layer; %s)", self.spec.name, probe.precision,
                     min(probe.quantile_r), where)
        else:
            bad = ", ".join(f"{i} (r {probe.quantile_r[i]:.3f})" for i in probe.failing_layers)
            log.warning("model '%s': %s changes its features on this machine (%s): layers %s "
                        "fall below r %.2f with float32 in 1%% or more of their channels; "
                        "computing in float32 instead (set `features.precision: float32` to "
                        "skip this check)", self.spec.name, probe.precision, where, bad,
                        probe.threshold)
        return probe

    def _default_feature_extractor(self):
        if self.whisper:
            from transformers import WhisperFeatureExtractor

            return WhisperFeatureExtractor(feature_size=self.config.num_mel_bins)
        from transformers import Wav2Vec2FeatureExtractor

        return Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False)

    def _autocast(self, precision: str | None = None):
        precision = precision or self.precision
        if precision in _AUTOCAST_DTYPES:
            return torch.autocast(device_type=self.device_type,
                                  dtype=_AUTOCAST_DTYPES[precision])
        return contextlib.nullcontext()

    def __call__(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        """All layers for equal-length ``chunks``: a list of n_layers arrays of shape
        (n_chunks, n_frames, n_features)."""
        return self.run(chunks, self.precision)

    @torch.inference_mode()
    def run(self, chunks: list[np.ndarray], precision: str) -> list[np.ndarray]:
        """As ``self(chunks)``, computed in ``precision`` (float32, bfloat16, float16), whatever
        was verified: what :func:`probe_precision` compares."""
        # the front end (waveform normalisation, Whisper's log-mel) stays in float32
        fe = self.feature_extractor(chunks, sampling_rate=TARGET_SR, return_tensors="pt")
        with self._autocast(precision):
            return self._forward(fe)

    def precision_record(self) -> dict[str, Any]:
        """The precision decision, for the attributes of a features file: requested and
        effective precision, and the probe's per-layer minimum and 1 % quantile r (arrays over
        layers), or ``"not probed"`` when float32 was asked for or resolved."""
        record: dict[str, Any] = {"precision": self.precision,
                                  "precision_requested": self.requested_precision,
                                  "precision_effective": self.precision}
        if self.probe is None:
            record["precision_probe"] = "not probed"
            return record
        verdict = "accepted" if self.probe.accepted else "rejected"
        record.update(precision_probe=f"{self.probe.precision} {verdict}",
                      precision_probe_min_r=np.array(self.probe.min_r),
                      precision_probe_q01_r=np.array(self.probe.quantile_r),
                      precision_probe_threshold=self.probe.threshold)
        return record

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
                           **extractor.precision_record()))
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
