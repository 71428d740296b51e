"""The cluster executor with pilot jobs: a few long allocations pull chunks of instances from a shared folder.

It speaks the local executor's interface (``submit``, ``poll``, ``cancel``, ``free_slots``,
``close``), so the conductor runs a study, or a campaign's many batch studies, unchanged.
Submitted instances are written as chunks of ``pack`` into FOLDER/queue (``legato.chunks``);
up to ``pilots`` scheduler jobs run ``python -m legato.pilot``, each claiming chunks by atomic
rename until no work is left or its walltime runs short (``legato.pilot``). Pilots append
their events to record files that ``poll`` tails; the scheduler is asked about every live
pilot in one call every ``interval`` seconds. When a pilot ends while work remains, another
is submitted. A pilot that died holding chunks (node failure, the scheduler's walltime,
``scancel``) has them put back in the queue holding only what its record does not show
finished: nothing is lost, nothing finished runs again. An instance interrupted that way
``MAX_INTERRUPTIONS`` times is reported as ended by its job, so it cannot loop for ever.

A new executor on the same folder (``legato run --resume`` after the driver was killed)
adopts the pilots the registry names that the scheduler still runs, instead of cancelling
them: a resubmitted task that a record shows finished is reported from that record, one still
in a chunk is awaited.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from legato import chunks
from legato.chunks import CLAIMED, QUEUE, RECORDS, REGISTRY, STOP
from legato.errors import LegatoError
from legato.execute import Queued
from legato.execute.local import Finished, Started, Task
from legato.execute.packed import poll_failed, python_command, task_fields
from legato.schedulers.base import JobRequest, JobState, Resources, Scheduler, hms
from legato.walltime import parse_walltime

DEFAULT_JOB_WALLTIME = 3600
"""Seconds a pilot asks for when neither --job-walltime nor the batch block gives a walltime."""
DEFAULT_MARGIN = 60
"""Seconds an instance without a walltime (or the batch block's) is assumed to need at most."""
IDLE_SECONDS = 60.0
"""A pilot without work for this long leaves; the driver submits another if work comes later."""
STAFF_GRACE = 2.0
"""Seconds a chunk waits for a running pilot to claim it before another pilot is submitted for it."""
MAX_INTERRUPTIONS = 2
"""Times an instance may be cut short with its pilot before it is reported ended (killed, or timed out)."""
AHEAD = 2
"""Chunks per pilot kept written ahead of the pilots (``free_slots``): enough that none waits for the driver."""
FORGOTTEN_POLLS = 3
"""Polls in a row a scheduler must not know a pilot before it counts as gone: putting back the chunks
of a pilot that still runs them would run them twice."""
_ENDED = {JobState.COMPLETED, JobState.FAILED, JobState.TIMEOUT, JobState.CANCELLED, JobState.NODE_FAIL,
          JobState.OUT_OF_MEMORY}


@dataclass
class _Pilot:
    name: str
    jobid: str
    record: Path
    offset: int = 0
    state: JobState = JobState.PENDING
    exited: bool = False  # its record says it left
    unknown: int = 0  # polls in a row the scheduler did not know it


class PilotExecutor:
    """Up to ``pilots`` allocations of ``job_cores`` cores (default: this machine's) pulling chunks of ``pack``.

    ``job_walltime`` is each pilot's walltime (default: the batch block's, at least an hour);
    ``calls`` counts what was asked of the scheduler, and ``calls["submit"]`` the allocations.
    """

    def __init__(self, scheduler: Scheduler, folder: Path, *, pack: int = 100, pilots: int = 2,
                 job_cores: int | None = None, job_walltime: str | None = None, interval: float = 5.0,
                 idle: float = IDLE_SECONDS) -> None:
        self.scheduler = scheduler
        self.folder = Path(folder).absolute()
        for place in (QUEUE, CLAIMED, RECORDS):
            (self.folder / place).mkdir(parents=True, exist_ok=True)
        self.pack = max(1, pack)
        self.pilots = max(1, pilots)
        self.job_cores = job_cores or os.cpu_count() or 1
        self.defaults = Resources.from_spec(scheduler.batch, {})  # the batch block's qos, reservation, walltime...
        self.fixed_walltime = parse_walltime(job_walltime)  # None unless given
        self.interval = interval
        self.idle = idle
        self.calls = {"submit": 0, "poll": 0, "cancel": 0}
        self.cancelled = False
        self.tasks: dict[int, Task] = {}  # submitted, not yet reported finished
        self.buffer: list[Task] = []
        self.events: list[Started | Finished | Queued] = []
        self.live: dict[str, _Pilot] = {}
        self._run = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"  # names never meet an earlier driver's
        self._chunks = 0
        self._chunk_keys: dict[str, list[int]] = {}  # chunk waiting to be claimed -> its keys
        self._longest = 0.0  # the longest instance walltime submitted: the pilots' margin
        self._replay: dict[int, tuple[float, float, int]] = {}  # successes recorded for tasks not submitted here
        self._seen_started: dict[int, tuple[float, int]] = {}
        self._elsewhere: set[int] = set()  # keys in chunks an earlier driver wrote, not yet ended
        self._last_poll = 0.0
        self._failing_since: float | None = None
        (self.folder / STOP).unlink(missing_ok=True)
        self._adopt()

    # -- the executor interface ------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        """Room for a few chunks per pilot beyond those in flight: queued chunks are cheap, but not free."""
        return max(0, (AHEAD * self.pilots + 1) * self.pack - len(self.tasks))

    def submit(self, task: Task) -> None:
        if task.walltime:
            self._longest = max(self._longest, task.walltime)
        self.tasks[task.key] = task
        if task.key in self._replay:  # it finished while no driver watched: never run twice
            started, ended, pid = self._replay.pop(task.key)
            self.events.append(Finished(task.key, 0, started, ended, pid))
            self.tasks.pop(task.key)
        elif task.key in self._elsewhere:  # still in a chunk of an earlier driver's: awaited
            if task.key in self._seen_started:
                started, pid = self._seen_started.pop(task.key)
                self.events.append(Started(task.key, pid, started))
        else:
            self.buffer.append(task)
            if len(self.buffer) >= self.pack:
                self._flush()

    def poll(self, timeout: float | None) -> list[Started | Finished | Queued]:
        """Write what was submitted, read the records, ask the scheduler when due, and staff the queue."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.interval)
        while True:
            self._flush()
            for pilot in list(self.live.values()):
                self._tail(pilot)
            if time.monotonic() - self._last_poll >= self.interval:
                self._ask_scheduler()
            self._staff()
            if self.events or time.monotonic() >= deadline or not self.tasks:
                break
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        events, self.events = self.events, []
        return events

    def cancel(self, keys: Iterable[int] | None = None) -> None:
        """End every pilot and drop the queue: instances not started are reported cancelled at once,
        those running once their pilot's end is known.

        Pilots run the instances of every study they serve, so any cancel ends them all (a
        campaign cancels all of its batches together); ``keys`` only say which a conductor expects.
        """
        if self.cancelled:
            return
        self.cancelled = True
        self._flush()
        for name in chunks.queued(self.folder):
            try:
                chunk = chunks.read_json(self.folder / QUEUE / f"{name}.json")
                (self.folder / QUEUE / f"{name}.json").unlink()
            except FileNotFoundError:
                continue  # a pilot claimed it first: its end reports it
            for fields in chunk["tasks"]:
                self._end(fields["key"], -15, 0.0, 0, cancelled=True)
        if self.live:
            self.calls["cancel"] += 1
            self.scheduler.cancel([pilot.jobid for pilot in self.live.values()])

    def close(self) -> None:
        """Pilots leave once idle; those the scheduler has not started yet are cancelled, as nothing needs them.

        Pilots still working (the driver stopped with work left) carry on, for a resumed driver to adopt.
        """
        (self.folder / STOP).touch()
        waiting = [p.jobid for p in self.live.values() if p.state is JobState.PENDING and not self.tasks]
        if waiting:
            self.calls["cancel"] += 1
            with contextlib.suppress(LegatoError):  # never hides the error the driver may be stopping for
                self.scheduler.cancel(waiting)

    def __enter__(self) -> "PilotExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- chunks ----------------------------------------------------------------------------------
    def _flush(self) -> None:
        """Every full chunk, and at a poll the part-filled one: a pilot takes it in a rename."""
        while self.buffer:
            tasks, self.buffer = self.buffer[: self.pack], self.buffer[self.pack:]
            self._chunks += 1
            name = f"c-{self._run}-{self._chunks:06d}"
            chunks.enqueue(self.folder, name, {"tasks": [task_fields(task) for task in tasks], "interrupted": {}})
            self._chunk_keys[name] = [task.key for task in tasks]

    def _staff(self) -> None:
        """A pilot per chunk left waiting, up to ``pilots`` in all; a chunk gets a moment for a running pilot first."""
        if self.cancelled or len(self.live) >= self.pilots:
            return
        waiting = chunks.queued(self.folder)
        if not waiting:
            return
        if self.live:
            now = time.time()
            waiting = [name for name in waiting if _age(self.folder / QUEUE / f"{name}.json", now) >= STAFF_GRACE]
        starting = sum(1 for pilot in self.live.values() if pilot.state is JobState.PENDING)
        for _ in range(min(self.pilots - len(self.live), len(waiting) - starting)):
            self._submit_pilot()

    def _submit_pilot(self) -> None:
        self.calls["submit"] += 1
        name = f"p-{self._run}-{self.calls['submit']:04d}"
        walltime, margin = self._walltime()
        command = python_command("legato.pilot", str(self.folder), name)
        body = f"{command} --slots {self.job_cores} --walltime {walltime} --margin {margin} --idle {self.idle:g}\n"
        resources = dataclasses.replace(self.defaults, nodes=1, procs=self.job_cores, cores_per_task=None,
                                        walltime=hms(walltime) if walltime else "inf")
        logs = self.folder / "logs"
        logs.mkdir(exist_ok=True)
        request = JobRequest(name=f"legato-{name}", workdir=str(self.folder), body=body, resources=resources,
                             stdout=str(logs / f"{name}.out"), stderr=str(logs / f"{name}.err"))
        script = logs / f"{name}.sh"
        script.write_text(self.scheduler.job_script(request))
        jobid = self.scheduler.submit(str(script), str(self.folder))
        self.live[name] = _Pilot(name, jobid, self.folder / RECORDS / f"{name}.record")
        self._save_registry()

    def _walltime(self) -> tuple[int, int]:
        """(the pilot's walltime, its margin) in seconds; 0 walltime is no limit.

        The margin is the longest walltime of the instances submitted (else the batch block's, else
        ``DEFAULT_MARGIN``). A walltime the user gave must leave room for it; a default one grows to fit it.
        """
        margin = int(self._longest or self.defaults.seconds or DEFAULT_MARGIN)
        if self.fixed_walltime is not None:
            if self.fixed_walltime and self.fixed_walltime <= margin:
                raise LegatoError(f"--job-walltime {hms(self.fixed_walltime)} leaves no room for instances whose "
                                  f"walltime is {hms(margin)}: give the pilots more time")
            return self.fixed_walltime, margin
        if self.defaults.seconds == 0:
            return 0, margin  # the batch block asks for no limit
        return max(self.defaults.seconds or 0, DEFAULT_JOB_WALLTIME, 4 * margin), margin

    # -- records -----------------------------------------------------------------------------------
    def _tail(self, pilot: _Pilot) -> None:
        lines, pilot.offset = chunks.read_lines(pilot.record, pilot.offset)
        for line in lines:
            self._line(pilot, line)

    def _line(self, pilot: _Pilot, line: dict) -> None:
        kind = line["event"]
        if pilot.state is JobState.PENDING:
            pilot.state = JobState.RUNNING  # its record is news sooner than the scheduler's next answer
        if kind == "started":
            key = line["key"]
            if key in self.tasks:
                self.events.append(Started(key, line["pid"], line["time"]))
            else:
                self._seen_started[key] = (line["time"], line["pid"])
        elif kind == "finished":
            key = line["key"]
            self._elsewhere.discard(key)
            self._seen_started.pop(key, None)
            if key in self.tasks:
                del self.tasks[key]
                self.events.append(Finished(key, line["returncode"], line["started"], line["ended"], line["pid"],
                                            timed_out=line["timed_out"],
                                            cancelled=self.cancelled and line["returncode"] != 0))
            elif line["returncode"] == 0 and not line["timed_out"]:
                self._replay[key] = (line["started"], line["ended"], line["pid"])
        elif kind == "claimed":
            for key in self._chunk_keys.pop(line["chunk"], ()):
                if key in self.tasks:
                    self.events.append(Queued(key, pilot.jobid))
        elif kind == "returned":
            self._chunk_keys[line["chunk"]] = line["keys"]
        elif kind == "exit":
            pilot.exited = True
            if line["reason"] != "signalled":  # it put its work back itself; a signalled one waits for its state
                self._retire(pilot, JobState.COMPLETED)

    def _end(self, key: int, returncode: int, started: float, pid: int, *, timed_out: bool = False,
             cancelled: bool = False) -> None:
        """Report an instance that ended without a record of it: with its pilot, or cancelled before it ran."""
        self._elsewhere.discard(key)
        if self.tasks.pop(key, None) is not None:
            self.events.append(Finished(key, returncode, started or time.time(), time.time(), pid,
                                        timed_out=timed_out, cancelled=cancelled))

    # -- pilots ----------------------------------------------------------------------------------
    def _ask_scheduler(self) -> None:
        """One scheduler call for every live pilot; those that ended have their chunks put back."""
        self._last_poll = time.monotonic()
        if not self.live:
            return
        self.calls["poll"] += 1
        try:
            states = self.scheduler.poll([pilot.jobid for pilot in self.live.values()])
        except LegatoError as error:
            self._failing_since = poll_failed(self._failing_since, error, self.interval)
            return
        self._failing_since = None
        for pilot in list(self.live.values()):
            pilot.state = states.get(pilot.jobid, JobState.UNKNOWN)
            pilot.unknown = pilot.unknown + 1 if pilot.state is JobState.UNKNOWN else 0
            if pilot.state in _ENDED or pilot.unknown >= FORGOTTEN_POLLS or (pilot.unknown and pilot.exited):
                self._tail(pilot)
                if pilot.name in self.live:
                    self._retire(pilot, pilot.state)

    def _retire(self, pilot: _Pilot, state: JobState) -> None:
        """The pilot is gone: whatever it still held goes back to the queue, less what its record shows ended."""
        self.live.pop(pilot.name, None)
        self._save_registry()
        held = list(chunks.claimed(self.folder, pilot.name))
        if not held:
            return
        ended, started = _record_keys(pilot.record, {t["key"] for _, chunk in held for t in chunk["tasks"]})
        for name, chunk in held:
            kept = []
            for fields in chunk["tasks"]:
                key = fields["key"]
                if key in ended:
                    continue
                began, pid = started.get(key, (0.0, 0))
                if self.cancelled:
                    self._end(key, -15, began, pid, cancelled=True)
                    continue
                if pid:
                    times = chunk["interrupted"][str(key)] = chunk["interrupted"].get(str(key), 0) + 1
                    if times >= MAX_INTERRUPTIONS:
                        self._end(key, -9, began, pid, timed_out=state is JobState.TIMEOUT)
                        continue
                kept.append(fields)
            chunks.put_back(self.folder, pilot.name, name, {**chunk, "tasks": kept})
            if kept:
                self._chunk_keys[name] = [fields["key"] for fields in kept]

    def _save_registry(self) -> None:
        chunks.write_json(self.folder / REGISTRY, {p.name: p.jobid for p in self.live.values()})

    def _adopt(self) -> None:
        """Take over from an earlier driver of this folder: its live pilots, its records, its chunks."""
        registry = self.folder / REGISTRY
        earlier = chunks.read_json(registry) if registry.exists() else {}
        self.live = {name: _Pilot(name, jobid, self.folder / RECORDS / f"{name}.record") for name, jobid in earlier.items()}
        for record in sorted((self.folder / RECORDS).glob("*.record")):
            # every start and end so far, kept for the tasks the conductor submits again
            self._tail(self.live.get(record.stem) or _Pilot(record.stem, "", record))
        if self.live:
            self._ask_scheduler()  # those that ended meanwhile have their chunks put back
        for place in [self.folder / QUEUE, *(self.folder / CLAIMED).iterdir()]:
            for entry in place.glob("*.json"):
                keys = [fields["key"] for fields in chunks.read_json(entry)["tasks"]]
                self._elsewhere.update(keys)
                if place.name == QUEUE:
                    self._chunk_keys[entry.stem] = keys
        self._elsewhere -= set(self._replay)


def end_pilots(folder: Path, scheduler: Scheduler) -> None:
    """Cancel every pilot the registry in ``folder`` names: ``legato cancel`` when no driver is alive."""
    registry = Path(folder) / REGISTRY
    jobids = list(chunks.read_json(registry).values()) if registry.exists() else []
    if jobids:
        scheduler.cancel(jobids)


def _record_keys(record: Path, wanted: set[int]) -> tuple[set[int], dict[int, tuple[float, int]]]:
    """Of ``wanted``, the keys a record shows ended, and when and as what pid the others started."""
    ended: set[int] = set()
    started: dict[int, tuple[float, int]] = {}
    for line in chunks.read_lines(record)[0]:
        key = line.get("key")
        if key not in wanted:
            continue
        if line["event"] == "finished":
            ended.add(key)
        elif line["event"] == "started":
            started[key] = (line["time"], line["pid"])
    return ended, started


def _age(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
