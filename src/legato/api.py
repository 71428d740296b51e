"""The Python API: everything the ``legato`` command does, callable from Python.

    from legato import api
    study = api.prepare("study.yaml", pgen="gen.py", pargs=["CSV:params.csv"])
    print(study.root, study.total)
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from legato import parameters
from legato.errors import LegatoError
from legato.spec import load_spec
from legato.store import Store
from legato.study import StudyPlan, study_env
from legato.workspace import DEFAULT_FANOUT, MANIFEST, study_folder

_CHUNK = 5000


@dataclass(frozen=True)
class PreparedStudy:
    """A study folder with its store and workspace built; nothing has run yet."""

    root: Path
    name: str
    steps: tuple[tuple[str, int], ...]  # (step, instances) in run order
    parameters: int  # combinations in the parameter table

    @property
    def total(self) -> int:
        return sum(count for _, count in self.steps)


def prepare(
    spec_path: str | os.PathLike,
    *,
    pgen: str | os.PathLike | None = None,
    pargs: Iterable[str] = (),
    out: str | os.PathLike | None = None,
    layout: str = "tree",
    fanout: int = DEFAULT_FANOUT,
    replace: bool = False,
    write_scripts: bool = False,
    launcher=None,
    table: parameters.ParameterTable | None = None,
) -> PreparedStudy:
    """Expand a spec into a study folder: workspace folders, manifests and the store.

    ``replace`` removes an existing ``out`` folder first (Maestro's ``-y``); without it an
    existing non-empty ``out`` is an error so that no earlier results are lost. ``table``
    replaces the spec's parameters (a campaign's batch of rows).
    """
    spec = load_spec(spec_path)
    pargs = parameters.parse_pargs(pargs)
    if pargs and not pgen:
        raise LegatoError("--pargs needs --pgen (the pargs are arguments of the pgen)")
    root = study_folder(spec.variables.get("OUTPUT_PATH"), spec.name, str(out) if out else None)
    if table is None:
        table = parameters.from_pgen(pgen, study_env(spec, root), pargs) if pgen else parameters.from_spec(spec)
    plan = StudyPlan(spec, table, root, layout=layout, fanout=fanout, launcher=launcher or _launcher(spec.batch))
    _make_root(root, replace, [spec.path, Path(pgen).absolute() if pgen else None, Path.cwd()])
    shutil.copy2(spec.path, root / spec.path.name)
    if pgen:
        shutil.copy2(pgen, root / Path(pgen).name)
    with Store.of_study(root, create=True) as store:
        store.set_meta(
            name=spec.name, spec=str(root / spec.path.name), layout=layout, fanout=fanout,
            parameters=table.length, batch=spec.batch, state="preparing",
        )
        _write_plan(plan, store, write_scripts)
        store.set_meta(state="prepared")
    return PreparedStudy(root, spec.name, tuple((step.name, step.count) for step in plan.steps), table.length)


def _launcher(batch: dict):
    """With a scheduler in the ``batch`` block, ``$(LAUNCHER)`` becomes its launcher (srun, flux run...)."""
    scheduler = _scheduler_for(batch)
    return scheduler.expand_launchers if scheduler else None


def _scheduler_for(batch: dict):
    if str(batch.get("type") or "local").strip().lower() == "local":
        return None  # the common case skips importing the adapters (20 ms of every start-up)
    from legato.schedulers import scheduler_for

    return scheduler_for(batch)


def _make_root(root: Path, replace: bool, keep: list[Path | None]) -> None:
    """Create the study folder; ``replace`` removes an earlier legato study there, never anything else."""
    if root.exists() and any(root.iterdir()):
        if not replace:
            raise LegatoError(f"{root}: the study folder exists and is not empty (use -y to replace it)")
        if not (root / "legato.db").is_file():
            raise LegatoError(f"{root}: not replacing a folder that is not a legato study folder")
        inside = [path for path in keep if path and (path == root or root in path.parents)]
        if inside:
            raise LegatoError(f"{root}: not replacing a folder that holds {inside[0]}")
        shutil.rmtree(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LegatoError(f"{root}: cannot create the study folder: {exc.strerror}") from None


def _write_plan(plan: StudyPlan, store: Store, write_scripts: bool) -> None:
    """Stream instances into the store, in one transaction, while a child process makes their folders.

    Making one folder per instance is the floor of a dry run; done by a second process it
    overlaps with rendering scripts and filling the store instead of adding to them. One
    commit, made while the child still works through the last folders: a commit per chunk
    would stall the parent, and with it the names the child waits for.
    """
    root = str(plan.root)
    with _FolderMaker(inline=write_scripts) as folders, _Manifests(plan) as manifests, store.transaction():
        for position, step in enumerate(plan.steps):
            store.add_step(step.name, position, step.first_id, step.count, step.funnel_parents, step.layout.step)
        store.add_parameters(plan.table.values, plan.table.index)
        chunk: list[tuple] = []
        for instance in plan.instances():
            folder = f"{root}/{instance.workspace}"
            folders.make(folder)
            if write_scripts:
                Path(folder, f"{instance.step}.sh").write_text("#!/bin/bash\n" + instance.script + "\n")
            manifests.add(instance.step, folder)
            chunk.append((
                instance.id, instance.step, instance.label, instance.row, instance.workspace,
                json.dumps(instance.params) if instance.params else None, instance.script, instance.restart,
                json.dumps(instance.resources) if instance.resources else None,
                json.dumps(instance.parents) if instance.parents else None,
            ))
            if len(chunk) >= _CHUNK:
                store.add_instances(chunk)
                chunk.clear()
        store.add_instances(chunk)
        folders.send()  # the last names go to the child before the commit


class _Manifests:
    """``<step>/instances.txt`` of each parameterized step, written as its instances stream past."""

    def __init__(self, plan: StudyPlan) -> None:
        self.paths = {step.name: plan.root / step.layout.step / MANIFEST for step in plan.steps if step.params}
        self.step: str | None = None
        self.lines: list[str] = []

    def __enter__(self) -> "_Manifests":
        for path in self.paths.values():
            path.parent.mkdir(parents=True, exist_ok=True)
        return self

    def add(self, step: str, folder: str) -> None:
        if step != self.step:
            self._write()
            self.step = step
        if step in self.paths:
            self.lines.append(folder)

    def _write(self) -> None:
        if self.step in self.paths:
            self.paths[self.step].write_text("".join(f"{line}\n" for line in self.lines))
        self.lines = []

    def __exit__(self, *exc) -> None:
        self._write()
        for name, path in self.paths.items():
            if not path.exists():
                path.write_text("")  # a step whose parameters have no values: an empty list


class _FolderMaker:
    """Makes instance folders in a forked child process fed through a pipe (or inline when asked)."""

    _BATCH = 512

    def __init__(self, inline: bool = False) -> None:
        self.inline = inline
        self.pending: list[str] = []

    def __enter__(self) -> "_FolderMaker":
        if self.inline:
            return self
        names_r, self.names = os.pipe()
        self.errors, errors_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: make every folder it is sent, report the first failure
            os.close(self.names)
            os.close(self.errors)
            os._exit(_make_folders(names_r, errors_w))
        os.close(names_r)
        os.close(errors_w)
        return self

    def make(self, folder: str) -> None:
        if self.inline:
            _mkdir(folder)
            return
        self.pending.append(folder)
        if len(self.pending) >= self._BATCH:
            self.send()

    def send(self) -> None:
        """Hands the names made so far to the child."""
        if not self.pending:
            return
        data = ("\0".join(self.pending) + "\0").encode("utf-8", "surrogateescape")
        self.pending.clear()
        try:
            _write_all(self.names, data)  # a signal may cut a write short
        except BrokenPipeError:
            pass  # the child stopped on an error; __exit__ reports it

    def __exit__(self, *exc) -> None:
        if self.inline:
            return
        self.send()
        os.close(self.names)
        os.waitpid(self.pid, 0)
        with os.fdopen(self.errors, "rb") as stream:
            message = stream.read().decode("utf-8", "replace")
        if message and not exc[0]:
            raise LegatoError(message)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _make_folders(names: int, errors: int) -> int:
    """The folder-making child's whole life; it must never return into the parent's code."""
    try:
        with os.fdopen(names, "rb") as stream:
            buffer = b""
            while block := stream.read(1 << 16):
                buffer += block
                *folders, buffer = buffer.split(b"\0")
                for folder in folders:
                    _mkdir(folder.decode("utf-8", "surrogateescape"))
        return 0
    except LegatoError as error:
        os.write(errors, str(error).encode())
        return 1
    except BaseException as error:  # noqa: BLE001  (reported to the parent, which raises it)
        os.write(errors, f"cannot create instance folders: {error}".encode())
        return 1


def _mkdir(folder: str) -> None:
    """One mkdir per instance folder; parents (step and bucket folders) are made when missing."""
    try:
        os.mkdir(folder)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
    except FileExistsError:
        if not os.path.isdir(folder):
            raise LegatoError(f"{folder}: exists and is not a folder") from None
    except OSError as exc:
        raise LegatoError(f"{folder}: cannot create the instance folder: {exc.strerror}") from None


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
):
    """Run (or resume) the study in ``root`` until nothing more can run; returns its ``Outcome``.

    Resuming is the same call: finished instances stay finished, instances an earlier
    conductor left running are killed if still alive and run again. With a scheduler in the
    spec's ``batch`` block, instances run as packed cluster jobs and ``throttle`` caps the
    study's jobs queued or running at once.
    """
    root = Path(root).absolute()
    if detach:
        return _detach(root, jobs, throttle, attempts, cluster)
    from filelock import FileLock, Timeout

    with Store.of_study(root) as store:
        lock = FileLock(root / LOCK_NAME)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise LegatoError(f"{root}: a conductor is already running this study (see legato status)") from None
        try:
            _hold(store)
            scheduler = None if cluster.local else _scheduler(store)
            tag = _claim(store, None if cluster.uses_pilots else scheduler)  # live pilots are adopted, not cancelled
            with _executor(root, scheduler, jobs, throttle, tag, cluster) as executor:
                outcome = _conduct(root, store, executor, 0 if scheduler else throttle, attempts, progress)
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
    from legato.execute.local import read_journal

    journal = store.path.parent / JOURNAL_NAME
    done = [key for key, status in read_journal(str(journal)).items() if status == 0]
    unrecorded = {id_ for (id_,) in store.db.execute("SELECT id FROM instances WHERE state IN ('running', 'pending')")}
    store.update_many([{"id": key, "state": "finished", "returncode": 0, "reason": "finished while no conductor watched"}
                       for key in done if key in unrecorded])
    journal.unlink(missing_ok=True)


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


def _conduct(root: Path, store: Store, executor, throttle: int, attempts: int, progress: bool):
    from legato.conductor import Conductor
    from legato.progress import reporter

    show = reporter() if progress else None
    try:
        return Conductor(root, store, executor, throttle=throttle, attempts=attempts, on_progress=show).run()
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


def _detach(root: Path, jobs: int | None, throttle: int, attempts: int, cluster: ClusterOptions):
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
        log = _background(["run", "--resume", str(root), *_execution_argv(jobs, throttle, attempts, cluster)], log_path)
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
    """Stop the conductor of a study or campaign (it terminates its running instances and records them)."""
    root = Path(root).absolute()
    if (root / "campaign.db").is_file():
        return _cancel_campaign(root, wait)
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


def _cancel_campaign(folder: Path, wait: float) -> str:
    from legato.campaign import Ledger

    ledger = Ledger(folder)
    try:
        pid = ledger.get("pid")
        running = [b for b in ledger.batches(unfinished=True)]
    finally:
        ledger.close()
    if _signal_holder(folder / CAMPAIGN_LOCK, pid, wait):
        return f"cancelled: the campaign in {folder} stopped; continue it with: legato batch --resume {folder}"
    for batch in running:
        if (batch.study / "legato.db").is_file():
            cancel(batch.study, wait)
    return f"no campaign process was running {folder}"


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


CAMPAIGN_LOCK = ".campaign.lock"


def batch(options, *, out: str | os.PathLike | None = None, execution: dict | None = None, detach: bool = False,
          log=print):
    """Start a batch campaign (``legato batch``): returns its ``CampaignOutcome``.

    ``execution`` holds ``execute``'s keywords (jobs, throttle, attempts, cluster) for every batch.
    """
    from dataclasses import replace as with_changes

    from legato.campaign import Ledger, save_options

    spec = load_spec(options.spec)
    folder = study_folder(spec.variables.get("OUTPUT_PATH"), spec.name, str(out) if out else None)
    if folder.exists() and any(folder.iterdir()):
        raise LegatoError(f"{folder}: the campaign folder exists and is not empty (resume it with: legato batch --resume {folder})")
    options = with_changes(
        options, spec=str(spec.path), pgen=_absolute(options.pgen), rows=_absolute_rows(options.rows),
        archive=_absolute(options.archive),
    )
    if options.pgen is None and options.rows is None:
        raise LegatoError("legato batch needs rows: --rows SOURCE (CSV file or SQL URL) or --pgen FILE")
    if options.pgen and not Path(options.pgen).is_file():
        raise LegatoError(f"{options.pgen}: no such pgen file")
    _check_campaign_inputs(spec, options)
    folder.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(folder, create=True)
    save_options(ledger, options)
    ledger.set(name=spec.name, state="running")
    ledger.close()
    if detach:
        return _detach_campaign(folder, execution or {})
    return resume_batch(folder, execution=execution, log=log)


def _detach_campaign(folder: Path, execution: dict):
    """The campaign driver in the background (on a login node it outlives the terminal)."""
    from legato.campaign import CampaignOutcome

    argv = _execution_argv(execution.get("jobs"), execution.get("throttle", 0), execution.get("attempts", 1),
                           execution.get("cluster", ClusterOptions()))
    log = _background(["batch", "--resume", str(folder), *argv], folder / "campaign.log")
    return CampaignOutcome(folder, 0, 0, 0, 0.0, log=log)


def _check_campaign_inputs(spec, options) -> None:
    """Refuse bad rows or result declarations before a campaign folder exists, so a typo leaves nothing."""
    from legato.campaign import _result_files

    _result_files(spec, options.result_files)
    if options.rows:
        from legato.rows import open_rows

        open_rows(options.rows, options.index).close()


def resume_batch(folder: str | os.PathLike, *, execution: dict | None = None, retry_failed: bool = False,
                 guard: dict | None = None, detach: bool = False, log=print):
    """Continue a campaign exactly where it stopped; ``guard`` may lower min_free/min_inodes."""
    if detach:
        if retry_failed or guard:
            raise LegatoError("--detach with --resume takes no --retry-failed, --min-free or --min-inodes")
        from legato.campaign import Ledger

        Ledger(Path(folder).absolute()).close()  # a clear error now rather than in the log
        return _detach_campaign(Path(folder).absolute(), execution or {})
    from filelock import FileLock, Timeout

    from legato.campaign import Campaign, Ledger, options_of

    folder = Path(folder).absolute()
    ledger = Ledger(folder)
    lock = FileLock(folder / CAMPAIGN_LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        ledger.close()
        raise LegatoError(f"{folder}: the campaign is already running (see legato status {folder})") from None
    cwd = os.getcwd()
    try:
        options = options_of(ledger)
        if guard:
            from dataclasses import replace as with_changes

            from legato.campaign import save_options

            options = with_changes(options, **guard)
            save_options(ledger, options)
        os.chdir(options.cwd)  # relative paths in pargs (a pgen's CSV) mean what they meant at the start
        ledger.set(pid=os.getpid(), state="running")
        outcome = Campaign(folder, options, ledger, execution, log).run(retry_failed)
        ledger.set(state="finished" if outcome.ok else ("stopped" if outcome.stopped else "failed"))
        return outcome
    finally:
        os.chdir(cwd)
        ledger.close()
        lock.release()


def _absolute(path: str | None) -> str | None:
    return str(Path(path).absolute()) if path else None


def _absolute_rows(rows: str | None) -> str | None:
    """A CSV path is made absolute; a URL is kept as given (sqlite:/// paths resolve from the start folder)."""
    return rows if rows is None or "://" in rows else _absolute(rows)


def export_results(folder: str | os.PathLike, path: str, fmt: str) -> int:
    """Write a campaign's results (the rows its harvests committed) as CSV or Parquet."""
    from legato.campaign import Ledger, options_of
    from legato.harvest import ResultSink

    folder = Path(folder).absolute()
    ledger = Ledger(folder)
    try:
        url = options_of(ledger).results or f"sqlite:///{folder / 'results.db'}"
    finally:
        ledger.close()
    sink = ResultSink(url)
    try:
        return sink.export(folder.name, path, fmt)
    finally:
        sink.close()


def archive_list(folder: str | os.PathLike, label: str | None = None) -> list[str]:
    """Each archive with its size and instance count, or the files one instance left in its archive."""
    from legato.archive import list_members
    from legato.diskguard import human_size

    if label is None:
        return [f"{archive}  {human_size(size or 0)}  {members} members  (batch {number})"
                for number, archive, size, members in _ledger_rows(
                    folder, "SELECT number, archive, archive_bytes, members FROM batches WHERE archive IS NOT NULL ORDER BY number")]
    archive, workspace = _locate(folder, label)
    return [f"{size:>12}  {name}" for name, size in list_members(archive, workspace + "/")]


def archive_get(folder: str | os.PathLike, label: str, file: str | None, dest: str) -> list[str]:
    """Extract one instance's folder (or one file of it) from its batch archive into ``dest``."""
    from legato.archive import extract

    archive, workspace = _locate(folder, label)
    written = extract(archive, f"{workspace}/{file}" if file else f"{workspace}/", dest)
    if not written:
        raise LegatoError(f"{label}: no {file!r} in its archive {archive}" if file else f"{label}: nothing archived")
    return written


def _locate(folder: str | os.PathLike, label: str) -> tuple[str, str]:
    """``LABEL`` or ``STEP/LABEL`` -> (archive path, workspace inside it), using the ledger."""
    step, _, name = label.rpartition("/")
    sql = ("SELECT DISTINCT b.archive, i.workspace, i.step, b.number FROM instances i JOIN batches b ON b.number = i.batch "
           "WHERE i.label = ? AND i.state != 'retried'" + (" AND i.step = ?" if step else ""))
    matches = _ledger_rows(folder, sql, (name, step) if step else (name,))
    if not matches:
        raise LegatoError(f"{label}: no such instance in {folder}")
    if len(matches) > 1:
        where = ", ".join(f"{s}/{name} in batch {n}" for _, _, s, n in matches[:5])
        raise LegatoError(f"{label}: several instances match ({where}); name it as STEP/LABEL")
    archive, workspace, _, number = matches[0]
    if not archive:
        raise LegatoError(f"{label}: batch {number} has no archive (--no-archive, or not archived yet)")
    return archive, workspace


def _ledger_rows(folder: str | os.PathLike, sql: str, args: tuple = ()) -> list[tuple]:
    from legato.campaign import Ledger

    ledger = Ledger(Path(folder).absolute())
    try:
        return ledger.db.execute(sql, args).fetchall()
    finally:
        ledger.close()
