"""Python API: the pipeline's steps on arrays, for analyses run without Snakemake.

Four steps, each the function the workflow's rule runs, with the config's defaults:

1. :func:`extract_layers`: every layer of a speech model for one stimulus (arrays, or the
   per-layer HDF5 file the workflow writes);
2. :func:`align_layers`: each layer on the fMRI volume grid of a run (HRF, FIR or Lanczos);
3. ``fit_layer`` (:func:`brainalign.encoding.fit_layer`): nested leave-one-run-out ridge of
   one layer against BOLD, held-out r, p-values and penalties per target;
4. :func:`best_layer` and :func:`best_layer_per_roi`: the layer that explains each target
   (or ROI) best, chosen on the inner cross-validation scores of each fold's training runs
   and scored on its held-out run (``stats.crossfit_best_layer``).

Step 1 imports torch and transformers; the others do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .alignment import AlignOptions, align
from .audio import TARGET_SR
from .encoding import LayerScores
from .models import ModelError, ModelSpec
from .stats import BestLayer, crossfit_best_layer
from .windows import WindowOptions, frame_times, n_frames_total

if TYPE_CHECKING:
    from .features import LayerExtractor

@dataclass
class Layers:
    """Every layer of a model for one stimulus, at the model's frame rate.

    Attributes
    ----------
    frame_times : (n_frames,) centre time (s) of each frame, from the stimulus onset
    values : per layer (0: the model's input representation, then the transformer layers),
        (n_frames, n_features) float32 activations
    duration_s : the stimulus's length (s)
    """

    frame_times: np.ndarray
    values: list[np.ndarray]
    duration_s: float


def extract_layers(model: ModelSpec | LayerExtractor, audio: str | Path | np.ndarray,
                   out_path: str | Path | None = None, options: WindowOptions | None = None,
                   *, device: str | None = None, precision: str = "auto",
                   dtype: str = "float16") -> Layers:
    """Every layer of ``model`` for one stimulus, computed window by window as the pipeline's
    ``extract_features`` rule does (see :mod:`brainalign.features` for the modes).

    Parameters
    ----------
    model : e.g. ``ModelSpec("wav2vec2", "facebook/wav2vec2-base")`` (weights from the
        Hugging Face hub or a local folder) or a random-init ``ModelSpec(name, "random",
        architecture, seed, config_overrides)``; or a model already loaded,
        ``features.LayerExtractor(spec, device, precision)``, to load it once for many stimuli
        (``device`` and ``precision`` are then its own)
    audio : a sound file (resampled to 16 kHz mono) or (n_samples,) samples at 16 kHz
    out_path : write the layers to this HDF5 file (the workflow's format: one ``layer-XX``
        dataset per layer, stored in ``dtype``; read one back with ``io.read_layer``) and
        return them as stored
    options : the ``features`` settings: windows, context, mode and batch size
        (:class:`brainalign.windows.WindowOptions`; default: config/config.yaml's)
    device : ``cpu``, ``cuda``, ... (default: CUDA when available)
    precision : ``auto``, ``float32``, ``bfloat16`` or ``float16`` (reduced precisions are
        verified against float32 first; see ``features.LayerExtractor``)
    dtype : ``float16`` or ``float32``, the file's storage type (with ``out_path``)
    """
    from .audio import load_audio
    from .features import LayerExtractor, extract_features, iter_layer_batches
    from .io import read_frame_times, read_layer

    samples = (np.asarray(audio, dtype=np.float32) if isinstance(audio, np.ndarray)
               else load_audio(audio))
    extractor = (model if isinstance(model, LayerExtractor)
                 else LayerExtractor(model, device=device, precision=precision))
    duration = len(samples) / TARGET_SR
    if out_path is not None:
        extract_features(extractor, samples, out_path, options, dtype=dtype)
        return Layers(read_frame_times(out_path),
                      [read_layer(out_path, i) for i in range(extractor.n_layers)], duration)
    total = n_frames_total(len(samples), extractor.geometry)
    if total == 0:
        raise ModelError(f"model '{extractor.spec.name}': the stimulus ({duration:.3f} s) is "
                         "too short for one frame.")
    values: list[np.ndarray] = []
    for batch, kept in iter_layer_batches(extractor, samples, options):
        for w, layers in zip(batch, kept, strict=True):
            if not values:
                values = [np.zeros((total, a.shape[1]), np.float32) for a in layers]
            for out, arr in zip(values, layers, strict=True):
                out[w.first_frame:w.first_frame + w.n_keep] = arr
    return Layers(frame_times(total, extractor.geometry), values, duration)


def align_layers(layers: Layers, t_r: float, options: AlignOptions | None = None, *,
                 onset_s: float = 0.0) -> list[np.ndarray]:
    """Each layer on the volume grid of a run whose stimulus starts ``onset_s`` seconds after
    its first volume: per layer, (n_volumes, n_features) (FIR and Lanczos: n_features times
    the number of delays). ``options``: the config's ``alignment`` settings
    (:class:`brainalign.alignment.AlignOptions`; default: HRF); see
    :func:`brainalign.alignment.align`."""
    return [align(layers.frame_times, v, t_r, layers.duration_s, options, onset_s=onset_s)
            for v in layers.values]


def best_layer(fits: Sequence[LayerScores], layers: Sequence[int] | None = None) -> BestLayer:
    """The best layer of every target, from one ``fit_layer`` result per layer (in the order
    of ``layers``, default 0, 1, ...): in each outer fold, the layer with the best inner-CV
    score on the fold's training runs, scored on its held-out run."""
    return crossfit_best_layer(np.stack([f.inner_r2 for f in fits]),
                               np.stack([f.r_folds for f in fits]), layers)


def best_layer_per_roi(fits: Sequence[LayerScores], masks: dict[str, np.ndarray],
                       layers: Sequence[int] | None = None) -> BestLayer:
    """As :func:`best_layer`, for the mean score over each ROI's targets: ``masks`` maps an
    ROI's name to a boolean array over the targets; the result's units follow its order."""
    from .rois import roi_fold_scores

    return crossfit_best_layer(roi_fold_scores(np.stack([f.inner_r2 for f in fits]), masks),
                               roi_fold_scores(np.stack([f.r_folds for f in fits]), masks),
                               layers)
