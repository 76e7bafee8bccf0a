"""The workflow on a real SLURM cluster (slurmctld + slurmd + munged on localhost).

Reference: the tiny two-model configuration run locally (conftest.tiny_two_model_run). Sub-01's
per-subject target then runs with ``--executor slurm`` through the workflow's SLURM profile in a
directory holding the reference's upstream (features, simulated and prepared BOLD), is killed
mid-way (snakemake SIGKILLed, its SLURM jobs cancelled) and started again: it must finish,
recompute only the incomplete jobs and give the local run's scores. Skipped with the reason
when SLURM cannot be started.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_workflow import REPO, SNAKEMAKE, _tiny_config

MODEL = "wav2vec2-random"
N_LAYERS = 3  # conftest.TWO_MODEL_LAYERS


def _target(subject: str) -> str:
    return f"results/sub-{subject}/report/sub-{subject}_model-{MODEL}.html"


def _encoding(subject: str) -> str:
    return f"results/sub-{subject}/encoding/{MODEL}"


# on squeue without an accounting database; quick status checks for a small test
SLURM_ARGS = ["--workflow-profile", str(REPO / "workflow/profiles/slurm"),
              "--slurm-status-command", "squeue", "--slurm-no-account",
              "--slurm-init-seconds-before-status-checks", "1",
              "--seconds-between-status-checks", "2", "--max-status-checks-per-second", "5",
              "--latency-wait", "10", "--slurm-keep-successful-logs"]


def _cmd(workdir: Path, *args: str) -> list[str]:
    return [*SNAKEMAKE, "-d", str(workdir), "--configfile", str(workdir / "config.yaml"), *args]


def _run(workdir: Path, *args: str, env: dict | None = None) -> str:
    proc = subprocess.run(_cmd(workdir, *args), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, cwd=workdir, env=env,
                          timeout=1500)
    assert proc.returncode == 0, proc.stdout[-6000:]
    return proc.stdout


def _rules_run(log: str) -> list[str]:
    """Names of the rules whose jobs a snakemake log shows starting (group members included)."""
    return re.findall(r"^\s*(?:local)?rule (\w+):$", log, flags=re.M)


def _marked_incomplete(workdir: Path) -> set[str]:
    """Outputs snakemake marked incomplete (jobs started but never confirmed finished): the
    names of .snakemake/incomplete/ are the url-safe base64 of the output path, split into
    '@'-prefixed directories when long."""
    root = workdir / ".snakemake" / "incomplete"
    out = set()
    for path in root.rglob("*") if root.exists() else []:
        if path.is_file() and path.name != "migration_underway":
            encoded = "".join(p.lstrip("@") for p in path.relative_to(root).parts)
            out.add(base64.urlsafe_b64decode(encoded).decode())
    return out


def _done_layers(workdir: Path, subject: str) -> list[str]:
    """Layers whose three outputs exist and are not marked incomplete (after a kill: the jobs
    the next run will not repeat)."""
    incomplete = _marked_incomplete(workdir)
    done = []
    for alpha in (workdir / _encoding(subject)).glob("*_stat-alpha.nii.gz"):
        stem = f"{_encoding(subject)}/{alpha.name.split('_stat')[0]}"  # .../sub-01_layer-03
        outputs = [f"{stem}_scores.npz", f"{stem}_stat-r.nii.gz", f"{stem}_stat-alpha.nii.gz"]
        if all((workdir / f).exists() and f not in incomplete for f in outputs):
            done.append(stem.rsplit("layer-", 1)[1])
    return sorted(done)


def _assert_same_scores(a: Path, b: Path, subject: str) -> None:
    encoding = _encoding(subject)
    files = sorted(p.name for p in (a / encoding).glob("*_scores.npz"))
    assert len(files) == N_LAYERS, files
    assert files == sorted(p.name for p in (b / encoding).glob("*_scores.npz"))
    for name in files:
        with np.load(a / encoding / name) as x, np.load(b / encoding / name) as y:
            assert x.files == y.files
            for key in x.files:  # r, r_folds, r2, alpha, null moments, p
                np.testing.assert_allclose(x[key], y[key], rtol=1e-5, atol=1e-6,
                                           err_msg=f"{name}:{key}")
    for table in ("roi-scores", "best-layer"):
        path = f"results/sub-{subject}/rois/{MODEL}/sub-{subject}_{table}.tsv"
        pd.testing.assert_frame_equal(pd.read_csv(a / path, sep="\t"),
                                      pd.read_csv(b / path, sep="\t"))


@pytest.fixture(scope="module")
def slurm_workdir(tmp_path_factory, tiny_two_model_run: Path) -> Path:
    """A working directory holding the reference run's results (modification times kept)
    except what sub-01's own SLURM jobs compute (its layer fits, ROI tables and report) and
    sub-02's fits (which sub-01's target must not redo). The upstream (synthesised audiobook,
    features, simulated BOLD, sub-01's prepared BOLD) is what a per-subject submission finds
    on a real cluster after its extraction and preparation jobs, and recomputing it would only
    repeat the local run."""
    work = tmp_path_factory.mktemp("slurm_run")
    cfg = yaml.safe_load((tiny_two_model_run / "config.yaml").read_text())
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    shutil.copytree(tiny_two_model_run / "results", work / "results",
                    copy_function=shutil.copy2)
    for subject, parts in (("01", ("encoding", "rois", "report")),
                           ("02", ("encoding",))):
        for part in parts:
            shutil.rmtree(work / f"results/sub-{subject}/{part}")
    return work


@pytest.mark.slow
def test_killed_slurm_run_resumes_and_equals_local_run(slurm_cluster, tiny_two_model_run,
                                                       slurm_workdir) -> None:
    """sub-01's target on SLURM, killed once its first layer is fitted, then started again: it
    finishes, recomputes only what was not complete, groups small jobs, fits no other subject,
    and gives the local run's scores."""
    work = slurm_workdir
    logfile = (work / "first.log").open("w")
    # fits ask for the node's 4 CPUs in this first run, so that one runs at a time and the kill
    # finds the others unfinished (the plugin submits a rule's ready jobs together, whatever
    # --jobs says)
    proc = subprocess.Popen(_cmd(work, *SLURM_ARGS, _target("01"), "--set-resources",
                                 "fit_layer:cpus_per_task=4"),
                            stdout=logfile,
                            stderr=subprocess.STDOUT, cwd=work, env=slurm_cluster.env,
                            start_new_session=True)
    deadline = time.monotonic() + 900

    def wait_for(pattern: str, count: int = 1) -> list[str]:
        while len(found := re.findall(pattern, (work / "first.log").read_text())) < count:
            assert proc.poll() is None, (work / "first.log").read_text()[-4000:]
            assert time.monotonic() < deadline, f"not {count} x {pattern!r} within 15 min"
            time.sleep(0.5)
        return found

    # the first fit runs (it takes the node's 4 CPUs), the others wait in the queue: held
    # there, they cannot finish unseen while the plugin's status checks back off (10 s more
    # after every check that finds nothing finished; all three once finished between two)
    fits = wait_for(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: \S+"
                    r"rule_fit_layer/", N_LAYERS)
    while not (started := slurm_cluster.jobs("R")):
        assert proc.poll() is None, (work / "first.log").read_text()[-4000:]
        assert time.monotonic() < deadline, "no fit started within 15 min"
        time.sleep(0.2)
    slurm_cluster.hold([job for job in fits if job not in started])
    # kill once snakemake has seen the first layer's fit finish (a job's own outputs and
    # markers appear before snakemake sees it end)
    wait_for(r"Finished jobid: \d+ \(Rule: fit_layer\)")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    logfile.close()
    first_log = (work / "first.log").read_text()
    assert re.findall(r"submitted with SLURM jobid (\d+)", first_log), first_log[-3000:]
    running = slurm_cluster.jobs()
    slurm_cluster.cancel_all()
    files_at_kill = {p: p.stat().st_mtime_ns for p in (work / "results").rglob("*")
                     if p.is_file()}
    incomplete = _marked_incomplete(work)
    done_layers = _done_layers(work, "01")
    assert len(done_layers) == 1, (done_layers, incomplete)
    assert not (work / _target("01")).exists()

    # a SIGKILLed snakemake leaves its lock behind: unlock, then the same command again
    _run(work, "--unlock")
    t0 = time.monotonic()
    log = _run(work, *SLURM_ARGS, _target("01"), env=slurm_cluster.env)
    rules = _rules_run(log)
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", log)
    print(f"\nkilled with layers {done_layers} of sub-01 fitted, SLURM jobs {running} in "
          f"flight, outputs marked incomplete: {sorted(incomplete)}; the rerun ran "
          f"{len(rules)} rule jobs as {len(submitted)} SLURM jobs in "
          f"{time.monotonic() - t0:.0f} s: {sorted(rules)}")
    # small jobs were grouped: fewer SLURM jobs than rule jobs
    assert submitted and len(submitted) < len(rules), log[-3000:]
    # finished work is kept: no extraction, alignment or BOLD preparation, no refit of a
    # fitted layer
    assert not {"extract_features", "align_features", "prepare_bold"}.intersection(rules)
    assert rules.count("fit_layer") == N_LAYERS - len(done_layers)
    changed = {p for p, mtime in files_at_kill.items() if p.stat().st_mtime_ns != mtime}
    kept = [p for p in files_at_kill if "features" in p.parts or "aligned" in p.parts
            or any(f"sub-01_layer-{layer}_" in p.name for layer in done_layers)]
    assert kept and not changed.intersection(kept), sorted(changed.intersection(kept))
    # the per-subject target fits one subject only
    assert not (work / "results/sub-02/encoding").exists()
    assert not re.search(r"fit_layer[^\n]*\n[^\n]*sub-02", first_log + log)
    assert (work / _target("01")).stat().st_size > 0
    _assert_same_scores(tiny_two_model_run, work, "01")


def test_gpu_profile_is_the_slurm_profile_plus_gpus() -> None:
    base = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    gpu = yaml.safe_load((REPO / "workflow/profiles/slurm-gpu/config.yaml").read_text())
    on_gpu = {"extract_features", "fit_layer"}
    assert all(gpu["set-resources"][rule]["gpu"] == 1 for rule in on_gpu)
    assert gpu["set-resources"].keys() == base["set-resources"].keys()
    for rule, res in gpu["set-resources"].items():
        if rule not in on_gpu:
            assert res == base["set-resources"][rule], rule
    assert {k: v for k, v in gpu.items() if k != "set-resources"} == \
        {k: v for k, v in base.items() if k != "set-resources"}


def _dry_run(tmp_path: Path, profile: str) -> subprocess.CompletedProcess:
    """A dry run of the tiny config with workflow/profiles/<profile>."""
    cfg = _tiny_config(tmp_path)
    proc = subprocess.run([*SNAKEMAKE, "-d", str(tmp_path), "--configfile", str(cfg), "-n",
                           "--workflow-profile", str(REPO / "workflow/profiles" / profile)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return proc


def test_dataset_profile_is_the_slurm_profile_plus_grouped_fits(tmp_path: Path) -> None:
    """workflow/profiles/slurm-dataset: the SLURM profile with fit_layer jobs grouped 13 to a
    SLURM job, run two at a time inside it (the per-job memory holds two fits and every other
    rule's request), fit_layer's memory twice the benchmark's measured Narratives-size peak."""
    base = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    data = yaml.safe_load((REPO / "workflow/profiles/slurm-dataset/config.yaml").read_text())
    assert data["groups"] == {**base["groups"], "fit_layer": "fits"}
    assert data["group-components"] == {"fits": 13}
    fit = data["set-resources"]["fit_layer"]
    assert data["resources"]["mem_mb"] // fit["mem_mb"] == 2
    assert all(r["mem_mb"] <= data["resources"]["mem_mb"] for r in data["set-resources"].values())
    assert fit["mem_mb"] >= 2 * 1700 and fit["cpus_per_task"] == 2  # peak 1.7 GB, 2 threads
    assert {k: v for k, v in data["set-resources"].items() if k != "fit_layer"} == \
        {k: v for k, v in base["set-resources"].items() if k != "fit_layer"}
    same = {k: v for k, v in data.items()
            if k not in ("set-resources", "groups", "group-components", "resources")}
    assert same == {k: v for k, v in base.items() if k not in ("set-resources", "groups")}
    proc = _dry_run(tmp_path, "slurm-dataset")
    n_fits = _rules_run(proc.stdout).count("fit_layer")
    assert n_fits > 13  # the tiny run: 2 subjects x 7 layers
    assert proc.stdout.count("Group job fits ") == -(-n_fits // 13)


def test_slurm_profile_covers_every_rule_and_groups_small_jobs(tmp_path: Path) -> None:
    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    proc = _dry_run(tmp_path, "slurm")
    rules = set(_rules_run(proc.stdout)) - {"all"}
    assert rules <= set(profile["set-resources"]), rules - set(profile["set-resources"])
    fit = proc.stdout[proc.stdout.index("rule fit_layer:"):]
    assert re.search(r"resources: .*mem_mb=6000.*runtime=120.*cpus_per_task=2",
                     fit.split("\n\n")[0]), fit[:800]
    for group in ("subject_summary", "group_summary"):
        assert f"Group job {group} " in proc.stdout, group
