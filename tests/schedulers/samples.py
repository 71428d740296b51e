"""The job requests whose scripts are compared with the files under expected/."""
from __future__ import annotations

from pathlib import Path

from legato.schedulers.base import JobRequest, Resources

EXPECTED = Path(__file__).resolve().parent / "expected"

FULL = JobRequest(
    name="sim job", workdir="/scratch/study/sim run", body="cd data\n./simulate --size 10\n",
    resources=Resources(nodes=2, procs=8, gpus=4, cores_per_task=2, walltime="1-02:03:04", exclusive=True,
                        reservation="dat", qos="high"),
    stdout="sim.out", stderr="sim.err")
ARRAY = JobRequest(
    name="sweep", workdir="/scratch/study/sweep", body="echo task\n",
    resources=Resources(procs=1, walltime=10), stdout="sweep.out", stderr="sweep.err", array=(1, 10, 2))
MINIMAL = JobRequest(
    name="tiny", workdir="/tmp/tiny", body="true", resources=Resources(), stdout="tiny.out", stderr="tiny.err")


def expected(name: str) -> str:
    return (EXPECTED / name).read_text()
