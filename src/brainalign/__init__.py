"""brainalign: which layer of a self-supervised speech model best explains each cortical
region's fMRI response to audiobooks.

One module per pipeline stage (audio, features, alignment, bold, encoding, ceiling, stats, rois,
compare, simulate, report, bids, surface, cifti, parcels, targets, io, config; the feature stage's
helpers in models, precision, windows and similarity); the Snakemake rules in
``workflow/rules`` wire files to their functions.

Python API (see README.md, "Python API"), importable from here::

    import brainalign as ba
    layers = ba.extract_layers(ba.ModelSpec("w2v", "facebook/wav2vec2-base"), "story.wav")
    x = ba.align_layers(layers, t_r=2.0)                    # per layer, (n_volumes, n_features)
    fir = ba.align_layers(layers, 2.0, ba.AlignOptions(method="fir"))   # the config's settings
    fit = ba.fit_layer(x_runs, y_runs, alphas, ba.FitOptions())   # held-out r, p, penalties
    best = ba.best_layer(fits)                              # per target, cross-fitted

``import brainalign`` stays light: each name is imported from its module on first use; only
``LayerExtractor`` and ``extract_layers`` (when called) import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_API = {
    "ModelSpec": "models",
    "WindowOptions": "windows",
    "AlignOptions": "alignment",
    "Layers": "api",
    "LayerExtractor": "features",
    "extract_layers": "api",
    "align_layers": "api",
    "best_layer": "api",
    "best_layer_per_roi": "api",
    "FitOptions": "encoding",
    "LayerScores": "encoding",
    "fit_layer": "encoding",
    "BestLayer": "stats",
    "crossfit_best_layer": "stats",
    "read_layer": "io",
    "speech_like": "simulate",
}

__all__ = ["AlignOptions", "BestLayer", "FitOptions", "LayerExtractor", "LayerScores", "Layers",
           "ModelSpec", "WindowOptions", "align_layers",
           "best_layer", "best_layer_per_roi", "crossfit_best_layer", "extract_layers",
           "fit_layer", "read_layer", "speech_like"]

if TYPE_CHECKING:
    from .alignment import AlignOptions
    from .api import Layers, align_layers, best_layer, best_layer_per_roi, extract_layers
    from .encoding import FitOptions, LayerScores, fit_layer
    from .features import LayerExtractor
    from .io import read_layer
    from .models import ModelSpec
    from .simulate import speech_like
    from .stats import BestLayer, crossfit_best_layer
    from .windows import WindowOptions


def __getattr__(name: str) -> Any:
    """The API's names, imported from their modules on first use."""
    if name in _API:
        value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'brainalign' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
