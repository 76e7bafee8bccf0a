"""Shared fixtures: a real single-node SLURM cluster on localhost (see tests/slurm_cluster.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from slurm_cluster import ClusterUnavailable, SlurmCluster, start_cluster  # noqa: E402


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
