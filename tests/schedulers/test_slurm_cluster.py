"""The SLURM adapter against a real (private, single-node) SLURM: about a dozen jobs in all.

SLURM's walltimes are whole minutes and slurmctld looks for jobs past theirs every 30 s (a fixed
interval), so a job left to run out its minute takes 60-90 s to reach TIMEOUT. The ``overdue_job``
therefore runs with a one-minute walltime whose end the test moves to "now" (``scontrol update
EndTime=now``, allowed to the cluster's administrator); SLURM's own time-limit check then times
it out at its next pass. It is submitted before this module's first test and checked by its
last, so that wait overlaps the other tests.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from legato.schedulers import JobState
from legato.schedulers.base import JobRequest, Resources
from legato.schedulers.slurm import Slurm
from tests.servers import slurm as slurm_server
from tests.servers.slurm import SlurmCluster

slurm = slurm_server.slurm  # the session fixture, registered in this module

FINAL = {JobState.COMPLETED, JobState.FAILED, JobState.TIMEOUT, JobState.CANCELLED, JobState.NODE_FAIL,
         JobState.OUT_OF_MEMORY}


@pytest.fixture(scope="module")
def adapter(slurm: SlurmCluster) -> Iterator[Slurm]:
    """The adapter as the conductor gets it (ordinary runner), in the private cluster's environment."""
    with pytest.MonkeyPatch.context() as patch:
        for key in [key for key in os.environ if key.startswith("SLURM_")]:
            patch.delenv(key)
        for key, value in slurm.environ.items():
            patch.setenv(key, value)
        yield Slurm({"type": "slurm"})


def submit(adapter: Slurm, folder: Path, name: str, body: str, **kwargs) -> str:
    """Write the adapter's script for a small job into ``folder`` and submit it."""
    folder.mkdir(parents=True, exist_ok=True)
    array = kwargs.pop("array", None)
    job = JobRequest(name=name, workdir=str(folder), body=body, resources=Resources(**kwargs),
                     stdout=f"{name}.%A_%a.out" if array else f"{name}.out", stderr=f"{name}.err", array=array)
    script = folder / f"{name}.slurm.sh"
    script.write_text(adapter.job_script(job))
    return adapter.submit(str(script), str(folder))


def wait_until(adapter: Slurm, job_ids: list[str], done: Callable[[dict[str, JobState]], bool],
               timeout: float = 60, seen: list[dict[str, JobState]] | None = None) -> dict[str, JobState]:
    deadline = time.monotonic() + timeout
    while True:
        states = adapter.poll(job_ids)
        if seen is not None:
            seen.append(states)
        if done(states) or time.monotonic() > deadline:
            return states
        time.sleep(0.3)


def all_final(count: int) -> Callable[[dict[str, JobState]], bool]:
    return lambda states: len(states) == count and set(states.values()) <= FINAL


@pytest.fixture(scope="module", autouse=True)
def overdue_job(adapter: Slurm, slurm: SlurmCluster, tmp_path_factory) -> str:
    """A one-minute job that sleeps for five, its end moved to now once it runs: submitted first, checked last."""
    job_id = submit(adapter, tmp_path_factory.mktemp("overdue"), "overdue", "sleep 300", walltime="00:01:00")
    wait_until(adapter, [job_id], lambda states: states.get(job_id) == JobState.RUNNING)
    moved = slurm.run("scontrol", "update", f"JobId={job_id}", "EndTime=now")
    assert moved.returncode == 0, moved.stderr
    return job_id


def test_job_runs_to_completion(adapter, tmp_path):
    """A name and a folder with spaces in them survive the directives."""
    folder = tmp_path / "a study" / "step one"
    began = time.monotonic()
    job_id = submit(adapter, folder, "hello job", 'echo "hello from $SLURM_JOB_NAME"', procs=1, walltime=5)
    states = wait_until(adapter, [job_id], all_final(1))
    print(f"\nSLURM job submit -> COMPLETED in {time.monotonic() - began:.1f} s", file=sys.stderr)
    assert states == {job_id: JobState.COMPLETED}
    assert (folder / "hello job.out").read_text() == "hello from hello job\n"


def test_failing_job_fails(adapter, tmp_path):
    job_id = submit(adapter, tmp_path, "broken", "echo oops >&2; exit 3")
    assert wait_until(adapter, [job_id], all_final(1)) == {job_id: JobState.FAILED}
    assert (tmp_path / "broken.err").read_text() == "oops\n"


def test_launcher_runs_tasks_inside_the_job(adapter, tmp_path):
    body = adapter.expand_launchers("$(LAUNCHER)[2p] sh -c 'echo task $SLURM_PROCID'", {"procs": 2})
    job_id = submit(adapter, tmp_path, "launched", body, procs=2)
    assert wait_until(adapter, [job_id], all_final(1)) == {job_id: JobState.COMPLETED}
    assert sorted((tmp_path / "launched.out").read_text().splitlines()) == ["task 0", "task 1"]


def test_array_tasks_are_reported_one_by_one(adapter, tmp_path):
    """Six tasks, at most two at a time; every poll is one squeue."""
    array_id = submit(adapter, tmp_path, "sweep", "sleep 1; echo $SLURM_ARRAY_TASK_ID", array=(0, 5, 2))
    seen: list[dict[str, JobState]] = []
    commands: list[str] = []
    real_run = adapter.run

    def counted(argv, input=None, cwd=None):
        commands.append(argv[0])
        return real_run(argv, input=input, cwd=cwd)

    adapter.run = counted
    try:
        states = wait_until(adapter, [array_id], all_final(6), seen=seen)
    finally:
        adapter.run = real_run
    assert states == {f"{array_id}_{task}": JobState.COMPLETED for task in range(6)}
    assert max(list(polled.values()).count(JobState.RUNNING) for polled in seen) <= 2
    assert commands == ["squeue"] * len(seen)
    outputs = sorted(tmp_path.glob(f"sweep.{array_id}_*.out"))
    assert [path.read_text() for path in outputs] == [f"{task}\n" for task in range(6)]


def test_poll_of_unknown_and_mixed_jobs(adapter, tmp_path):
    job_id = submit(adapter, tmp_path, "quick", "true")
    wait_until(adapter, [job_id], all_final(1))
    assert adapter.poll(["987654"]) == {}
    assert adapter.poll([job_id, "987654"]) == {job_id: JobState.COMPLETED}


def test_cancelled_job_is_cancelled_and_leaves_the_queue(adapter, slurm, tmp_path):
    job_id = submit(adapter, tmp_path, "sleeper", "sleep 300")
    wait_until(adapter, [job_id], lambda states: states.get(job_id) == JobState.RUNNING)
    adapter.cancel([job_id])
    assert wait_until(adapter, [job_id], all_final(1)) == {job_id: JobState.CANCELLED}
    def queue() -> str:
        return slurm.run("squeue", "--noheader", f"--jobs={job_id}").stdout.strip()

    deadline = time.monotonic() + 20
    while queue() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert queue() == ""
    adapter.cancel([job_id])  # cancelling a finished job is not an error


def test_job_past_its_walltime_times_out(adapter, overdue_job):
    """Runs last: SLURM's next time-limit pass (at most 30 s after the fixture ran) ends the job."""
    states = wait_until(adapter, [overdue_job], all_final(1), timeout=150)
    assert states == {overdue_job: JobState.TIMEOUT}
