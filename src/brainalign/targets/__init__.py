"""The kinds of input brainalign analyses, one class per kind, in the shape of nilearn's
maskers (:class:`Targets`): ``volume`` (fMRIPrep NIfTI runs and brain masks,
:class:`VolumeTargets`), ``surface`` (GIFTI pairs on fsaverage, :class:`SurfaceTargets`),
``parcels`` (TSV parcel time series, :class:`ParcelTargets`) and ``cifti`` (fMRIPrep's fs_LR 91k
grayordinates, :class:`CiftiTargets`).

A kind is a subclass of :class:`Targets` that sets

- ``kind`` (its name in the config), ``noun`` (voxels, vertices, ...), ``space_name``;
- ``mask_suffix``, ``map_suffix``, ``atlas_suffix``: the suffixes of the subject's mask file,
  of a map and of the subject's atlas file (``map_files`` when a map has several files);
- ``label_dtype`` / ``flag_dtype`` (best-layer and significance maps), ``projectable``
  (maps can be sampled on fsaverage5), ``roi_origin`` (a sentence of the subject report);
- ``suffixes``, ``extensions`` (its run files in fMRIPrep derivatives), and where they apply
  ``fixed_entities``, ``space_keys``, ``several_hint`` (words of discovery's messages);

and implements

- ``matches(entities, filters)`` (whether a BIDS file is one of its runs; ``bids.BidsFilters``)
  and, where a run is not one file, ``run_files(members, files, filters)`` (a volume's brain
  mask, a surface's hemisphere pair): ``bids.discover_runs`` asks these;
- ``check_atlas(atlas, space)``: which atlases (``rois.atlas``) suit it;
- ``fit(runs, masks, space)`` -> the subject's targets; ``save(path)`` / ``load(path)``;
  ``restrict(keep)`` and ``same_space(other)`` (subjects' targets intersected);
- ``transform(files, n_vols, t_r, options)``: a run -> (volumes x targets), cleaned;
- ``inverse_transform(values, fill)``, ``write_map(values, paths, fill, dtype)``,
  ``write_maps(values, names, paths)`` and ``read_map(paths)``: maps in the input's format;
- ``write_atlas(rois, path)`` and ``atlas(path, rois)``: the configured atlas over the targets;
- ``subject_sections(page)`` / ``group_sections(page)``: the report sections that show maps.

Adding a kind is a class file and its entry in :data:`KINDS`.
"""

from __future__ import annotations

from .base import GroupMaps, GroupPage, SubjectPage, Targets, group_maps, intersect
from .cifti import CiftiTargets
from .parcels import ParcelTargets
from .surface import SurfaceTargets
from .volume import VolumeTargets

KINDS: dict[str, type[Targets]] = {
    cls.kind: cls for cls in (VolumeTargets, SurfaceTargets, ParcelTargets, CiftiTargets)
}


def for_kind(name: str) -> type[Targets]:
    """The class of an input kind (``config.dataset(...).kind``)."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown input kind '{name}'; expected one of "
                         f"{', '.join(KINDS)}.") from None


__all__ = ["KINDS", "CiftiTargets", "GroupMaps", "GroupPage", "ParcelTargets", "SubjectPage",
           "SurfaceTargets", "Targets", "VolumeTargets", "for_kind", "group_maps", "intersect"]
