"""Preparing a study folder: the spec expanded into instance folders, manifests and the store.

Nothing runs here; ``launch`` runs what this made.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from legato import dependencies, parameters
from legato.errors import LegatoError
from legato.selection import StepSelection
from legato.spec import Spec, load_spec
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
    warnings: tuple[str, ...] = ()  # what runs, but not as a reader of the spec may expect (shared labels)

    @property
    def total(self) -> int:
        return sum(count for _, count in self.steps)


@dataclass
class Planned:
    """A spec accepted and expanded, with where its study folder would go; nothing is on disk yet."""

    spec: Spec
    root: Path
    env: dict[str, str]
    table: parameters.ParameterTable
    plan: StudyPlan
    pgen: str | os.PathLike | None
    layout: str
    fanout: int


def plan_study(
    spec_path: str | os.PathLike,
    *,
    pgen: str | os.PathLike | None = None,
    pargs: Iterable[str] = (),
    out: str | os.PathLike | None = None,
    layout: str = "tree",
    fanout: int = DEFAULT_FANOUT,
    launcher=None,
    table: parameters.ParameterTable | None = None,
) -> Planned:
    """The half of preparing a study that decides whether the spec is acceptable, writing nothing:
    schema and step checks, dependency paths, the pgen, expansion (tokens, depends, resources).
    ``legato validate`` is this plus rendering every instance."""
    spec = load_spec(spec_path)
    parsed = parameters.parse_pargs(pargs)
    if parsed and not pgen:
        raise LegatoError("--pargs needs --pgen (the pargs are arguments of the pgen)")
    root = study_folder(spec.variables.get("OUTPUT_PATH"), spec.name, str(out) if out else None)
    env = study_env(spec, root)
    dependencies.check_paths(spec, env)
    if table is None:
        table = parameters.from_pgen(pgen, env, parsed, spec.raw_variables) if pgen else parameters.from_spec(spec)
    plan = StudyPlan(spec, table, root, layout=layout, fanout=fanout, launcher=launcher or _launcher(spec.batch))
    return Planned(spec, root, env, table, plan, pgen, layout, fanout)


def prepare(
    spec_path: str | os.PathLike,
    *,
    replace: bool = False,
    write_scripts: bool = False,
    steps: StepSelection = StepSelection(),
    **planning,
) -> PreparedStudy:
    """Expand a spec into a study folder: workspace folders, manifests and the store.

    ``planning`` holds ``plan_study``'s keywords: ``pgen``, ``pargs``, ``out``, ``layout``,
    ``fanout``, ``launcher``, ``table``. ``replace`` removes an existing ``out`` folder first
    (Maestro's ``-y``); without it an existing non-empty ``out`` is an error so that no earlier
    results are lost. ``table`` replaces the spec's parameters (a campaign's batch of rows).
    ``steps``, the selection the study will be run with, is checked before any folder is made.
    A spec rejected while its instances are written (a bad launcher) leaves no folder behind.
    """
    planned = plan_study(spec_path, **planning)
    spec, root, table, plan, pgen = planned.spec, planned.root, planned.table, planned.plan, planned.pgen
    step_parents = {step.name: [dep.step for dep in step.parents] for step in plan.steps}
    steps.resolve(step_parents)
    existed = _make_root(root, replace, [spec.path, Path(pgen).absolute() if pgen else None, Path.cwd()])
    try:
        dependencies.acquire_git(spec, planned.env)
        shutil.copy2(spec.path, root / spec.path.name)
        if pgen:
            shutil.copy2(pgen, root / Path(pgen).name)
        with Store.of_study(root, create=True) as store:
            store.set_meta(
                name=spec.name, spec=str(root / spec.path.name), layout=planned.layout, fanout=planned.fanout,
                parameters=table.length, batch=spec.batch, state="preparing", keep_going=list(spec.keep_going),
                step_parents=step_parents,
            )
            _write_plan(plan, store, write_scripts)
            store.set_meta(state="prepared")
    except BaseException:
        _unmake_root(root, existed)
        raise
    return PreparedStudy(root, spec.name, tuple((step.name, step.count) for step in plan.steps), table.length,
                         tuple(plan.warnings))


def _launcher(batch: dict):
    """With a scheduler in the ``batch`` block, ``$(LAUNCHER)`` becomes its launcher (srun, flux run...)."""
    scheduler = _scheduler_for(batch)
    return scheduler.expand_launchers if scheduler else None


def _scheduler_for(batch: dict):
    if str(batch.get("type") or "local").strip().lower() == "local":
        return None  # the common case skips importing the adapters (20 ms of every start-up)
    from legato.schedulers import scheduler_for

    return scheduler_for(batch)


def _make_root(root: Path, replace: bool, keep: list[Path | None]) -> bool:
    """Create the study folder; ``replace`` removes an earlier legato study there, never anything else.

    Returns whether the folder existed (empty) before, so that a failure can put it back that way.
    """
    existed = root.is_dir()
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
    return existed


def _unmake_root(root: Path, existed: bool) -> None:
    shutil.rmtree(root, ignore_errors=True)
    if existed:
        root.mkdir(exist_ok=True)


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
