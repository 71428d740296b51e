"""The packed executor with the real SLURM adapter whose commands a stand-in answers.

``LocalSlurm`` plays sbatch, squeue, scontrol and scancel: an sbatch'ed script runs here at once
as a bash process (one per array task), with its ``--output``/``--error`` files, and squeue
reports those processes in SLURM's words. So job scripts, the worker and the record files are
all real; only the scheduler is not (tests/test_cluster.py has the real one).
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from legato.errors import LegatoError
from legato.execute import Queued
from legato.execute import packed
from legato.execute.local import Finished, Started, Task
from legato.execute.packed import PackedExecutor
from legato.schedulers.slurm import Slurm

BATCH = {"type": "slurm", "queue": "debug", "bank": "none", "qos": "fast", "walltime": "00:10:00"}


class LocalSlurm:
    """sbatch/squeue/scontrol/scancel for jobs run as local processes; ``forced`` overrides a job's state."""

    def __init__(self) -> None:
        self.processes: dict[str, subprocess.Popen] = {}
        self.forced: dict[str, str] = {}
        self.commands: list[str] = []
        self.failing = 0  # squeue calls still to fail
        self.next_id = 1000

    def __call__(self, argv, input=None, cwd=None) -> subprocess.CompletedProcess:
        self.commands.append(argv[0])
        answer = getattr(self, argv[0])(argv[1:], cwd)
        return subprocess.CompletedProcess(argv, *answer) if isinstance(answer, tuple) else \
            subprocess.CompletedProcess(argv, 0, answer, "")

    def sbatch(self, args: list[str], cwd: str) -> str:
        script = args[-1]
        options = dict(line[len("#SBATCH --"):].split("=", 1) for line in Path(script).read_text().splitlines()
                       if line.startswith("#SBATCH --"))
        self.next_id += 1
        jobid = str(self.next_id)
        tasks = [None]
        if "array" in options:
            first, last = options["array"].split("%")[0].split("-")
            tasks = list(range(int(first), int(last) + 1))
        for task in tasks:
            env = {**os.environ, "SLURM_JOB_ID": jobid}
            if task is not None:
                env["SLURM_ARRAY_TASK_ID"] = str(task)
            with open(shlex.split(options["output"])[0], "a") as out, open(shlex.split(options["error"])[0], "a") as err:
                process = subprocess.Popen(["bash", script], cwd=cwd, env=env, stdout=out, stderr=err,
                                           start_new_session=True)
            self.processes[jobid if task is None else f"{jobid}_{task}"] = process
        return jobid + "\n"

    def state(self, part: str) -> str:
        if part in self.forced:
            return self.forced[part]
        code = self.processes[part].poll()
        return "RUNNING" if code is None else ("COMPLETED" if code == 0 else "FAILED")

    def squeue(self, args: list[str], cwd) -> str | tuple:
        if self.failing:
            self.failing -= 1
            return 1, "", "squeue: error: Socket timed out on send/recv operation\n"
        wanted = next(arg for arg in args if arg.startswith("--jobs=")).split("=", 1)[1].split(",")
        return "".join(f"{part} {self.state(part)}\n" for part in self.processes
                       if part in wanted or part.split("_")[0] in wanted)

    def scontrol(self, args, cwd) -> str:
        return ""

    def scancel(self, args: list[str], cwd) -> str:
        for part, process in self.processes.items():
            if part.split("_")[0] in args or part in args:
                self.kill(part, "CANCELLED")
        return ""

    def kill(self, part: str, state: str) -> None:
        process = self.processes[part]
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self.forced[part] = state

    def stop(self) -> None:
        for part, process in self.processes.items():
            if process.poll() is None:
                self.kill(part, "CANCELLED")


@pytest.fixture
def fake() -> LocalSlurm:
    runner = LocalSlurm()
    yield runner
    runner.stop()


def executor(fake: LocalSlurm, folder: Path, batch: dict = BATCH, **options) -> PackedExecutor:
    scheduler = Slurm(batch)
    scheduler.run = fake
    return PackedExecutor(scheduler, folder / "jobs", interval=options.pop("interval", 0.2), **options)


def tasks(folder: Path, count: int, cmd: str = "echo $KEY > out.txt", **fields) -> list[Task]:
    made = []
    for key in range(1, count + 1):
        work = folder / f"i {key}"  # a space in every path
        work.mkdir(parents=True)
        made.append(Task(key=key, script=cmd.replace("$KEY", str(key)), cwd=str(work), stdout=str(work / "o.out"),
                         stderr=str(work / "o.err"), **fields))
    return made


def drain(run: PackedExecutor, until: int, timeout: float = 60) -> list:
    """Poll until ``until`` Finished events arrived; every event, in order."""
    events: list = []
    deadline = time.monotonic() + timeout
    while sum(isinstance(event, Finished) for event in events) < until:
        assert time.monotonic() < deadline, f"only {events}"
        events += run.poll(0.2)
    return events


def finished(events: list) -> dict[int, Finished]:
    return {event.key: event for event in events if isinstance(event, Finished)}


def test_chunks_of_pack_instances_are_one_job_each(fake, tmp_path):
    run = executor(fake, tmp_path, pack=10)
    for task in tasks(tmp_path, 25):
        run.submit(task)
    events = drain(run, 25)
    assert run.calls["submit"] == 3 and fake.commands.count("sbatch") == 3
    queued = {event.key: event.jobid for event in events if isinstance(event, Queued)}
    assert sorted(queued) == list(range(1, 26)) and len(set(queued.values())) == 3
    assert {key: event.returncode for key, event in finished(events).items()} == {key: 0 for key in range(1, 26)}
    assert [type(event) for event in events if event.key == 1] in ([Queued, Started, Finished], [Queued, Finished])
    assert [(tmp_path / f"i {key}" / "out.txt").read_text() for key in (1, 25)] == ["1\n", "25\n"]
    script = sorted((tmp_path / "jobs").glob("*.sh"))[0].read_text()
    for option in ("--partition=debug", "--account=none", "--qos=fast", "--nodes=1", "--ntasks="):
        assert option in script
    assert "--time=00:51:00" in script  # the batch block's 10 minutes per instance, 5 waves on 2 cores, +1 min


def test_array_runs_one_task_per_instance(fake, tmp_path):
    run = executor(fake, tmp_path, pack=4, array=True, max_jobs=2)
    for task in tasks(tmp_path, 4):
        run.submit(task)
    events = drain(run, 4)
    assert fake.commands.count("sbatch") == 1
    jobid = str(fake.next_id)
    assert {event.jobid for event in events if isinstance(event, Queued)} == {f"{jobid}_{n}" for n in range(4)}
    assert all(event.returncode == 0 for event in finished(events).values())
    assert "--array=0-3%2" in next((tmp_path / "jobs").glob("*.sh")).read_text()
    assert len(list((tmp_path / "jobs").glob("*.record.*"))) == 4  # one record file per task


def test_partial_chunk_is_submitted_when_nothing_else_comes(fake, tmp_path):
    run = executor(fake, tmp_path, pack=100)
    for task in tasks(tmp_path, 3):
        run.submit(task)
    assert fake.commands == []  # a part-filled chunk waits for the conductor's poll
    drain(run, 3)
    assert fake.commands.count("sbatch") == 1


def test_dependents_released_by_finishes_are_gathered(fake, tmp_path):
    """Instances submitted while finishes trickle in wait (at most an interval) to share a job."""
    run = executor(fake, tmp_path, pack=10, interval=30)
    first, *later = tasks(tmp_path, 3, cmd="sleep 0.5")
    run.submit(first)
    run.poll(0)  # nothing else is coming: a job of one
    assert fake.commands.count("sbatch") == 1
    run._trickle = True  # as after a poll that returned finishes, while that job is still in flight
    for task in later:
        run.submit(task)
    run.poll(0)
    assert fake.commands.count("sbatch") == 1
    run._buffered_at -= 30  # an interval has passed
    run.poll(0)
    assert fake.commands.count("sbatch") == 2
    assert len(json.loads(sorted((tmp_path / "jobs").glob("*.json"))[-1].read_text())["tasks"]) == 2
    drain(run, 3)


def test_job_killed_at_its_walltime_times_its_instances_out(fake, tmp_path):
    run = executor(fake, tmp_path, pack=3, job_cores=1)
    for task in tasks(tmp_path, 3, cmd="sleep 60"):
        run.submit(task)
    events = []
    while not any(isinstance(event, Started) for event in events):
        events += run.poll(0.2)
    started = next(event for event in events if isinstance(event, Started))
    fake.kill(next(iter(fake.processes)), "TIMEOUT")
    ended = finished(drain(run, 3))
    assert all(event.timed_out and not event.cancelled for event in ended.values())
    assert ended[started.key].pid == started.pid  # it ran: known by its pid
    assert [event.pid for key, event in ended.items() if key != started.key] == [0, 0]  # never started
    assert run.jobs == {}


def test_cancel_cancels_every_job_and_what_is_buffered(fake, tmp_path):
    run = executor(fake, tmp_path, pack=2)
    made = tasks(tmp_path, 3, cmd="sleep 60")
    for task in made[:2]:
        run.submit(task)  # a full chunk: one job
    events = []
    while not any(isinstance(event, Started) for event in events):
        events += run.poll(0.2)
    run.submit(made[2])  # buffered until the next poll
    run.cancel()
    ended = finished(drain(run, 3))
    assert "scancel" in fake.commands and run.calls["cancel"] == 1
    assert all(event.cancelled for event in ended.values())
    assert ended[3].pid == 0 and fake.commands.count("sbatch") == 1
    assert any(event.pid for event in ended.values())  # the instance that had started


def test_a_scheduler_that_stops_answering(fake, tmp_path, monkeypatch):
    stops_answering(executor(fake, tmp_path, pack=1), fake, tmp_path, monkeypatch)


def stops_answering(run, fake: LocalSlurm, tmp_path: Path, monkeypatch) -> None:
    """A scheduler that fails a poll now and then is asked again; one silent for POLL_PATIENCE stops the run."""
    for task in tasks(tmp_path, 1, cmd="sleep 1"):
        run.submit(task)
    fake.failing = 2  # two polls time out: the run goes on
    assert finished(drain(run, 1))[1].returncode == 0
    run.submit(tasks(tmp_path / "more", 1, cmd="sleep 5")[0])
    fake.failing = 100
    monkeypatch.setattr(packed, "POLL_PATIENCE", 0.3)
    with pytest.raises(LegatoError, match="the scheduler has not answered for 0 s: squeue failed: .*Socket timed out"):
        drain(run, 1, timeout=10)


def test_job_limit_bounds_free_slots(fake, tmp_path):
    run = executor(fake, tmp_path, pack=5, max_jobs=2)
    assert run.free_slots == 10
    made = tasks(tmp_path, 6, cmd="sleep 1")
    for task in made:
        run.submit(task)
    assert run.free_slots == 4  # one job queued, one instance buffered
    drain(run, 6)
    assert run.free_slots == 10


def test_failing_instances_keep_their_return_codes(fake, tmp_path):
    run = executor(fake, tmp_path, pack=3)
    for task in tasks(tmp_path, 3, cmd="exit $KEY"):
        run.submit(task)
    assert {key: event.returncode for key, event in finished(drain(run, 3)).items()} == {1: 1, 2: 2, 3: 3}


def test_chunk_walltime():
    def task(walltime, slots=1):
        return Task(key=1, script="true", cwd="/", stdout="o", stderr="e", slots=slots, walltime=walltime)

    assert packed._chunk_walltime([task(60.0)] * 4, 2, None) == "00:03:00"  # two waves and a minute
    assert packed._chunk_walltime([task(None), task(30.0)], 2, None) is None  # the partition's limit
    assert packed._chunk_walltime([task(None), task(30.0)], 2, 600) == "00:11:00"  # the batch block's per instance
    assert packed._chunk_walltime([task(None)], 1, 0) == "inf"
