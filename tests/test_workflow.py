"""The real Snakemake workflow, end to end, on a tiny configuration.

A tiny random wav2vec2, ~2.5 minutes of Piper speech in 4 runs and a few thousand voxels
(planted ROIs plus 300 noise voxels) for 2 subjects: planted layers must be recovered, pure-noise
voxels must score r ~ 0 and stay at or below the nominal false-positive level.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from conftest import TWO_MODEL_TARGETS

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = (_merge(out[key], value) if isinstance(value, dict)
                    and isinstance(out.get(key), dict) else value)
    return out


def _tiny_config(tmp: Path, **overrides) -> Path:
    """A complete config: the default one with tests/data/config_tiny.yaml merged in."""
    cfg = _merge(yaml.safe_load((REPO / "config" / "config.yaml").read_text()),
                 yaml.safe_load((REPO / "tests" / "data" / "config_tiny.yaml").read_text()))
    cfg["demo"]["text"] = str(REPO / "resources" / "demo" / "story.txt")
    cfg = _merge(cfg, overrides)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _snakemake(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, "-d", str(workdir), "--configfile", str(config), *args],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd=workdir, timeout=1200)


@pytest.fixture(scope="module")
def tiny_run(tiny_two_model_run: Path) -> Path:
    """The tiny configuration run (conftest: two models, layers 0, 3 and 6, which hold the
    planted ones, to TWO_MODEL_TARGETS); these tests read the first model's results."""
    return tiny_two_model_run


@pytest.mark.slow
def test_planted_layers_recovered(tiny_run: Path) -> None:
    rec = pd.read_csv(tiny_run / "results/group/demo_recovery.tsv", sep="\t")
    assert (rec["best_layer"] == rec["layer"]).all(), rec
    assert rec["noise_fpr"].iloc[0] <= 0.05


@pytest.mark.slow
def test_noise_voxels_score_zero_and_signal_voxels_do_not(tiny_run: Path) -> None:
    for subject in ("01", "02"):
        truth = np.asarray(nib.load(
            tiny_run / f"results/demo/truth/sub-{subject}_desc-signal_layer.nii.gz").dataobj)
        for layer in ("00", "03", "06"):
            r = np.asarray(nib.load(tiny_run / f"results/sub-{subject}/encoding/wav2vec2-random/"
                                    f"sub-{subject}_layer-{layer}_stat-r.nii.gz").dataobj)
            noise = r[truth == -1]
            assert noise.size >= 300
            assert abs(noise.mean()) < 0.03, (subject, layer, noise.mean())
            planted = r[truth == int(layer)]
            assert planted.mean() > 0.2, (subject, layer, planted.mean())


@pytest.mark.slow
def test_outputs_reports_and_rerun_is_noop(tiny_run: Path) -> None:
    for path in ["results/sub-01/report/sub-01_model-wav2vec2-random.html",
                 "results/group/wav2vec2-random/group_report.html",
                 "results/sub-02/rois/wav2vec2-random/sub-02_desc-bestlayer_map.nii.gz",
                 "results/group/wav2vec2-random/group_roi-scores.tsv"]:
        assert (tiny_run / path).stat().st_size > 0, path
    html = (tiny_run / "results/group/wav2vec2-random/group_report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2
    proc = _snakemake(tiny_run, tiny_run / "config.yaml", "-n", "--cores", "2",
                      *TWO_MODEL_TARGETS)
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout


@pytest.mark.slow
def test_independent_best_layer_noise_ceiling_and_group_statistics(tiny_run: Path) -> None:
    planted = {"HG": 0, "PT": 0, "STGp": 3, "MTGp": 6, "IFG": 6}  # tests/data/config_tiny.yaml
    rois_dir = "results/sub-{s}/rois/wav2vec2-random/sub-{s}_"
    for subject in ("01", "02"):
        best = pd.read_csv(tiny_run / (rois_dir.format(s=subject) + "best-layer.tsv"),
                           sep="\t").set_index("roi")
        rows = best.loc[list(planted)]
        # chosen on training-run inner CV, scored on held-out runs: planted layers, real scores
        assert (rows["best_layer"] == pd.Series(planted)).mean() >= 0.8, rows
        assert (rows["independent_r"] > 0.1).all() and rows["stability"].between(0, 1).all()
        assert (rows["independent_r"] <= rows["best_r"] + 0.02).all()  # naive max >= honest
        # the planted ROIs pass the ROI test against the permutation null
        assert rows["reliable"].all() and (rows["q"] <= 0.05).all(), rows
        truth = np.asarray(nib.load(tiny_run / f"results/demo/truth/sub-{subject}"
                                    "_desc-signal_layer.nii.gz").dataobj)
        ceil = np.load(tiny_run / f"results/group/ceiling/sub-{subject}_desc-ceiling.npz")
        mask = np.asarray(nib.load(tiny_run / f"results/sub-{subject}/bold/sub-{subject}"
                                   "_desc-brain_mask.nii.gz").dataobj) > 0
        signal = truth[mask] >= 0
        # shared planted signal with per-voxel SNR 0.5 * 4^U(-1,1): median ceiling sqrt(1/3)
        assert abs(np.median(ceil["ceiling"][signal]) - np.sqrt(1 / 3)) < 0.1
        assert ceil["usable"][signal].mean() > 0.5 and ceil["usable"][~signal].mean() <= 0.05
        norm = np.asarray(nib.load(tiny_run / (rois_dir.format(s=subject)
                                               + "desc-bestlayer_stat-normalisedr.nii.gz"))
                          .dataobj)[mask]
        assert 0.3 < np.nanmedian(norm[signal]) < 1.2
        assert rows["normalised_r"].notna().all()
    group = pd.read_csv(tiny_run / "results/group/wav2vec2-random/group_roi-scores.tsv",
                        sep="\t")
    assert {"p_t", "p_signflip", "p_fixed", "test", "q", "significant",
            "normalised_r"} <= set(group.columns)
    # 2 subjects: the smallest exact sign-flip p is 1/4, so group.test auto runs fixed effects
    assert group["p_signflip"].min() >= 0.25 and (group["test"] == "fixed").all()
    gbest = pd.read_csv(tiny_run / "results/group/wav2vec2-random/group_best-layer.tsv",
                        sep="\t").set_index("roi").loc[list(planted)]
    assert gbest["reliable"].all(), gbest
    # 2 subjects: bootstrap interval and leave-one-subject-out scores refused, with the reason
    assert gbest["layer_ci_low"].isna().all() and gbest["independent_r"].isna().all()
    assert gbest["bootstrap_note"].str.startswith("refused").all()
    assert gbest["loso_note"].str.startswith("refused").all()
    html = (tiny_run / "results/group/wav2vec2-random/group_report.html").read_text()
    assert "Noise ceiling" in html and "Selection bias" in html
    assert "fixed-effects permutation test" in html and "does not generalise" in html
    assert (tiny_run / "results/sub-01/rois/wav2vec2-random/sub-01_roi-null.npz").stat().st_size
    for name in ("isc_stat-r", "ceiling_stat-r", "ceiling_mask"):
        assert (tiny_run / f"results/group/ceiling/group_desc-{name}.nii.gz").stat().st_size


@pytest.mark.slow
def test_interrupted_layer_is_recomputed_alone(tiny_run: Path) -> None:
    target = (tiny_run / "results/sub-01/encoding/wav2vec2-random/"
              "sub-01_layer-03_scores.npz")
    before = np.load(target)["r"]
    target.unlink()
    proc = _snakemake(tiny_run, tiny_run / "config.yaml", "--cores", "2",
                      str(target.relative_to(tiny_run)))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "fit_layer" in proc.stdout and "extract_features" not in proc.stdout
    np.testing.assert_allclose(np.load(target)["r"], before, atol=1e-6)  # deterministic


def test_per_subject_target_builds_only_that_subject(tmp_path: Path) -> None:
    target = "results/sub-01/report/sub-01_model-wav2vec2-random.html"
    proc = _snakemake(tmp_path, _tiny_config(tmp_path), "-n", "--cores", "2", target)
    assert proc.returncode == 0, proc.stdout[-3000:]
    out = proc.stdout
    # the inter-subject-correlation ceiling needs the other subjects' cleaned BOLD, but none of
    # their model fits, ROI tables or reports
    assert "sub-01" in out and "results/sub-02/encoding" not in out
    assert "results/sub-02/rois" not in out and "results/sub-02/report" not in out
    # without the ceiling, nothing of the other subject is touched at all
    proc = _snakemake(tmp_path, _tiny_config(tmp_path, ceiling={"method": "none"}), "-n",
                      "--cores", "2", target)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "sub-01" in proc.stdout and "sub-02" not in proc.stdout


def test_unknown_config_key_is_named(tmp_path: Path) -> None:
    cfg = yaml.safe_load(_tiny_config(tmp_path).read_text())
    cfg["encoding"]["n_permutatons"] = 10  # typo
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = _snakemake(tmp_path, bad, "-n")
    assert proc.returncode != 0
    assert "n_permutatons" in proc.stdout


def test_bad_config_value_is_named(tmp_path: Path) -> None:
    proc = _snakemake(tmp_path, _tiny_config(tmp_path, tr=-1.0), "-n")
    assert proc.returncode != 0
    assert "tr" in proc.stdout and "-1" in proc.stdout


def test_atlas_that_does_not_suit_the_input_is_named(tmp_path: Path) -> None:
    # a surface atlas for the (volume) demo: refused when the DAG is built, not in a rule
    proc = _snakemake(tmp_path, _tiny_config(tmp_path, rois={"atlas": "schaefer-400-7"}), "-n")
    assert proc.returncode != 0
    assert "rois.atlas: 'schaefer-400-7' is a surface atlas" in proc.stdout
    assert "hcpex" in proc.stdout  # the valid volume choices are listed


def test_lint_is_clean() -> None:
    proc = subprocess.run([*SNAKEMAKE, "--lint"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_missing_bold_run_names_the_file(tmp_path: Path) -> None:
    cfg = _tiny_config(tmp_path, demo={"enabled": False},
                       bold_template=str(tmp_path / "sub-{subject}_run-{run}_bold.nii.gz"),
                       mask_template=str(tmp_path / "sub-{subject}_run-{run}_mask.nii.gz"),
                       stimuli={f"part{i}": str(tmp_path / f"part{i}.wav") for i in range(1, 5)})
    proc = _snakemake(tmp_path, cfg, "-n")
    assert proc.returncode != 0
    assert "sub-01_run-1_bold.nii.gz" in proc.stdout


def test_shared_whisper_config_resolves_layers(tmp_path: Path) -> None:
    whisper = REPO.parent / "shared" / "models" / "whisper-tiny.en"
    if not whisper.exists():
        pytest.skip("shared Whisper tiny.en weights not present")
    models = {"whisper": {"source": str(whisper)}}
    proc = _snakemake(tmp_path, _tiny_config(tmp_path, models=models), "-n", "--cores", "2",
                      "results/features/whisper/part1.h5")
    assert proc.returncode == 0, proc.stdout[-3000:]
    shutil.rmtree(tmp_path / ".snakemake", ignore_errors=True)


def test_user_config_replaces_the_demo_config(tmp_path: Path) -> None:
    # a complete user config with one model must not inherit the demo's random model
    cfg = yaml.safe_load(_tiny_config(tmp_path).read_text())
    cfg["models"] = {"tiny": cfg["models"]["wav2vec2-random"]}
    cfg["demo"]["model"] = "tiny"
    path = tmp_path / "user.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = _snakemake(tmp_path, path, "-n", "--cores", "2")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "results/features/tiny/" in proc.stdout
    assert "wav2vec2-random" not in proc.stdout


def test_confound_strategy_wires_the_fmriprep_tsvs(tmp_path: Path) -> None:
    target = "results/sub-01/bold/sub-01_run-1_confounds.npy"
    with_conf = _tiny_config(tmp_path, bold={"confounds": {"strategy": ["motion", "wm_csf"]}})
    proc = _snakemake(tmp_path, with_conf, "-n", "--cores", "2", target)
    assert proc.returncode == 0, proc.stdout[-3000:]
    # prepare_bold reads each run's confounds TSV, which the demo writes beside the BOLD
    assert "sub-01_task-audiobook_run-1_desc-confounds_timeseries.tsv" in proc.stdout
    bad = _tiny_config(tmp_path, bold={"confounds": {"strategy": ["scrub"]}})
    proc = _snakemake(tmp_path, bad, "-n")
    assert proc.returncode != 0 and "scrub" in proc.stdout


@pytest.mark.slow  # a real (two-job) run: about 12 s
def test_failing_rule_writes_its_error_to_its_log(tmp_path: Path) -> None:
    # a real run of prepare_bold on a confounds TSV without the configured column: the job
    # fails, and its log file (not only the console) ends with the error naming the TSV
    from bids_tree import synthetic_speech

    from brainalign import simulate

    rng = np.random.default_rng(0)
    func = tmp_path / "results/demo/derivatives/fmriprep/sub-01/func"
    mask = nib.Nifti1Image(np.ones((3, 3, 3), np.uint8), np.eye(4))
    for run in range(1, 5):
        wav = tmp_path / f"results/demo/stimuli/part{run}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(wav, synthetic_speech(12.0, seed=run), 16000)
        base = f"sub-01_task-audiobook_run-{run}_space-MNI152NLin2009cAsym"
        bold = func / f"{base}_desc-preproc_bold.nii.gz"
        simulate.write_bold(nib.Nifti1Image(rng.standard_normal((3, 3, 3, 12)), np.eye(4)),
                            bold, 1.0)
        nib.save(mask, func / f"{base}_desc-brain_mask.nii.gz")
        simulate.write_confounds(pd.DataFrame({"csf": rng.standard_normal(12)}), bold)
    cfg = _tiny_config(tmp_path, demo={"enabled": False}, subjects=["01"],
                       bold={"confounds": {"strategy": ["global_signal"]},
                             "exclude_onset_s": 0.0},  # 12-volume runs
                       ceiling={"method": "none"})
    proc = _snakemake(tmp_path, cfg, "--cores", "1", "results/sub-01/bold/sub-01_run-1_bold.npy")
    assert proc.returncode != 0
    lines = (tmp_path / "logs/bold/sub-01_run-1.log").read_text().rstrip().splitlines()
    tsv = func.relative_to(tmp_path) / "sub-01_task-audiobook_run-1_desc-confounds_timeseries.tsv"
    assert lines[-1].startswith(f"brainalign.bold.BoldError: {tsv}: lacks global_signal"), lines
    assert "Traceback" in "\n".join(lines)


# Every `snakemake ...` command of README.md (code blocks and inline code), run as written:
# with the snakemake 9 argument order bug (a target after --configfile read as a config file)
# the README's own commands failed.
README_DRIVER = """
import json, sys
from snakemake.cli import main
for argv in json.load(open(sys.argv[1])):
    print("@@ command", argv, file=sys.stderr, flush=True)
    try:
        main(argv)
        rc = 0
    except SystemExit as exc:
        rc = exc.code
    print("@@ rc", rc, file=sys.stderr, flush=True)
"""


def readme_commands() -> list[str]:
    """The `snakemake ...` commands of README.md: lines of fenced code blocks (backslash
    continuations joined, comments dropped) and inline code spans of the prose."""
    text = (REPO / "README.md").read_text()
    fenced = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
    commands = []
    for block in fenced.findall(text):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith("snakemake "):
                commands.append(line)
    commands += re.findall(r"`(snakemake [^`]*)`", fenced.sub("", text))
    return commands


def test_readme_commands_run_as_written(tmp_path: Path) -> None:
    commands = readme_commands()
    assert len(commands) >= 6 and any("--configfile my.yaml" in c for c in commands)
    # a checkout: the workflow where the README's commands expect it, and my.yaml the tiny
    # config under the README's example names (subjects 01 and 07, a model called wav2vec2)
    for name in ("Snakefile", "workflow", "config", "resources"):
        (tmp_path / name).symlink_to(REPO / name)
    cfg = yaml.safe_load(_tiny_config(tmp_path, subjects=["01", "07"]).read_text())
    cfg["models"] = {"wav2vec2": cfg["models"]["wav2vec2-random"]}
    cfg["demo"]["model"] = "wav2vec2"
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(cfg))
    default_model = next(iter(yaml.safe_load((REPO / "config/config.yaml").read_text())
                              ["models"]))
    runs = []
    for command in commands:
        argv = shlex.split(command)[1:]
        assert "..." not in argv, f"README command is not runnable as written: {command}"
        model = "wav2vec2" if "my.yaml" in argv else default_model
        argv = ["2" if a == "N" else a.replace("<model>", model) for a in argv]  # placeholders
        if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
            # without the plugin (pip install -e '.[slurm]') snakemake cannot load the slurm
            # profile even for a dry run; the argument order is what is tested here
            argv = [a.replace("profiles/slurm-gpu", "profiles/default")
                    .replace("profiles/slurm", "profiles/default") for a in argv]
        dry = not {"--unlock", "--report"} & set(argv)
        runs.append(argv + ["-n"] * dry)
    (tmp_path / "commands.json").write_text(json.dumps(runs))
    # one interpreter runs them all (snakemake's own entry point, once per command): the
    # imports are paid once
    proc = subprocess.run([sys.executable, "-c", README_DRIVER, str(tmp_path / "commands.json")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd=tmp_path, timeout=900)
    outputs = proc.stdout.split("@@ command")[1:]
    assert len(outputs) == len(commands), proc.stdout[-3000:]
    for command, argv, out in zip(commands, runs, outputs, strict=True):
        rc = out.rsplit("@@ rc", 1)[1].strip()
        if "--report" in argv:
            # a report needs a finished run: it gets as far as looking for the outputs
            assert "marked for report but does not exist" in out, (command, out[-3000:])
        else:
            assert rc == "0", (command, out[-3000:])
    per_subject = [o for c, o in zip(commands, outputs, strict=True) if "sub-07/report" in c]
    assert per_subject and "prepare_bold" in per_subject[0] and "sub-01/report" not in \
        per_subject[0]
