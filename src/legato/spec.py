"""Maestro study specifications: YAML loading, validation and the typed model.

Maestro validates with a JSON schema and then with a few Python checks; legato keeps the
same schema (so every valid Maestro spec loads) and reports every problem as one line that
names the file, the key path and the reason, e.g. ``spec.yaml: study[1].run: 'cmd' is required``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from legato.errors import LegatoError

FUNNEL_SUFFIX = re.compile(r"_?\*$")
"""Maestro treats ``step_*`` and ``step*`` alike: a dependency on every instance of ``step``."""


@dataclass(frozen=True)
class Dependency:
    """One entry of a step's ``depends``: a parent step, either per instance or funnel (all of it)."""

    step: str
    funnel: bool


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    run: dict[str, Any]
    depends: tuple[Dependency, ...]

    @property
    def cmd(self) -> str:
        return self.run["cmd"]


@dataclass(frozen=True)
class ParameterDecl:
    """A ``global.parameters`` entry; ``label`` is a template whose ``%%`` each value replaces."""

    name: str
    values: list[Any]
    label: str


@dataclass(frozen=True)
class ResultFile:
    """A results file a step writes, declared in the spec's ``legato.results`` section or on the CLI."""

    file: str
    format: str | None = None


@dataclass(frozen=True)
class Spec:
    path: Path
    name: str
    description: str
    variables: dict[str, str]
    labels: dict[str, str]
    sources: list[Any]
    dependencies: dict[str, Any]
    batch: dict[str, Any]
    steps: tuple[Step, ...]
    parameters: tuple[ParameterDecl, ...]
    results: dict[str, tuple[ResultFile, ...]] = field(default_factory=dict)
    raw_variables: dict[str, Any] = field(default_factory=dict)
    """``env.variables`` as YAML typed them (a pgen's ``env.find(NAME).value`` is 1777, not "1777")."""
    keep_going: tuple[str, ...] = ()
    """Steps that run once their parents ended even if some failed (``legato.keep_going``)."""
    product: tuple[ParameterDecl, ...] = ()
    """``legato.product``: parameters combined with every row of the others (a Cartesian product)."""

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise LegatoError(f"{self.path.name}: no step named {name!r}")


def load_spec(path: str | Path) -> Spec:
    """Read, validate and model a study specification."""
    path = Path(path)
    data = _read_yaml(path)
    _validate_schema(path, data)
    spec = _build(path, data)
    _check_steps(spec)
    _check_parameters(spec)
    _check_env(spec)
    return spec


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LegatoError(f"{path}: no such spec file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise LegatoError(f"{path}: cannot read the spec ({exc.__class__.__name__})") from None
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LegatoError(f"{path.name}:{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise LegatoError(f"{path.name}: a study spec must be a YAML mapping with 'description' and 'study'")
    return data


_VALIDATOR = None


def _validator():
    """Build the schema validator once; jsonschema is imported here so that CLI start-up stays quick."""
    global _VALIDATOR
    if _VALIDATOR is None:
        import jsonschema

        schema = json.loads(resources.files("legato").joinpath("spec_schema.json").read_text())
        _VALIDATOR = jsonschema.Draft7Validator(schema)
    return _VALIDATOR


def _validate_schema(path: Path, data: dict[str, Any]) -> None:
    errors = sorted(_validator().iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        error = errors[0]
        raise LegatoError(f"{path.name}: {key_path(error.absolute_path)}: {_reason(error)}")


def key_path(parts) -> str:
    """``['study', 1, 'run']`` -> ``study[1].run``: the notation users see in every spec error."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _reason(error) -> str:
    """Rewrite jsonschema's messages into short reasons a spec author can act on."""
    if error.validator == "required":
        missing = re.search(r"'([^']+)' is a required property", error.message)
        return f"'{missing.group(1)}' is required" if missing else error.message
    if error.validator == "additionalProperties":
        extra = re.findall(r"'([^']+)'", error.message)
        return f"unknown key {extra[0]!r}" if extra else error.message
    if error.validator == "anyOf":
        return f"{error.instance!r} is not valid here ({_expected(error)})"
    if error.validator == "type":
        kinds = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        return f"must be of type {' or '.join(kinds)}, not {type(error.instance).__name__}"
    if error.validator == "minItems" and not error.instance:
        return "must not be empty"
    if error.validator == "minLength":
        return "must not be empty"
    if error.validator == "uniqueItems":
        return "has repeated entries"
    return error.message


_REFERENCES = {"token": "a '$(NAME)' token", "flag": "true/false or a '$(NAME)' token"}


def _expected(error) -> str:
    kinds = []
    for sub in error.validator_value:
        if "$ref" in sub:
            name = sub["$ref"].rsplit("/", 1)[-1]
            kinds.append(_REFERENCES.get(name, name))
        elif "enum" in sub:
            kinds.append("one of " + "/".join(dict.fromkeys(v.upper() for v in sub["enum"])))
        else:
            kinds.append(_kind(sub))
    return "expected " + " or ".join(kinds)


def _kind(schema: dict[str, Any]) -> str:
    """``{"type": "number", "minimum": 0, "maximum": 1}`` -> ``number 0..1``: the words a spec author needs."""
    kind = schema.get("type", "?")
    if "minimum" in schema and "maximum" in schema:
        return f"{kind} {schema['minimum']}..{schema['maximum']}"
    if "minimum" in schema:
        return f"{kind} >= {schema['minimum']}"
    if schema.get("minLength"):
        return f"non-empty {kind}"
    if schema.get("uniqueItems"):
        return f"{kind} without repeated entries"
    return kind


def _build(path: Path, data: dict[str, Any]) -> Spec:
    env = data.get("env") or {}
    description = data["description"]
    params = data.get("global.parameters") or {}
    return Spec(
        path=path.resolve(),
        name=description["name"],
        description=description["description"],
        variables={k: str(v) for k, v in (env.get("variables") or {}).items()},
        labels={k: str(v) for k, v in (env.get("labels") or {}).items()},
        sources=list(env.get("sources") or []),
        dependencies=dict(env.get("dependencies") or {}),
        batch=dict(data.get("batch") or {}),
        steps=tuple(_step(raw) for raw in data["study"]),
        parameters=tuple(ParameterDecl(name, decl["values"], decl["label"]) for name, decl in params.items()),
        results=_results((data.get("legato") or {}).get("results") or {}),
        raw_variables=dict(env.get("variables") or {}),
        keep_going=tuple((data.get("legato") or {}).get("keep_going") or ()),
        product=tuple(
            ParameterDecl(name, decl["values"], decl["label"])
            for name, decl in ((data.get("legato") or {}).get("product") or {}).items()
        ),
    )


def _step(raw: dict[str, Any]) -> Step:
    depends = tuple(
        Dependency(FUNNEL_SUFFIX.sub("", entry), True) if "*" in entry else Dependency(entry, False)
        for entry in raw["run"].get("depends") or ()
    )
    return Step(raw["name"], raw["description"], dict(raw["run"]), depends)


def _results(section: dict[str, list]) -> dict[str, tuple[ResultFile, ...]]:
    return {
        step: tuple(ResultFile(item) if isinstance(item, str) else ResultFile(item["file"], item.get("format")) for item in items)
        for step, items in section.items()
    }


def _check_steps(spec: Spec) -> None:
    names: dict[str, int] = {}
    for index, step in enumerate(spec.steps):
        if step.name in names:
            raise LegatoError(
                f"{spec.path.name}: study[{index}].name: duplicate step name {step.name!r} (also study[{names[step.name]}])"
            )
        names[step.name] = index
    for index, step in enumerate(spec.steps):
        for dep in step.depends:
            if dep.step not in names:
                raise LegatoError(f"{spec.path.name}: study[{index}].run.depends: unknown step {dep.step!r}")
            if dep.step == step.name:
                raise LegatoError(f"{spec.path.name}: study[{index}].run.depends: step {step.name!r} depends on itself")
    for step in spec.results:
        if step not in names:
            raise LegatoError(f"{spec.path.name}: legato.results: unknown step {step!r}")
    for index, step in enumerate(spec.keep_going):
        if step not in names:
            raise LegatoError(f"{spec.path.name}: legato.keep_going[{index}]: unknown step {step!r}")
    cycle = find_cycle({step.name: [dep.step for dep in step.depends] for step in spec.steps})
    if cycle:
        raise LegatoError(f"{spec.path.name}: study: cyclic depends: {' -> '.join(cycle)}")


def find_cycle(parents: dict[str, list[str]]) -> list[str] | None:
    """Return one dependency cycle (first node repeated at the end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for parent in parents.get(node, ()):
            if state.get(parent) == 1:
                return stack[stack.index(parent):] + [parent]
            if parent not in state and (found := visit(parent)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in parents:
        if node not in state and (found := visit(node)):
            return found
    return None


def _check_parameters(spec: Spec) -> None:
    lengths = {decl.name: len(decl.values) for decl in spec.parameters}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name} has {count}" for name, count in lengths.items())
        raise LegatoError(f"{spec.path.name}: global.parameters: all parameters need the same number of values ({detail})")
    for decl in spec.product:
        if decl.name in lengths:
            raise LegatoError(f"{spec.path.name}: legato.product.{decl.name}: already in global.parameters")


def _check_env(spec: Spec) -> None:
    seen = set(spec.variables)
    for name in spec.labels:
        if name in seen:
            raise LegatoError(f"{spec.path.name}: env.labels.{name}: the name is already an env variable")
        seen.add(name)
    for kind in ("paths", "git"):
        for index, dep in enumerate(spec.dependencies.get(kind) or ()):
            if dep["name"] in seen:
                raise LegatoError(
                    f"{spec.path.name}: env.dependencies.{kind}[{index}].name: {dep['name']!r} is already an env variable or label"
                )
            seen.add(dep["name"])
