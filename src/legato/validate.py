"""``legato validate``: everything a dry run checks, without writing anything.

``prepare.plan_study`` is the part of preparing a study that decides whether the spec is
acceptable (schema and step checks, dependency paths, the pgen, expansion). ``validate`` runs it,
then renders every instance (launcher forms and budgets) and asks each git dependency's remote
whether it answers, and reports instead of raising: the first error, naming the file and the key
path or step, and the warnings (labels that several parameter combinations share).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from legato import dependencies
from legato.errors import LegatoError
from legato.prepare import plan_study
from legato.study import StudyPlan


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


_TOKEN = re.compile(r"\$\(([^$()\s]+)\)")
_LOOKS_LIKE_A_TOKEN = re.compile(r"[A-Z][A-Z0-9_]*(\.(label|name|workspace))?")
"""``$(SIZE)``, ``$(SIZE.label)``: meant for legato. ``$(date)``, ``$(nproc)`` are the shell's."""


def unknown_tokens(plan: StudyPlan) -> list[str]:
    """Tokens that look like variables or parameters but name none: the shell would run them as commands."""
    known = {"WORKSPACE", "LAUNCHER"} | {f"{step.name}.workspace" for step in plan.steps}
    for name in plan.table.values:
        known |= {name, f"{name}.label", f"{name}.name"}
    found = []
    for step in plan.steps:
        for key in ("cmd", "restart"):
            for token in dict.fromkeys(_TOKEN.findall(step.run.get(key) or "")):
                if token not in known and _LOOKS_LIKE_A_TOKEN.fullmatch(token):
                    found.append(f"{plan.spec.path.name}: step {step.name!r}: run.{key}: $({token}) names no variable, "
                                 "parameter or step; the shell will run it as a command")
    return found


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
    report.warnings = list(planned.plan.warnings) + unknown_tokens(planned.plan)
    report.steps = {step.name: step.count for step in planned.plan.steps}
    report.parameters = planned.table.length
    return report

