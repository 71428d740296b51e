"""The cluster executor: many instances packed into one scheduler job, as the local executor's twin.

It speaks the local executor's interface (``submit``, ``poll``, ``cancel``, ``free_slots``),
so the conductor runs a study on a cluster unchanged. Submitted instances are gathered into
chunks of ``pack``; each chunk becomes one job that runs ``python -m legato.worker`` on the
allocation's cores (or, with ``array``, one job array whose tasks run one instance each;
``pack=1`` is Maestro's one job per instance). Workers write per-job record files which
``poll`` tails; the scheduler itself is asked about all of the study's jobs in one call
every ``interval`` seconds. An instance whose job ended without a record of it finishing
(walltime, node failure, cancel) is reported failed or timed out, never silently lost.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from legato.execute import Queued
from legato.execute.local import Finished, Started, Task
from legato.schedulers.base import JobRequest, JobState, Resources, Scheduler

_ARRAY_INDEX = {"slurm": ("SLURM_ARRAY_TASK_ID", 0), "pbs": ("PBS_ARRAY_INDEX", 0),
                "lsf": ("LSB_JOBINDEX", 1), "flux": ("FLUX_JOB_CC", 0)}
_ENDED = {JobState.COMPLETED, JobState.FAILED, JobState.TIMEOUT, JobState.CANCELLED, JobState.NODE_FAIL,
          JobState.OUT_OF_MEMORY}


@dataclass
class _Job:
    jobid: str
    record: Path
    tasks: dict[int, Task]
    array_ids: dict[str, int] = field(default_factory=dict)  # "<id>_<n>" -> key
    started: dict[int, float] = field(default_factory=dict)
    ended: bool = False
    state: JobState = JobState.PENDING


class PackedExecutor:
    """Chunks of instances as scheduler jobs; ``max_jobs`` (0: no limit) caps jobs queued or running."""

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
        self.jobs: dict[str, _Job] = {}
        self.buffer: list[Task] = []
        self.events: list[Started | Finished | Queued] = []
        self.cancelled = False
        self.submitted = 0
        self._last_poll = 0.0
        self._offsets: dict[str, int] = {}  # record file -> bytes read

    # -- the executor interface ------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        """Room for more instances: a job's worth per job that may still be queued."""
        if not self.max_jobs:
            return 1 << 30
        return max(0, (self.max_jobs - len(self.jobs)) * self.pack - len(self.buffer))

    def submit(self, task: Task) -> None:
        self.buffer.append(task)
        if len(self.buffer) >= self.pack:
            self._flush()

    def poll(self, timeout: float | None) -> list[Started | Finished | Queued]:
        """Submit what is buffered, then return record events and jobs that ended without them."""
        if self.buffer:
            self._flush()
        deadline = time.monotonic() + (timeout if timeout is not None else self.interval)
        while True:
            for job in list(self.jobs.values()):
                self._tail(job)
            if time.monotonic() - self._last_poll >= self.interval:
                self._ask_scheduler()
            if self.events or time.monotonic() >= deadline or not self.jobs:
                break
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        events, self.events = self.events, []
        return events

    def cancel(self, keys: Iterable[int] | None = None) -> None:
        """Cancel every job of the study (scheduler jobs cannot lose single instances)."""
        self.cancelled = True
        for task in self.buffer:
            self.events.append(Finished(task.key, -15, 0.0, time.time(), 0, cancelled=True))
        self.buffer.clear()
        if self.jobs:
            self.scheduler.cancel(list(self.jobs))

    def close(self) -> None:
        """Nothing to stop: jobs belong to the scheduler, and a resumed conductor finds them again."""

    def __enter__(self) -> "PackedExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- jobs ------------------------------------------------------------------------------------
    def _flush(self) -> None:
        tasks, self.buffer = self.buffer[: self.pack], self.buffer[self.pack:]
        self.submitted += 1
        name = f"legato-{os.getpid()}-{self.submitted:06d}"
        chunk = self.folder / f"{name}.json"
        record = self.folder / f"{name}.record"
        chunk.write_text(json.dumps({"tag": self.tag, "tasks": [_task_fields(task) for task in tasks]}))
        script = self.folder / f"{name}.sh"
        script.write_text(self.scheduler.job_script(self._request(name, tasks, chunk, record)))
        jobid = self.scheduler.submit(str(script), str(self.folder))
        job = _Job(jobid, record, {task.key: task for task in tasks})
        if self.array:
            job.array_ids = {f"{jobid}_{i + self._array_offset()}": task.key for i, task in enumerate(tasks)}
        self.jobs[jobid] = job
        self.events.extend(Queued(task.key, jobid) for task in tasks)
        if self.buffer:
            self._flush()

    def _request(self, name: str, tasks: list[Task], chunk: Path, record: Path) -> JobRequest:
        python = f"{sys.executable} -m legato.worker {chunk} {record}"
        if self.array:
            variable, offset = _ARRAY_INDEX.get(self.scheduler.key, ("SLURM_ARRAY_TASK_ID", 0))
            body = f'{python}."${variable}" --slots {tasks[0].slots} --index "$(( {variable} - {offset} ))"\n'
            # the study's job limit also caps each array's tasks running at once ('%' in SLURM's --array)
            cores, array = max(task.slots for task in tasks), (offset, offset + len(tasks) - 1, self.max_jobs or None)
        else:
            cores = self.job_cores or min(sum(task.slots for task in tasks), os.cpu_count() or 1)
            body, array = f"{python} --slots {cores}\n", None
        walltime = self.walltime or _chunk_walltime(tasks, cores)
        resources = Resources(nodes=1, procs=cores, walltime=walltime)
        return JobRequest(name=name, workdir=str(self.folder), body=body, resources=resources,
                          stdout=str(self.folder / f"{name}.out"), stderr=str(self.folder / f"{name}.err"), array=array)

    def _array_offset(self) -> int:
        return _ARRAY_INDEX.get(self.scheduler.key, ("", 0))[1]

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
            job.started[key] = line["time"]
            self.events.append(Started(key, line["pid"], line["time"]))
            return
        job.tasks.pop(key)
        self.events.append(Finished(key, line["returncode"], line["started"], line["ended"], line["pid"],
                                    timed_out=line["timed_out"]))
        if not job.tasks:
            del self.jobs[job.jobid]

    def _ask_scheduler(self) -> None:
        """One scheduler call for every job of the study; jobs gone without records fail their instances."""
        self._last_poll = time.monotonic()
        if not self.jobs:
            return
        ids = [i for job in self.jobs.values() for i in (list(job.array_ids) or [job.jobid])]
        states = self.scheduler.poll(ids)
        for job in list(self.jobs.values()):
            ended = self._ended(job, states)
            if ended is not None:
                for path in self._records(job):
                    self._read_record(job, path)
                self._orphans(job, ended)

    def _ended(self, job: _Job, states: dict[str, JobState]) -> JobState | None:
        """The job's final state once every part of it has ended (or the scheduler forgot it)."""
        parts = list(job.array_ids) or [job.jobid]
        seen = [states.get(part) for part in parts]
        if any(state is not None and state not in _ENDED for state in seen):
            return None
        known = [state for state in seen if state is not None]
        if JobState.TIMEOUT in known:
            return JobState.TIMEOUT
        return known[0] if known else JobState.UNKNOWN

    def _orphans(self, job: _Job, state: JobState) -> None:
        if job.jobid not in self.jobs:
            return
        now = time.time()
        for key in list(job.tasks):
            self.events.append(Finished(key, -9, job.started.get(key, now), now, 0,
                                        timed_out=state is JobState.TIMEOUT, cancelled=self.cancelled))
        job.tasks.clear()
        del self.jobs[job.jobid]


def _task_fields(task: Task) -> dict:
    fields = {name: getattr(task, name) for name in Task.__slots__}
    fields["env"] = dict(task.env) if task.env else None
    return fields


def _chunk_walltime(tasks: list[Task], cores: int) -> str | None:
    """Enough time for the chunk run ``cores`` at a time, when every instance names its walltime."""
    if not tasks or any(task.walltime is None for task in tasks):
        return None
    waves = -(-sum(task.slots for task in tasks) // max(cores, 1))
    seconds = int(max(task.walltime for task in tasks) * waves) + 60
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
