"""The Python API: everything the ``legato`` command does, callable from Python.

    from legato import api
    study = api.prepare("study.yaml", pgen="gen.py", pargs=["CSV:params.csv"], dry=True)
    print(study.root, study.total)
"""
from __future__ import annotations

import json
import os
import shutil
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
    """Stream instances into the store and onto disk, a chunk per transaction."""
    with store.transaction():
        for position, step in enumerate(plan.steps):
            store.add_step(step.name, position, step.first_id, step.count, step.funnel_parents, step.layout.step)
    chunk: list[tuple] = []
    for instance in plan.instances():
        folder = plan.root / instance.workspace
        _mkdir(folder)
        if write_scripts:
            (folder / f"{instance.step}.sh").write_text("#!/bin/bash\n" + instance.script + "\n")
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


def _mkdir(folder: Path) -> None:
    """One mkdir per instance folder; parents (step and bucket folders) are made once."""
    try:
        folder.mkdir()
    except FileNotFoundError:
        folder.mkdir(parents=True)
    except FileExistsError:
        if not folder.is_dir():
            raise LegatoError(f"{folder}: exists and is not a folder") from None
    except OSError as exc:
        raise LegatoError(f"{folder}: cannot create the instance folder: {exc.strerror}") from None
