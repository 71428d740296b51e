"""The parameter table a study expands over: from ``global.parameters`` or from a pgen file.

Maestro zips parameter lists (combination i takes the i-th value of every parameter), so a
table of N rows and one column per parameter is the whole model. A pgen's generator is read
once into that table; nothing else of the generator is kept.
"""
from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from legato import pgen_compat
from legato.errors import LegatoError
from legato.spec import Spec


@dataclass
class ParameterTable:
    """Zipped parameters: ``values[name][i]`` is the value of ``name`` in combination ``i``."""

    values: dict[str, list[str]] = field(default_factory=dict)
    labels: dict[str, str | list[str]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    index: list[str] | None = None  # a row source's index column: names rows in results, is no parameter

    def row(self, index: int) -> dict[str, str]:
        return {name: values[index] for name, values in self.values.items()}

    @property
    def length(self) -> int:
        return len(next(iter(self.values.values()))) if self.values else 0

    def label(self, name: str, index: int) -> str:
        """Maestro's label of one value: the ``%%`` template filled in, or the given label."""
        label = self.labels[name]
        if isinstance(label, str):
            return label.replace("%%", self.values[name][index])
        return str(label[index])

    def add(self, name: str, values: Iterable[Any], label: str | list[str] | None = None, display: str | None = None) -> None:
        self.values[name] = [_text(value) for value in values]
        self.labels[name] = label if label is not None else f"{name}.%%"
        self.names[name] = display or name


def _text(value: Any) -> str:
    """Values become token text exactly as Maestro's str() would render them."""
    return value if isinstance(value, str) else str(value)


def from_spec(spec: Spec, start: int = 0, nrows: int | None = None) -> ParameterTable:
    """The spec's parameter combinations ``[start, start + nrows)``.

    ``global.parameters`` are zipped, as in Maestro; ``legato.product`` parameters are combined
    with every one of those rows and with each other, the last one varying fastest (as
    ``itertools.product``). A slice is computed from its index alone, so a campaign pages
    through a product of 10^8 combinations without making it.
    """
    stop = spec_rows(spec) if nrows is None else min(spec_rows(spec), start + nrows)
    table = ParameterTable()
    if not spec.product:  # Maestro's zipped lists: a plain slice
        for decl in spec.parameters:
            table.add(decl.name, decl.values[start:stop], decl.label)
        return table
    axes = ([list(zip(*(decl.values for decl in spec.parameters)))] if spec.parameters else [])
    axes += [[(value,) for value in decl.values] for decl in spec.product]
    decls = [list(spec.parameters)] * bool(spec.parameters) + [[decl] for decl in spec.product]
    picks: list[list[tuple]] = [[] for _ in axes]
    for index in range(start, stop):
        for position in range(len(axes) - 1, -1, -1):
            index, digit = divmod(index, len(axes[position]))
            picks[position].append(axes[position][digit])
    for position, group in enumerate(decls):
        for column, decl in enumerate(group):
            table.add(decl.name, [row[column] for row in picks[position]], decl.label)
    return table


def spec_rows(spec: Spec) -> int:
    """How many combinations ``from_spec`` has in all."""
    lengths = ([len(spec.parameters[0].values)] if spec.parameters else []) + [len(d.values) for d in spec.product]
    return math.prod(lengths) if lengths else 0


def parse_pargs(pargs: Iterable[str]) -> dict[str, str]:
    """``--pargs "KEY:VALUE"`` entries, split on the first colon and stripped, as Maestro does."""
    parsed: dict[str, str] = {}
    for entry in pargs:
        key, colon, value = entry.partition(":")
        if not colon or not key.strip():
            raise LegatoError(f"--pargs {entry!r}: expected KEY:VALUE")
        parsed[key.strip()] = value.strip()
    return parsed


def from_pgen(
    path: str | Path, env: Mapping[str, str], pargs: Mapping[str, str], typed: Mapping[str, Any] | None = None
) -> ParameterTable:
    """Run a pgen file's ``get_custom_generator(env, **pargs)`` and read its generator into a table.

    ``env`` holds the spec's variables as the pgen sees them (OUTPUT_PATH and SPECROOT included);
    they are also passed as keyword arguments, as Maestro does, under the user's pargs. ``typed``
    holds the variables' YAML values: ``env.find(NAME).value`` returns those, as in Maestro, so
    that a pgen seeding a random generator with ``SEED: 1777`` gets the number, not the text.
    """
    path = Path(path)
    if not path.is_file():
        raise LegatoError(f"{path}: no such pgen file")
    module = _import_pgen(path)
    function = getattr(module, "get_custom_generator", None)
    if not callable(function):
        raise LegatoError(f"{path.name}: the pgen defines no get_custom_generator(env, **kwargs) function")
    kwargs = {"OUTPUT_PATH": env.get("OUTPUT_PATH", ""), "SPECROOT": pgen_compat.Variable("SPECROOT", env.get("SPECROOT", ""))}
    kwargs.update(pargs)
    try:
        generator = function(pgen_compat.StudyEnvironment(dict(env), typed), **kwargs)
    except Exception as exc:  # the user's code: any failure is reported, not traced
        raise LegatoError(f"{path.name}: get_custom_generator raised {exc.__class__.__name__}: {_one_line(exc)}") from None
    return _table_from_generator(path, generator)


def _import_pgen(path: Path):
    added = pgen_compat.install()
    try:
        spec = importlib.util.spec_from_file_location(f"legato_pgen_{abs(hash(path))}", path)
        if spec is None or spec.loader is None:
            raise LegatoError(f"{path}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses and typing look a module up while it runs
        folder = str(path.parent.resolve())
        sys.path.insert(0, folder)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # a syntax error or import failure in the user's pgen
            raise LegatoError(f"{path.name}: cannot load the pgen: {exc.__class__.__name__}: {_one_line(exc)}") from None
        finally:
            sys.path.remove(folder)
        return module
    finally:
        pgen_compat.uninstall(added)


def _table_from_generator(path: Path, generator: Any) -> ParameterTable:
    parameters = getattr(generator, "parameters", None)
    if not isinstance(parameters, Mapping):
        raise LegatoError(
            f"{path.name}: get_custom_generator returned {type(generator).__name__}, not a ParameterGenerator"
        )
    table = ParameterTable()
    lengths = {name: len(values) for name, values in parameters.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name} has {count}" for name, count in lengths.items())
        raise LegatoError(f"{path.name}: the generator's parameters have different numbers of values ({detail})")
    labels = getattr(generator, "labels", {}) or {}
    names = getattr(generator, "names", {}) or {}
    for name, values in parameters.items():
        label = labels.get(name)
        if isinstance(label, (list, tuple)) and len(label) != lengths[name]:
            raise LegatoError(f"{path.name}: parameter {name}: {len(label)} labels for {lengths[name]} values")
        table.add(name, values, label, names.get(name))
    return table


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else "(no message)"
