"""A throw-away single-node SLURM cluster on localhost, for tests.

munged, slurmctld and slurmd from Debian's ``munge`` and ``slurm-wlm`` packages run as the current
(root) user with every file (config, key, sockets, spool, state, logs) inside one directory, on
free ports, so the cluster touches nothing system-wide and several can coexist. No accounting
database: job states come from ``squeue`` (``MinJobAge=600`` keeps finished jobs listed).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scancel", "scontrol",
            "sinfo")


class ClusterUnavailable(RuntimeError):
    """SLURM cannot be started here (binaries missing, not root, daemons do not come up)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slurm_conf(root: Path, host: str, cpus: int, mem_mb: int) -> str:
    return f"""ClusterName=brainalign-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket.2
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
LaunchParameters=use_interactive_step
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmdTimeout=60
# the node may declare more CPUs than the machine has (the profile asks 4 for extraction)
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class SlurmCluster:
    """Handle on a running test cluster; ``env`` makes the SLURM clients talk to it."""

    root: Path
    env: dict[str, str]
    procs: list[subprocess.Popen] = field(default_factory=list)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True,
                              check=check, timeout=60)

    def jobs(self, states: str = "PD,R,CG") -> list[str]:
        """Ids of jobs in ``states`` (default: still pending or running)."""
        out = self.run("squeue", "-h", "-t", states, "-o", "%i").stdout
        return out.split()

    def hold(self, job_ids: list[str]) -> None:
        """Keep pending jobs from starting (``scontrol hold``: as if the queue were busy)."""
        if job_ids:
            self.run("scontrol", "hold", ",".join(job_ids))

    def cancel_all(self) -> None:
        self.run("scancel", "--user", os.environ.get("USER", "root"), check=False)
        self.run("scancel", "-u", "root", check=False)
        deadline = time.monotonic() + 60
        while self.jobs() and time.monotonic() < deadline:
            time.sleep(1)

    def log_tail(self, n: int = 40) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.root / "log" / name
            if path.exists():
                out.append(f"== {name}\n" + "\n".join(path.read_text().splitlines()[-n:]))
        return "\n".join(out)

    def stop(self) -> None:
        try:
            self.cancel_all()
        except Exception:  # noqa: BLE001 - best effort while tearing down
            pass
        for pidfile in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            path = self.root / pidfile
            if path.exists():
                try:
                    os.kill(int(path.read_text().split()[0]), signal.SIGTERM)
                except (ProcessLookupError, ValueError):
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def start_cluster(root: Path, cpus: int | None = None, mem_mb: int = 16000,
                  timeout_s: float = 60.0) -> SlurmCluster:
    """Start munged, slurmctld and slurmd with all state under ``root``; wait until the node is
    idle. Raises ClusterUnavailable with the reason when that does not happen."""
    # daemons live in sbin, which a non-login shell's PATH may lack
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin",
                              "/sbin"])
    missing = [b for b in BINARIES if shutil.which(b, path=search) is None]
    if missing:
        raise ClusterUnavailable(f"SLURM/munge binaries not installed: {', '.join(missing)} "
                                 "(Debian: apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        raise ClusterUnavailable("starting slurmd needs root")
    host = socket.gethostname().split(".")[0]
    cpus = cpus or os.cpu_count() or 1
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "munge", 0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, host, cpus, mem_mb))
    # slurmd 22.05 loads a cgroup plugin even with proctrack/linuxproc and task/none
    (root / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\nCgroupAutomount=no\n"
                                      "ConstrainCores=no\nConstrainRAMSpace=no\n")
    # snakemake-executor-plugin-slurm-jobstep strips SLURM_* variables, SLURM_CONF included,
    # before its inner srun; a real cluster's srun reads /etc/slurm/slurm.conf instead. This
    # cluster keeps /etc untouched: an srun first on PATH points to its config.
    (root / "bin").mkdir(exist_ok=True)
    srun = root / "bin" / "srun"
    srun.write_text(f"#!/bin/sh\nexport SLURM_CONF={conf}\n"
                    f"exec {shutil.which('srun', path=search)} \"$@\"\n")
    srun.chmod(0o755)
    env = {**os.environ, "SLURM_CONF": str(conf),
           "PATH": f"{root / 'bin'}{os.pathsep}{search}"}
    cluster = SlurmCluster(root, env)
    munge = root / "munge"
    commands = [
        ["munged", "--foreground", "--force", f"--key-file={key}",
         f"--socket={munge}/munge.socket.2", f"--pid-file={munge}/munged.pid",
         f"--log-file={root}/log/munged.log", f"--seed-file={munge}/munged.seed"],
        ["slurmctld", "-D", "-i", "-f", str(conf)],
        ["slurmd", "-D", "-f", str(conf), "-N", host],
    ]
    try:
        for cmd in commands:
            log = open(root / "log" / f"{cmd[0]}.stdout", "w")  # noqa: SIM115
            cluster.procs.append(subprocess.Popen(cmd, env=env, stdout=log,
                                                  stderr=subprocess.STDOUT,
                                                  start_new_session=True))
            time.sleep(1.0)
            if cluster.procs[-1].poll() is not None:
                raise ClusterUnavailable(f"{cmd[0]} exited at start:\n"
                                         + (root / "log" / f"{cmd[0]}.stdout").read_text()
                                         + cluster.log_tail())
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            proc = cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False)
            state = proc.stdout.strip()
            if proc.returncode == 0 and state in ("idle", "mixed", "allocated"):
                return cluster
            time.sleep(1.0)
        raise ClusterUnavailable(f"SLURM node not idle after {timeout_s:.0f} s (state "
                                 f"{state!r})\n{cluster.log_tail()}")
    except BaseException:
        cluster.stop()
        raise
