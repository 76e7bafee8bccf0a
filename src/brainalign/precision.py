"""Compute precision of the feature stage: which reduced precision (bfloat16, float16) a device
computes natively, and the probe that verifies a model's layers in it against float32 before it
is used (its decision cached per model, device and library versions)."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .audio import TARGET_SR
from .io import atomic_path
from .models import ModelSpec
from .stats import pearson_r
from .windows import n_frames_total

if TYPE_CHECKING:
    from .features import LayerExtractor

log = logging.getLogger(__name__)

#: values of LayerExtractor's ``precision`` (``features.precision`` in the config)
PRECISIONS = ("auto", "float32", "bfloat16", "float16")


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
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        r = pearson_r(a[:, live], b[:, live])
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
def cpu_model_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere the platform's processor)."""
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
        return f"cpu: {cpu_model_name()}"
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
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            json.dump({"key": key, "probe": probe.to_dict()}, f, default=str)
    except OSError as err:
        log.info("cannot write the precision-probe cache %s (%s); set BRAINALIGN_CACHE_DIR "
                 "to a writable directory to avoid probing again", path, err)


def verified_probe(extractor: LayerExtractor, cpu_kernels: bool) -> PrecisionProbe:
    """The cached or fresh probe of ``extractor.precision`` on its device, logged in one line
    (a warning when the precision is refused)."""
    key = probe_key(extractor.spec, extractor.device, extractor.precision, cpu_kernels)
    probe = read_cached_probe(key)
    if probe is None:
        probe = probe_precision(extractor, extractor.precision)
        write_cached_probe(key, probe)
    where = (f"{device_name(extractor.device)}, torch {torch.__version__}"
             + (", cached decision" if probe.cached else ""))
    if probe.accepted:
        log.info("model '%s': %s verified against float32 (per-channel r >= %.4f in 99%% "
                 "of channels, every layer; %s)", extractor.spec.name, probe.precision,
                 min(probe.quantile_r), where)
    else:
        bad = ", ".join(f"{i} (r {probe.quantile_r[i]:.3f})" for i in probe.failing_layers)
        log.warning("model '%s': %s changes its features on this machine (%s): layers %s "
                    "fall below r %.2f with float32 in 1%% or more of their channels; "
                    "computing in float32 instead (set `features.precision: float32` to "
                    "skip this check)", extractor.spec.name, probe.precision, where, bad,
                    probe.threshold)
    return probe
