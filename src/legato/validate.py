"""Everything a dry run checks, without writing anything: ``legato validate`` and the first half of ``prepare``.

``plan_study`` is the part of preparing a study that decides whether the spec is acceptable:
schema and step checks, dependency paths, the pgen, expansion (tokens, depends, resources).
``prepare`` calls it before it makes any folder; ``validate`` calls it and then renders every
instance (launcher forms and budgets) and asks each git dependency's remote whether it answers,
and reports instead of raising: the first error, naming the file and the key path or step, and
the warnings (labels that several parameter combinations share).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from legato import dependencies, parameters
from legato.errors import LegatoError
from legato.spec import Spec, load_spec
from legato.study import StudyPlan, study_env
from legato.workspace import DEFAULT_FANOUT, study_folder


def scheduler_of(batch: dict[str, Any]):
    """The scheduler adapter a ``batch`` block names, or None for a local study."""
    if str(batch.get("type") or "local").strip().lower() == "local":
        return None  # the common case skips importing the adapters (20 ms of every start-up)
    from legato.schedulers import scheduler_for

    return scheduler_for(batch)


def launcher_for(batch: dict[str, Any]):
    """With a scheduler in the ``batch`` block, ``$(LAUNCHER)`` becomes its launcher (srun, flux run...)."""
    scheduler = scheduler_of(batch)
    return scheduler.expand_launchers if scheduler else None


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
    spec = load_spec(spec_path)
    parsed = parameters.parse_pargs(pargs)
    if parsed and not pgen:
        raise LegatoError("--pargs needs --pgen (the pargs are arguments of the pgen)")
    root = study_folder(spec.variables.get("OUTPUT_PATH"), spec.name, str(out) if out else None)
    env = study_env(spec, root)
    dependencies.check_paths(spec, env)
    if table is None:
        table = parameters.from_pgen(pgen, env, parsed, spec.raw_variables) if pgen else parameters.from_spec(spec)
    plan = StudyPlan(spec, table, root, layout=layout, fanout=fanout, launcher=launcher or launcher_for(spec.batch))
    return Planned(spec, root, env, table, plan, pgen, layout, fanout)


@dataclass
class Report:
    """What ``legato validate`` found: ``errors`` empty means a dry run would accept the spec."""

    spec: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    steps: dict[str, int] = field(default_factory=dict)
    parameters: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "valid": self.ok, "errors": self.errors, "warnings": self.warnings,
                "steps": self.steps, "instances": sum(self.steps.values()), "parameters": self.parameters}


def validate(spec_path: str | os.PathLike, *, pgen: str | os.PathLike | None = None, pargs: Iterable[str] = ()) -> Report:
    report = Report(str(spec_path))
    try:
        planned = plan_study(spec_path, pgen=pgen, pargs=pargs, layout="flat")
        for _ in planned.plan.instances():  # every script rendered: launcher forms and budgets
            pass
        dependencies.check_remotes(planned.spec, planned.env)
    except LegatoError as exc:
        report.errors.append(str(exc))
        return report
    report.warnings = list(planned.plan.warnings)
    report.steps = {step.name: step.count for step in planned.plan.steps}
    report.parameters = planned.table.length
    return report

