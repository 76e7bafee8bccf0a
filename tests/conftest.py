"""Shared fixtures: a real single-node SLURM cluster on localhost (see tests/slurm_cluster.py)
and the tiny workflow run shared by the workflow, report and SLURM tests.

`make test` runs the suite on two pytest-xdist workers (``--dist loadgroup``): tests that share
an expensive fixture (a whole workflow run, a set of speech features) are kept on one worker, so
that the fixture is built once, and the rest is spread over both."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from slurm_cluster import ClusterUnavailable, SlurmCluster, start_cluster  # noqa: E402

# the precision-probe cache of the workflows the tests run (not the user's ~/.cache)
os.environ.setdefault("BRAINALIGN_CACHE_DIR",
                      str(Path(tempfile.gettempdir()) / "brainalign-test-cache"))

#: fixture -> xdist group: a test using the fixture runs on the worker that builds it
SHARED_FIXTURES = {"tiny_two_model_run": "tiny", "slurm_cluster": "tiny",
                   "planted_features": "bids", "speech_runs": "speech"}


#: the shared runs, longest first (the order they are handed to the workers)
GROUP_ORDER = ("tiny", "bids", "speech")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items) -> None:
    """Tests sharing an expensive fixture go to one worker (xdist group), and the longest work
    is handed out first: the shared runs, then the other slow tests, then the fast ones. In
    file order, a slow workflow test collected last started when one worker had nothing left
    to do, and the suite waited for it alone."""
    rank = {}
    for item in items:
        groups = {g for f, g in SHARED_FIXTURES.items() if f in item.fixturenames}
        if groups:
            group = min(groups)
            item.add_marker(pytest.mark.xdist_group(name=group))
            rank[item.nodeid] = GROUP_ORDER.index(group)
        else:
            rank[item.nodeid] = len(GROUP_ORDER) + (item.get_closest_marker("slow") is None)
    items.sort(key=lambda item: rank[item.nodeid])  # stable: file order within a rank


TWO_MODELS = ("wav2vec2-random", "wav2vec2-seed1")
TWO_MODEL_LAYERS = [0, 3, 6]
#: what the two-model run builds: the first model's fits, ROI tables and maps of both subjects,
#: sub-01's page and the group page, the demo's recovery check, and the comparison page, which
#: needs both models' fits and ROI tables; sub-02's page and the second model's own pages would
#: only repeat the ones built
TWO_MODEL_TARGETS = [
    f"results/sub-01/report/sub-01_model-{TWO_MODELS[0]}.html",
    f"results/group/{TWO_MODELS[0]}/group_report.html", "results/group/demo_recovery.tsv",
    "results/group/model_comparison.html"]


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Iterator[SlurmCluster]:
    """munged + slurmctld + slurmd on localhost, stopped at the end; skips when unavailable."""
    # 4 CPUs declared on the node: the SLURM profile asks 4 for feature extraction
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"), cpus=4)
    except ClusterUnavailable as err:
        pytest.skip(f"SLURM cannot be started here: {err}")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def tiny_two_model_run(tmp_path_factory) -> Path:
    """The real workflow, run locally on the tiny config with two models (two random
    initialisations; layers 0, 3 and 6) to TWO_MODEL_TARGETS, then ``snakemake --report``.
    Shared by the report tests and as the reference of the SLURM tests."""
    import yaml
    from test_workflow import _snakemake, _tiny_config

    work = tmp_path_factory.mktemp("two_models")
    path = _tiny_config(work)
    cfg = yaml.safe_load(path.read_text())
    first = dict(cfg["models"][TWO_MODELS[0]], layers=TWO_MODEL_LAYERS)
    cfg["models"] = {TWO_MODELS[0]: first, TWO_MODELS[1]: dict(first, seed=1)}
    path.write_text(yaml.safe_dump(cfg))
    proc = _snakemake(work, path, "--cores", "2", *TWO_MODEL_TARGETS)
    assert proc.returncode == 0, proc.stdout[-5000:]
    proc = _snakemake(work, path, "--report", "report.html", *TWO_MODEL_TARGETS)
    assert proc.returncode == 0, proc.stdout[-5000:]
    return work
