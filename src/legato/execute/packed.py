"""The cluster executor: many instances packed into one scheduler job, as the local executor's twin.

It speaks the local executor's interface (``submit``, ``poll``, ``cancel``, ``free_slots``),
so the conductor runs a study on a cluster unchanged. Submitted instances are gathered into
chunks of ``pack``; each chunk becomes one job that runs ``python -m legato.worker`` on the
allocation's cores (or, with ``array``, one job array whose tasks run one instance each;
``pack=1`` is Maestro's one job per instance). A part-filled chunk is submitted at the next
poll, unless finishes are releasing dependents one by one: then it waits up to one interval
for more, so that they share jobs. Workers write per-job record files which
``poll`` tails; the scheduler itself is asked about all of the study's jobs in one call
every ``interval`` seconds. An instance whose job ended without a record of it finishing
(walltime, node failure, cancel) is reported failed or timed out, never silently lost.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import site
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import legato
from legato.errors import LegatoError
from legato.execute import Queued
from legato.execute.local import Finished, Started, Task
from legato.schedulers.base import JobRequest, JobState, Resources, Scheduler, hms

_ARRAY_INDEX = {"slurm": ("SLURM_ARRAY_TASK_ID", 0), "pbs": ("PBS_ARRAY_INDEX", 0),
                "lsf": ("LSB_JOBINDEX", 1), "flux": ("FLUX_JOB_CC", 0)}
_ENDED = {JobState.COMPLETED, JobState.FAILED, JobState.TIMEOUT, JobState.CANCELLED, JobState.NODE_FAIL,
          JobState.OUT_OF_MEMORY}
_TAIL_ALL = 256
"""Up to this many jobs in flight, every record file is read on each pass; beyond it only those of
jobs the scheduler has reported started, so 10^4 queued jobs do not cost 10^4 opens per pass."""
POLL_PATIENCE = 300.0
"""Seconds a scheduler may keep failing to answer polls (a busy controller) before the run stops."""


@dataclass
class _Job:
    jobid: str
    record: Path
    tasks: dict[int, Task]
    array_ids: dict[str, int] = field(default_factory=dict)  # "<id>_<n>" -> key
    started: dict[int, tuple[float, int]] = field(default_factory=dict)  # key -> (time, pid)
    state: JobState = JobState.PENDING


class PackedExecutor:
    """Chunks of instances as scheduler jobs; ``max_jobs`` (0: no limit) caps jobs queued or running.

    ``calls`` counts what was asked of the scheduler (``submit``, ``poll``, ``cancel``), for
    tests and benchmarks; every submit is one job (or one job array).
    """

    def __init__(self, scheduler: Scheduler, folder: Path, *, pack: int = 100, job_cores: int | None = None,
                 max_jobs: int = 0, array: bool = False, interval: float = 5.0, walltime: str | None = None,
                 tag: str = "") -> None:
        self.scheduler = scheduler
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pack = max(1, pack)
        self.job_cores = job_cores
        self.max_jobs = max_jobs
        self.array = array
        self.interval = interval
        self.walltime = walltime
        self.tag = tag
        self.defaults = Resources.from_spec(scheduler.batch, {})  # the batch block's qos, reservation, walltime...
        self.jobs: dict[str, _Job] = {}
        self.buffer: list[Task] = []
        self.events: list[Started | Finished | Queued] = []
        self.cancelled = False
        self.calls = {"submit": 0, "poll": 0, "cancel": 0}
        self._run = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"  # job file names never meet an earlier run's
        self._buffered_at = 0.0
        self._trickle = False  # the last poll returned finishes: their dependents may still be coming
        self._last_poll = 0.0
        self._failing_since: float | None = None
        self._offsets: dict[str, int] = {}  # record file -> bytes read

    # -- the executor interface ------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        """Room for more instances: a job's worth per job that may still be queued."""
        if not self.max_jobs:
            return 1 << 30
        return max(0, (self.max_jobs - len(self.jobs)) * self.pack - len(self.buffer))

    def submit(self, task: Task) -> None:
        if not self.buffer:
            self._buffered_at = time.monotonic()
        self.buffer.append(task)
        if len(self.buffer) >= self.pack:
            self._flush()

    def poll(self, timeout: float | None) -> list[Started | Finished | Queued]:
        """Submit what is due, then return record events and those of jobs that ended without them."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.interval)
        while True:
            if self._partial_due():
                self._flush(partial=True)
            for job in list(self.jobs.values()):
                if len(self.jobs) <= _TAIL_ALL or job.state is not JobState.PENDING:
                    self._tail(job)
            if time.monotonic() - self._last_poll >= self.interval:
                self._ask_scheduler()
            if self.events or time.monotonic() >= deadline or not (self.jobs or self.buffer):
                break
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        events, self.events = self.events, []
        self._trickle = any(isinstance(event, Finished) for event in events)
        return events

    def cancel(self, keys: Iterable[int] | None = None) -> None:
        """Cancel every job of the study (scheduler jobs cannot lose single instances)."""
        self.cancelled = True
        for task in self.buffer:
            self.events.append(Finished(task.key, -15, 0.0, time.time(), 0, cancelled=True))
        self.buffer.clear()
        if self.jobs:
            self.calls["cancel"] += 1
            self.scheduler.cancel(list(self.jobs))

    def close(self) -> None:
        """Nothing to stop: jobs belong to the scheduler, and a resumed conductor cancels what is left."""

    def __enter__(self) -> "PackedExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- jobs ------------------------------------------------------------------------------------
    def _partial_due(self) -> bool:
        """A part-filled chunk waits for more only while finishes release dependents, and at most one interval.

        Without that wait, dependents released one finish at a time would each become a job of one.
        """
        if not self.buffer:
            return False
        return not self._trickle or not self.jobs or time.monotonic() - self._buffered_at >= self.interval

    def _flush(self, partial: bool = False) -> None:
        while len(self.buffer) >= self.pack or (partial and self.buffer):
            tasks, self.buffer = self.buffer[: self.pack], self.buffer[self.pack:]
            self._submit_job(tasks)
        self._buffered_at = time.monotonic()

    def _submit_job(self, tasks: list[Task]) -> None:
        self.calls["submit"] += 1
        name = f"legato-{self._run}-{self.calls['submit']:06d}"
        chunk = self.folder / f"{name}.json"
        record = self.folder / f"{name}.record"
        chunk.write_text(json.dumps({"tag": self.tag, "tasks": [task_fields(task) for task in tasks]}))
        script = self.folder / f"{name}.sh"
        script.write_text(self.scheduler.job_script(self._request(name, tasks, chunk, record)))
        jobid = self.scheduler.submit(str(script), str(self.folder))
        job = _Job(jobid, record, {task.key: task for task in tasks})
        if self.array:
            first = _ARRAY_INDEX.get(self.scheduler.key, ("", 0))[1]
            job.array_ids = {f"{jobid}_{first + i}": task.key for i, task in enumerate(tasks)}
            self.events.extend(Queued(key, part) for part, key in job.array_ids.items())
        else:
            self.events.extend(Queued(task.key, jobid) for task in tasks)
        self.jobs[jobid] = job

    def _request(self, name: str, tasks: list[Task], chunk: Path, record: Path) -> JobRequest:
        worker = python_command("legato.worker", str(chunk), str(record))
        if self.array:
            variable, offset = _ARRAY_INDEX.get(self.scheduler.key, ("SLURM_ARRAY_TASK_ID", 0))
            cores = max(task.slots for task in tasks)
            body = f'{worker}."${variable}" --slots {cores} --index "$(( {variable} - {offset} ))"\n'
            # the study's job limit also caps each array's tasks running at once ('%' in SLURM's --array)
            array = (offset, offset + len(tasks) - 1, self.max_jobs or None)
        else:
            cores = self.job_cores or min(sum(task.slots for task in tasks), os.cpu_count() or 1)
            body, array = f"{worker} --slots {cores}\n", None
        walltime = self.walltime or _chunk_walltime(tasks, cores, self.defaults.seconds)
        resources = dataclasses.replace(self.defaults, nodes=1, procs=cores, cores_per_task=None, walltime=walltime)
        return JobRequest(name=name, workdir=str(self.folder), body=body, resources=resources,
                          stdout=str(self.folder / f"{name}.out"), stderr=str(self.folder / f"{name}.err"), array=array)

    def _records(self, job: _Job) -> list[Path]:
        if not self.array:
            return [job.record]
        return sorted(job.record.parent.glob(f"{job.record.name}.*"))

    def _tail(self, job: _Job) -> None:
        """Turn new record lines into events (array jobs have one record file per task)."""
        for path in self._records(job):
            self._read_record(job, path)

    def _read_record(self, job: _Job, path: Path) -> None:
        """Read whole new lines only: a worker may be halfway through writing one."""
        offset = self._offsets.get(str(path), 0)
        try:
            with open(path, "rb") as stream:
                stream.seek(offset)
                data = stream.read()
        except FileNotFoundError:
            return
        complete = data[: data.rfind(b"\n") + 1]
        self._offsets[str(path)] = offset + len(complete)
        for line in complete.decode().splitlines():
            self._event(job, json.loads(line))

    def _event(self, job: _Job, line: dict) -> None:
        key = line["key"]
        if key not in job.tasks:
            return
        if line["event"] == "started":
            job.started[key] = (line["time"], line["pid"])
            self.events.append(Started(key, line["pid"], line["time"]))
            return
        job.tasks.pop(key)
        self.events.append(Finished(key, line["returncode"], line["started"], line["ended"], line["pid"],
                                    timed_out=line["timed_out"], cancelled=self.cancelled and line["returncode"] != 0))
        if not job.tasks:
            self.jobs.pop(job.jobid, None)

    def _ask_scheduler(self) -> None:
        """One scheduler call for every job of the study; jobs gone without records fail their instances."""
        self._last_poll = time.monotonic()
        if not self.jobs:
            return
        ids = [i for job in self.jobs.values() for i in (list(job.array_ids) or [job.jobid])]
        self.calls["poll"] += 1
        try:
            states = self.scheduler.poll(ids)
        except LegatoError as error:
            self._failing_since = poll_failed(self._failing_since, error, self.interval)
            return
        self._failing_since = None
        for job in list(self.jobs.values()):
            self._settle(job, states)

    def _settle(self, job: _Job, states: dict[str, JobState]) -> None:
        """Note whether the job runs; for each part that ended (or that the scheduler forgot), read its
        records a last time and report the instances they do not finish as failed or timed out."""
        parts: dict[str, int | None] = dict(job.array_ids) or {job.jobid: None}
        ended = {part: states.get(part) or JobState.UNKNOWN for part in parts
                 if states.get(part) is None or states[part] in _ENDED}
        waiting = all(states.get(part) is JobState.PENDING for part in parts if part not in ended)
        job.state = JobState.PENDING if waiting and not ended else JobState.RUNNING
        if not ended:
            return
        self._tail(job)
        for part, state in ended.items():
            key = parts[part]
            for orphan in ([key] if key is not None else list(job.tasks)):
                if orphan in job.tasks:
                    self._orphan(job, orphan, state)
        if not job.tasks:
            self.jobs.pop(job.jobid, None)

    def _orphan(self, job: _Job, key: int, state: JobState) -> None:
        """An instance its job ended without finishing: killed (pid known) or never started (pid 0)."""
        now = time.time()
        started, pid = job.started.get(key, (now, 0))
        del job.tasks[key]
        self.events.append(Finished(key, -9, started, now, pid, timed_out=state is JobState.TIMEOUT,
                                    cancelled=self.cancelled))


def poll_failed(failing_since: float | None, error: LegatoError, interval: float) -> float:
    """A busy controller times out now and then; only one that stays silent for ``POLL_PATIENCE`` stops
    the run. Returns since when the scheduler has been failing."""
    now = time.monotonic()
    if failing_since is None:
        print(f"legato: {error}; asking again every {interval:g} s", file=sys.stderr)
        return now
    if now - failing_since > POLL_PATIENCE:
        raise LegatoError(f"the scheduler has not answered for {POLL_PATIENCE:.0f} s: {error}")
    return failing_since


def python_command(module: str, *args: str) -> str:
    """A job runs this same Python and this same legato, also from a checkout on PYTHONPATH."""
    command = " ".join(shlex.quote(word) for word in (sys.executable, "-m", module, *args))
    source = str(Path(legato.__file__).resolve().parent.parent)
    if source in {*site.getsitepackages(), site.getusersitepackages()}:
        return command
    return f'export PYTHONPATH={shlex.quote(source)}"${{PYTHONPATH:+:$PYTHONPATH}}"\n{command}'


def task_fields(task: Task) -> dict:
    fields = {name: getattr(task, name) for name in Task.__slots__}
    fields["env"] = dict(task.env) if task.env else None
    return fields


def _chunk_walltime(tasks: list[Task], cores: int, default: int | None) -> str | None:
    """Enough time for the chunk run ``cores`` at a time, when every instance's walltime is known
    (its own, else the batch block's); else None, the batch block's or the partition's limit."""
    limits = [task.walltime or default for task in tasks]
    if not tasks or not all(limits):
        return None if default is None else hms(default) if default else "inf"
    waves = -(-sum(task.slots for task in tasks) // max(cores, 1))
    seconds = int(max(limits) * waves) + 60
    return hms(seconds)
