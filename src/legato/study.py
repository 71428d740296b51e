"""Expansion of a spec's steps over the parameter table into step instances.

Maestro's semantics, kept exactly: a step expands over the parameters it uses, plus those
of its non-funnel parents and of steps whose ``$(step.workspace)`` it reads; a step using
none runs once; ``depends: [x_*]`` waits for every instance of ``x``; labels are the used
parameters' labels sorted by name and joined with ``.``. Tokens are substituted in Maestro's
order (env labels, dependencies, variables, then per combination ``$(P.label)``, ``$(P)``,
``$(P.name)``, then ``$(x.workspace)``, ``$(WORKSPACE)`` and ``$(LAUNCHER)``); unknown
``$(...)`` text is left alone because it is usually shell command substitution.

Instances are produced by a generator: the plan holds per step only the distinct parameter
keys (to find parents), never the text of every instance.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from legato.errors import LegatoError
from legato.parameters import ParameterTable
from legato.spec import Dependency, Spec, Step, find_cycle
from legato.workspace import DEFAULT_FANOUT, StepLayout, is_safe

WORKSPACE_TOKEN = re.compile(r"\$\(([^$()\s]+)\.workspace\)")
COUNT_KEYS = ("nodes", "procs", "gpus", "cores per task")
LAUNCHER_KEYS = ("tasks per rs", "rs per node", "cpus per rs", "bind", "bind gpus")
"""Run keys only a launcher reads (LSF's jsrun resource sets)."""
RESOURCE_KEYS = (*COUNT_KEYS, "walltime", "exclusive", *LAUNCHER_KEYS)
Launcher = Callable[[str, Mapping[str, Any]], str]
"""Expands ``$(LAUNCHER)`` and ``$(LAUNCHER)[Nn, Mp]`` in a command, given the instance's resources."""
_LAUNCHER = re.compile(r"\$\(LAUNCHER\)(?:\[[^\]]*\])?")


def no_launcher(text: str, resources: Mapping[str, Any]) -> str:
    """Locally an instance runs as it is: ``$(LAUNCHER)`` and its overrides expand to nothing."""
    return _LAUNCHER.sub("", text)


@dataclass(frozen=True, slots=True)
class Instance:
    """One step run for one parameter combination: what the workspace, executor and store need."""

    id: int
    step: str
    label: str
    row: int  # the parameter combination it was made from (the first, when several share it)
    workspace: str  # relative to the study folder
    params: dict[str, str]
    script: str
    restart: str | None
    parents: tuple[int, ...]  # instance ids of non-funnel parents (funnels are per step)
    resources: dict[str, Any]


@dataclass
class StepPlan:
    """A step after env substitution, with what it expands over and where its instances go."""

    step: Step
    run: dict[str, Any]
    params: tuple[str, ...]
    parents: tuple[Dependency, ...]
    rows: list[int] = field(default_factory=list)  # representative combination of each instance
    keys: dict[tuple[str, ...], int] = field(default_factory=dict)  # parameter key -> local index
    columns: list[list[str]] = field(default_factory=list)  # per used parameter, what its key holds per row
    first_id: int = 1
    layout: StepLayout | None = None

    @property
    def name(self) -> str:
        return self.step.name

    @property
    def count(self) -> int:
        return len(self.rows)

    @property
    def funnel_parents(self) -> list[str]:
        return [dep.step for dep in self.parents if dep.funnel]


def study_env(spec: Spec, root: Path) -> dict[str, str]:
    """The env entries as tokens see them, each resolved against all the others.

    OUTPUT_PATH becomes the study folder and SPECROOT the spec's folder, as in Maestro. Maestro
    replaces the entries one after another, so a variable may name a later one, OUTPUT_PATH or
    SPECROOT (``DATA: $(SPECROOT)/data``); resolving the references in any order keeps that.
    """
    entries = {name: value for name, value in spec.variables.items() if name != "OUTPUT_PATH"}
    entries["OUTPUT_PATH"] = str(root)
    entries["SPECROOT"] = str(spec.path.parent)
    for dep in spec.dependencies.get("paths") or ():
        entries[dep["name"]] = dep["path"]
    for dep in spec.dependencies.get("git") or ():
        entries[dep["name"]] = str(Path(dep["path"]) / dep["name"])
    entries.update(spec.labels)
    return _resolve(entries)


def _resolve(entries: dict[str, str]) -> dict[str, str]:
    """Substitute entries into each other; a reference back into a cycle stays as text."""
    done: dict[str, str] = {}
    active: set[str] = set()

    def value(name: str) -> str:
        if name not in done:
            active.add(name)
            done[name] = _TOKEN.sub(
                lambda m: value(m.group(1)) if m.group(1) in entries and m.group(1) not in active else m.group(0),
                entries[name],
            )
            active.discard(name)
        return done[name]

    return {name: value(name) for name in entries}


def substitute(text: str, tokens: Mapping[str, str]) -> str:
    """Plain ``$(NAME)`` replacement; tokens that are not known stay as they are."""
    if "$(" not in text:
        return text
    return _TOKEN.sub(lambda m: tokens.get(m.group(1), m.group(0)), text)


_TOKEN = re.compile(r"\$\(([^$()\s]+)\)")


def _map_strings(value: Any, function: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return function(value)
    if isinstance(value, list):
        return [_map_strings(item, function) for item in value]
    if isinstance(value, dict):
        return {key: _map_strings(item, function) for key, item in value.items()}
    return value


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


class StudyPlan:
    """The expanded study: step order, instance counts and a streaming instance generator."""

    def __init__(
        self,
        spec: Spec,
        table: ParameterTable,
        root: Path,
        layout: str = "tree",
        fanout: int = DEFAULT_FANOUT,
        launcher: Launcher | None = None,
    ) -> None:
        self.spec = spec
        self.table = table
        self.root = Path(root)
        self.env = study_env(spec, self.root)
        self.launcher = launcher or no_launcher
        self.warnings: list[str] = []
        self.steps = self._order([self._plan_step(step) for step in spec.steps])
        self._expand_params()
        for plan in self.steps:
            self._check_resources(plan)
        self._enumerate(layout, fanout)

    @property
    def total(self) -> int:
        return sum(step.count for step in self.steps)

    def _plan_step(self, step: Step) -> StepPlan:
        run = _map_strings(step.run, lambda text: substitute(text, self.env))
        used = _used_parameters(self.table, [step.name, step.description, run])
        parents = list(step.depends)
        known = {dep.step for dep in parents}
        for text in (run["cmd"], run.get("restart") or ""):
            for target in WORKSPACE_TOKEN.findall(text):
                if target not in {s.name for s in self.spec.steps}:
                    raise LegatoError(f"{self.spec.path.name}: step {step.name!r}: $({target}.workspace) names no step")
                if target not in known and target != step.name:
                    parents.append(Dependency(target, False))  # reading its workspace means waiting for it
                    known.add(target)
        return StepPlan(step, run, tuple(sorted(used)), tuple(parents))

    def _order(self, plans: list[StepPlan]) -> list[StepPlan]:
        """Parents before children, otherwise in spec order."""
        by_name = {plan.name: plan for plan in plans}
        cycle = find_cycle({plan.name: [dep.step for dep in plan.parents] for plan in plans})
        if cycle:
            raise LegatoError(f"{self.spec.path.name}: study: cyclic dependency: {' -> '.join(cycle)}")
        ordered: list[StepPlan] = []
        placed: set[str] = set()

        def place(plan: StepPlan) -> None:
            for dep in plan.parents:
                if dep.step not in placed:
                    place(by_name[dep.step])
            if plan.name not in placed:
                placed.add(plan.name)
                ordered.append(plan)

        for plan in plans:
            place(plan)
        return ordered

    def _expand_params(self) -> None:
        by_name = {plan.name: plan for plan in self.steps}
        for plan in self.steps:
            params = set(plan.params)
            for dep in plan.parents:
                if not dep.funnel:
                    params.update(by_name[dep.step].params)
            plan.params = tuple(sorted(params))

    def _enumerate(self, layout: str, fanout: int) -> None:
        """Give each step one instance per distinct label, as Maestro does.

        Maestro keys a step's instances by their label: combinations whose labels are equal run
        once, even when their values differ (a label without ``%%``). The last such combination
        is the one Maestro keeps, so it is the representative here too; a warning says so.
        """
        next_id = 1
        for plan in self.steps:
            plan.first_id = next_id
            if not plan.params:
                plan.rows = [0]
            else:
                plan.columns = [self._key_column(name) for name in plan.params]
                values = [self.table.values[name] for name in plan.params]
                collided = 0
                for row in range(self.table.length):
                    key = tuple(column[row] for column in plan.columns)
                    local = plan.keys.get(key)
                    if local is None:
                        plan.keys[key] = len(plan.rows)
                        plan.rows.append(row)
                    elif any(column[row] != column[plan.rows[local]] for column in values):
                        plan.rows[local] = row
                        collided += 1
                if collided:
                    self.warnings.append(
                        f"{self.spec.path.name}: step {plan.name!r}: {collided} parameter combination"
                        f"{'s share a label' if collided > 1 else ' shares a label'} with another of other values; "
                        "as in Maestro each label runs once, with the last of its combinations"
                    )
            flat_names = layout == "flat" and plan.params and not self._safe_labels(plan.params)
            labels = [self.label(plan, row) for row in plan.rows] if flat_names else None
            plan.layout = StepLayout(plan.name, plan.count, layout, fanout, labels)
            next_id += plan.count

    def _safe_labels(self, names: tuple[str, ...]) -> bool:
        """Whether every label of these parameters is a folder name as it is (no need to look at each instance's)."""
        texts = []
        for name in names:
            label = self.table.labels[name]
            if isinstance(label, str) and "%%" in label:
                texts += [label.replace("%%", ""), *set(self.table.values[name])]
            else:
                texts += set(self._key_column(name))
        return is_safe(".".join(texts))

    def _key_column(self, name: str) -> list[str]:
        """What tells a parameter's instances apart: its values while its label template shows them, else its labels."""
        label = self.table.labels[name]
        if isinstance(label, str) and "%%" in label:
            return self.table.values[name]
        return [self.table.label(name, row) for row in range(self.table.length)]

    def _check_resources(self, plan: StepPlan) -> None:
        """Counts and flags given as a token must fit every value: found now, before any folder exists."""
        for key in (*COUNT_KEYS, "exclusive"):
            value = plan.run.get(key)
            if not isinstance(value, str):
                continue
            token = _TOKEN.fullmatch(value)
            values = self.table.values.get(token.group(1)) if token else [value]
            try:
                if values is None:
                    raise LegatoError(f"step {plan.name!r}: run.{key} {value!r} names no parameter or env variable")
                for text in dict.fromkeys(values):  # the first bad value in table order
                    _resource(key, text, plan.name)
            except LegatoError as exc:
                raise LegatoError(f"{self.spec.path.name}: {exc}") from None

    def label(self, plan: StepPlan, row: int) -> str:
        return ".".join(self.table.label(name, row) for name in plan.params)

    def workspace(self, plan: StepPlan, local: int) -> str:
        """Relative folder of instance ``local`` of ``plan`` (the step folder for unparameterized steps)."""
        return plan.layout.path(local, self.label(plan, plan.rows[local]) if plan.params else "")

    def _local_index(self, plan: StepPlan, row: int) -> int:
        if not plan.params:
            return 0
        return plan.keys[tuple(column[row] for column in plan.columns)]

    def instances(self) -> Iterator[Instance]:
        """Every instance, parents before children, rendered one at a time."""
        by_name = {plan.name: plan for plan in self.steps}
        for plan in self.steps:
            renderer = _Renderer(self, plan, by_name)
            for local, row in enumerate(plan.rows):
                yield renderer.render(local, row)



class _Renderer:
    """Per-step token substitution, compiled once so that each instance costs a few joins."""

    def __init__(self, plan: StudyPlan, step: StepPlan, by_name: dict[str, StepPlan]) -> None:
        self.study = plan
        self.step = step
        self.parents = [by_name[dep.step] for dep in step.parents if not dep.funnel]
        self.funnels = {dep.step for dep in step.parents if dep.funnel}
        self.by_name = by_name
        self.cmd = _Template(step.run["cmd"])
        self.restart = _Template(step.run["restart"]) if step.run.get("restart") else None
        self.resources = {key: step.run[key] for key in RESOURCE_KEYS if key in step.run}
        self.root = str(plan.root)
        table = plan.table
        self.columns = [(name, table.values[name]) for name in step.params]

    def render(self, local: int, row: int) -> Instance:
        study, step = self.study, self.step
        table = study.table
        params = {name: values[row] for name, values in self.columns}
        labels = [table.label(name, row) for name in step.params]
        label = ".".join(labels)
        workspace = step.layout.path(local, label) if step.params else step.layout.step
        tokens: dict[str, str] = {"WORKSPACE": f"{self.root}/{workspace}"}
        for (name, _), value, text in zip(self.columns, params.values(), labels):
            tokens[name] = value
            tokens[f"{name}.label"] = text
            tokens[f"{name}.name"] = table.names[name]
        resources = {
            key: _resource(key, _map_strings(value, lambda text: substitute(text, tokens)), step.name)
            for key, value in self.resources.items()
        }
        workspaces = _WorkspaceTokens(self, row)
        script = self._launch("cmd", self.cmd.render(tokens, workspaces), resources)
        restart = self._launch("restart", self.restart.render(tokens, workspaces), resources) if self.restart else None
        parents = tuple(parent.first_id + study._local_index(parent, row) for parent in self.parents)
        return Instance(
            step.first_id + local, step.name, label, row, workspace, params, script, restart, parents, resources
        )

    def _launch(self, key: str, text: str, resources: dict[str, Any]) -> str:
        """Expand ``$(LAUNCHER)``; a bad form or an over-budget override names the spec file and the step."""
        try:
            return self.study.launcher(text, resources)
        except LegatoError as exc:
            raise LegatoError(f"{self.study.spec.path.name}: step {self.step.name!r}: run.{key}: {exc}") from None


class _Template:
    """A command split once into literal text and ``$(...)`` tokens."""

    _PART = re.compile(r"\$\(([^$()\s]+)\)")

    def __init__(self, text: str) -> None:
        self.parts: list[tuple[str, str | None]] = []  # (literal, token) pairs
        position = 0
        for match in self._PART.finditer(text):
            token = match.group(1)
            self.parts.append((text[position:match.start()], token))
            position = match.end()
        self.parts.append((text[position:], None))

    def render(self, tokens: dict[str, str], workspaces: "_WorkspaceTokens") -> str:
        out = []
        for literal, token in self.parts:
            out.append(literal)
            if token is None:
                continue
            if token in tokens:
                out.append(tokens[token])
            elif token.endswith(".workspace") and token[:-10] in workspaces.renderer.by_name:
                out.append(workspaces(token[:-10]))
            else:
                out.append(f"$({token})")  # not ours: most likely shell command substitution
        return "".join(out)


class _WorkspaceTokens:
    """``$(x.workspace)`` for one instance: the matching instance of x, or x's step folder."""

    def __init__(self, renderer: _Renderer, row: int) -> None:
        self.renderer = renderer
        self.row = row

    def __call__(self, target: str) -> str:
        study = self.renderer.study
        plan = self.renderer.by_name[target]
        if target in self.renderer.funnels or not plan.params:
            return f"{self.renderer.root}/{plan.layout.step}"
        return f"{self.renderer.root}/{study.workspace(plan, study._local_index(plan, self.row))}"


def _used_parameters(table: ParameterTable, fields: list[Any]) -> set[str]:
    if not table.values:
        return set()
    names = "|".join(re.escape(name) for name in sorted(table.values, key=len, reverse=True))
    pattern = re.compile(rf"\$\(({names})(?:\.label|\.name)?\)")
    return {match for text in _strings(fields) for match in pattern.findall(text)}


def _resource(key: str, value: Any, step: str) -> Any:
    """Resource keys may hold a parameter token; after substitution counts must be integers."""
    if key == "exclusive":
        return _flag(value, step)
    if key not in COUNT_KEYS or isinstance(value, (int, bool)):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        raise LegatoError(f"step {step!r}: run.{key} is {value!r}, not a whole number") from None


_FLAGS = {"true": True, "false": False}


def _flag(value: Any, step: str) -> Any:
    """A token turns ``exclusive`` into text ('False' from a YAML false), which schedulers would read as set."""
    if isinstance(value, dict):
        return {key: _flag(item, step) for key, item in value.items()}
    if isinstance(value, str):
        if value.lower() not in _FLAGS:
            raise LegatoError(f"step {step!r}: run.exclusive is {value!r}, not true or false")
        return _FLAGS[value.lower()]
    return value
