"""The real Snakemake workflow on a small BIDS dataset discovered from its tree.

The fixture writes what OpenNeuro + fMRIPrep publish: stimuli/*.wav, events.tsv (per run, and
inherited from the dataset root), and derivatives/fmriprep with preproc BOLD and brain masks on
a cropped MNI 4 mm grid, plus decoys discovery must skip (another space, confounds, an excluded
subject). Two tasks: 'lpp' with three runs (three stories), 'pieman' with one. BOLD is simulated
from the tiny random wav2vec2's own layers: Heschl's gyrus driven by layer 1, posterior STG by
layer 4, everything else noise. The workflow must find the runs, map them to their stories and
onsets, and recover the planted layers; noise voxels must score r ~ 0.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from bids_tree import (
    RunSpec,
    write_cifti_run,
    write_events,
    write_parcel_run,
    write_stimuli,
    write_surface_run,
    write_volume_run,
)
from test_workflow import _merge

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
LAYOUT = [RunSpec("lpp", "1", "section1", 2.0), RunSpec("lpp", "2", "section2", 2.0),
          RunSpec("lpp", "3", "section3", 2.0), RunSpec("pieman", "", "pieman", 0.0)]
DURATION_S = 28.0
PLANTED = {"HG": 1, "STGp": 4}
GROUPS = {
    "HG": ["Left_Heschl's_Gyrus_(includes_H1_and_H2)",
           "Right_Heschl's_Gyrus_(includes_H1_and_H2)"],
    "STGp": ["Left_Superior_Temporal_Gyrus_posterior_division",
             "Right_Superior_Temporal_Gyrus_posterior_division"],
    "V1": ["Left_Intracalcarine_Cortex", "Right_Intracalcarine_Cortex"],
}
MODEL = "tiny"




def base_config() -> dict:
    """The default config with the tiny test model and settings, explicit run lists removed."""
    cfg = _merge(yaml.safe_load((REPO / "config" / "config.yaml").read_text()),
                 yaml.safe_load((REPO / "tests" / "data" / "config_tiny.yaml").read_text()))
    for key in ("subjects", "runs", "stimuli", "task", "space", "bold_template",
                "mask_template", "onsets"):
        cfg.pop(key)
    cfg["models"] = {MODEL: cfg["models"]["wav2vec2-random"]}
    cfg["models"][MODEL]["layers"] = [0, 1, 4]  # fewer fits; the planted ones included
    cfg["encoding"]["n_permutations"] = 10
    cfg["bold"]["exclude_onset_s"] = 0.0  # 28 s stories: keep all the volumes of the story
    cfg["demo"] = {"enabled": False}
    return cfg


def aligned_layers(cfg: dict, audio: dict[str, Path], layers: set[int],
                   onsets: dict[str, float] | None = None) -> dict[int, dict[str, np.ndarray]]:
    """{layer: {story: HRF-aligned features}} of the tiny model, computed by the library as the
    workflow computes them (onsets of LAYOUT unless given)."""
    from brainalign.alignment import align
    from brainalign.audio import audio_duration, load_audio
    from brainalign.features import LayerExtractor, extract_features
    from brainalign.io import read_frame_times, read_layer
    from brainalign.models import ModelSpec
    from brainalign.windows import WindowOptions

    extractor = LayerExtractor(ModelSpec.from_config(MODEL, cfg["models"][MODEL]))
    onsets = onsets or {spec.story: spec.onset for spec in LAYOUT}
    out: dict[int, dict[str, np.ndarray]] = {layer: {} for layer in layers}
    for story, path in audio.items():
        h5 = path.with_suffix(".h5")
        extract_features(extractor, load_audio(path), h5,
                         WindowOptions(cfg["features"]["window_s"], cfg["features"]["context_s"]))
        for layer in layers:
            times, values = read_frame_times(h5), read_layer(h5, layer)
            out[layer][story] = align(times, values, cfg["tr"], audio_duration(path),
                                      onset_s=onsets[story])
        h5.unlink()
    return out


def cropped_mask() -> tuple[nib.Nifti1Image, np.ndarray, dict[int, str]]:
    """MNI 4 mm brain mask restricted to the ROI groups + 200 noise voxels, cropped to its
    bounding box (so the atlas must be resampled onto it)."""
    from brainalign import rois, simulate

    mask = simulate.template_mask(4)
    atlas, names = rois.load_atlas("harvard_oxford")
    labels = np.asarray(rois.resample_labels(atlas, mask).dataobj)
    mask = simulate.restrict_mask(mask, labels, names, GROUPS, noise_voxels=200, seed=0)
    idx = np.argwhere(np.asarray(mask.dataobj) > 0)
    lo, hi = idx.min(0), idx.max(0) + 1
    crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    mask = mask.slicer[crop]
    return mask, labels[crop][np.asarray(mask.dataobj) > 0], names


@pytest.fixture(scope="module")
def planted_features(tmp_path_factory) -> tuple[Path, dict[int, dict[str, np.ndarray]]]:
    """The stories (stimuli/ folder) and the planted layers' aligned features."""
    root = tmp_path_factory.mktemp("stimuli")
    audio = write_stimuli(root, {spec.story: DURATION_S for spec in LAYOUT})
    return root / "stimuli", aligned_layers(base_config(), audio, set(PLANTED.values()))


@pytest.fixture(scope="module")
def volume_dataset(tmp_path_factory, planted_features) -> tuple[Path, dict]:
    from brainalign import rois, simulate

    root = tmp_path_factory.mktemp("bids") / "ds"
    cfg = base_config()
    shutil.copytree(planted_features[0], root / "stimuli")
    features = planted_features[1]
    mask, labels, names = cropped_mask()
    roi_voxels = rois.roi_masks(labels, names, GROUPS)
    for i, subject in enumerate(("01", "02")):
        by_layer = {layer: [f[spec.story] for spec in LAYOUT] for layer, f in features.items()}
        # the ROIs' tuning shared by the subjects: a noise ceiling
        runs, signal_layer, _ = simulate.simulate_subject(
            by_layer, mask, roi_voxels, PLANTED, snr=1.0, seed=10 + i,
            options=simulate.SimulationOptions(extra_volumes=3, snr_spread=3.0, tuning_seed=7))
        for spec, img in zip(LAYOUT, runs, strict=True):
            if subject == "02" and spec.key == "lpp-2":
                img = img.slicer[..., : img.shape[3] - 5]  # stopped 2 volumes early
            write_events(root, subject, spec, DURATION_S, inherited=spec.task == "pieman")
            write_volume_run(root, subject, spec, img, mask, t_r=cfg["tr"])
        np.save(root / f"truth_sub-{subject}.npy", signal_layer)
    # decoys: another space, and a subject with one run that the config excludes
    img, m = runs[0], mask
    write_volume_run(root, "01", LAYOUT[0], img, m, t_r=cfg["tr"], space="T1w", res=None)
    write_volume_run(root, "03", LAYOUT[0], img, m, t_r=cfg["tr"])
    cfg["bids"] = {"root": str(root / "derivatives" / "fmriprep"), "raw": str(root),
                   "space": "MNI152NLin2009cAsym", "res": "2", "exclude_subjects": ["03"]}
    cfg["bold"]["max_missing_volumes"] = 2
    cfg["rois"]["groups"] = GROUPS
    cfg["project_to_fsaverage"] = True
    return root, cfg


def _snakemake(workdir: Path, cfg: dict, *args: str) -> subprocess.CompletedProcess:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([*SNAKEMAKE, "-d", str(workdir), "--configfile", str(path), *args],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd=workdir, timeout=1200)


def _run_workflow(cfg: dict, tmp_path_factory, name: str, seed: Path | None = None,
                  targets: tuple[str, ...] = ()) -> Path:
    """The workflow on ``cfg`` in a fresh working directory, to ``targets`` (default: all);
    fails with its log tail. ``seed``: a finished run of the same model and stories whose
    features and aligned features are copied in first (modification times kept), so they are
    not computed again."""
    work = tmp_path_factory.mktemp(name)
    for part in ("features", "aligned") if seed is not None else ():
        shutil.copytree(seed / "results" / part, work / "results" / part)
    proc = _snakemake(work, cfg, "--cores", "2", *targets)
    assert proc.returncode == 0, proc.stdout[-5000:]
    return work


#: what the volume and surface runs build: every subject's fits, ROI tables and maps (the group
#: needs them), the group tables, maps and page, and sub-01's page; sub-02's page would repeat it
CHECKED_PAGES = (f"results/sub-01/report/sub-01_model-{MODEL}.html",
                 f"results/group/{MODEL}/group_report.html")


@pytest.fixture(scope="module")
def volume_run(volume_dataset, tmp_path_factory) -> Path:
    _, cfg = volume_dataset
    return _run_workflow(cfg, tmp_path_factory, "work", targets=CHECKED_PAGES)


@pytest.mark.slow
def test_bids_runs_are_discovered_and_prepared(volume_run: Path) -> None:
    for subject in ("01", "02"):
        for key in ("lpp-1", "lpp-2", "lpp-3", "pieman"):
            assert (volume_run / f"results/sub-{subject}/bold/sub-{subject}_run-{key}_bold.npy"
                    ).is_file()
    assert not (volume_run / "results/sub-03").exists()
    # stories of 28 s: onset 2 s -> 30 volumes, the 2 of silence left out; pieman starts at 0
    # -> 28; sub-02's lpp-2 is 2 volumes short and kept at its length
    n = {key: np.load(volume_run / f"results/sub-02/bold/sub-02_run-{key}_bold.npy").shape[0]
         for key in ("lpp-1", "lpp-2", "pieman")}
    assert n == {"lpp-1": 28, "lpp-2": 26, "pieman": 28}
    assert sorted(p.stem for p in (volume_run / "results/aligned" / MODEL).glob("*.h5")) == [
        "pieman", "section1", "section2", "section3"]


@pytest.mark.slow
def test_bids_planted_layers_recovered_and_noise_scores_zero(volume_dataset,
                                                            volume_run: Path) -> None:
    root, _ = volume_dataset
    best = pd.read_csv(volume_run / f"results/group/{MODEL}/group_best-layer.tsv", sep="\t")
    got = dict(zip(best["roi"], best["best_layer"], strict=True))
    assert {roi: got[roi] for roi in PLANTED} == PLANTED, best
    for subject in ("01", "02"):
        truth = np.load(root / f"truth_sub-{subject}.npy")
        mask = nib.load(volume_run / f"results/sub-{subject}/bold/"
                        f"sub-{subject}_desc-brain_mask.nii.gz")
        for layer in PLANTED.values():
            r = np.asarray(nib.load(volume_run / f"results/sub-{subject}/encoding/{MODEL}/"
                                    f"sub-{subject}_layer-{layer:02d}_stat-r.nii.gz").dataobj)
            r = r[np.asarray(mask.dataobj) > 0]
            assert abs(r[truth == -1].mean()) < 0.04, (subject, layer)
            assert r[truth == layer].mean() > 0.2, (subject, layer)


@pytest.mark.slow
def test_bids_noise_ceiling_from_the_stories_both_subjects_heard(volume_dataset,
                                                                 volume_run: Path) -> None:
    """BIDS-discovered runs get the ISC ceiling too (story by story; sub-02's short lpp-2 run is
    cropped with sub-01's): higher at planted voxels than at noise voxels, where it is not
    usable."""
    root, _ = volume_dataset
    for subject in ("01", "02"):
        ceil = np.load(volume_run / f"results/group/ceiling/sub-{subject}_desc-ceiling.npz")
        truth = np.load(root / f"truth_sub-{subject}.npy")
        assert ceil["ceiling"].shape == truth.shape
        planted, noise = ceil["ceiling"][truth >= 0], ceil["ceiling"][truth == -1]
        assert np.nanmedian(planted) > np.nanmedian(noise) + 0.1
        assert ceil["usable"][truth == -1].mean() < 0.05
    log = (volume_run / "logs/ceiling/noise_ceiling.log").read_text()
    assert "2 subjects" in log


@pytest.mark.slow
def test_bids_atlas_resampled_with_a_log_line_and_rerun_is_noop(volume_dataset,
                                                              volume_run: Path) -> None:
    _, cfg = volume_dataset
    log = (volume_run / "logs/rois/sub-01_atlas-harvard_oxford.log").read_text()
    assert "resampled" in log
    proc = _snakemake(volume_run, cfg, "-n", "--cores", "2", *CHECKED_PAGES)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout, proc.stdout[-3000:]


@pytest.mark.slow
def test_bids_best_layer_map_projected_to_fsaverage(volume_run: Path) -> None:
    rois_dir = volume_run / f"results/sub-01/rois/{MODEL}"
    vol = np.asarray(nib.load(rois_dir / "sub-01_desc-bestlayer_map.nii.gz").dataobj)
    surf = np.concatenate([nib.load(rois_dir / f"sub-01_space-fsaverage5_desc-bestlayer_hemi-"
                                    f"{h}_map.func.gii").darrays[0].data for h in "LR"])
    assert surf.shape == (20484,)
    # most-frequent-label sampling: only values of the volume map (layers, -1 elsewhere); the
    # map covers a few ROIs, so most of the cortex is -1
    assert set(np.unique(surf)) <= set(np.unique(vol))
    assert (surf == -1).mean() > 0.5
    # the subject's and the group's best-layer maps drawn on the inflated cortex
    for page in (volume_run / f"results/sub-01/report/sub-01_model-{MODEL}.html",
                 volume_run / f"results/group/{MODEL}/group_report.html"):
        assert cortex_png(page)[:8] == b"\x89PNG\r\n\x1a\n", page


# ----------------------------------------------- one scan per listener: block cross-validation
ONE_RUN = RunSpec("chapter", "", "chapter", 2.0)
ONE_RUN_S = 200.0


@pytest.fixture(scope="module")
def one_run_dataset(tmp_path_factory) -> tuple[Path, dict]:
    """Two listeners, one 200 s chapter each (the one-scan audiobook design), planted layers as
    above; encoding.cv.scheme auto must cut each run into contiguous blocks."""
    from brainalign import rois, simulate

    root = tmp_path_factory.mktemp("one_run") / "ds"
    cfg = base_config()
    audio = write_stimuli(root, {ONE_RUN.story: ONE_RUN_S})
    features = aligned_layers(cfg, audio, set(PLANTED.values()), {ONE_RUN.story: ONE_RUN.onset})
    mask, labels, names = cropped_mask()
    roi_voxels = rois.roi_masks(labels, names, GROUPS)
    for i, subject in enumerate(("01", "02")):
        by_layer = {layer: [f[ONE_RUN.story]] for layer, f in features.items()}
        runs, signal_layer, _ = simulate.simulate_subject(
            by_layer, mask, roi_voxels, PLANTED, snr=1.0, seed=20 + i,
            options=simulate.SimulationOptions(extra_volumes=3, snr_spread=3.0, tuning_seed=7))
        write_events(root, subject, ONE_RUN, ONE_RUN_S)
        write_volume_run(root, subject, ONE_RUN, runs[0], mask, t_r=cfg["tr"])
        np.save(root / f"truth_sub-{subject}.npy", signal_layer)
    cfg["bids"] = {"root": str(root / "derivatives" / "fmriprep"), "raw": str(root),
                   "space": "MNI152NLin2009cAsym", "res": "2"}
    cfg["bold"]["exclude_onset_s"] = 6.0
    cfg["encoding"]["cv"] = {"n_folds": 4}  # blocks of ~50 volumes at TR 1 s
    cfg["rois"]["groups"] = GROUPS
    return root, cfg


@pytest.mark.slow
def test_one_run_listeners_are_analysed_with_blocks_and_planted_layers_recovered(
        one_run_dataset, tmp_path_factory) -> None:
    """One run per listener: prepare_bold cuts it into 4 blocks (22 s left out around each
    border, each block cleaned alone), fit_layer's folds are the blocks, the planted layers
    are the group's best layers, noise voxels score r ~ 0, and the noise ceiling compares the
    listeners on the volumes both kept."""
    root, cfg = one_run_dataset
    # what is checked: sub-01's page and the group table (both subjects' fits and ROI tables)
    work = _run_workflow(cfg, tmp_path_factory, "one_run_work", targets=(
        f"results/sub-01/report/sub-01_model-{MODEL}.html",
        f"results/group/{MODEL}/group_best-layer.tsv"))
    bounds = np.load(work / "results/sub-01/bold/sub-01_run-chapter_blocks.npy")
    # 200 s + 2 s of silence at TR 1: 200 volumes from the onset, 6 s onset transient out
    # -> 194 analysed volumes, 4 blocks, 11 volumes dropped on each side of the 3 borders
    assert bounds.shape == (4, 2) and bounds[0, 0] == 0 and bounds[-1, 1] == 194
    assert (bounds[1:, 0] - bounds[:-1, 1] == 22).all()
    y = np.load(work / "results/sub-01/bold/sub-01_run-chapter_bold.npy")
    assert len(y) == (bounds[:, 1] - bounds[:, 0]).sum()
    log = (work / f"logs/encoding/sub-01_{MODEL}_layer-01.log").read_text()
    assert "1 run(s) cut into 4 contiguous blocks" in log
    page = (work / f"results/sub-01/report/sub-01_model-{MODEL}.html").read_text()
    assert "block cross-validation (encoding.cv.scheme auto: 1 run cut into 4" in page
    best = pd.read_csv(work / f"results/group/{MODEL}/group_best-layer.tsv", sep="\t")
    got = dict(zip(best["roi"], best["best_layer"], strict=True))
    assert {roi: got[roi] for roi in PLANTED} == PLANTED, best
    for subject in ("01", "02"):
        truth = np.load(root / f"truth_sub-{subject}.npy")
        mask = nib.load(work / f"results/sub-{subject}/bold/sub-{subject}_desc-brain_mask.nii.gz")
        for layer in PLANTED.values():
            r = np.asarray(nib.load(work / f"results/sub-{subject}/encoding/{MODEL}/"
                                    f"sub-{subject}_layer-{layer:02d}_stat-r.nii.gz").dataobj)
            r = r[np.asarray(mask.dataobj) > 0]
            assert abs(r[truth == -1].mean()) < 0.04, (subject, layer, r[truth == -1].mean())
            assert r[truth == layer].mean() > 0.2, (subject, layer)
    ceil = np.load(work / "results/group/ceiling/sub-01_desc-ceiling.npz")
    truth = np.load(root / "truth_sub-01.npy")
    assert np.nanmedian(ceil["ceiling"][truth >= 0]) > np.nanmedian(ceil["ceiling"][truth == -1])


# ------------------------------------------------------------------ surface (fsaverage5 GIFTI)
SURFACE_GROUPS = {"A1": ["L_transversetemporal", "R_transversetemporal"],
                  "STG": ["L_superiortemporal", "R_superiortemporal"],
                  "V1": ["L_pericalcarine", "R_pericalcarine"]}
SURFACE_PLANTED = {"A1": 1, "STG": 4}


def planted_truth(labels: np.ndarray, names: dict[int, str], groups: dict[str, list[str]],
                  planted: dict[str, int], per_roi: int = 60, noise: int = 200) -> np.ndarray:
    """What each target of a surface-like input carries: ``per_roi`` random targets of every
    ROI group get its planted layer (-1: noise where none is planted), ``noise`` more are noise,
    and every other target is constant (-2; as the medial wall) and must be masked out."""
    by_name = {n: v for v, n in names.items()}
    rng = np.random.default_rng(0)
    truth = np.full(labels.size, -2, np.int16)
    for roi, members in groups.items():
        idx = np.flatnonzero(np.isin(labels, [by_name[m] for m in members]))
        truth[rng.choice(idx, per_roi, replace=False)] = planted.get(roi, -1)
    truth[rng.choice(np.flatnonzero(truth == -2), noise, replace=False)] = -1
    return truth


def planted_runs(features: dict[int, dict[str, np.ndarray]], truth: np.ndarray,
                 tuning_seed: int, noise_seed: int) -> list[np.ndarray]:
    """One subject's runs (LAYOUT order, 3 volumes after each story) over the targets of
    ``truth``: planted targets follow their layer's features with signal SD 2 over unit noise
    (with 28 s runs, most pass the target-level test); the targets' tuning is shared by the
    subjects (``tuning_seed``: the noise ceiling has a known answer), the noise is their own."""
    from brainalign import simulate

    rng = np.random.default_rng(noise_seed)
    runs = [np.zeros((f.shape[0] + 3, truth.size), np.float32) for f in features[1].values()]
    for layer in sorted(set(truth[truth >= 0].tolist())):
        cols = np.flatnonzero(truth == layer)
        sigs = simulate.planted_signals([features[layer][spec.story] for spec in LAYOUT],
                                        cols.size, np.random.default_rng(tuning_seed + layer))
        for run, sig in zip(runs, sigs, strict=True):
            run[: sig.shape[0], cols] = 2.0 * sig
    varying = truth >= -1
    for run in runs:
        run[:, varying] += rng.standard_normal((run.shape[0], int(varying.sum())))
        run += 500.0  # constant baseline everywhere
    return runs


@pytest.fixture(scope="module")
def surface_dataset(tmp_path_factory, planted_features) -> tuple[Path, dict]:
    """fsaverage5 runs (10242 vertices per hemisphere); only 60 vertices per ROI and 200 noise
    vertices vary, every other vertex is constant (as the medial wall) and must be masked out."""
    from brainalign import surface

    root = tmp_path_factory.mktemp("bids_surf") / "ds"
    cfg = base_config()
    shutil.copytree(planted_features[0], root / "stimuli")
    features = planted_features[1]
    labels, names = surface.load_atlas("desikan_killiany", 10242, 10242)
    truth = planted_truth(labels, names, SURFACE_GROUPS, SURFACE_PLANTED)
    for i, subject in enumerate(("01", "02")):
        runs = planted_runs(features, truth, tuning_seed=70, noise_seed=20 + i)
        for spec, run in zip(LAYOUT, runs, strict=True):
            write_events(root, subject, spec, DURATION_S, inherited=spec.task == "pieman")
            write_surface_run(root, subject, spec, {"L": run[:, :10242].T,
                                                    "R": run[:, 10242:].T}, t_r=cfg["tr"])
    np.save(root / "truth.npy", truth)
    cfg["bids"] = {"root": str(root / "derivatives" / "fmriprep"), "raw": str(root),
                   "target": "surface", "space": "fsaverage5"}
    cfg["rois"] = {"atlas": "desikan_killiany", "groups": SURFACE_GROUPS}
    # vertex-level significance (Simes over 3 layers, FDR over 380 vertices) needs permutation
    # p-values well below the 1/11 of the tests' 10 draws; the null of 380 vertices takes 1 s
    cfg["encoding"]["n_permutations"] = 500
    return root, cfg


@pytest.fixture(scope="module")
def surface_run(surface_dataset, tmp_path_factory, volume_run) -> Path:
    _, cfg = surface_dataset
    return _run_workflow(cfg, tmp_path_factory, "work_surf", seed=volume_run,
                         targets=CHECKED_PAGES)


@pytest.mark.slow
def test_surface_maps_are_gifti_on_the_input_surface(surface_dataset, surface_run: Path) -> None:
    root, _ = surface_dataset
    truth = np.load(root / "truth.npy")
    keep = np.load(surface_run / "results/sub-01/bold/sub-01_desc-brain_mask.npz")["keep"]
    np.testing.assert_array_equal(keep, truth >= -1)  # constant vertices masked out
    enc = surface_run / f"results/sub-01/encoding/{MODEL}"
    for layer in SURFACE_PLANTED.values():
        r = np.concatenate([nib.load(enc / f"sub-01_layer-{layer:02d}_hemi-{h}_stat-r.func.gii")
                            .darrays[0].data for h in "LR"])
        assert r.shape == (20484,)
        assert r[truth == layer].mean() > 0.2
        assert abs(r[truth == -1].mean()) < 0.05
        assert (r[truth == -2] == 0).all()
    # per-vertex best layer from the GIFTI r maps of every fitted layer
    layers = [0, 1, 4]
    r_all = np.stack([np.concatenate([
        nib.load(enc / f"sub-01_layer-{layer:02d}_hemi-{h}_stat-r.func.gii").darrays[0].data
        for h in "LR"]) for layer in layers])
    argmax = np.array(layers)[r_all.argmax(0)]
    for layer in SURFACE_PLANTED.values():
        # neighbouring layers are alike: the planted layer must be the most frequent winner
        counts = np.bincount(argmax[truth == layer], minlength=max(layers) + 1)
        assert counts.argmax() == layer and counts[layer] / counts.sum() > 0.35, (layer, counts)
    # the best-layer map (significant vertices only; -1 elsewhere) is on the same surface
    best = np.concatenate([nib.load(surface_run / f"results/sub-02/rois/{MODEL}/"
                                    f"sub-02_desc-bestlayer_hemi-{h}_map.func.gii")
                           .darrays[0].data for h in "LR"])
    assert best.shape == (20484,) and set(np.unique(best)) <= {-1, *layers}
    assert (best[truth == -2] == -1).all()
    assert "vertices" in (surface_run / f"results/sub-01/report/sub-01_model-{MODEL}.html"
                          ).read_text()


@pytest.mark.slow
def test_surface_planted_layers_recovered_per_roi(surface_run: Path) -> None:
    best = pd.read_csv(surface_run / f"results/group/{MODEL}/group_best-layer.tsv", sep="\t")
    got = dict(zip(best["roi"], best["best_layer"], strict=True))
    assert {roi: got[roi] for roi in SURFACE_PLANTED} == SURFACE_PLANTED, best


@pytest.mark.slow
def test_surface_noise_ceiling_on_the_vertices_both_subjects_kept(surface_dataset,
                                                                 surface_run: Path) -> None:
    """The ISC noise ceiling on fsaverage5 vertices: a GIFTI pair of group maps, higher at the
    planted vertices (tuning shared by the subjects) than at noise vertices, which are not
    usable beyond the FDR rate."""
    root, _ = surface_dataset
    truth = np.load(root / "truth.npy")
    keep = truth >= -1
    ceil = np.load(surface_run / "results/group/ceiling/sub-01_desc-ceiling.npz")
    sub_truth = truth[keep]
    assert ceil["ceiling"].shape == sub_truth.shape
    planted, noise = ceil["ceiling"][sub_truth >= 0], ceil["ceiling"][sub_truth == -1]
    assert np.nanmedian(planted) > np.nanmedian(noise) + 0.1
    assert ceil["usable"][sub_truth == -1].mean() < 0.05
    group = np.concatenate([nib.load(surface_run / "results/group/ceiling/"
                                     f"group_desc-ceiling_hemi-{h}_stat-r.func.gii")
                            .darrays[0].data for h in "LR"])
    assert group.shape == (20484,) and np.isnan(group[~keep]).all()
    assert np.nanmedian(group[truth >= 0]) > np.nanmedian(group[truth == -1]) + 0.1


def cortex_png(page: Path) -> bytes:
    """The page's figure of a best-layer map on the inflated cortex, as PNG bytes."""
    import base64

    found = re.findall(r'<figure><img src="data:image/png;base64,([^"]+)" alt="[^"]*inflated '
                       r'cortex', page.read_text())
    assert len(found) == 1, page
    return base64.b64decode(found[0])


@pytest.mark.slow
def test_surface_group_maps_and_cortex_figures(surface_dataset, surface_run: Path,
                                               tmp_path: Path) -> None:
    import io
    import os

    from browser import find_chromium, load_page
    from PIL import Image

    from brainalign import surface

    root, _ = surface_dataset
    truth = np.load(root / "truth.npy")
    group = surface_run / f"results/group/{MODEL}"
    best = surface.read_maps([group / f"group_desc-bestlayer_hemi-{h}_map.func.gii"
                              for h in "LR"])
    mean_r = surface.read_maps([group / f"group_desc-layers_hemi-{h}_stat-r.func.gii"
                                for h in "LR"])
    share = surface.read_maps([group / f"group_desc-significantshare_hemi-{h}_map.func.gii"
                               for h in "LR"])
    layers = [0, 1, 4]
    assert best.shape == share.shape == (20484,) and mean_r.shape == (3, 20484)
    assert (best[truth == -2] == -1).all() and (mean_r[:, truth == -2] == 0).all()
    # a group best layer exactly where both subjects found the vertex significant
    np.testing.assert_array_equal(best >= 0, share > 0.5)
    for roi, layer in SURFACE_PLANTED.items():
        at = truth == layer
        # the subject-mean r peaks at the planted layer at most planted vertices (measured:
        # 85% in A1, 100% in STG) ...
        assert (np.array(layers)[mean_r[:, at].argmax(0)] == layer).mean() > 0.7, roi
        # ... and the group map shows the planted layer at most of those significant in both
        # subjects (few in A1: 28 s runs leave the vertex-level test little power; measured
        # 2 of 60 in A1, 21 of 60 in STG, all at the planted layer)
        shown = best[at][best[at] >= 0]
        assert shown.size > 0 and (shown == layer).mean() > 0.5, (roi, np.bincount(shown))
    assert (best[truth == -1] >= 0).mean() < 0.02  # noise vertices: (almost) never
    # the subject and group pages draw the best-layer map on the inflated cortex
    pages = [surface_run / f"results/sub-01/report/sub-01_model-{MODEL}.html",
             group / "group_report.html"]
    for page in pages:
        img = Image.open(io.BytesIO(cortex_png(page)))
        assert img.format == "PNG" and img.size[0] > 600 and img.size[1] > 150, page
    if find_chromium() is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium)")
    out = Path(os.environ.get("BRAINALIGN_ARTIFACTS", tmp_path))
    result = load_page(pages[1], out / "surface_group_report.png")
    assert result.errors == [], result.errors
    assert result.images and all(i["complete"] and i["width"] > 0 for i in result.images)
    assert any("inflated cortex" in i["alt"] for i in result.images)


# ------------------------------------------------------------------ parcels (one TSV per run)
# three parcels per ROI and hemisphere, each with its own tuning (a random projection of the
# layer), so that the ROI mean reflects the layer rather than one projection
PARCEL_PLANTED = {f"{roi}_{hemi}{i}": layer for roi, layer in (("A1", 1), ("STG", 4))
                  for hemi in "LR" for i in range(3)}
NOISE_PARCELS = [f"P{i:02d}" for i in range(16)]


@pytest.fixture(scope="module")
def parcel_run(tmp_path_factory, planted_features, volume_run) -> Path:
    """Parcel TSVs (desc-hcp): four planted parcels (parcel means are less noisy than voxels:
    SNR 4), 16 noise parcels, one constant parcel that must be dropped."""
    from brainalign import simulate

    root = tmp_path_factory.mktemp("bids_parcels") / "ds"
    cfg = base_config()
    shutil.copytree(planted_features[0], root / "stimuli")
    features = planted_features[1]
    for i, subject in enumerate(("01", "02")):
        rng = np.random.default_rng(30 + i)
        lengths = [features[1][spec.story].shape[0] + 3 for spec in LAYOUT]
        runs = [pd.DataFrame(rng.standard_normal((n, len(NOISE_PARCELS))), columns=NOISE_PARCELS)
                for n in lengths]
        tuning = np.random.default_rng(30)  # the parcels' tuning shared by the subjects
        for parcel, layer in PARCEL_PLANTED.items():
            sigs = simulate.planted_signals([features[layer][spec.story] for spec in LAYOUT], 1,
                                            tuning)
            for run, sig in zip(runs, sigs, strict=True):
                run[parcel] = rng.standard_normal(len(run))
                run.loc[: len(sig) - 1, parcel] += 2.0 * sig[:, 0]
        for spec, run in zip(LAYOUT, runs, strict=True):
            run["constant"] = 1.0
            write_events(root, subject, spec, DURATION_S, inherited=spec.task == "pieman")
            write_parcel_run(root, subject, spec, run, desc="hcp")
    cfg["bids"] = {"root": str(root / "derivatives" / "fmriprep"), "raw": str(root),
                   "target": "parcels", "space": "fsLR", "desc": "hcp"}
    cfg["rois"] = {"atlas": "parcels",
                   "groups": {roi: [p for p in PARCEL_PLANTED if p.startswith(roi)]
                              for roi in ("A1", "STG")}}
    return _run_workflow(cfg, tmp_path_factory, "work_parcels", seed=volume_run)


@pytest.mark.slow
def test_parcels_per_parcel_scores_and_best_layers(parcel_run: Path) -> None:
    r = pd.read_csv(parcel_run / f"results/sub-01/encoding/{MODEL}/sub-01_layer-01_stat-r.tsv",
                    sep="\t").set_index("parcel")["value"]
    # 4 runs of 28 volumes to learn each parcel's own projection of 64 features: r varies
    # between parcels (0.18-0.64 here) with the stimulus-driven signal alone
    a1 = r[[p for p in PARCEL_PLANTED if p.startswith("A1")]]
    assert r["constant"] == 0 and a1.mean() > 0.3 and a1.min() > 0.1
    assert abs(r[NOISE_PARCELS].mean()) < 0.1
    scores = pd.read_csv(parcel_run / f"results/sub-02/rois/{MODEL}/sub-02_roi-scores.tsv",
                         sep="\t")
    assert set(scores["roi"]) == {*PARCEL_PLANTED, *NOISE_PARCELS, "A1", "STG"}
    best = pd.read_csv(parcel_run / f"results/group/{MODEL}/group_best-layer.tsv", sep="\t")
    got = dict(zip(best["roi"], best["best_layer"], strict=True))
    assert got["A1"] == 1 and got["STG"] == 4, best
    # the ISC noise ceiling per parcel (tuning shared by the subjects): a parcel TSV of the
    # group ceiling, planted parcels above the noise parcels, the constant one dropped
    group = pd.read_csv(parcel_run / "results/group/ceiling/group_desc-ceiling_stat-r.tsv",
                        sep="\t").set_index("parcel")["value"]
    assert np.isnan(group["constant"])
    assert group[list(PARCEL_PLANTED)].median() > group[NOISE_PARCELS].median() + 0.2


# ------------------------------------------------------- CIFTI grayordinates (fMRIPrep fs_LR 91k)
CIFTI_GROUPS = {"A1": ["L_A1", "R_A1"], "Belt": ["L_LBelt", "R_LBelt", "L_PBelt", "R_PBelt"],
                "V1": ["L_V1", "R_V1"]}
CIFTI_PLANTED = {"A1": 1, "Belt": 4}


@pytest.fixture(scope="module")
def cifti_dataset(tmp_path_factory, planted_features) -> tuple[Path, dict]:
    """fMRIPrep's ``--cifti-output`` runs (91 282 grayordinates): 60 grayordinates per
    Glasser ROI and 200 noise grayordinates vary, every other one is constant and must be masked
    out; the ROIs' tuning is shared by the subjects."""
    from brainalign import cifti

    root = tmp_path_factory.mktemp("bids_cifti") / "ds"
    cfg = base_config()
    shutil.copytree(planted_features[0], root / "stimuli")
    features = planted_features[1]
    labels, names = cifti.load_atlas("glasser")
    truth = planted_truth(labels, names, CIFTI_GROUPS, CIFTI_PLANTED)
    for i, subject in enumerate(("01", "02")):
        runs = planted_runs(features, truth, tuning_seed=80, noise_seed=40 + i)
        for spec, run in zip(LAYOUT, runs, strict=True):
            write_events(root, subject, spec, DURATION_S, inherited=spec.task == "pieman")
            write_cifti_run(root, subject, spec, run, t_r=cfg["tr"])
    np.save(root / "truth.npy", truth)
    cfg["bids"] = {"root": str(root / "derivatives" / "fmriprep"), "raw": str(root),
                   "target": "cifti", "space": "fsLR"}
    cfg["rois"] = {"atlas": "glasser", "groups": CIFTI_GROUPS}
    cfg["encoding"]["n_permutations"] = 500  # grayordinate-level significance, as on surfaces
    return root, cfg


@pytest.fixture(scope="module")
def cifti_run(cifti_dataset, tmp_path_factory, volume_run) -> Path:
    _, cfg = cifti_dataset
    return _run_workflow(cfg, tmp_path_factory, "work_cifti", seed=volume_run)


@pytest.mark.slow
def test_cifti_grayordinates_end_to_end(cifti_dataset, cifti_run: Path) -> None:
    """fs_LR 91k runs: constant grayordinates masked out, r maps as dense scalars and best
    layers as dense labels on the runs' grayordinates, planted layers recovered per Glasser ROI
    and in the group map, noise at r ~ 0, a noise ceiling on the grayordinates both kept."""
    from brainalign import cifti

    root, _ = cifti_dataset
    truth = np.load(root / "truth.npy")
    keep, _ = cifti.load_mask(cifti_run / "results/sub-01/bold/sub-01_desc-brain_mask.dscalar.nii")
    np.testing.assert_array_equal(keep, truth >= -1)
    enc = cifti_run / f"results/sub-01/encoding/{MODEL}"
    for layer in CIFTI_PLANTED.values():
        r = cifti.read_map(enc / f"sub-01_layer-{layer:02d}_stat-r.dscalar.nii")
        assert r.shape == (91282,)
        assert r[truth == layer].mean() > 0.2
        assert abs(r[truth == -1].mean()) < 0.05 and (r[truth == -2] == 0).all()
    best = cifti.read_map(cifti_run / f"results/sub-02/rois/{MODEL}/"
                          "sub-02_desc-bestlayer_map.dlabel.nii")
    assert best.shape == (91282,) and set(np.unique(best)) <= {-1, 0, 1, 4}
    assert (best[truth == -2] == -1).all()
    for layer in CIFTI_PLANTED.values():  # significant planted grayordinates: their layer
        found = best[(truth == layer) & (best >= 0)]
        assert found.size >= 5 and (found == layer).mean() > 0.9, (layer, np.bincount(found + 1))
    table = pd.read_csv(cifti_run / f"results/group/{MODEL}/group_best-layer.tsv", sep="\t")
    got = dict(zip(table["roi"], table["best_layer"], strict=True))
    assert {roi: got[roi] for roi in CIFTI_PLANTED} == CIFTI_PLANTED, table
    group = cifti.read_map(cifti_run / f"results/group/{MODEL}/group_desc-bestlayer_map.dlabel.nii")
    for layer in CIFTI_PLANTED.values():
        found = group[(truth == layer) & (group >= 0)]
        assert found.size >= 5 and (found == layer).all(), (layer, np.bincount(found + 1))
    assert (group[truth == -1] >= 0).mean() < 0.05
    ceil = np.load(cifti_run / "results/group/ceiling/sub-01_desc-ceiling.npz")
    sub_truth = truth[keep]
    assert np.nanmedian(ceil["ceiling"][sub_truth >= 0]) > np.nanmedian(
        ceil["ceiling"][sub_truth == -1]) + 0.1
    page = (cifti_run / f"results/sub-01/report/sub-01_model-{MODEL}.html").read_text()
    assert "grayordinates" in page and "dlabel.nii" in page


# ------------------------------------------------------------------ presets: dry runs on fake trees
def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def _tiny_model(cfg: dict) -> dict:
    # the presets name hub models; their configs cannot be fetched offline, so the dry run uses
    # the tiny random model (discovery, stimulus mapping and the DAG are what is tested)
    cfg["models"] = {MODEL: base_config()["models"][MODEL]}
    return cfg


def test_narratives_preset_dry_run(tmp_path: Path) -> None:
    """Narratives as released: derivatives/fmriprep with res-native volumes, older-fMRIPrep
    surface and confounds names (desc-confounds_regressors.tsv, read for the confound
    strategy), events per run with stim_file (pieman: a music row then a story row on one
    audio file), a schema run (several stories and a movie) left out with one warning; a
    subject with one story is analysed too, its run cut into contiguous blocks."""
    root = tmp_path / "narratives"
    stories = {"001": ["pieman", "tunnel", "lucy"], "002": ["pieman", "tunnel", "lucy",
                                                           "prettymouth", "schema"],
               "003": ["pieman"]}
    func = "derivatives/fmriprep/sub-{s}/func/sub-{s}_task-{t}_run-1"
    for s, tasks in stories.items():
        for t in tasks:
            base = root / func.format(s=s, t=t)
            for suffix in ("_space-MNI152NLin2009cAsym_res-native_desc-preproc_bold.nii.gz",
                           "_space-MNI152NLin2009cAsym_res-native_desc-brain_mask.nii.gz",
                           "_space-fsaverage6_hemi-L.func.gii", "_space-fsaverage6_hemi-R.func.gii",
                           "_desc-confounds_regressors.tsv"):
                _touch(base.with_name(base.name + suffix))
            events = root / f"sub-{s}/func/sub-{s}_task-{t}_run-1_events.tsv"
            rows = {"pieman": ["0.0\t13.0\tmusic\tpieman_audio.wav",
                               "15.0\t422.0\tstory\tpieman_audio.wav"],
                    "schema": ["0.0\t90.0\tstory\tschema_a.wav", "95.0\t90.0\tmovie\tn/a",
                               "190.0\t90.0\tstory\tschema_b.wav"]
                    }.get(t, [f"3.0\t60.0\tstory\t{t}_audio.wav"])
            events.parent.mkdir(parents=True, exist_ok=True)
            events.write_text("onset\tduration\ttrial_type\tstim_file\n" + "\n".join(rows)
                              + "\n")
            _touch(root / "stimuli" / f"{t}_audio.wav")
    cfg = _tiny_model(yaml.safe_load((REPO / "config/examples/narratives.yaml").read_text()))
    cfg["bids"].update(root=str(root / "derivatives" / "fmriprep"), raw=str(root))
    cfg["bold"]["confounds"] = {"strategy": ["motion", "wm_csf"]}
    proc = _snakemake(tmp_path, cfg, "-n", "--cores", "2")
    assert proc.returncode == 0, proc.stdout[-3000:]
    out = proc.stdout
    assert "sub-001_run-lucy-1_bold.npy" in out and "sub-002_run-prettymouth-1_bold.npy" in out
    assert "sub-003_run-pieman-1_blocks.npy" in out  # one story only: block CV
    for t in ("pieman", "tunnel", "lucy", "prettymouth"):
        assert f"results/features/{MODEL}/{t}_audio.h5" in out
    assert "sub-002_task-lucy_run-1_desc-confounds_regressors.tsv" in out  # prepare_bold input
    assert "schema" not in out.replace("'schema'", "").replace("leaving out schema", "")
    assert out.count("1 run(s) of 1 subject(s) left out, task(s) 'schema'") == 1

    # the fsaverage6 runs with a packaged surface atlas, by name (its README comment)
    cfg["bids"].update(target="surface", space="fsaverage6")
    cfg["rois"]["atlas"] = "schaefer-400-7"
    proc = _snakemake(tmp_path, cfg, "-n", "--cores", "2")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "sub-001_atlas-schaefer_400_7_dseg.npz" in proc.stdout


def test_parcel_runs_read_their_confounds_dry_run(tmp_path: Path) -> None:
    """Parcel time series with a confound strategy: each run's prepare_bold reads the fMRIPrep
    confounds TSV beside it, found by the run's entities (here the older
    desc-confounds_regressors name)."""
    root = tmp_path / "ds"
    for spec in LAYOUT[:3]:
        write_events(root, "01", spec, 60.0)
        base = root / f"derivatives/fmriprep/sub-01/func/{spec.entities('01')}"
        for suffix in ("_desc-hcp_timeseries.tsv", "_desc-confounds_regressors.tsv"):
            _touch(base.with_name(base.name + suffix))
        _touch(root / "stimuli" / f"{spec.story}.wav")
    cfg = base_config()
    cfg["bids"] = {"root": str(root / "derivatives" / "fmriprep"), "raw": str(root),
                   "target": "parcels", "space": "fsLR", "desc": "hcp"}
    cfg["rois"] = {"atlas": "parcels", "groups": {"A1": ["A1_L"]}}
    cfg["bold"]["confounds"] = {"strategy": ["motion", "high_pass"]}
    proc = _snakemake(tmp_path, cfg, "-n", "--cores", "2")
    assert proc.returncode == 0, proc.stdout[-3000:]
    for spec in LAYOUT[:3]:
        assert f"{spec.entities('01')}_desc-confounds_regressors.tsv" in proc.stdout


def test_lpp_preset_dry_run(tmp_path: Path) -> None:
    """Le Petit Prince layout: derivatives/sub-<lang><n>/func, nine runs per language task,
    stimuli mapped by the preset's table."""
    root = tmp_path / "lpp"
    for s, task in (("EN057", "lppEN"), ("EN058", "lppEN"), ("FR001", "lppFR")):
        for run in range(1, 10):
            base = root / f"derivatives/sub-{s}/func/sub-{s}_task-{task}_run-{run}"
            for suffix in ("_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz",
                           "_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz"):
                _touch(base.with_name(base.name + suffix))
    cfg = _tiny_model(yaml.safe_load((REPO / "config/examples/lpp.yaml").read_text()))
    cfg["bids"].update(root=str(root / "derivatives"), raw=str(root))
    cfg["stimuli"] = {k: v.replace("resources/lpp", str(root)) for k, v in cfg["stimuli"].items()}
    for path in cfg["stimuli"].values():
        _touch(Path(path))
    proc = _snakemake(tmp_path, cfg, "-n", "--cores", "2")
    assert proc.returncode == 0, proc.stdout[-3000:]
    out = proc.stdout
    assert "sub-EN058_run-lppEN-9_bold.npy" in out and "sub-FR001/" not in out  # tasks: [lppEN]
    assert "1 subject(s) skipped: no volume run matches space 'MNI152NLin2009cAsym', tasks " \
        "lppEN: sub-FR001" in out  # said once, not silently
    assert f"results/features/{MODEL}/en9.h5" in out and "/fr1.h5" not in out
    cfg["bids"]["tasks"] = ["lppFR"]
    proc = _snakemake(tmp_path, cfg, "-n", "--cores", "2")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "sub-FR001_run-lppFR-1_bold.npy" in proc.stdout and "/fr9.h5" in proc.stdout
    assert "sub-EN057/" not in proc.stdout


NARRATIVES_RUNS = REPO.parent / "shared" / "data" / "narratives" / "runs.tsv"


@pytest.mark.slow
@pytest.mark.skipif(not NARRATIVES_RUNS.exists(), reason=f"{NARRATIVES_RUNS} not found")
def test_narratives_full_size_replica_keeps_every_listener(tmp_path: Path) -> None:
    """An empty-file replica of the released Narratives tree (every functional run of the 345
    subjects in ../shared/data/narratives/runs.tsv, with the released file names) dry-runs
    with the preset: every subject with an audiobook run is analysed (one- and two-run
    subjects through block cross-validation), the schema runs are left out with one warning,
    and the DAG is built in under a minute."""
    import time

    listing = pd.read_csv(NARRATIVES_RUNS, sep="\t", dtype=str, keep_default_na=False)
    root = tmp_path / "narratives"
    for row in listing.itertuples():
        run = f"_run-{row.run}" if row.run else ""
        stem = f"{row.subject}_task-{row.task}{run}"
        func = root / "derivatives/fmriprep" / row.subject / "func"
        for suffix in ("_space-MNI152NLin2009cAsym_res-native_desc-preproc_bold.nii.gz",
                       "_space-MNI152NLin2009cAsym_res-native_desc-brain_mask.nii.gz",
                       "_desc-confounds_regressors.tsv"):
            _touch(func / f"{stem}{suffix}")
        rows = (["0.0\t90.0\tstory\tschema_a.wav", "95.0\t90.0\tmovie\tn/a",
                 "190.0\t90.0\tstory\tschema_b.wav"] if row.task == "schema"
                else [f"3.0\t60.0\tstory\t{row.task}_audio.wav"])
        events = root / row.subject / "func" / f"{stem}_events.tsv"
        events.parent.mkdir(parents=True, exist_ok=True)
        events.write_text("onset\tduration\ttrial_type\tstim_file\n" + "\n".join(rows) + "\n")
        _touch(root / "stimuli" / f"{row.task}_audio.wav")
    audiobook = listing[listing.task != "schema"]
    cfg = _tiny_model(yaml.safe_load((REPO / "config/examples/narratives.yaml").read_text()))
    cfg["bids"].update(root=str(root / "derivatives" / "fmriprep"), raw=str(root))
    t0 = time.perf_counter()
    proc = _snakemake(tmp_path, cfg, "-n", "--cores", "2", "--quiet", "rules")
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:]
    fits = proc.stdout
    n_subjects = audiobook.subject.nunique()
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", fits, flags=re.M))
    print(f"\nNarratives replica: {n_subjects} subjects with audiobook runs, {len(audiobook)} runs;"
          f" DAG in {elapsed:.0f} s; jobs per rule: {jobs}")
    assert int(jobs["prepare_bold"]) == len(audiobook)  # every audiobook run is analysed
    assert int(jobs["subject_rois"]) >= 0.95 * n_subjects
    assert elapsed < 60, elapsed
