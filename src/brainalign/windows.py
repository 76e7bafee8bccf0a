"""Windows of the feature stage: how a stimulus is cut into model inputs with left and right
context (``features.mode``: windowed, causal, whole; see :mod:`brainalign.features`) and the
time of each output frame. numpy only: planning needs no model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .audio import TARGET_SR
from .models import FrameGeometry, ModelError

#: values of ``features.mode``
MODES = ("windowed", "causal", "whole")


@dataclass(frozen=True)
class WindowOptions:
    """How a stimulus is cut into model inputs (the config's ``features`` section; the schema
    requires ``window_s`` and ``context_s``, whose defaults here are config/config.yaml's).

    Attributes
    ----------
    window_s : seconds of output frames kept from each window
    context_s : seconds of audio before each window given to the model as left context
    right_context_s : seconds after each window given as right context (``windowed`` only)
    mode : one of :data:`MODES` (see :mod:`brainalign.features`)
    batch_size : windows of equal length run through the model at once
    """

    window_s: float = 10.0
    context_s: float = 5.0
    right_context_s: float = 0.0
    mode: str = "windowed"
    batch_size: int = 4

    @classmethod
    def from_config(cls, features: dict[str, Any]) -> WindowOptions:
        """The options of a config's ``features`` section."""
        return cls(window_s=features["window_s"], context_s=features["context_s"],
                   right_context_s=features["right_context_s"], mode=features["mode"],
                   batch_size=features["batch_size"])


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
    ``[s0, s0 + window_s)``. ``mode`` is one of :data:`MODES` (see :mod:`brainalign.features`):
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


def frame_times(n_frames: int, geom: FrameGeometry, sr: int = TARGET_SR) -> np.ndarray:
    """Centre time (s) of each global output frame."""
    return (np.arange(n_frames) * geom.stride + geom.offset) / sr
