"""The parallel local executor: long-lived bash workers, one forked subshell per instance.

Starting a fresh process per instance (fork + exec of bash) costs far more than the trivial
instances of a big study, so ``slots`` bash workers are started once. The conductor sends each
worker one framed command per instance, written out in full with the instance's folder, files
and script as literal words: bash runs a command it is given faster than one it assembles from
variables. The command forks a *subshell* for the instance, with the instance's folder, files
and stdin from /dev/null, then reports ``d KEY TIME STATUS`` on the worker's stdout, a socket
only the conductor reads. Instances never see the command, report or cancel descriptors, so
nothing they print or read can be mistaken for protocol.

The journal is what a resumed conductor learns from when its predecessor was killed before
recording some finished instances in the store: every report, appended by the conductor before
it takes the report off the socket (it peeks first). Reports still on the socket when the
conductor dies are not lost: the worker holds the socket's other end too, and appends what is
left there to the journal before it goes.

Each worker is a process group of its own, and an instance runs in its worker's group: a
signal to that group ends the instance and everything it started while the worker, which traps
SIGTERM, carries on. That spares every instance a process group of its own (``set -m``) and a
report of its pid from the subshell, which together cost a trivial instance about 15% more
(measured on a worker alone, 2,000 instances, median of 9). An instance with a walltime does
get both, so that its timer can only ever kill that instance. A worker
starts the next instance only after reporting the previous one, so the conductor knows which
one a signal reaches; should one ever end by a signal meant for the instance before it, it
runs again.

A worker holds several tasks (the running one included), so it starts the next instance the
moment the previous one ends instead of idling through the conductor's round trip. How many
follows the instances' measured length: about ``QUEUED_SECONDS`` of work, between
``QUEUE_DEPTH`` and ``MAX_DEPTH`` tasks. Trivial instances need a deep queue, or the workers
drain it whenever the conductor waits for a core; long ones a shallow one, because a task
queued behind a long one cannot move to an idle worker.
A task is only queued behind one that takes at least as many slots, so the cores in use never
exceed ``slots``. ``free_slots`` therefore answers "how big a task can be accepted now": the
idle cores, or when none are idle, the room in a worker's queue.

Workers go with the conductor (PR_SET_PDEATHSIG on Linux, through setpriv where it is installed;
EOF on their command pipe elsewhere): an idle one at once, a busy one when its instance has
ended and been journaled. Instances already
running are left alone and recognised later by their LEGATO_TAG.
"""
from __future__ import annotations

import ctypes
import fcntl
import heapq
import os
import re
import select
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, Mapping

from legato.errors import LegatoError

GRACE_SECONDS = 2.0  # from SIGTERM to SIGKILL of an instance's process group
QUEUE_DEPTH = 3
"""Tasks a worker holds at least, the running one included, and before any task has ended."""
MAX_DEPTH = 32
COALESCE_SECONDS = 0.005
"""How long poll() lets reports gather while every worker has work queued (then it needs no prompt answer)."""
QUEUED_SECONDS = 0.02
"""Work each worker should hold: a few of the kernel's time slices, which the conductor may wait for a core."""

# The worker reads frames "LENGTH(8 digits)TEXT" from descriptor 3 (bash's read -N takes each in
# one read()) and evaluates TEXT, the command that _command() writes for one task. Its stdin is
# /dev/null, which its instances inherit. Descriptor 8 is the conductor's end of the report
# socket, 9 the cancel pipe, which carries the keys of queued tasks to skip; SIGUSR1 says that
# some are waiting, so a worker looks at the pipe only then.
# SIGHUP comes from the kernel when the conductor dies: bash runs the trap once the running
# instance has ended and reported, and the worker starts nothing more but moves the reports
# nobody read to the journal. SIGTERM to the worker's process group is for its instance; the
# worker itself ignores it. "r" says the traps are set: until then SIGUSR1 would kill it.
_WORKER = r"""
_lg_skip=()
_lg_any=
_lg_gone=
_lg_c=
_lg_cancels() { _lg_c=; while read -t 0 -u 9 && read -r -u 9 _lg_n; do _lg_skip[_lg_n]=1 _lg_any=1; done; }
_lg_skipped() { unset "_lg_skip[$1]"; echo "k $1 $EPOCHREALTIME"; }
[[ $PPID == @PARENT@ ]] || exit 1
@FDS@
trap _lg_gone=1 HUP
trap : TERM
trap _lg_c=1 USR1
echo r
while [[ ! $_lg_gone ]] && IFS= read -r -u 3 -N 8 _lg_n && IFS= read -r -u 3 -N "$_lg_n" _lg_p; do
    [[ $_lg_c ]] && _lg_cancels
    eval "$_lg_p"
done
while read -t 0 -u 8 && IFS= read -r -u 8 _lg_p; do echo "$_lg_p"; done >>@J@
"""
_FRAME = b"%8d"

_SIGNALS = frozenset(int(s) for s in signal.valid_signals())
_ANSI_C = {c: f"\\x{c:02x}" for c in range(256) if not 32 <= c < 127} | {ord("\\"): "\\\\", ord("'"): "\\'"}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Task:
    """One instance to run; ``key`` comes back in its events."""

    key: int
    script: str
    cwd: str
    stdout: str
    stderr: str
    slots: int = 1
    walltime: float | None = None
    shell: str = "/bin/bash"
    env: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Started:
    key: int
    pid: int  # the process group it runs in: its worker's, or its own when it has a walltime
    time: float


@dataclass(frozen=True, slots=True)
class Finished:
    key: int
    returncode: int  # -N when killed by signal N
    started: float
    ended: float
    pid: int  # 0 when the task was cancelled before it started
    timed_out: bool = False
    cancelled: bool = False


@dataclass(eq=False, slots=True)
class _Job:
    seq: int
    task: Task
    worker: _Worker
    sent: float  # when its command went to the worker
    script_file: str | None = None
    pid: int = 0  # the process group it runs in, once started
    started: float = 0.0
    done: bool = False
    signalled: bool = False
    timed_out: bool = False
    cancelled: bool = False

    @property
    def grouped(self) -> bool:
        """A walltime puts the instance in a process group of its own, which reports its pid."""
        return self.task.walltime is not None and self.task.walltime > 0


class _Worker:
    """One bash process: commands in on a pipe, reports out on a socket, skips in on another pipe."""

    __slots__ = ("proc", "pid", "commands", "socket", "reports", "cancels", "jobs", "unread", "unsent",
                 "signalled_at", "ready")

    def __init__(self, proc: subprocess.Popen, commands: int, reports: socket.socket, cancels: int) -> None:
        self.proc = proc
        self.pid = proc.pid  # also its process group, which its ungrouped instances share
        self.commands = commands
        self.socket = reports
        self.reports = reports.fileno()
        self.cancels = cancels
        self.jobs: deque[_Job] = deque()  # the running (or starting) task first
        self.unread = b""
        self.unsent = bytearray()
        self.signalled_at = 0.0  # when the conductor last signalled this worker's group
        self.ready = False  # its traps are set
        os.set_blocking(self.commands, False)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.commands)
        self.socket.close()
        os.close(self.cancels)


class LocalExecutor:
    """Runs tasks on this machine, at most ``slots`` cores' worth at a time."""

    def __init__(self, slots: int, env: Mapping[str, str] | None = None, tag: str = "", *,
                 grace: float = GRACE_SECONDS, journal: str | None = None) -> None:
        """``journal``: a file that gets every instance's end, also when the conductor is killed
        before it learns of it, so that a resumed one does (``read_journal``)."""
        if slots < 1:
            raise LegatoError(f"the number of parallel jobs must be at least 1, not {slots}")
        self.slots = slots
        self.tag = tag
        self._grace = grace
        self._bash = _find_bash()
        self._env = {**os.environ, **(env or {}), "LEGATO_TAG": f"{tag}:"}
        self._tag = _quote(f"{tag}:")  # an instance's LEGATO_TAG is this, then its key
        self._journal_path = journal
        try:
            self._journal_fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if journal else None
        except OSError as error:
            raise LegatoError(f"{journal}: cannot write the journal: {error.strerror}") from None
        self._journal = _quote(journal or os.devnull)
        self._selector = selectors.DefaultSelector()
        self._workers: list[_Worker] = []
        self._idle: set[_Worker] = set()
        self._busy: set[_Worker] = set()  # running a task
        self._depth = QUEUE_DEPTH
        self._mean_seconds: float | None = None  # of the tasks that ended, weighted to the recent ones
        self._reserved = 0  # slots of the tasks the workers run now
        self._jobs: dict[int, _Job] = {}  # by key
        self._events: list[Started | Finished] = []
        self._doomed: list[_Job] = []  # cancelled tasks that may have started before their worker knew
        self._outbox: list[_Worker] = []  # workers with commands to send
        self._timers: list[tuple[float, int, str, _Job]] = []
        self._seq = 0
        self._scripts_dir: str | None = None
        self._closed = False

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- submitting -----------------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        idle = self.slots - self._reserved
        if idle > 0:
            return idle
        widest = 0  # asked once per dispatched task: a plain loop, no generator
        for worker in self._busy:
            if len(worker.jobs) < self._depth and worker.jobs[-1].task.slots > widest:
                widest = worker.jobs[-1].task.slots
        return widest

    def submit(self, task: Task) -> None:
        if not 1 <= task.slots <= self.slots:
            raise LegatoError(f"instance {task.key} needs {task.slots} slots; this run has {self.slots} (--jobs)")
        if task.key in self._jobs:
            raise ValueError(f"task {task.key} is already submitted")
        worker = self._place(task.slots)
        self._seq += 1
        job = _Job(self._seq, task, worker, 0.0)
        command = self._command(job)
        self._jobs[task.key] = job
        self._assign(worker, job, command)

    def _place(self, slots: int) -> _Worker:
        """An idle worker when the task's slots are free (a new one while fewer than ``slots`` exist, so that
        start-up never pays for workers a small run does not use), else the shortest queue that fits."""
        if slots <= self.slots - self._reserved:
            return next(iter(self._idle)) if self._idle else self._add_worker()
        shortest = None  # the shortest queue with room: no worker idles early
        for worker in self._busy:
            if len(worker.jobs) < self._depth and worker.jobs[-1].task.slots >= slots and (
                    shortest is None or len(worker.jobs) < len(shortest.jobs)):
                shortest = worker
        if shortest is not None:
            return shortest
        raise ValueError(f"no room for a task of {slots} slots (free_slots is {self.free_slots})")

    def _assign(self, worker: _Worker, job: _Job, command: bytes) -> None:
        """Queue a task on a worker; at the head of an idle one it starts at once."""
        job.worker = worker
        worker.jobs.append(job)
        job.sent = time.time()
        self._send(worker, command)
        if len(worker.jobs) == 1:
            self._idle.discard(worker)
            self._busy.add(worker)
            self._reserved += job.task.slots
            self._running(job, job.sent)

    def _command(self, job: _Job) -> bytes:
        """The worker's framed command for one task, every value a quoted literal.

        It reports "d KEY TIME STATUS" when the instance has ended, "k KEY TIME" when it was
        skipped and "c KEY TIME" when its folder cannot be entered; TIME is the worker's clock,
        so the conductor knows when the next task started, however late it reads. An instance
        with a walltime runs in a process group of its own (set -m) and reports "s KEY PID"
        before its script starts, so that the timer signals exactly that group. Not "cd -P":
        it reads the link of every folder above, twice, where "cd" stats each once.
        """
        task, key = job.task, job.task.key
        cwd = task.cwd if task.cwd.startswith("/") else os.path.abspath(task.cwd)
        files = _redirections(_within(task.stdout, task.cwd), _within(task.stderr, task.cwd))
        script = _quote(self._script(job))
        if job.grouped:
            body = (f'set -m; ( set +m; echo "s {key} $BASHPID"; exec {files} || exit 1; eval {script} ); '
                    f'_lg_s=$?; set +m; echo "d {key} $EPOCHREALTIME $_lg_s"')
        else:
            body = f'( eval {script} ) {files}; echo "d {key} $EPOCHREALTIME $?"'
        text = (f"if [[ $_lg_any && ${{_lg_skip[{key}]-}} ]]; then _lg_skipped {key}; elif cd -- {_quote(cwd)}; "
                f'then LEGATO_TAG={self._tag}{key}; {body}; else echo "c {key} $EPOCHREALTIME"; fi').encode("ascii")
        return _FRAME % len(text) + text

    def _script(self, job: _Job) -> str:
        """Bash scripts run in the subshell itself; others, and bash scripts that use ``$$``
        (which would name the worker), run from a file by their own interpreter. Variables of the task's own ``env`` are exported inside the subshell, so they stay with
        this task."""
        task = job.task
        script = task.script
        if "$$" in script or not _is_bash(task.shell, self._bash):
            if self._scripts_dir is None:
                self._scripts_dir = tempfile.mkdtemp(prefix="legato-scripts-")
            job.script_file = os.path.join(self._scripts_dir, str(job.seq))
            with open(job.script_file, "w", encoding="utf-8", errors="surrogateescape") as out:
                out.write(script)
            argv = [self._bash] if _is_bash(task.shell, self._bash) else shlex.split(task.shell)
            script = "exec " + shlex.join([*argv, job.script_file])
        if task.env:
            exports = []
            for name, value in task.env.items():
                if not _ENV_NAME.fullmatch(name):
                    raise LegatoError(f"instance {task.key}: {name!r} is not a valid environment variable name")
                exports.append(f"export {name}={shlex.quote(value)}\n")
            script = "".join(exports) + script
        return script

    def _send(self, worker: _Worker, data: bytes) -> None:
        """Commands wait for the next poll(), which sends each worker its new ones in one write."""
        if not worker.unsent and worker not in self._outbox:
            self._outbox.append(worker)
        worker.unsent += data

    def _send_outbox(self) -> None:
        """Writes without blocking: a worker busy with a long instance reads its queue late."""
        for worker in self._outbox:
            if worker.unsent and not self._flush(worker):
                self._selector.register(worker.commands, selectors.EVENT_WRITE, worker)
        self._outbox.clear()

    def _flush(self, worker: _Worker) -> bool:
        """Whether all of the worker's unsent commands are written now."""
        try:
            written = os.write(worker.commands, worker.unsent)
        except BlockingIOError:
            return False
        except BrokenPipeError:
            written = len(worker.unsent)  # the worker is gone; its EOF on the report socket resubmits its tasks
        del worker.unsent[:written]
        return not worker.unsent

    # -- events ---------------------------------------------------------------------------------
    def poll(self, timeout: float | None) -> list[Started | Finished]:
        """Events of at least one task, waiting up to ``timeout`` seconds (None: until one comes).

        Returns at once with nothing when no task is in flight, as nothing could come.
        """
        end = None if timeout is None else time.monotonic() + timeout
        self._send_outbox()
        if self._stocked():
            time.sleep(COALESCE_SECONDS)  # let reports gather: one wake-up handles many
        while True:
            for key, _ in self._selector.select(self._wait_time(end)):
                if key.fd == key.data.reports:
                    self._read(key.data)
                elif self._flush(key.data):
                    self._selector.unregister(key.fd)
            self._fire_timers()
            self._send_outbox()  # the tasks of lost workers and reruns
            if self._events or not self._jobs or (end is not None and time.monotonic() >= end):
                events, self._events = self._events, []
                return _elide_starts(events)

    def _stocked(self) -> bool:
        """Every worker has work queued behind its running task: nothing starves while the conductor waits."""
        return bool(self._workers) and all(len(worker.jobs) > 2 for worker in self._workers)

    def _wait_time(self, end: float | None) -> float | None:
        if self._events or not self._jobs:
            return 0
        wake = self._timers[0][0] if self._timers else end
        if wake is None:
            return None
        if end is not None:
            wake = min(wake, end)
        return max(0.0, wake - time.monotonic())

    def _read(self, worker: _Worker) -> None:
        data = worker.socket.recv(65536, socket.MSG_PEEK)
        if not data:
            self._lost(worker)
            return
        if self._journal_fd is not None:
            try:
                os.write(self._journal_fd, data)  # before the report leaves the socket: a kill -9 loses none
            except OSError as error:
                raise LegatoError(f"{self._journal_path}: cannot write the journal: {error.strerror}") from None
        worker.socket.recv(len(data))
        lines = (worker.unread + data).split(b"\n")
        worker.unread = lines.pop()
        for line in lines:
            if line == b"r":
                worker.ready = True
                continue
            kind, key, value, *status = line.split()
            job = self._jobs[int(key)]
            if kind == b"s":
                self._own_group(job, int(value))
            elif kind == b"d":
                self._finish(job, _returncode(int(status[0])), float(value))
            else:  # k: skipped, cancelled while queued; c: its folder could not be entered
                job.started = job.started or float(value)
                if kind == b"k":
                    job.pid = 0
                self._finish(job, -signal.SIGTERM if kind == b"k" else 1, float(value))
        for job in self._doomed:
            if not job.done:
                self._terminate(job)
        self._doomed.clear()

    def _running(self, job: _Job, now: float) -> None:
        """A task at the head of its worker's queue runs from now on (a grouped one once it says so)."""
        if job.grouped:
            return
        job.pid, job.started = job.worker.pid, now
        self._events.append(Started(job.task.key, job.pid, now))
        if job.cancelled:
            self._doomed.append(job)  # unless the worker skipped it: the rest of the reports may say so

    def _own_group(self, job: _Job, pid: int) -> None:
        job.pid, job.started = pid, time.time()
        self._events.append(Started(job.task.key, pid, job.started))
        if job.cancelled:
            self._terminate(job)
        else:
            self._timer(time.monotonic() + job.task.walltime, "walltime", job)

    def _finish(self, job: _Job, returncode: int, now: float) -> None:
        """The worker's running task ended: its queued one (already started by the worker) runs now."""
        worker = job.worker
        worker.jobs.popleft()
        self._reserved -= job.task.slots
        if worker.jobs:
            self._reserved += worker.jobs[0].task.slots
        else:
            self._busy.discard(worker)
            self._idle.add(worker)
        if worker.jobs:
            self._running(worker.jobs[0], max(now, worker.jobs[0].sent))
        if self._stray(job, returncode):
            self._rerun(job)
        else:
            self._learn(now - job.started)
            self._report(job, returncode, now)

    def _stray(self, job: _Job, returncode: int) -> bool:
        """Killed by a signal to its worker's group that was meant for the instance before it."""
        return (returncode in (-signal.SIGTERM, -signal.SIGKILL) and not job.grouped and not job.signalled
                and job.started <= job.worker.signalled_at)

    def _rerun(self, job: _Job) -> None:
        """Run a task again from the start, on the least busy worker, as if just submitted."""
        job.pid = job.started = 0
        worker = min(self._workers, key=lambda worker: len(worker.jobs))
        self._assign(worker, job, self._command(job))

    def _learn(self, seconds: float) -> None:
        """Queue depth from the instances' recent length (a moving average over ~10 of them)."""
        mean = seconds if self._mean_seconds is None else 0.9 * self._mean_seconds + 0.1 * seconds
        self._mean_seconds = mean
        depth = int(QUEUED_SECONDS / mean) if mean > QUEUED_SECONDS / MAX_DEPTH else MAX_DEPTH
        self._depth = depth if depth > QUEUE_DEPTH else QUEUE_DEPTH

    def _report(self, job: _Job, returncode: int, now: float) -> None:
        job.done = True
        del self._jobs[job.task.key]
        if job.script_file:
            os.unlink(job.script_file)
        self._events.append(Finished(job.task.key, returncode, job.started, now, job.pid,
                                     job.timed_out, job.cancelled))

    # -- stopping tasks -------------------------------------------------------------------------
    def cancel(self, keys: Iterable[int] | None = None) -> None:
        """Terminates running tasks and makes workers skip queued ones; events follow in poll()."""
        jobs = list(self._jobs.values()) if keys is None else [self._jobs[k] for k in keys if k in self._jobs]
        jobs = [job for job in jobs if not job.cancelled]
        for job in jobs:
            job.cancelled = True
        # The skips first: a worker whose running task is killed must already know them when it goes on.
        doorbells: set[_Worker] = set()
        for job in jobs:
            if not job.pid and job.worker.jobs[0] is not job:
                try:
                    os.write(job.worker.cancels, b"%d\n" % job.task.key)
                    doorbells.add(job.worker)
                except BrokenPipeError:
                    pass  # the worker died; _lost() sees the flag
        for worker in doorbells:
            self._wait_ready(worker)
            _signal(worker.pid, signal.SIGUSR1)
        for job in jobs:
            if job.pid:
                self._terminate(job)

    def _wait_ready(self, worker: _Worker) -> None:
        """A worker only just started may not have set its traps yet: read its reports until it has."""
        deadline = time.monotonic() + self._grace
        while not worker.ready and worker in self._workers and time.monotonic() < deadline:
            if select.select([worker.reports], [], [], max(0.0, deadline - time.monotonic()))[0]:
                self._read(worker)

    def _terminate(self, job: _Job) -> None:
        """SIGTERM to the task's process group, SIGKILL after the grace period if it still runs."""
        if not job.signalled:
            job.signalled = True
            if not job.grouped:
                job.worker.signalled_at = time.time()
            _killpg(job.pid, signal.SIGTERM)
            self._timer(time.monotonic() + self._grace, "kill", job)

    def _timer(self, when: float, kind: str, job: _Job) -> None:
        heapq.heappush(self._timers, (when, job.seq, kind, job))
        if len(self._timers) > 64 + 4 * len(self._jobs):  # drop walltimes of finished tasks
            self._timers = [t for t in self._timers if t[2] == "kill" or not t[3].done]
            heapq.heapify(self._timers)

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, kind, job = heapq.heappop(self._timers)
            if kind == "kill":
                if job.grouped or not job.done:  # a finished one's worker group runs another task now
                    if not job.grouped:
                        job.worker.signalled_at = time.time()
                    _killpg(job.pid, signal.SIGKILL)  # also what a finished grouped task left behind
            elif not job.done and not job.signalled:
                job.timed_out = True
                self._terminate(job)

    # -- workers --------------------------------------------------------------------------------
    def _add_worker(self, index: int | None = None) -> _Worker:
        worker = _spawn(self._bash, self._env, self._journal)
        self._selector.register(worker.reports, selectors.EVENT_READ, worker)
        if index is None:
            self._workers.append(worker)
        else:
            self._workers[index] = worker
        self._idle.add(worker)
        return worker

    def _lost(self, worker: _Worker) -> None:
        """A worker died (killed from outside, or by close()): its running task is reported
        killed, its queued one goes to a fresh worker."""
        jobs = list(worker.jobs)
        self._discard(worker)
        if self._closed:
            return
        replacement = self._add_worker(self._workers.index(worker))
        now = time.time()
        for position, job in enumerate(jobs):
            if position == 0 and self._stray(job, -signal.SIGKILL):
                _killpg(job.pid, signal.SIGKILL)
                self._rerun(job)
            elif position == 0 or job.cancelled:
                _killpg(job.pid, signal.SIGKILL)
                job.started = job.started or now
                self._report(job, -signal.SIGKILL if position == 0 else -signal.SIGTERM, now)
            else:
                self._assign(replacement, job, self._command(job))

    def _discard(self, worker: _Worker) -> None:
        self._selector.unregister(worker.reports)
        if worker.commands in self._selector.get_map():
            self._selector.unregister(worker.commands)
        if worker in self._outbox:
            self._outbox.remove(worker)
        if worker.jobs:
            self._reserved -= worker.jobs[0].task.slots
        worker.jobs.clear()
        self._idle.discard(worker)
        self._busy.discard(worker)
        worker.close()

    def close(self) -> None:
        """Stops the workers and terminates whatever instances are still running."""
        if self._closed:
            return
        self._closed = True
        for worker in self._workers:
            worker.proc.kill()
        self._drain()
        running = {job.pid for job in self._jobs.values() if job.pid}
        running |= {job.pid for _, _, kind, job in self._timers if kind == "kill"}
        _end_groups(running, self._grace)
        self._selector.close()
        if self._journal_fd is not None:
            os.close(self._journal_fd)
        if self._scripts_dir:
            shutil.rmtree(self._scripts_dir, ignore_errors=True)

    def _drain(self) -> None:
        """Reads the killed workers' last reports, to learn the pid of every instance they started."""
        deadline = time.monotonic() + self._grace
        while any(worker.socket.fileno() >= 0 for worker in self._workers):
            ready = self._selector.select(max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            for key, _ in ready:
                if key.fd == key.data.reports:
                    self._read(key.data)
                else:
                    self._selector.unregister(key.fd)
                    key.data.unsent.clear()
        for worker in self._workers:
            if worker.socket.fileno() >= 0:
                self._discard(worker)


def _elide_starts(events: list[Started | Finished]) -> list[Started | Finished]:
    """Drops each Started whose task's Finished comes in the same batch: that one says it all,
    and trivial instances start and end between two polls, so half of all events go."""
    ending: set[int] = set()
    kept: list[Started | Finished] = []
    for event in reversed(events):
        if type(event) is Finished:
            ending.add(event.key)
        elif event.key in ending:
            ending.discard(event.key)
            continue
        kept.append(event)
    kept.reverse()
    return kept


def read_journal(path: str) -> dict[int, int]:
    """``{key: exit status}`` of the instances whose end a journal holds (the last entry wins).

    Its lines are the workers' reports; those of a ``d KEY TIME STATUS`` report count.
    """
    statuses: dict[int, int] = {}
    try:
        with open(path, "rb") as stream:
            for line in stream:
                parts = line.split()
                if len(parts) == 4 and parts[0] == b"d" and parts[1].isdigit() and parts[3].isdigit():
                    statuses[int(parts[1])] = int(parts[3])
    except FileNotFoundError:
        pass
    return statuses


def kill_leftovers(pids: Iterable[int] | None, tag: str) -> int:
    """Terminates the process groups of a dead conductor's instances; returns how many.

    A group is only touched when one of its processes carries ``LEGATO_TAG=<tag>:`` in its
    environment, so a pid that has since been reused by an unrelated process is left alone.
    ``pids=None`` looks at every process group: a conductor killed before it recorded an
    instance's pid still leaves that instance findable by its tag.
    """
    wanted = None if pids is None else {int(pid) for pid in pids if pid and int(pid) > 1}
    marker = f"LEGATO_TAG={tag}:".encode()
    groups = {group for group, environs in _group_environs(wanted).items()
              if any(environ.startswith(marker) or b"\0" + marker in environ for environ in environs)}
    _end_groups(groups, GRACE_SECONDS)
    return len(groups)


# -- helpers ------------------------------------------------------------------------------------
def _quote(text: str) -> str:
    """One bash word in ASCII: '...' where possible (line breaks and tabs may stand in it), else
    $'...' with escapes."""
    if text.isascii() and "'" not in text and (text.isprintable() or text.replace("\n", "").replace("\t", "").isprintable()):
        return f"'{text}'"
    if "\0" in text:
        raise LegatoError(f"a NUL character cannot be passed to a shell: {text[:60]!r}")
    return "$'" + text.encode("utf-8", "surrogateescape").decode("latin-1").translate(_ANSI_C) + "'"


def _within(path: str, cwd: str) -> str:
    """Files in the instance's own folder are sent by name: fewer bytes for bash to read."""
    folder, _, name = path.rpartition("/")
    if folder == cwd.rstrip("/"):
        return name
    return path if path.startswith("/") else os.path.abspath(path)


@lru_cache(maxsize=256)
def _redirections(stdout: str, stderr: str) -> str:
    """An instance's files, and the worker's descriptors closed: the same for every instance of a step."""
    return f">{_quote(stdout)} 2>{_quote(stderr)} 3<&- 8<&- 9<&-"


def _returncode(status: int) -> int:
    """Bash reports death by signal N as 128+N; the convention maps it back to -N."""
    return 128 - status if status > 128 and status - 128 in _SIGNALS else status


def _find_bash() -> str:
    bash = "/bin/bash" if os.access("/bin/bash", os.X_OK) else shutil.which("bash")
    if not bash:
        raise LegatoError("bash was not found on PATH; the local executor needs it to run instances")
    return bash


@lru_cache(maxsize=64)
def _is_bash(shell: str, bash: str) -> bool:
    if shell == bash:
        return True
    words = shlex.split(shell)
    found = shutil.which(words[0]) if len(words) == 1 else None
    return found is not None and os.path.realpath(found) == os.path.realpath(bash)


def _spawn(bash: str, env: Mapping[str, str], journal: str) -> _Worker:
    """A worker with commands on 3, its report socket on stdout, the socket's other end on 8 and
    the cancel pipe on 9."""
    commands_r, commands_w = os.pipe()
    cancel_r, cancel_w = os.pipe()
    ours, theirs = socket.socketpair()
    # Above 9, so that moving them to 3, 8 and 9 in the worker cannot overwrite one with another.
    passed = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_r, ours.fileno(), cancel_r)]
    for fd in (commands_r, cancel_r):
        os.close(fd)
    fds = "exec 3<&{0} {0}<&- 8<&{1} {1}<&- 9<&{2} {2}<&-".format(*passed)
    try:
        script = _WORKER.replace("@FDS@", fds).replace("@J@", journal).replace("@PARENT@", str(os.getpid()))
        proc = subprocess.Popen(
            [*_DEATH_SIGNAL, bash, "--norc", "--noprofile", "-c", script], stdin=subprocess.DEVNULL,
            stdout=theirs.fileno(), stderr=subprocess.DEVNULL, pass_fds=passed, env=env, start_new_session=True,
            preexec_fn=None if _DEATH_SIGNAL else _die_with(os.getpid()),
        )
    except OSError as error:
        for fd in (commands_w, cancel_w):
            os.close(fd)
        ours.close()
        raise LegatoError(f"cannot start a worker shell {bash}: {error.strerror}") from None
    finally:
        for fd in passed:
            os.close(fd)
        theirs.close()
    return _Worker(proc, commands_w, ours, cancel_w)


_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None
_DEATH_SIGNAL = [_SETPRIV, "--pdeathsig", "HUP"] if _SETPRIV else []
"""util-linux's setpriv asks the kernel for the worker's death signal, so the worker starts without a Python
function run between fork and exec, which costs the conductor 2-3 ms a worker (0.1 s of a -j 40 start-up);
the worker script itself leaves when its parent died before that (its PPID is no longer the conductor)."""


def _die_with(parent: int) -> Callable[[], None]:
    """Runs in the new worker: the kernel signals it when the conductor dies, even by SIGKILL.

    SIGHUP, not SIGKILL: the worker's trap lets its running instance end and be journaled first.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None

    def arrange() -> None:
        if prctl is not None:
            prctl(1, signal.SIGHUP)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return arrange


def _killpg(pgid: int, sig: int) -> None:
    if pgid > 1:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_environs(groups: set[int] | None) -> dict[int, list[bytes]]:
    """The environments of the live (non-zombie) processes of each wanted process group (None: all)."""
    found: dict[int, list[bytes]] = {}
    if groups is not None and not groups or not os.path.isdir("/proc"):
        return found
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            group = int(fields[2])
            if (groups is not None and group not in groups) or fields[0] == b"Z" or group == os.getpgrp():
                continue
            with open(f"/proc/{entry.name}/environ", "rb") as environ:
                found.setdefault(group, []).append(environ.read())
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked, or is not ours to read
    return found


def _end_groups(groups: set[int], grace: float) -> None:
    """SIGTERM to each group, SIGKILL to those still alive after ``grace`` seconds."""
    for group in groups:
        _killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline:
        time.sleep(0.02)
        groups = set(_group_environs(groups)) if os.path.isdir("/proc") else groups
    for group in groups:
        _killpg(group, signal.SIGKILL)
