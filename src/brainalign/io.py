"""File edges of the pipeline: reading and writing arrays, images and tables atomically."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import nibabel as nib
import numpy as np
import pandas as pd


def setup_logging(log_path: str | Path | None) -> None:
    """Send log records, warnings and the uncaught error (with its traceback) of a rule script
    to its Snakemake log file as well as to stderr. The objects alive by then (the script's
    imports) are frozen out of garbage collection: nilearn calls ``gc.collect()`` on every image
    read, and rescanning them each time is slow."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    gc.freeze()


def _log_uncaught(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    """sys.excepthook of rule scripts: the error that stops the script is logged like any
    record (so it reaches the rule's log file, last), instead of only printed to stderr."""
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("brainalign").error("the rule stopped on this error:",
                                          exc_info=(exc_type, exc, tb))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path`` to, renamed to ``path`` when the block succeeds.

    The temporary file sits in the same directory (so the rename is atomic) and keeps the
    target's suffixes (writers that pick a format by extension still work); the directory is
    created. When the block raises, the temporary file is removed and ``path`` is left as it
    was: a crash or an interrupted job never leaves a half-written file under the real name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{''.join(path.suffixes)}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_npz(path: str | Path, **arrays: Any) -> None:
    """Named arrays in one ``.npz`` file, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def save_npy(array: np.ndarray, path: str | Path) -> None:
    """One array, written atomically (a crash leaves no half-written file)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, loaded into memory."""
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def save_img(img: nib.Nifti1Image, path: str | Path) -> None:
    """A NIfTI image, written atomically."""
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def save_tsv(df: pd.DataFrame, path: str | Path) -> None:
    """A table as tab-separated text (6 significant digits), written atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def unmask(values: np.ndarray, mask_img: nib.Nifti1Image, fill: float = 0.0,
           dtype: Any = np.float32) -> nib.Nifti1Image:
    """Values over the mask's voxels (n_voxels,) -> a 3D image on the mask's grid."""
    mask = np.asarray(mask_img.dataobj) > 0
    vol = np.full(mask.shape, fill, dtype=dtype)
    vol[mask] = values
    return nib.Nifti1Image(vol, mask_img.affine)


def save_layers_h5(path: str | Path, layers: dict[str, np.ndarray], **attrs: Any) -> None:
    """One dataset per layer (``layer-XX``), written atomically."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for name, arr in layers.items():
            h5.create_dataset(f"layer-{int(name):02d}", data=arr)
        h5.attrs.update(attrs)


def read_layer(path: str | Path, layer: str | int) -> np.ndarray:
    """One layer, (n_rows, n_features) float32, of a per-layer feature file: the frame-rate
    activations of ``features.extract_features`` or the volume-rate features of
    :func:`save_layers_h5`. Each layer is its own dataset, so the others are not read."""
    name = f"layer-{int(layer):02d}"
    with h5py.File(path, "r") as h5:
        if name not in h5:
            have = sorted(k for k in h5 if k.startswith("layer-"))
            raise KeyError(f"{path}: no dataset '{name}' (has {have}).")
        return h5[name][:].astype(np.float32)


def read_frame_times(path: str | Path) -> np.ndarray:
    """Centre time (s) of each frame, (n_frames,), of a frame-rate feature file
    (``features.extract_features``)."""
    with h5py.File(path, "r") as h5:
        return h5["frame_times"][:]
