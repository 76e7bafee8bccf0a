"""BIDS discovery: fMRIPrep derivatives -> the runs of each subject, and each run's stimulus.

A small parser of BIDS file names (entities ``key-value`` joined by ``_``, then a suffix and an
extension) walks ``sub-*/[ses-*/]func/`` of the derivatives folder with ``os.scandir``; it runs
when Snakemake builds its DAG, so it must stay fast on datasets with hundreds of subjects
(pybids indexes whole trees into a database, which takes minutes there).

Each input kind (:mod:`brainalign.targets`) says which files are its runs (``matches``: e.g.
``*_space-<space>[_res-<res>]_desc-preproc_bold.nii[.gz]`` for volumes, ``*_hemi-{L,R}_...``
GIFTI for surfaces) and how they make one run (``run_files``: a volume's brain mask, a surface's
hemisphere pair); :class:`BidsFilters` holds the kind, space and labels to keep.

The stimulus of a run comes from the raw dataset's ``events.tsv`` (the rows with a ``stim_file``,
all naming one audio file, which starts at the earliest of their onsets; looked up next to the
run or inherited from the dataset root, ``stim_file`` relative to ``stimuli/``) or from a table
in the config. Runs whose events name several audio files are left out (one log line).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from .targets import KINDS, Targets, for_kind


class BidsError(ValueError):
    """A derivatives tree or events file that does not fit the configuration."""


_RUN_ENTITIES = ("sub", "ses", "task", "acq", "ce", "dir", "rec", "run", "echo")


def parse_entities(name: str) -> dict[str, str]:
    """Entities of a BIDS file name, plus ``suffix`` ('' when absent) and ``extension``.

    >>> parse_entities("sub-01_task-x_run-1_space-T1w_desc-preproc_bold.nii.gz")["desc"]
    'preproc'
    """
    stem, dot, ext = name.partition(".")
    parts = stem.split("_")
    out: dict[str, str] = {"extension": dot + ext, "suffix": ""}
    if parts and "-" not in parts[-1]:
        out["suffix"] = parts.pop()
    for part in parts:
        key, sep, value = part.partition("-")
        if not sep or not key:
            continue
        out[key] = value
    return out


@dataclass(frozen=True)
class BidsFilters:
    """Which runs :func:`discover_runs` keeps; the defaults are the config schema's (``bids``;
    ``space``, required there, defaults to fMRIPrep's MNI152NLin2009cAsym).

    Attributes
    ----------
    kind : the input kind (``bids.target``, a name of ``targets.KINDS``), whose class says
        which files are its runs
    space : fMRIPrep ``space`` entity
    res : ``res`` entity of volumes (e.g. '2'); None accepts one resolution per run
    desc : ``desc`` entity of parcel time-series files (kind 'parcels')
    subjects : labels to keep (without 'sub-'); empty keeps all found
    exclude_subjects, tasks, sessions, runs : further filters (labels without prefixes; empty
        keeps all)
    """

    kind: str = "volume"
    space: str = "MNI152NLin2009cAsym"
    res: str | None = None
    desc: str | None = None
    subjects: tuple[str, ...] = ()
    exclude_subjects: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    sessions: tuple[str, ...] = ()
    runs: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, bids: dict[str, Any]) -> BidsFilters:
        """The filters of a config's ``bids`` section (labels and ``res`` as strings)."""
        labels = {key: tuple(str(v) for v in bids.get(key) or ())
                  for key in ("subjects", "exclude_subjects", "tasks", "sessions", "runs")}
        return cls(kind=bids.get("target", cls.kind), space=bids["space"],
                   res=None if bids.get("res") is None else str(bids["res"]),
                   desc=bids.get("desc"), **labels)

    def keeps(self, entities: dict[str, str]) -> bool:
        """Whether the task, session and run filters keep a file (its parsed entities)."""
        return ((not self.tasks or entities.get("task") in self.tasks)
                and (not self.sessions or entities.get("ses", "") in self.sessions)
                and (not self.runs or entities.get("run", "") in self.runs))


@dataclass(frozen=True)
class BidsRun:
    """One functional run found in the derivatives.

    ``files`` holds one file (volume: the BOLD NIfTI; parcels: the TSV; cifti: the
    dtseries) or two (surface: the left and right hemisphere GIFTI); ``mask`` is the brain mask
    (volume only).
    """

    subject: str
    session: str
    task: str
    run: str
    files: tuple[str, ...]
    mask: str | None = None
    entities: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        """Run label used in result file names: session, task and run labels joined by '-'."""
        return "-".join(p for p in (self.session, self.task, self.run) if p)


def _subject_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        raise BidsError(f"{root}: BIDS derivatives folder not found; set `bids.root` to the "
                        "fMRIPrep output folder (the one holding sub-*/).")
    return sorted(Path(e.path) for e in os.scandir(root) if e.is_dir()
                  and e.name.startswith("sub-"))


def _func_files(subject_dir: Path) -> list[Path]:
    dirs = [subject_dir / "func"]
    dirs += [Path(e.path) / "func" for e in os.scandir(subject_dir)
             if e.is_dir() and e.name.startswith("ses-")]
    return [Path(e.path) for d in dirs if d.is_dir() for e in os.scandir(d) if e.is_file()]


def run_id(entities: dict[str, str]) -> tuple[str, ...]:
    """The entities that tell runs apart (subject, session, task, ..., echo), in BIDS order."""
    return tuple(entities.get(k, "") for k in _RUN_ENTITIES)


def _spaces_found(files: list[tuple[Path, dict[str, str]]], targets: type[Targets]
                  ) -> list[str]:
    """The spaces (and resolutions, densities) of the files that have the suffix and extension
    of the kind's runs, for messages."""
    return sorted({e["space"] + (f" (res-{e['res']})" if "res" in e else "")
                   + (f" (den-{e['den']})" if "den" in e else "")
                   for _, e in files if "space" in e and targets.is_run_file(e)})


def discover_runs(root: str | Path, filters: BidsFilters | None = None) -> list[BidsRun]:
    """Functional runs of the derivatives under ``root`` that match the filters.

    Parameters
    ----------
    root : the fMRIPrep derivatives folder (holding sub-*/)
    filters : the input kind, space and labels to keep (:class:`BidsFilters`; default: the
        schema's defaults)

    Returns
    -------
    runs : sorted by subject, then run key. Raises BidsError when a listed subject has no run,
        files are ambiguous, or nothing matches (naming the spaces that were found).
    """
    filters = filters or BidsFilters()
    if filters.kind not in KINDS:
        raise BidsError(f"unknown target kind '{filters.kind}'; expected one of "
                        f"{', '.join(KINDS)}.")
    targets = for_kind(filters.kind)
    root = Path(root)
    for name, values in (("bids.subjects", filters.subjects),
                         ("bids.exclude_subjects", filters.exclude_subjects)):
        dup = sorted({v for v in values if values.count(v) > 1})
        if dup:
            raise BidsError(f"{name} lists subject(s) {dup} more than once; list each subject "
                            "id once.")
    wanted = set(filters.subjects)
    excluded = set(filters.exclude_subjects)
    found_subjects: set[str] = set()
    found: list[BidsRun] = []
    files_of: dict[str, list[tuple[Path, dict[str, str]]]] = {}
    for sdir in _subject_dirs(root):
        label = sdir.name[len("sub-"):]
        if (wanted and label not in wanted) or label in excluded:
            continue
        found_subjects.add(label)
        files = files_of[label] = [(p, parse_entities(p.name)) for p in _func_files(sdir)]
        groups: dict[tuple[str, ...], list[tuple[Path, dict[str, str]]]] = {}
        for path, ent in files:
            if ent.get("sub") == label and targets.matches(ent, filters) and filters.keeps(ent):
                groups.setdefault(run_id(ent), []).append((path, ent))
        for rid, members in sorted(groups.items()):
            ent = dict(zip(_RUN_ENTITIES, rid, strict=True))
            run_files, mask = targets.run_files(members, files, filters)
            found.append(BidsRun(label, ent["ses"], ent["task"], ent["run"], run_files, mask,
                                 ent))
    missing = sorted(wanted - found_subjects)
    if missing:
        raise BidsError(f"{root}: no folder for subject(s) {', '.join('sub-' + s for s in missing)}"
                        " listed in bids.subjects; fix the list or the `bids.root` path.")
    have = {r.subject for r in found}
    # a subject listed in bids.subjects must have runs; others without matching runs are skipped
    without = sorted((found_subjects - have) & wanted)
    if not found:
        spaces = _spaces_found([x for files in files_of.values() for x in files], targets)
        raise BidsError(
            f"{root}: no {filters.kind} runs in space '{filters.space}'"
            + (f" with res-{filters.res}" if filters.res else "") + " match the filters"
            + (f" (tasks {list(filters.tasks)})" if filters.tasks else "")
            + (f"; spaces found: {', '.join(spaces)}. Set {targets.space_keys} to one of them."
               if spaces else "; check `bids.root` and `bids.target`."))
    if without:
        raise BidsError(f"{root}: subject(s) {', '.join('sub-' + s for s in without)} listed in "
                        f"bids.subjects have no {filters.kind} run in space '{filters.space}' "
                        "matching the filters; remove them from the list or fix `bids.space` / "
                        "`bids.tasks`.")
    skipped = sorted(found_subjects - have)
    if skipped:
        _log_skipped(skipped, files_of, targets, filters)
    return found


def _log_skipped(skipped: list[str], files_of: dict[str, list[tuple[Path, dict[str, str]]]],
                 targets: type[Targets], filters: BidsFilters) -> None:
    """One warning naming the subjects that have a folder but no run matching the filters
    (e.g. no run at the requested resolution), with what their files do have."""
    words = [f"space '{filters.space}'"] + [f"res-{filters.res}"] * bool(filters.res)
    words += [f"desc-{filters.desc}"] * bool(filters.desc) + list(targets.fixed_entities)
    words += [f"{name} {', '.join(map(str, value))}" for name, value in (
        ("tasks", filters.tasks), ("sessions", filters.sessions), ("runs", filters.runs)) if value]
    theirs = [x for s in skipped for x in files_of[s]]
    spaces = _spaces_found(theirs, targets)
    found_tasks = sorted({e["task"] for _, e in theirs if "task" in e})
    names = ", ".join("sub-" + s for s in skipped[:20]) + (" ..." if len(skipped) > 20 else "")
    logging.getLogger("brainalign.bids").warning(
        "%d subject(s) skipped: no %s run matches %s: %s (their files: spaces %s; tasks %s). "
        "Change the filters (`bids.space`, `bids.res`, `bids.tasks` ...) to include them, or "
        "`bids.exclude_subjects` to silence this.", len(skipped), filters.kind,
        ", ".join(words), names,
        ", ".join(spaces) or "none", ", ".join(found_tasks) or "none")


def _safe_name(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem)


def find_events(raw: str | Path, run: BidsRun) -> Path | None:
    """The run's ``events.tsv``: next to the raw run, else inherited from the dataset root
    (most specific name first)."""
    raw = Path(raw)
    ent = run.entities
    base = [f"{k}-{ent[k]}" for k in _RUN_ENTITIES if ent.get(k)]
    func = raw / f"sub-{run.subject}" / (f"ses-{run.session}" if run.session else "") / "func"
    candidates = [func / ("_".join(base) + "_events.tsv")]
    top = [p for p in base if not p.startswith(("sub-", "ses-"))]
    # inheritance: drop entities from the end (run, echo...); the task stays first
    candidates += [raw / ("_".join(top[:n]) + "_events.tsv") for n in range(len(top), 0, -1)]
    return next((c for c in candidates if c.is_file()), None)


def raw_bold(raw: str | Path, run: BidsRun) -> Path | None:
    """The run's raw BIDS BOLD (``sub-X/[ses-Y/]func/<entities>_bold.nii[.gz]``), whose volume
    count is what was acquired; None when absent (or not fetched: an annex link without
    content)."""
    ent = run.entities
    stem = "_".join(f"{k}-{ent[k]}" for k in _RUN_ENTITIES if ent.get(k)) + "_bold"
    func = Path(raw) / f"sub-{run.subject}" / (f"ses-{run.session}" if run.session else "") \
        / "func"
    return next((p for p in (func / f"{stem}.nii.gz", func / f"{stem}.nii") if p.is_file()),
                None)


class SeveralStimuliError(BidsError):
    """A run whose events name several audio files (e.g. Narratives' ``schema`` runs: several
    stories and movies in one run); such runs are left out of discovery with one log line."""


@lru_cache(maxsize=4096)
def events_stimulus(events_path: str | Path, stimuli_dir: str | Path
                    ) -> tuple[str, str, float]:
    """(stimulus name, audio path, onset s) of the one audio file a run heard, from its events.

    The stimulus is the file named in the non-empty ``stim_file`` rows (relative to
    ``stimuli_dir``, the raw dataset's ``stimuli/``); its name is the file name without
    extension. Several rows may name that one file (Narratives' pieman: a ``music`` row at 0 s
    then a ``story`` row at 15 s, both ``pieman_audio.wav``): the audio starts at the earliest
    of their onsets. The onset may be negative (the audio started before the run's first
    volume). Raises :class:`SeveralStimuliError` when the rows name several files.
    """
    events_path = Path(events_path)
    table = pd.read_csv(events_path, sep="\t", dtype={"stim_file": str}, na_values=["n/a", ""])
    if "stim_file" not in table or "onset" not in table:
        raise BidsError(f"{events_path}: needs `onset` and `stim_file` columns to map the run to "
                        "its audio; add them, or set `bids.stimuli_from: table` and list each "
                        "task's stimulus in `bids.stimulus_table` (a run that heard no audio, "
                        "e.g. rest, is left out by listing the other tasks in `bids.tasks`).")
    rows = table.dropna(subset=["stim_file"])
    files = list(dict.fromkeys(rows["stim_file"]))
    if len(files) > 1:
        raise SeveralStimuliError(
            f"{events_path}: {len(files)} different stim_file values ({files}); each run must "
            "hear exactly one audio file (split longer runs, or map runs in "
            "`bids.stimulus_table`).")
    if not files:
        raise BidsError(f"{events_path}: no row names a stim_file; each run must hear exactly "
                        "one audio file (a run that heard none, e.g. rest, is left out by "
                        "listing the other tasks in `bids.tasks`; or map runs in "
                        "`bids.stimulus_table`).")
    audio = Path(stimuli_dir) / files[0]
    if not audio.is_file():
        raise BidsError(f"{events_path}: stim_file '{files[0]}' does not exist ({audio}); put "
                        "the audio under the dataset's stimuli/ folder or set `bids.stimuli_dir`.")
    onset = pd.to_numeric(rows["onset"], errors="coerce")
    if onset.isna().any():
        raise BidsError(f"{events_path}: a row naming '{files[0]}' has no numeric onset; fix "
                        "the onset column.")
    return _safe_name(Path(files[0]).name.split(".")[0]), str(audio), float(onset.min())
