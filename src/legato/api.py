"""The Python API: everything the ``legato`` command does, callable from Python.

    from legato import api
    study = api.prepare("study.yaml", pgen="gen.py", pargs=["CSV:params.csv"], dry=True)
    print(study.root, study.total)
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

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
) -> PreparedStudy:
    """Expand a spec into a study folder: workspace folders, manifests and the store.

    ``replace`` removes an existing ``out`` folder first (Maestro's ``-y``); without it an
    existing non-empty ``out`` is an error so that no earlier results are lost.
    """
    spec = load_spec(spec_path)
    pargs = parameters.parse_pargs(pargs)
    if pargs and not pgen:
        raise LegatoError("--pargs needs --pgen (the pargs are arguments of the pgen)")
    root = study_folder(spec.variables.get("OUTPUT_PATH"), spec.name, str(out) if out else None)
    table = (
        parameters.from_pgen(pgen, study_env(spec, root), pargs) if pgen else parameters.from_spec(spec)
    )
    plan = StudyPlan(spec, table, root, layout=layout, fanout=fanout, launcher=launcher)
    _make_root(root, replace)
    shutil.copy2(spec.path, root / spec.path.name)
    if pgen:
        shutil.copy2(pgen, root / Path(pgen).name)
    with Store.of_study(root, create=True) as store:
        store.set_meta(
            name=spec.name, spec=str(root / spec.path.name), layout=layout, fanout=fanout,
            parameters=table.length, batch=spec.batch, state="prepared",
        )
        _write_plan(plan, store, write_scripts)
    return PreparedStudy(root, spec.name, tuple((step.name, step.count) for step in plan.steps), table.length)


def _make_root(root: Path, replace: bool) -> None:
    if root.exists() and any(root.iterdir()):
        if not replace:
            raise LegatoError(f"{root}: the study folder exists and is not empty (use -y to replace it)")
        shutil.rmtree(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LegatoError(f"{root}: cannot create the study folder: {exc.strerror}") from None


def _write_plan(plan: StudyPlan, store: Store, write_scripts: bool) -> None:
    """Stream instances into the store, a chunk per transaction, while a thread makes their folders.

    mkdir releases the GIL, so folder creation (the floor of a dry run) overlaps with
    rendering scripts and writing the store instead of adding to them.
    """
    with store.transaction():
        for position, step in enumerate(plan.steps):
            store.add_step(step.name, position, step.first_id, step.count, step.funnel_parents, step.layout.step)
    with _FolderMaker() as folders:
        chunk: list[tuple] = []
        for instance in plan.instances():
            folders.make(f"{plan.root}/{instance.workspace}", instance if write_scripts else None)
            chunk.append((
                instance.id, instance.step, instance.label, instance.workspace,
                json.dumps(instance.params) if instance.params else None, instance.script, instance.restart,
                json.dumps(instance.resources) if instance.resources else None,
                json.dumps(instance.parents) if instance.parents else None,
            ))
            if len(chunk) >= _CHUNK:
                with store.transaction():
                    store.add_instances(chunk)
                chunk.clear()
        with store.transaction():
            store.add_instances(chunk)
    for step in plan.steps:
        if step.params:
            (plan.root / step.layout.step / MANIFEST).write_text("".join(f"{path}\n" for path in plan.manifest(step)))


class _FolderMaker:
    """A background thread that makes instance folders (and, for debugging, writes their scripts)."""

    def __init__(self) -> None:
        import queue
        import threading

        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.error: LegatoError | None = None
        self.thread = threading.Thread(target=self._work, daemon=True)

    def __enter__(self) -> "_FolderMaker":
        self.interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-4)  # hand the GIL back to the mkdir thread promptly after each mkdir
        self.thread.start()
        return self

    def make(self, folder: str, instance=None) -> None:
        if self.error:
            raise self.error
        self.queue.put((folder, instance))

    def __exit__(self, *exc) -> None:
        self.queue.put(None)
        self.thread.join()
        sys.setswitchinterval(self.interval)
        if self.error and not exc[0]:
            raise self.error

    def _work(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error:
                continue
            folder, instance = item
            try:
                _mkdir(folder)
                if instance is not None:
                    Path(folder, f"{instance.step}.sh").write_text("#!/bin/bash\n" + instance.script + "\n")
            except LegatoError as error:
                self.error = error
            except OSError as exc:
                self.error = LegatoError(f"{folder}: cannot write: {exc.strerror}")


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


def execute(
    root: str | os.PathLike,
    *,
    jobs: int | None = None,
    throttle: int = 0,
    attempts: int = 1,
    detach: bool = False,
    progress: bool = True,
):
    """Run (or resume) the study in ``root`` until nothing more can run; returns its ``Outcome``.

    Resuming is the same call: finished instances stay finished, instances an earlier
    conductor left running are killed if still alive and run again.
    """
    root = Path(root).absolute()
    if detach:
        return _detach(root, jobs, throttle, attempts)
    from filelock import FileLock, Timeout

    from legato.execute.local import LocalExecutor

    with Store.of_study(root) as store:
        lock = FileLock(root / LOCK_NAME)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise LegatoError(f"{root}: a conductor is already running this study (see legato status)") from None
        try:
            tag = _claim(store)
            with LocalExecutor(jobs or os.cpu_count() or 1, tag=tag) as executor:
                outcome = _conduct(root, store, executor, throttle, attempts, progress)
            store.set_meta(state="cancelled" if outcome.cancelled else ("finished" if outcome.ok else "failed"))
            _write_status_csv(root, store)
            return outcome
        finally:
            lock.release()


def _claim(store: Store) -> str:
    """Take over the study: kill what a killed conductor left running, and record who runs it now."""
    import uuid

    from legato.execute.local import kill_leftovers

    meta = store.meta()
    tag = meta.get("tag") or uuid.uuid4().hex
    leftovers = [row[0] for row in store.db.execute("SELECT pid FROM instances WHERE state = 'running' AND pid IS NOT NULL")]
    kill_leftovers(leftovers, tag)
    store.set_meta(tag=tag, state="running", conductor_pid=os.getpid())
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


def _detach(root: Path, jobs: int | None, throttle: int, attempts: int):
    """Start the conductor as a background process of this same Python, so PATH does not matter."""
    import subprocess
    import sys
    import time

    from legato.conductor import Outcome

    Store.of_study(root).close()  # a clear error now rather than in the log
    argv = [sys.executable, "-m", "legato", "run", "--resume", str(root), "-t", str(throttle), "-a", str(attempts)]
    if jobs:
        argv += ["-j", str(jobs)]
    log = root / LOG_NAME
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    time.sleep(0.3)
    if process.poll() not in (None, 0):
        raise LegatoError(f"the background conductor stopped at once (exit {process.returncode}); see {log}")
    return Outcome(root, {}, 0.0, [], log=log)


def cancel(root: str | os.PathLike, wait: float = 60.0) -> str:
    """Stop the study's conductor (it terminates its running instances and records them)."""
    import signal
    import time

    from filelock import FileLock, Timeout

    root = Path(root).absolute()
    with Store.of_study(root) as store:
        meta = store.meta()
        lock = FileLock(root / LOCK_NAME)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            os.kill(int(meta["conductor_pid"]), signal.SIGTERM)
            try:
                lock.acquire(timeout=wait)
            except Timeout:
                raise LegatoError(f"{root}: the conductor did not stop within {wait:.0f} s") from None
            lock.release()
            return f"cancelled: the conductor of {root} stopped"
        try:
            return _cancel_orphans(root, store, meta)
        finally:
            lock.release()


def _cancel_orphans(root: Path, store: Store, meta: dict) -> str:
    """No conductor is alive: terminate instances a killed one left behind and record them."""
    from legato.execute.local import kill_leftovers

    rows = store.db.execute("SELECT id, pid FROM instances WHERE state = 'running'").fetchall()
    killed = kill_leftovers([pid for _, pid in rows if pid], meta.get("tag", ""))
    store.update_many([{"id": id_, "state": "cancelled", "reason": "cancelled"} for id_, _ in rows])
    store.set_meta(state="cancelled")
    _write_status_csv(root, store)
    return f"no conductor was running {root}; {killed} leftover instance process(es) terminated"


def _write_status_csv(root: Path, store: Store) -> None:
    from legato.status import write_status_csv

    with open(root / "status.csv", "w", newline="") as stream:
        write_status_csv(store, stream)
