"""Running a prepared study folder: taking it over, conducting it, detaching, resuming, cancelling.

One conductor holds a study at a time (a file lock); what a killed conductor left behind
(running instances, cluster jobs, finishes not yet in the store) is found and settled by
the next one, or by ``cancel``.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from legato.errors import LegatoError
from legato.execute.local import read_journal
from legato.prepare import _scheduler_for
from legato import selection
from legato.selection import StepSelection
from legato.store import Store

LOCK_NAME = ".conductor.lock"


LOG_NAME = "conductor.log"


DETACH_WAIT = 60.0  # seconds for a detached conductor to take over its study


@dataclass(frozen=True)
class ClusterOptions:
    """How a study whose spec has a scheduler ``batch`` block uses it.

    Instances go in chunks of ``pack`` to up to ``pilots`` allocations that pull chunks until
    none are left (``job_walltime`` each); ``pilots=0`` makes each chunk a job of its own,
    ``array`` a job array, and ``pack=1`` is Maestro's one job per instance. ``job_cores``
    sizes a job (default: a packed chunk's cores, a pilot this machine's); ``interval`` is
    seconds between scheduler polls (Maestro's ``-s``); ``local`` ignores the scheduler.
    """

    pack: int = 100
    array: bool = False
    job_cores: int | None = None
    pilots: int = 2
    job_walltime: str | None = None
    interval: float = 5.0
    local: bool = False

    @property
    def uses_pilots(self) -> bool:
        return bool(self.pilots) and not self.array and self.pack > 1

    def argv(self) -> list[str]:
        flags = ["--pack", str(self.pack), "-s", str(self.interval), "--pilots", str(self.pilots)]
        flags += ["--array"] if self.array else []
        flags += ["--job-cores", str(self.job_cores)] if self.job_cores else []
        flags += ["--job-walltime", self.job_walltime] if self.job_walltime else []
        return flags + (["--local"] if self.local else [])


def execute(
    root: str | os.PathLike,
    *,
    jobs: int | None = None,
    throttle: int = 0,
    attempts: int = 1,
    detach: bool = False,
    progress: bool = True,
    cluster: ClusterOptions = ClusterOptions(),
    steps: StepSelection = StepSelection(),
):
    """Run (or resume) the study in ``root`` until nothing more can run; returns its ``Outcome``.

    Resuming is the same call: finished instances stay finished, instances an earlier
    conductor left running are killed if still alive and run again. With a scheduler in the
    spec's ``batch`` block, instances run as packed cluster jobs and ``throttle`` caps the
    study's jobs queued or running at once. ``steps`` limits the run to some steps
    (``--only/--from/--until``) and names steps to run again (``--rerun``).
    """
    root = Path(root).absolute()
    if detach:
        return _detach(root, jobs, throttle, attempts, cluster, steps)
    from filelock import FileLock, Timeout

    with Store.of_study(root) as store:
        lock = FileLock(root / LOCK_NAME)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise LegatoError(f"{root}: a conductor is already running this study (see legato status)") from None
        try:
            _hold(store)
            selected, rerun = selection.for_study(store.meta(), steps) if steps or steps.rerun else (None, [])
            scheduler = None if cluster.local else _scheduler(store)
            tag = _claim(store, None if cluster.uses_pilots else scheduler)  # live pilots are adopted, not cancelled
            with _executor(root, scheduler, jobs, throttle, tag, cluster) as executor:
                outcome = _conduct(root, store, executor, 0 if scheduler else throttle, attempts, progress,
                                   selected=selected, rerun=rerun)
            (root / JOURNAL_NAME).unlink(missing_ok=True)  # every finish is in the store now
            store.set_meta(state="cancelled" if outcome.cancelled else ("finished" if outcome.ok else "failed"))
            _write_status_csv(root, store)
            return outcome
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # a full disk: the error being raised says so
                store.set_meta(state="interrupted")  # not 'running': status must not show a dead conductor as alive
            raise
        finally:
            lock.release()


def _hold(store: Store) -> None:
    """Record who holds the study's lock, at once: ``legato cancel`` signals that process, and
    ``legato run --detach`` waits for ``conductor_since`` to know its conductor took over."""
    import socket
    import time

    store.set_meta(conductor_pid=os.getpid(), conductor_host=socket.gethostname(), conductor_since=time.time())


JOURNAL_NAME = ".journal"


def _recover_finished(store: Store) -> None:
    """Instances that finished after the last store write of a killed conductor are not run again.

    The study's journal has the end of every instance the executor learned of, and of those it
    had yet to learn of when it was killed; the store learns of those that succeeded here, then
    the journal starts afresh.
    """
    journal = store.path.parent / JOURNAL_NAME
    recover_finished(store, read_journal(str(journal)))
    journal.unlink(missing_ok=True)


def recover_finished(store: Store, ends: dict[int, int]) -> None:
    """Mark finished the store's unfinished instances that ``ends`` (key -> exit status, from a journal) saw succeed."""
    done = [key for key, status in ends.items() if status == 0]
    unrecorded = {id_ for (id_,) in store.db.execute("SELECT id FROM instances WHERE state IN ('running', 'pending')")}
    store.update_many([{"id": key, "state": "finished", "returncode": 0, "reason": "finished while no conductor watched"}
                       for key in done if key in unrecorded])


def _scheduler(store: Store):
    return _scheduler_for(store.meta().get("batch") or {})


def _executor(root: Path, scheduler, jobs: int | None, throttle: int, tag: str, cluster: ClusterOptions):
    if scheduler is None:
        from legato.execute.local import LocalExecutor

        return LocalExecutor(jobs or os.cpu_count() or 1, tag=tag, journal=str(root / JOURNAL_NAME))
    if cluster.uses_pilots:
        from legato.execute.pilots import PilotExecutor

        return PilotExecutor(scheduler, root / "jobs", pack=cluster.pack, pilots=min(cluster.pilots, throttle or cluster.pilots),
                             job_cores=cluster.job_cores, job_walltime=cluster.job_walltime, interval=cluster.interval)
    from legato.execute.packed import PackedExecutor

    return PackedExecutor(scheduler, root / "jobs", pack=cluster.pack, job_cores=cluster.job_cores, max_jobs=throttle,
                          array=cluster.array, interval=cluster.interval, tag=tag)


def _claim(store: Store, scheduler=None) -> str:
    """Take over the study: stop what a killed conductor left running, and record who runs it now."""
    import uuid

    from legato.execute.local import kill_leftovers

    tag = store.meta().get("tag")
    if tag:  # an earlier conductor ran this study: what it left behind carries its tag
        kill_leftovers(None, tag)  # by tag, not stored pids: a pid may not have been flushed before a kill -9
        _recover_finished(store)
        _cancel_jobs(store, scheduler)
    else:
        tag = uuid.uuid4().hex
    store.set_meta(tag=tag, state="running")
    return tag


def _conduct(root: Path, store: Store, executor, throttle: int, attempts: int, progress: bool, **subset):
    from legato.conductor import Conductor
    from legato.progress import reporter

    show = reporter() if progress else None
    try:
        return Conductor(root, store, executor, throttle=throttle, attempts=attempts, on_progress=show,
                         **subset).run()
    finally:
        if show:
            show.close()


def _cancel_jobs(store: Store, scheduler) -> None:
    """Cluster jobs of unfinished instances left by an earlier conductor: cancelled, their instances rerun."""
    if scheduler is None:
        return
    from legato.execute.pilots import end_pilots

    end_pilots(store.path.parent / "jobs", scheduler)
    jobids = sorted({jobid for (jobid,) in store.db.execute(
        "SELECT DISTINCT jobid FROM instances WHERE jobid IS NOT NULL AND state IN ('pending', 'running')")})
    if jobids:
        scheduler.cancel(jobids)


def _detach(root: Path, jobs: int | None, throttle: int, attempts: int, cluster: ClusterOptions,
            steps: StepSelection):
    """Start the conductor as a background process of this same Python, so PATH does not matter.

    Returns once that conductor holds the study, so that a ``legato cancel`` or ``legato status``
    right after sees it; a conductor that stops with an error first has that error raised here.
    """
    import time

    from filelock import FileLock, Timeout

    from legato.conductor import Outcome

    with Store.of_study(root) as store:  # a clear error now rather than in the log
        probe = FileLock(root / LOCK_NAME)
        try:
            probe.acquire(timeout=0)
        except Timeout:
            raise LegatoError(f"{root}: a conductor is already running this study (see legato status)") from None
        probe.release()
        log_path = root / LOG_NAME
        start, logged = time.time(), log_path.stat().st_size if log_path.exists() else 0
        log = _background(["run", "--resume", str(root), *_execution_argv(jobs, throttle, attempts, cluster),
                           *steps.argv()], log_path)
        while store.meta().get("conductor_since", 0) < start:
            error = _logged_error(log, logged)
            if error or time.time() - start > DETACH_WAIT:
                raise LegatoError(error or f"the background conductor did not take over within {DETACH_WAIT:.0f} s; "
                                           f"see {log}")
            time.sleep(0.05)
    return Outcome(root, {}, 0.0, [], log=log)


def _logged_error(log: Path, offset: int) -> str | None:
    """The one-line error a background ``legato`` wrote to its log after ``offset``, if any."""
    with open(log, "rb") as stream:
        stream.seek(offset)
        for line in stream.read().decode("utf-8", "replace").splitlines():
            if line.startswith("legato: error: "):
                return line.removeprefix("legato: error: ")
    return None


def _execution_argv(jobs: int | None, throttle: int, attempts: int, cluster: ClusterOptions) -> list[str]:
    return ["-t", str(throttle), "-a", str(attempts), *cluster.argv(), *(["-j", str(jobs)] if jobs else [])]


def _background(arguments: list[str], log: Path) -> Path:
    """``python -m legato ARGUMENTS`` in its own session, output appended to ``log``; fails loudly if it dies at once."""
    import subprocess
    import sys
    import time

    with open(log, "ab") as out:
        offset = out.tell()
        process = subprocess.Popen([sys.executable, "-m", "legato", *arguments], stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=out, start_new_session=True)
    time.sleep(0.3)
    if process.poll() not in (None, 0):
        error = _logged_error(log, offset)
        raise LegatoError(error or f"the background process stopped at once (exit {process.returncode}); see {log}")
    return log


def cancel(root: str | os.PathLike, wait: float = 60.0) -> str:
    """Stop the conductor of a study (it terminates its running instances and records them)."""
    root = Path(root).absolute()
    with Store.of_study(root) as store:
        if not _signal_holder(root / LOCK_NAME, lambda: store.meta().get("conductor_pid"), wait):
            return _cancel_orphans(root, store, store.meta())
        meta = store.meta()
        if meta.get("state") not in ("cancelled", "finished", "failed"):
            _cancel_orphans(root, store, meta)  # signalled while starting, it recorded nothing
            store.set_meta(state="cancelled")
        return f"cancelled: the conductor of {root} stopped"


def _signal_holder(lock_path: Path, pid: int | None | Callable[[], int | None], wait: float) -> bool:
    """SIGTERM the process holding ``lock_path`` and wait for it to let go; False if nobody held it.

    ``pid`` may be a function reading it afresh: a conductor records its pid just after taking
    the lock, so for a moment the lock is held and the recorded pid is not yet its own.
    """
    import time

    from filelock import FileLock, Timeout

    lock = FileLock(lock_path)
    deadline = time.monotonic() + wait
    while not _signalled(lock, pid() if callable(pid) else pid):
        if lock.is_locked:
            lock.release()
            return False
        if time.monotonic() > deadline:
            raise LegatoError(f"{lock_path.parent}: the process holding {lock_path.name} recorded no pid")
        time.sleep(0.05)
    try:
        lock.acquire(timeout=max(deadline - time.monotonic(), 1.0))
    except Timeout:
        raise LegatoError(f"{lock_path.parent}: the conductor did not stop within {wait:.0f} s") from None
    lock.release()
    return True


def _signalled(lock, pid: int | None) -> bool:
    """Whether a live holder of ``lock`` was sent SIGTERM; takes the lock instead when nobody holds it."""
    import signal

    from filelock import Timeout

    try:
        lock.acquire(timeout=0)
        return False
    except Timeout:
        pass
    try:
        if pid:
            os.kill(int(pid), signal.SIGTERM)
            return True
    except ProcessLookupError:
        pass  # an earlier holder's pid: the holder has not recorded its own yet
    except PermissionError:
        raise LegatoError(f"the conductor (pid {pid}) belongs to another user") from None
    return False


def _cancel_orphans(root: Path, store: Store, meta: dict) -> str:
    """No conductor is alive: terminate instances a killed one left behind and record them.

    Instances that finished after the killed conductor's last write are taken from the journal
    first, so they stay finished instead of being recorded cancelled and run again.
    """
    from legato.execute.local import kill_leftovers

    killed = kill_leftovers(None, meta["tag"]) if meta.get("tag") else 0
    _recover_finished(store)
    _cancel_jobs(store, _scheduler(store))
    rows = store.db.execute("SELECT id FROM instances WHERE state = 'running'").fetchall()
    store.update_many([{"id": id_, "state": "cancelled", "reason": "cancelled"} for (id_,) in rows])
    if rows or killed or meta.get("state") in ("running", "interrupted"):
        store.set_meta(state="cancelled")  # a finished or failed study keeps its state
    _write_status_csv(root, store)
    return f"no conductor was running {root}; {killed} leftover instance process(es) terminated"


def _write_status_csv(root: Path, store: Store) -> None:
    from legato.status import write_status_csv

    with open(root / "status.csv", "w", newline="") as stream:
        write_status_csv(store, stream)
