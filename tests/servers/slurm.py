"""A private single-node SLURM for the tests: the ``slurm`` fixture (session scope).

Nothing under /etc is used or changed: the cluster has its own slurm.conf (reached through
SLURM_CONF), its own ports, state, spool and log folders in a temporary folder, and its own
munged with its own key and socket. The node is this machine (``hostname -s``); it claims at
least 8 CPUs (``SlurmdParameters=config_overrides``) so that several test jobs run at once.
The daemons run in the foreground as children of pytest, so they are stopped (after the jobs
still running are cancelled) when the session ends.

Install the binaries with scripts/install-slurm.sh; without them the tests skip, saying so.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DAEMONS = ("slurmctld", "slurmd", "munged", "mungekey")
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "scancel")
READY_TIMEOUT = 60.0
MIN_CPUS = 8


@dataclass
class SlurmCluster:
    """A running private cluster: ``environ`` holds what a client needs (SLURM_CONF)."""

    home: Path
    node: str
    cpus: int
    environ: dict[str, str]
    startup_seconds: float

    def env(self) -> dict[str, str]:
        """This process's environment pointed at the private cluster (and at no outer SLURM job)."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        return base | self.environ

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False)

    def srun_works(self) -> bool:
        """The node may look idle before slurmd has registered: only a real job step proves it is up."""
        try:
            return self.run("srun", "--quiet", "true", timeout=20).returncode == 0
        except subprocess.TimeoutExpired:
            return False


def _find(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None)


def missing_binaries() -> list[str]:
    return [name for name in DAEMONS + CLIENTS if _find(name) is None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_hardware() -> tuple[int, int]:
    """(CPUs, RealMemory MB) of this machine as slurmd itself sees them (``slurmd -C``)."""
    out = subprocess.run([_find("slurmd"), "-C"], capture_output=True, text=True, timeout=30, check=False).stdout
    cpus = re.search(r"\bCPUs=(\d+)", out)
    memory = re.search(r"\bRealMemory=(\d+)", out)
    return (int(cpus[1]) if cpus else 1), (int(memory[1]) if memory else 1024)


def slurm_conf(home: Path, node: str, cpus: int, memory: int, socket_path: Path) -> str:
    """The cluster's configuration: one node, one partition, no accounting daemon."""
    ctld_port, slurmd_port = free_port(), free_port()
    return f"""\
ClusterName=legatotest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={socket_path}
CredType=cred/munge
StateSaveLocation={home}/state
SlurmdSpoolDir={home}/spool
SlurmctldPidFile={home}/slurmctld.pid
SlurmdPidFile={home}/slurmd.pid
SlurmctldLogFile={home}/log/slurmctld.log
SlurmdLogFile={home}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SchedulerParameters=kill_invalid_depend,batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=3600
KillWait=2
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} Sockets=1 CoresPerSocket={cpus} ThreadsPerCore=1 RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _munge_user() -> str | None:
    try:
        return pwd.getpwnam("munge").pw_name
    except KeyError:
        return None


def start_munge(home: Path) -> tuple[subprocess.Popen, Path]:
    """munged with its own key and socket, run as the munge account when there is one (else as root, forced)."""
    folder = home / "munge"
    folder.mkdir(mode=0o755)
    key, sock = folder / "munge.key", folder / "munge.socket"
    subprocess.run([_find("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True, timeout=30)
    user = _munge_user()
    if user:
        for path in (folder, key):
            shutil.chown(path, user=user, group=user)
    key.chmod(0o400)
    argv = [_find("munged"), "--foreground", f"--socket={sock}", f"--key-file={key}",
            f"--pid-file={folder}/munged.pid", f"--seed-file={folder}/munged.seed", f"--log-file={folder}/munged.log"]
    with open(home / "log" / "munged.out", "w") as log:
        process = subprocess.Popen(argv + ([] if user else ["--force"]), user=user, stdout=log, stderr=subprocess.STDOUT)
    _wait_for(lambda: sock.exists(), 10, "munged socket", [process], home)
    return process, sock


def _wait_for(check, timeout: float, what: str, processes: list[subprocess.Popen], home: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        dead = [p for p in processes if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            reason = f"{dead[0].args[0]} exited with {dead[0].returncode}" if dead else f"not ready after {timeout:.0f} s"
            raise RuntimeError(f"private SLURM: {what}: {reason}\n{_logs(home)}")
        time.sleep(0.2)


def _logs(home: Path) -> str:
    tails = []
    for log in sorted((home / "log").glob("*")):
        tails.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
    return "\n".join(tails)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _cancel_everything(cluster: SlurmCluster) -> None:
    """Cancel every job and wait until none runs, so no slurmstepd outlives the daemons."""
    listed = cluster.run("squeue", "--noheader", "--format=%i")
    ids = listed.stdout.split()
    if ids:
        cluster.run("scancel", *ids)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if not cluster.run("squeue", "--noheader", "--states=RUNNING,COMPLETING,CONFIGURING").stdout.strip():
            return
        time.sleep(0.5)


class SlurmUnavailable(Exception):
    """This machine cannot run a private SLURM (the message says why)."""


@contextlib.contextmanager
def private_slurm() -> Iterator[SlurmCluster]:
    """A running private single-node SLURM, ready once a real ``srun true`` has worked (tests and benchmarks)."""
    missing = missing_binaries()
    if missing:
        raise SlurmUnavailable(f"SLURM/munge binaries missing ({', '.join(missing)}); run scripts/install-slurm.sh")
    if os.geteuid() != 0:
        raise SlurmUnavailable("a private slurmd must run as root to start jobs")
    began = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="legato-slurm-"))
    home.chmod(0o755)  # munged runs as its own account and must reach its folder
    for sub in ("state", "spool", "log"):
        (home / sub).mkdir()
    processes: list[subprocess.Popen] = []
    try:
        munged, sock = start_munge(home)
        processes.append(munged)
        node = socket.gethostname().split(".")[0]
        cpus, memory = node_hardware()
        conf = home / "slurm.conf"
        conf.write_text(slurm_conf(home, node, max(cpus, MIN_CPUS), memory, sock))
        cluster = SlurmCluster(home, node, max(cpus, MIN_CPUS), {"SLURM_CONF": str(conf)}, 0.0)
        for daemon, extra in (("slurmctld", ["-c", "-i"]), ("slurmd", [])):
            with open(home / "log" / f"{daemon}.out", "w") as log:
                processes.append(subprocess.Popen([_find(daemon), "-D", *extra, "-f", str(conf)], env=cluster.env(),
                                                  stdout=log, stderr=subprocess.STDOUT))
        _wait_for(cluster.srun_works, READY_TIMEOUT, "srun true", processes, home)
        cluster.startup_seconds = time.monotonic() - began
        print(f"\nprivate SLURM ready in {cluster.startup_seconds:.1f} s ({node}, {cluster.cpus} CPUs)", file=sys.stderr)
        try:
            yield cluster
        finally:
            _cancel_everything(cluster)
    finally:
        for process in reversed(processes):
            _stop(process)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    try:
        with private_slurm() as cluster:
            yield cluster
    except SlurmUnavailable as reason:
        print(f"\nSKIP slurm tests: {reason}", file=sys.stderr)
        pytest.skip(str(reason))
