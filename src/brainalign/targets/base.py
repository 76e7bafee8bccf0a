"""The base class of the input kinds, and the group maps every kind shares."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from ..bids import BidsFilters
    from ..bold import CleanOptions

# the legend of the best-layer maps drawn on the inflated cortex
DRAWN_ON = ("Colours: one per layer, as in the volume maps; grey: sulcal depth, where no "
            "layer is significant or the vertex is not analysed (medial wall).")


@dataclass
class SubjectPage:
    """What a subject's report knows when a kind draws its map sections.

    Attributes
    ----------
    layers : layer numbers, in the order of ``scores``
    scores : per layer, the fit_layer scores (``r``, ``p``, ...) over the targets
    fdr_q : the FDR level of the significance maps
    n_sig : targets significant for some layer
    flat : whether all layers are indistinguishable (no best layer drawn)
    flat_html : the paragraph saying so, or ""
    best_map, best_r, significant : the subject's map files (``map_files``)
    projected : the best-layer map sampled on fsaverage5 (``projectable`` kinds), or empty
    """

    layers: list[str]
    scores: list[dict[str, np.ndarray]]
    fdr_q: float
    n_sig: int
    flat: bool
    flat_html: str
    best_map: list[str]
    best_r: list[str]
    significant: list[str]
    projected: list[str]


@dataclass
class GroupPage:
    """What the group report knows when a kind draws its map sections.

    Attributes
    ----------
    layers : layer numbers (``00``, ``01``, ...), increasing
    n_subjects : subjects in the group maps
    fdr_q : the within-subject FDR level of the significance maps
    flat, flat_html : as in :class:`SubjectPage`
    masks : the subjects' mask files
    mean_r, best, share : the group map files (:func:`group_maps`, written by rule group_maps)
    ceiling, usable : the group noise-ceiling map and its usable mask files, or empty
    project : whether maps are also drawn on fsaverage5 (``project_to_fsaverage``)
    """

    layers: list[str]
    n_subjects: int
    fdr_q: float
    flat: bool
    flat_html: str
    masks: list[str]
    mean_r: list[str]
    best: list[str]
    share: list[str]
    ceiling: list[str]
    usable: list[str]
    project: bool


class Targets(ABC):
    """The encoding targets of one subject (or the targets several subjects share), in the
    shape of nilearn's maskers: ``fit`` builds them from the runs, ``transform`` turns a run
    into a (volumes x targets) array, ``inverse_transform`` / ``write_map`` turn values over
    the targets back into the input's own format.

    Attributes
    ----------
    keep : bool array over every target of the input's space (flattened voxels of the grid,
        vertices left then right, parcels): the targets analysed
    """

    kind: ClassVar[str]  # the name in the config (`bids.target`) and the registry
    noun: ClassVar[str]  # what one target is called in logs and reports
    space_name: ClassVar[str]  # what the targets lie in (grid, surface, ...), for errors
    mask_suffix: ClassVar[str]  # the subject's mask file: <prefix> + mask_suffix
    map_suffix: ClassVar[str]  # a map file: <prefix> + map_suffix (see map_files)
    atlas_suffix: ClassVar[str]  # the subject's atlas file
    # dtypes of the subject's best-layer label map and significance flags
    label_dtype: ClassVar[type] = np.int32
    flag_dtype: ClassVar[type] = np.int32
    # whether maps can be sampled on fsaverage5 for display (project_to_fsaverage)
    projectable: ClassVar[bool] = False
    # where the ROIs of the subject's report come from
    roi_origin: ClassVar[str] = ""

    # finding the runs in fMRIPrep derivatives (``bids.discover_runs``):
    # the BIDS suffixes and extensions of a run's files
    suffixes: ClassVar[tuple[str, ...]]
    extensions: ClassVar[tuple[str, ...]]
    # entities every run file of this kind has beside the filters (named in log lines)
    fixed_entities: ClassVar[tuple[str, ...]] = ()
    # the config keys that pick one of the spaces found (named when no run matches)
    space_keys: ClassVar[str] = "`bids.space`"
    # the fix named when several files match one run
    several_hint: ClassVar[str]

    keep: np.ndarray

    # --- finding the runs ---
    @classmethod
    def is_run_file(cls, entities: dict[str, str]) -> bool:
        """Whether a file (its parsed BIDS entities, ``bids.parse_entities``) has the suffix
        and extension of this kind's runs, whatever its space."""
        return entities["suffix"] in cls.suffixes and entities["extension"] in cls.extensions

    @classmethod
    def matches(cls, entities: dict[str, str], filters: BidsFilters) -> bool:
        """Whether a file is a run of this kind in the space (and, per kind, the resolution or
        ``desc``) that the filters ask for; the task, session and run filters are not
        applied here (``BidsFilters.keeps``)."""
        return cls.is_run_file(entities) and entities.get("space") == filters.space

    @classmethod
    def run_files(cls, members: list[tuple[Path, dict[str, str]]],
                  files: list[tuple[Path, dict[str, str]]], filters: BidsFilters
                  ) -> tuple[tuple[str, ...], str | None]:
        """The files of one run and its brain mask (None for kinds without one).

        Parameters
        ----------
        members : the files that :meth:`matches` and share the run's entities, with their
            entities
        files : every functional file of the subject, with its entities

        Raises ``bids.BidsError`` naming the files when the members are not one run.
        """
        from ..bids import BidsError

        if len(members) != 1:
            names = ", ".join(sorted(p.name for p, _ in members))
            raise BidsError(f"{members[0][0].parent}: several files match one run ({names}); "
                            f"{cls.several_hint}.")
        return (str(members[0][0]),), None

    @property
    def n_targets(self) -> int:
        return int(self.keep.sum())

    # --- building, saving and loading the targets ---
    @classmethod
    @abstractmethod
    def fit(cls, runs: list[list[str]], masks: list[str], space: str | None = None
            ) -> Targets:
        """The targets of a subject, from its runs (each a list of files: a NIfTI, a GIFTI
        pair, a TSV) and, for kinds that have them, the runs' brain masks."""

    def full(self, values: np.ndarray, fill: float = 0.0, dtype: type = np.float32
             ) -> np.ndarray:
        """Values over the targets (last axis) -> over every target of the space, ``fill``
        where not kept."""
        values = np.asarray(values)
        out = np.full(values.shape[:-1] + self.keep.shape, fill, dtype=dtype)
        out[..., self.keep] = values
        return out

    @classmethod
    def log_kept(cls, keep: np.ndarray) -> None:
        """Log how many targets a fit kept of those finite and varying in every run."""
        logging.getLogger(cls.__module__).info(
            "%d of %d %s kept (finite and varying in every run)", keep.sum(), keep.size, cls.noun)

    @classmethod
    @abstractmethod
    def load(cls, path: str | Path) -> Targets:
        """The targets saved by :meth:`save`."""

    @abstractmethod
    def save(self, path: str | Path) -> None:
        """Write the targets to the subject's mask file."""

    @abstractmethod
    def restrict(self, keep: np.ndarray) -> Targets:
        """The same space with other targets kept (``keep`` over all of them)."""

    @abstractmethod
    def same_space(self, other: Targets) -> bool:
        """Whether two subjects' targets lie in one space (grid, surface, parcellation)."""

    # --- runs and maps ---
    @abstractmethod
    def transform(self, files: list[str], n_vols: int, t_r: float,
                  options: CleanOptions | None = None) -> np.ndarray:
        """A run's files -> its kept targets, trimmed and cleaned as ``options`` says
        (``bold.clean_series``): (n_kept_volumes, n_targets) float32."""

    @abstractmethod
    def inverse_transform(self, values: np.ndarray, fill: float = 0.0, dtype: type = np.float32
                          ) -> Any:
        """Values over the targets -> the input's format in memory, ``fill`` elsewhere."""

    def write_map(self, values: np.ndarray, paths: list[str | Path], fill: float = 0.0,
                  dtype: type = np.float32) -> None:
        """Values over the targets -> the map file(s) of :meth:`map_files` (here: one file,
        the inverse transform written by :meth:`save_map`)."""
        (path,) = paths
        self.save_map(self.inverse_transform(values, fill, dtype), path)

    def save_map(self, image: Any, path: str | Path) -> None:
        """Write one map in the input's format (as :meth:`inverse_transform` returns it) to
        ``path``, atomically; kinds whose maps are one file implement it."""
        raise NotImplementedError(f"{type(self).__name__} writes its maps in write_map")

    @abstractmethod
    def write_maps(self, values: np.ndarray, names: list[str], paths: list[str | Path]) -> None:
        """Several float maps over all targets of the space, shape (n_maps, keep.size), e.g. one
        per layer, named -> one set of map files."""

    @classmethod
    @abstractmethod
    def read_map(cls, paths: list[str | Path]) -> np.ndarray:
        """Map file(s) -> the values over all targets of the space: (keep.size,), or
        (n_maps, keep.size) for files of several maps."""

    @classmethod
    def map_files(cls, prefix: str) -> list[str]:
        """The file(s) of a map named ``prefix`` (a path without its suffix)."""
        return [prefix + cls.map_suffix]

    # --- atlas ---
    @classmethod
    @abstractmethod
    def check_atlas(cls, atlas: str, space: str | None = None) -> str:
        """The name ``rois.atlas`` gives result files (a packaged atlas's canonical name, or
        ``custom`` for a user's file), after checking that it suits this kind and, where given,
        the ``space`` (``bids.space``); raises ValueError naming ``rois.atlas`` and the valid
        choices."""

    @abstractmethod
    def write_atlas(self, rois: dict, path: str | Path) -> None:
        """The configured atlas (config ``rois``) on these targets -> the subject's atlas
        file."""

    @abstractmethod
    def atlas(self, path: str | Path, rois: dict) -> tuple[np.ndarray, dict[int, str]]:
        """The atlas file of :meth:`write_atlas` -> (label per target, {label: name})."""

    def roi_groups(self, groups: dict[str, list[str]]) -> dict[str, list[str]]:
        """The ROIs beside the atlas's own: the configured groups of labels."""
        return dict(groups)

    # --- reports ---
    @abstractmethod
    def subject_sections(self, page: SubjectPage) -> list[str]:
        """The HTML sections of the subject's report that show its maps."""

    @abstractmethod
    def group_sections(self, page: GroupPage) -> list[str]:
        """The HTML sections of the group report that show the group maps (and the noise
        ceiling where the kind draws it)."""


def intersect(masks: list[Targets], paths: list[str | Path], what: str
              ) -> tuple[Targets, list[np.ndarray]]:
    """The targets every subject kept, and each subject's indices of them among its own
    targets (the column order of its BOLD arrays).

    Parameters
    ----------
    masks : the subjects' targets, all of one kind
    paths : their files, to name in errors
    what : what needs one space, said in errors (e.g. "the inter-subject-correlation
        ceiling needs every subject on one, or set `ceiling.method: none`")
    """
    ref = masks[0]
    for p, m in zip(paths, masks, strict=True):
        if not m.same_space(ref):
            raise ValueError(f"{p}: its {m.noun} are not those of {paths[0]} (another "
                             f"{ref.space_name}); {what}.")
    shared = np.logical_and.reduce([m.keep for m in masks])
    if not shared.any():
        raise ValueError(f"{paths[0]}: the subjects share no {ref.noun}; set "
                         "`ceiling.method: none` or check the inputs.")
    return ref.restrict(shared), [np.flatnonzero(shared[m.keep]) for m in masks]


@dataclass
class GroupMaps:
    """Group maps over the targets every subject kept.

    Attributes
    ----------
    common : the targets every subject kept (``keep`` of ``common.keep``)
    mean_r : (n_layers, keep.size) subject-mean held-out r, 0 off the common targets
    best : (keep.size,) group best layer, -1 off the common targets or where significant in at
        most half of the subjects
    share : (keep.size,) share of subjects in which the target is significant (and kept)
    """

    common: Targets
    mean_r: np.ndarray
    best: np.ndarray
    share: np.ndarray


def group_maps(masks: list[Targets], r_maps: list[list[str]], significant: list[list[str]],
               layers: list[str], min_share: float = 0.5) -> GroupMaps:
    """Subject-mean r per layer, the share of subjects in which each target is significant and
    the group best layer (``compare.group_layer_maps``), over the targets all subjects kept.

    Parameters
    ----------
    masks : the subjects' targets, in one space
    r_maps : per subject, per layer (in ``layers`` order), the r map's files
    significant : per subject, the significance map's files
    """
    from ..compare import group_layer_maps

    ref = masks[0]
    for m in masks:
        if not m.same_space(ref):
            raise ValueError(f"the subjects' {ref.noun} lie in different spaces (another "
                             f"{ref.space_name}); group maps need every subject in one space "
                             "(e.g. fMRIPrep's MNI152 outputs, one fsaverage surface, one "
                             "parcellation).")
    keep = np.stack([m.keep for m in masks])
    common = keep.all(0)
    flags = np.stack([type(ref).read_map(f) > 0 for f in significant]) & keep
    layer_r = np.stack([[type(ref).read_map(f)[common] for f in files] for files in r_maps])
    mean_r = np.zeros((len(layers), common.size), np.float64)
    best = np.full(common.size, -1, np.int16)
    if common.any():
        mean_r[:, common], best[common], _ = group_layer_maps(
            layer_r, flags[:, common], layers, min_share)
    return GroupMaps(ref.restrict(common), mean_r, best, flags.mean(0))


def read_label_table(path: str | Path, keep: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
    """An atlas saved as ``labels`` over all targets with its ``values`` and ``names`` (``.npz``)
    -> (label per kept target, {label: name})."""
    from ..io import load_npz

    atlas = load_npz(path)
    names = dict(zip(atlas["values"].tolist(), atlas["names"].tolist(), strict=True))
    return atlas["labels"][keep], names
