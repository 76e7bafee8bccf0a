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
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from .audio import TARGET_SR
from .cpu_kernels import optimise_for_cpu, restore_as_loaded
from .io import atomic_path
from .models import ModelError, ModelSpec, frame_geometry, is_whisper, load_model_config, n_layers
from .precision import PRECISIONS, PrecisionProbe, resolve_precision, verified_probe
from .windows import Window, WindowOptions, frame_times, n_frames_total, plan_windows

log = logging.getLogger(__name__)

#: autocast dtype of each reduced precision
_AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


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
    (see :func:`brainalign.precision.cpu_has_native_bf16`), float32 elsewhere. A reduced
    precision is used only once :func:`brainalign.precision.probe_precision` has verified it
    for this model on this device (decision cached per model, device, torch and transformers
    version: :func:`brainalign.precision.probe_key`); otherwise the model runs in float32,
    with one warning. ``requested_precision`` is what was asked, ``precision`` what
    runs, ``probe`` the probe's outcome (None when float32 was asked for or resolved).
    Activations are returned as float32 either way.

    ``cpu_kernels``: on CPU, swap in brainalign's faster linear, convolution and attention
    paths (:mod:`brainalign.cpu_kernels`; same values up to rounding). False runs the model
    exactly as transformers built it.
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
            self.probe = verified_probe(self, cpu_kernels)
            if not self.probe.accepted:
                self.precision = "float32"
                if changed:
                    restore_as_loaded(self.model)
                changed = optimise_for_cpu(self.model, "float32") if cpu_kernels else []
        if cpu_kernels:
            log.info("model '%s' on CPU: %s", spec.name, ", ".join(changed) or "as loaded")

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
        was verified: what :func:`brainalign.precision.probe_precision` compares."""
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


def iter_layer_batches(extractor: LayerExtractor, audio: np.ndarray,
                       options: WindowOptions | None = None
                       ) -> Iterator[tuple[list[Window], list[list[np.ndarray]]]]:
    """Yield (windows, per-window list of layer arrays (n_keep, n_features)) batch by batch.

    ``options``: the windows and the batch size (:class:`brainalign.windows.WindowOptions`;
    default: config/config.yaml's). Windows of equal input length are batched together (all
    but the first and last, usually).
    """
    opts = options or WindowOptions()
    batch_size = opts.batch_size
    try:
        windows = plan_windows(len(audio), extractor.geometry, opts.window_s, opts.context_s,
                               right_context_s=opts.right_context_s, mode=opts.mode)
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


def extract_features(extractor: LayerExtractor, audio: np.ndarray, out_path: str | Path,
                     options: WindowOptions | None = None, *, dtype: str = "float16") -> None:
    """Write every layer of ``audio`` to an HDF5 file, one dataset per layer, stored in
    ``dtype``.

    ``options``: the windows (see the module docstring and
    :func:`brainalign.windows.plan_windows`) and the batch size
    (:class:`brainalign.windows.WindowOptions`; default: config/config.yaml's).

    The file holds ``frame_times`` (n_frames,) and ``layer-XX`` (n_frames, n_features) datasets,
    so a single layer can be read without loading the others. Written to a temporary name and
    renamed at the end: an interrupted run leaves no half-written file.
    """
    out_path = Path(out_path)
    geom = extractor.geometry
    total = n_frames_total(len(audio), geom)
    if total == 0:
        raise ModelError(f"{out_path}: stimulus too short for the model (<{geom.stride} samples).")
    opts = options or WindowOptions()
    batches = iter_layer_batches(extractor, audio, opts)
    with atomic_path(out_path) as tmp:
        _write_layers(tmp, batches, extractor, audio, out_path.name, total, dtype,
                      dict(window_s=opts.window_s, context_s=opts.context_s,
                           right_context_s=opts.right_context_s, mode=opts.mode,
                           **extractor.precision_record()))


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
