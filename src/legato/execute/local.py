"""The parallel local executor: long-lived bash workers, one forked subshell per instance.

Starting a fresh process per instance (fork + exec of bash) costs far more than the trivial
instances of a big study, so ``slots`` bash workers are started once. Each reads one line per
instance from its stdin and forks a *subshell* for it in its own process group (``set -m``),
with the instance's folder, files and stdin from /dev/null; ``s SEQ PID`` (from the subshell,
before it runs the script) and ``d SEQ STATUS`` go to the worker's stdout, a pipe only the
conductor reads. Instances never see the command or report pipes, so nothing they print or
read can be mistaken for protocol.

A worker holds several tasks (the running one included), so it starts the next instance the
moment the previous one ends instead of idling through the conductor's round trip. How many
follows the instances' measured length: about ``QUEUED_SECONDS`` of work, between
``QUEUE_DEPTH`` and ``MAX_DEPTH`` tasks. Trivial instances need a deep queue, or the workers
drain it whenever the conductor waits for a core; long ones a shallow one, because a task
queued behind a long one cannot move to an idle worker.
A task is only queued behind one that takes at least as many slots, so the cores in use never
exceed ``slots``. ``free_slots`` therefore answers "how big a task can be accepted now": the
idle cores, or when none are idle, the room in a worker's queue.

Workers go with the conductor (PR_SET_PDEATHSIG on Linux, EOF on their stdin elsewhere): an
idle one at once, a busy one when its instance ends, after journaling it. Instances already
running are left alone and recognised later by their LEGATO_TAG.
"""
from __future__ import annotations

import ctypes
import heapq
import os
import re
import selectors
import shlex
import shutil
import signal
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

# One payload per task, framed as "LENGTH\nTEXT" (ASCII) so that bash reads it in one read()
# instead of byte by byte. TEXT assigns _lg_k (sequence number), _lg_d (folder), _lg_o/_lg_e
# (files), _lg_x (script) and LEGATO_TAG. All set-up happens in the worker before the fork: a
# forked bash pays a page copy for every page it writes. @C@ is the fd of the cancel pipe, which
# carries sequence numbers of queued tasks to skip. The instance runs as a foreground job (its
# own process group, thanks to set -m) and reports its own start, with the done-reports the
# worker held back, before it closes the report pipe; a background job would cost the worker a
# job-table entry and a "Done" notice per instance. A done-report is held back while the
# next payload is already waiting, so that it reaches the conductor with the next start-report.
# The worker appends "KEY STATUS" to the journal (@J@, or /dev/null) as it reaps each instance.
# When the conductor dies the kernel sends the worker SIGTERM; bash runs the trap only once the
# running instance has ended, so that instance is still journaled before the worker leaves.
_WORKER = r"""
set -m
trap _lg_gone=1 TERM
exec {_lg_j}>>@J@ {_lg_q}>&1
_lg_skip=()
_lg_r=
_lg_gone=
while [[ ! $_lg_gone ]] && read -r _lg_n && IFS= read -r -N "$_lg_n" _lg_p; do
    eval "$_lg_p"
    read -t 0 -u @C@ && while read -t 0 -u @C@ && read -r -u @C@ _lg_n; do _lg_skip[_lg_n]=1; done
    if [[ ${_lg_skip[_lg_k]-} ]]; then
        unset "_lg_skip[_lg_k]"
        _lg_r+="k $_lg_k"$'\n'
    elif cd -- "$_lg_d"; then
        ( set +m; echo "${_lg_r}s $_lg_k $BASHPID" >&$_lg_q; exec {_lg_q}>&-; eval "$_lg_x"
        ) </dev/null >"$_lg_o" 2>"$_lg_e" @C@<&- {_lg_j}>&-
        _lg_s=$?
        echo "${LEGATO_TAG##*:} $_lg_s" >&$_lg_j
        _lg_r="d $_lg_k $_lg_s"$'\n'
    else
        _lg_r+="c $_lg_k"$'\n'
    fi
    read -t 0 || { echo -n "$_lg_r"; _lg_r=; }
done
echo -n "$_lg_r"
"""

_SIGNALS = frozenset(int(s) for s in signal.valid_signals())
_PLAIN = re.compile(r"[ -&(-~]*")  # printable ASCII but the single quote
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
    pid: int  # also the process group id of the instance
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
    line: bytes
    worker: _Worker
    script_file: str | None = None
    pid: int = 0
    started: float = 0.0
    done: bool = False
    signalled: bool = False
    timed_out: bool = False
    cancelled: bool = False


class _Worker:
    """One bash process: commands in on stdin, reports out on stdout, skips in on a third pipe."""

    __slots__ = ("proc", "commands", "reports", "cancels", "jobs", "unread", "unsent")

    def __init__(self, proc: subprocess.Popen, cancels: int) -> None:
        self.proc = proc
        self.commands = proc.stdin.fileno()
        self.reports = proc.stdout.fileno()
        self.cancels = cancels
        self.jobs: deque[_Job] = deque()  # the running (or starting) task first
        self.unread = b""
        self.unsent = bytearray()
        os.set_blocking(self.commands, False)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            pipe.close()
        os.close(self.cancels)


class LocalExecutor:
    """Runs tasks on this machine, at most ``slots`` cores' worth at a time."""

    def __init__(self, slots: int, env: Mapping[str, str] | None = None, tag: str = "", *,
                 grace: float = GRACE_SECONDS, journal: str | None = None) -> None:
        """``journal``: a file the workers append ``KEY STATUS`` to as each instance ends, also
        after the conductor was killed, so that a resumed one learns of it (``read_journal``)."""
        if slots < 1:
            raise LegatoError(f"the number of parallel jobs must be at least 1, not {slots}")
        self.slots = slots
        self.tag = tag
        self._grace = grace
        self._bash = _find_bash()
        self._env = {**os.environ, **(env or {}), "LEGATO_TAG": f"{tag}:"}
        self._tag_prefix = " LEGATO_TAG=" + _quote(f"{tag}:")
        if journal:
            try:
                open(journal, "ab").close()
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
        self._jobs: dict[int, _Job] = {}  # by sequence number
        self._by_key: dict[int, _Job] = {}
        self._events: list[Started | Finished] = []
        self._timers: list[tuple[float, int, str, _Job]] = []
        self._seq = 0
        self._scripts_dir: str | None = None
        self._closed = False
        try:
            for _ in range(slots):
                self._add_worker()
        except BaseException:
            self.close()
            raise

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
        return max((worker.jobs[-1].task.slots for worker in self._busy if len(worker.jobs) < self._depth), default=0)

    def submit(self, task: Task) -> None:
        if not 1 <= task.slots <= self.slots:
            raise LegatoError(f"instance {task.key} needs {task.slots} slots; this run has {self.slots} (--jobs)")
        if task.key in self._by_key:
            raise ValueError(f"task {task.key} is already submitted")
        worker = self._place(task.slots)
        self._seq += 1
        job = _Job(self._seq, task, b"", worker)
        job.line = self._line(job)
        self._jobs[job.seq] = job
        self._by_key[task.key] = job
        self._assign(worker, job)

    def _place(self, slots: int) -> _Worker:
        if slots <= self.slots - self._reserved:
            return next(iter(self._idle))
        room = [worker for worker in self._busy if len(worker.jobs) < self._depth and worker.jobs[-1].task.slots >= slots]
        if room:
            return min(room, key=lambda worker: len(worker.jobs))  # the shortest queue: no worker idles early
        raise ValueError(f"no room for a task of {slots} slots (free_slots is {self.free_slots})")

    def _assign(self, worker: _Worker, job: _Job) -> None:
        job.worker = worker
        if not worker.jobs:
            self._idle.discard(worker)
            self._busy.add(worker)
            self._reserved += job.task.slots
        worker.jobs.append(job)
        self._send(worker, job.line)

    def _line(self, job: _Job) -> bytes:
        """The worker's framed payload for one task."""
        task = job.task
        cwd = task.cwd if task.cwd.startswith("/") else os.path.abspath(task.cwd)
        text = (f"_lg_k={job.seq} _lg_d={_quote(cwd)} _lg_o={_quote(_within(task.stdout, task.cwd))}"
                f" _lg_e={_quote(_within(task.stderr, task.cwd))} _lg_x={_quote(self._script(job))}"
                f"{self._tag_prefix}{task.key}")
        return f"{len(text)}\n{text}".encode("ascii")

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
        """Writes without blocking: a worker busy with a long instance reads its queue late."""
        if worker.unsent:
            worker.unsent += data
            return
        try:
            written = os.write(worker.commands, data)
        except BlockingIOError:
            written = 0
        except BrokenPipeError:
            return  # the worker is gone; its EOF on the report pipe resubmits the task
        if written < len(data):
            worker.unsent += data[written:]
            self._selector.register(worker.commands, selectors.EVENT_WRITE, worker)

    def _flush(self, worker: _Worker) -> None:
        try:
            written = os.write(worker.commands, worker.unsent)
        except BlockingIOError:
            return
        except BrokenPipeError:
            written = len(worker.unsent)
        del worker.unsent[:written]
        if not worker.unsent:
            self._selector.unregister(worker.commands)

    # -- events ---------------------------------------------------------------------------------
    def poll(self, timeout: float | None) -> list[Started | Finished]:
        """Events of at least one task, waiting up to ``timeout`` seconds (None: until one comes).

        Returns at once with nothing when no task is in flight, as nothing could come.
        """
        end = None if timeout is None else time.monotonic() + timeout
        if self._stocked():
            time.sleep(COALESCE_SECONDS)  # let reports gather: one wake-up handles many
        while True:
            for key, _ in self._selector.select(self._wait_time(end)):
                if key.fd == key.data.reports:
                    self._read(key.data)
                else:
                    self._flush(key.data)
            self._fire_timers()
            if self._events or not self._jobs or (end is not None and time.monotonic() >= end):
                events, self._events = self._events, []
                return events

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
        data = os.read(worker.reports, 65536)
        if not data:
            self._lost(worker)
            return
        lines = (worker.unread + data).split(b"\n")
        worker.unread = lines.pop()
        now = time.time()
        for line in lines:
            kind, seq, *rest = line.split()
            job = self._jobs[int(seq)]
            if kind == b"s":
                self._on_start(job, int(rest[0]), now)
            elif kind == b"d":
                self._finish(job, _returncode(int(rest[0])), now)
            else:  # k: skipped, cancelled while queued; c: its folder could not be entered
                job.started = now
                self._finish(job, -signal.SIGTERM if kind == b"k" else 1, now)

    def _on_start(self, job: _Job, pid: int, now: float) -> None:
        job.pid, job.started = pid, now
        self._events.append(Started(job.task.key, pid, now))
        if job.cancelled:
            self._terminate(job)
        elif job.task.walltime is not None and job.task.walltime > 0:
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
        self._learn(now - job.started)
        self._report(job, returncode, now)

    def _learn(self, seconds: float) -> None:
        """Queue depth from the instances' recent length (a moving average over ~10 of them)."""
        mean = seconds if self._mean_seconds is None else 0.9 * self._mean_seconds + 0.1 * seconds
        self._mean_seconds = mean
        self._depth = max(QUEUE_DEPTH, min(MAX_DEPTH, int(QUEUED_SECONDS / max(mean, 1e-6))))

    def _report(self, job: _Job, returncode: int, now: float) -> None:
        job.done = True
        del self._jobs[job.seq]
        del self._by_key[job.task.key]
        if job.script_file:
            os.unlink(job.script_file)
        self._events.append(Finished(job.task.key, returncode, job.started, now, job.pid,
                                     job.timed_out, job.cancelled))

    # -- stopping tasks -------------------------------------------------------------------------
    def cancel(self, keys: Iterable[int] | None = None) -> None:
        """Terminates running tasks and makes workers skip queued ones; events follow in poll()."""
        jobs = list(self._jobs.values()) if keys is None else [self._by_key[k] for k in keys if k in self._by_key]
        jobs = [job for job in jobs if not job.cancelled]
        # Queued ones first: a worker whose running task is killed must already know to skip the next.
        for job in sorted(jobs, key=lambda job: bool(job.pid)):
            job.cancelled = True
            if job.pid:
                self._terminate(job)
            else:
                try:
                    os.write(job.worker.cancels, b"%d\n" % job.seq)
                except BrokenPipeError:
                    pass  # the worker died; _lost() sees the flag

    def _terminate(self, job: _Job) -> None:
        if not job.signalled:
            job.signalled = True
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
                _killpg(job.pid, signal.SIGKILL)  # also what a finished task left in its group
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
            if position == 0 or job.cancelled:
                _killpg(job.pid, signal.SIGKILL)
                job.started = job.started or now
                self._report(job, -signal.SIGKILL if position == 0 else -signal.SIGTERM, now)
            else:
                self._assign(replacement, job)

    def _discard(self, worker: _Worker) -> None:
        self._selector.unregister(worker.reports)
        if worker.unsent:
            self._selector.unregister(worker.commands)
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
        if self._scripts_dir:
            shutil.rmtree(self._scripts_dir, ignore_errors=True)

    def _drain(self) -> None:
        """Reads the killed workers' last reports, to learn the pid of every instance they started."""
        deadline = time.monotonic() + self._grace
        while any(worker.proc.stdout and not worker.proc.stdout.closed for worker in self._workers):
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
            if not worker.proc.stdout.closed:
                self._discard(worker)


def read_journal(path: str) -> dict[int, int]:
    """``{key: exit status}`` of the instances that wrote to a journal (the last entry wins)."""
    statuses: dict[int, int] = {}
    try:
        with open(path, "rb") as stream:
            for line in stream:
                parts = line.split()
                if len(parts) == 2 and parts[0].isdigit() and parts[1].lstrip(b"-").isdigit():
                    statuses[int(parts[0])] = int(parts[1])
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
    """One bash word in printable ASCII: '...' where possible, else $'...' with escapes."""
    if _PLAIN.fullmatch(text):
        return f"'{text}'"
    if "\0" in text:
        raise LegatoError(f"a NUL character cannot be passed to a shell: {text[:60]!r}")
    return "$'" + text.encode("utf-8", "surrogateescape").decode("latin-1").translate(_ANSI_C) + "'"


def _within(path: str, cwd: str) -> str:
    """Files in the instance's own folder are sent by name: fewer bytes for bash to read."""
    if os.path.dirname(path) == cwd.rstrip("/"):
        return os.path.basename(path)
    return path if path.startswith("/") else os.path.abspath(path)


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
    cancel_r, cancel_w = os.pipe()
    try:
        proc = subprocess.Popen(
            [bash, "--norc", "--noprofile", "-c", _WORKER.replace("@C@", str(cancel_r)).replace("@J@", journal)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, pass_fds=(cancel_r,),
            env=env, start_new_session=True, preexec_fn=_die_with(os.getpid()),
        )
    except OSError as error:
        os.close(cancel_w)
        raise LegatoError(f"cannot start a worker shell {bash}: {error.strerror}") from None
    finally:
        os.close(cancel_r)
    return _Worker(proc, cancel_w)


def _die_with(parent: int) -> Callable[[], None]:
    """Runs in the new worker: the kernel signals it when the conductor dies, even by SIGKILL.

    SIGTERM, not SIGKILL: the worker's trap lets its running instance end and be journaled first.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None

    def arrange() -> None:
        if prctl is not None:
            prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return arrange


def _killpg(pgid: int, sig: int) -> None:
    if pgid > 1:
        try:
            os.killpg(pgid, sig)
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
