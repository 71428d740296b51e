"""Which steps of a study run: ``--only``, ``--from`` and ``--until``.

A selection is resolved against the study's step graph (each step's parent steps, funnel or
not, including steps whose ``$(x.workspace)`` it reads) into the list of steps that may run.
``--from STEP`` is the step and every step after it (its descendants), ``--until STEP`` the
step and every step before it (its ancestors), ``--only`` the steps named; given together,
a step must satisfy each. Steps outside the selection do not run, and a selected step does
not wait for them: their outputs are taken to be there already (from an earlier run).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from legato.errors import LegatoError


@dataclass(frozen=True)
class StepSelection:
    only: tuple[str, ...] = ()
    start: str | None = None  # --from
    until: str | None = None
    rerun: tuple[str, ...] = ()
    """On a resume: steps whose instances, and every instance depending on them, run again."""

    def __bool__(self) -> bool:
        return bool(self.only or self.start or self.until)

    def argv(self) -> list[str]:
        """The same selection as ``legato run`` options (for a conductor started in the background)."""
        words = [word for name in self.only for word in ("--only", name)]
        words += ["--from", self.start] if self.start else []
        words += ["--until", self.until] if self.until else []
        return words + [word for name in self.rerun for word in ("--rerun", name)]

    def check_rerun(self, steps: Iterable[str]) -> list[str]:
        known = list(steps)
        for name in self.rerun:
            if name not in known:
                raise LegatoError(f"--rerun {name!r}: no such step (the steps are {', '.join(known)})")
        return list(self.rerun)

    def resolve(self, parents: Mapping[str, Iterable[str]]) -> list[str] | None:
        """The selected steps in the graph's order, or None when every step runs."""
        if not self:
            return None
        steps = list(parents)
        for option, names in (("--only", self.only), ("--from", [self.start] if self.start else []),
                              ("--until", [self.until] if self.until else [])):
            for name in names:
                if name not in parents:
                    raise LegatoError(f"{option} {name!r}: no such step (the steps are {', '.join(steps)})")
        chosen = set(steps)
        if self.only:
            chosen &= set(self.only)
        if self.start:
            chosen &= {self.start} | related(self.start, children_of(parents))
        if self.until:
            chosen &= {self.until} | related(self.until, parents)
        if not chosen:
            raise LegatoError(f"{self.describe()}: selects no step")
        return [step for step in steps if step in chosen]

    def describe(self) -> str:
        words = [f"--only {name}" for name in self.only]
        words += [f"--from {self.start}"] if self.start else []
        words += [f"--until {self.until}"] if self.until else []
        return " ".join(words)


def for_study(meta: Mapping[str, object], steps: StepSelection) -> tuple[list[str] | None, list[str]]:
    """The steps of a prepared study that may run, and those to run again (its store's ``meta``)."""
    parents = meta.get("step_parents")
    if not isinstance(parents, dict):
        raise LegatoError("--only/--from/--until/--rerun: this study was prepared by an older legato; prepare it again")
    return steps.resolve(parents), steps.check_rerun(parents)


def children_of(parents: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    children: dict[str, list[str]] = {step: [] for step in parents}
    for step, names in parents.items():
        for parent in names:
            children[parent].append(step)
    return children


def related(step: str, edges: Mapping[str, Iterable[str]]) -> set[str]:
    """Every step reachable from ``step`` along ``edges`` (parents: ancestors; children: descendants)."""
    found: set[str] = set()
    stack = list(edges.get(step, ()))
    while stack:
        name = stack.pop()
        if name not in found:
            found.add(name)
            stack.extend(edges.get(name, ()))
    return found
