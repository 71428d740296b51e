"""What pgen files written for Maestro import, so they run unchanged without maestrowf.

A pgen does ``from maestrowf.datastructures.core import ParameterGenerator`` and builds a
generator with ``add_parameter``; legato only reads the generator's ``parameters``,
``labels`` and ``names``. When maestrowf itself is not installed, ``install()`` registers
this module under maestrowf's import paths for the duration of the pgen import.
"""
from __future__ import annotations

import sys
import types
from collections import OrderedDict
from typing import Any, Iterator, Mapping

MODULE_PATHS = (
    "maestrowf",
    "maestrowf.datastructures",
    "maestrowf.datastructures.core",
    "maestrowf.datastructures.core.parameters",
)


class Combination:
    """One parameter combination, with Maestro's substitution and naming rules."""

    def __init__(self, token: str = "$") -> None:
        self._token = token
        self._params: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def add(self, key: str, name: str, value: Any, label: str) -> None:
        self._params[key] = {"name": name, "value": value, "label": label}

    def apply(self, item: str) -> str:
        for key, param in self._params.items():
            item = item.replace(f"{self._token}({key}.label)", str(param["label"]))
            item = item.replace(f"{self._token}({key})", str(param["value"]))
            item = item.replace(f"{self._token}({key}.name)", str(param["name"]))
        return item

    def get_param_string(self, params) -> str:
        return ".".join(str(self._params[key]["label"]) for key in sorted(params))

    def get_param_values(self, params) -> Iterator[tuple[str, Any]]:
        for key in params:  # in the caller's order, unlike get_param_string (Maestro does the same)
            yield key, self._params[key]["value"]

    def __str__(self) -> str:
        return ".".join(str(param["label"]) for param in self._params.values())


class ParameterGenerator:
    """Zipped parameter lists with labels, as Maestro's ParameterGenerator builds them."""

    def __init__(self, token: str = "$", ltoken: str = "%%") -> None:
        self.parameters: OrderedDict[str, list[Any]] = OrderedDict()
        self.labels: dict[str, Any] = {}
        self.names: dict[str, str] = {}
        self.length = 0
        self.token = token
        self.label_token = ltoken

    def add_parameter(self, key: str, values, label=None, name=None) -> None:
        values = list(values)
        if not self.parameters:
            self.length = len(values)
        elif len(values) != self.length:
            raise ValueError(
                f"parameter {key!r} has {len(values)} values but the generator's other parameters have {self.length}"
            )
        self.parameters[key] = values
        self.labels[key] = label if label is not None else f"{key}.{self.label_token}"
        self.names[key] = name if name is not None else key

    def _label(self, key: str, index: int) -> str:
        label = self.labels[key]
        if isinstance(label, str):
            return label.replace(self.label_token, str(self.parameters[key][index]))
        return str(label[index])

    def get_combinations(self) -> Iterator[Combination]:
        for index in range(self.length):
            combo = Combination(self.token)
            for key, values in self.parameters.items():
                combo.add(key, self.names[key], values[index], self._label(key, index))
            yield combo

    def __iter__(self) -> Iterator[Combination]:
        return self.get_combinations()

    def __bool__(self) -> bool:
        return bool(self.parameters)

    def get_metadata(self) -> dict[str, Any]:
        return {
            str(combo): {
                "params": {f"{self.token}({key})": value for key, value in combo.get_param_values(self.parameters)},
                "labels": {f"{self.token}({key}.label)": self._label(key, i) for key in self.parameters},
            }
            for i, combo in enumerate(self.get_combinations())
        }


class Variable(str):
    """An env entry as pgens see it: a string that also has Maestro's ``.name`` and ``.value``.

    ``.value`` is the YAML value when that was not text (an int, a float, a list), as in Maestro.
    """

    name: str
    _typed: Any

    def __new__(cls, name: str, value: str, typed: Any = None) -> "Variable":
        obj = super().__new__(cls, value)
        obj.name = name
        obj._typed = typed
        return obj

    @property
    def value(self) -> Any:
        if self._typed is None or isinstance(self._typed, str):
            return str.__str__(self)
        return self._typed


class StudyEnvironment:
    """The ``env`` argument of ``get_custom_generator``: the spec's variables, labels and dependencies."""

    def __init__(self, entries: dict[str, str], typed: Mapping[str, Any] | None = None) -> None:
        typed = typed or {}
        self._entries = {name: Variable(name, value, typed.get(name)) for name, value in entries.items()}

    def find(self, key: str) -> Variable | None:
        return self._entries.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._entries


def install() -> list[str]:
    """Make ``import maestrowf.datastructures.core`` resolve here unless maestrowf is installed.

    Returns the module names registered so the caller can remove them afterwards.
    """
    try:
        import maestrowf.datastructures.core  # noqa: F401  (a real installation wins)

        return []
    except ImportError:
        pass
    added = []
    for path in MODULE_PATHS:
        if path not in sys.modules:
            module = types.ModuleType(path)
            module.__path__ = []  # a package, so that submodule imports resolve
            module.ParameterGenerator = ParameterGenerator
            module.Combination = Combination
            sys.modules[path] = module
            added.append(path)
        parent, _, child = path.rpartition(".")
        if parent:  # ``import maestrowf.datastructures.core`` then reaches it through attributes
            setattr(sys.modules[parent], child, sys.modules[path])
    return added


def uninstall(added: list[str]) -> None:
    for path in added:
        sys.modules.pop(path, None)
