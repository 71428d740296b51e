"""The maestrowf stand-in pgen files import: same API, same results as maestrowf's own classes."""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from legato import pgen_compat
from legato.pgen_compat import ParameterGenerator, StudyEnvironment, Variable
from tests import maestro


PROBE = '''
import json
from maestrowf.datastructures.core import ParameterGenerator

g = ParameterGenerator()
g.add_parameter("SIZE", [10, 20, 30], "SIZE.%%")
g.add_parameter("ITER", [1, 2, 3])
g.add_parameter("MODE", ["a", "b", "c"], ["A", "B", "C"], name="mode")
out = {
    "bool": [bool(g), bool(ParameterGenerator())],
    "length": g.length,
    "apply": [c.apply("$(SIZE) $(SIZE.label) $(ITER.label) $(MODE.name) $(MODE.label) $(SIZEX) $(OTHER)") for c in g],
    "strings": [str(c) for c in g],
    "param_strings": [c.get_param_string({"SIZE", "ITER"}) for c in g.get_combinations()],
    "values": [list(c.get_param_values(["SIZE", "ITER"])) for c in g],
    "metadata": g.get_metadata(),
    "labels": dict(g.labels),
    "names": dict(g.names),
}
try:
    g.add_parameter("BAD", [1])
except ValueError:
    out["unequal"] = "ValueError"
print(json.dumps(out, sort_keys=True, default=str))
'''


@contextlib.contextmanager
def shim():
    added = pgen_compat.install()
    try:
        yield added
    finally:
        pgen_compat.uninstall(added)


def probe_with_shim() -> dict:
    out = io.StringIO()
    with shim(), contextlib.redirect_stdout(out):
        exec(compile(PROBE, "probe", "exec"), {})
    return json.loads(out.getvalue())


def test_generator_defaults_and_combinations() -> None:
    result = probe_with_shim()
    assert result["labels"] == {"SIZE": "SIZE.%%", "ITER": "ITER.%%", "MODE": ["A", "B", "C"]}
    assert result["names"] == {"SIZE": "SIZE", "ITER": "ITER", "MODE": "mode"}
    assert result["bool"] == [True, False] and result["length"] == 3
    assert result["apply"][1] == "20 SIZE.20 ITER.2 mode B $(SIZEX) $(OTHER)"
    assert result["strings"][0] == "SIZE.10.ITER.1.A"
    assert result["param_strings"] == ["ITER.1.SIZE.10", "ITER.2.SIZE.20", "ITER.3.SIZE.30"]
    assert result["values"][2] == [["SIZE", 30], ["ITER", 3]]
    assert result["metadata"]["SIZE.10.ITER.1.A"]["labels"]["$(MODE.label)"] == "A"
    assert result["unequal"] == "ValueError"


def test_shim_matches_maestrowf() -> None:
    maestro.require()
    real = subprocess.run([str(maestro.PYTHON), "-c", PROBE], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(real.stdout) == probe_with_shim()


@pytest.mark.parametrize(
    "statement, reach",
    [
        ("from maestrowf.datastructures.core import ParameterGenerator", "ParameterGenerator"),
        ("from maestrowf.datastructures.core.parameters import ParameterGenerator", "ParameterGenerator"),
        ("import maestrowf.datastructures.core", "maestrowf.datastructures.core.ParameterGenerator"),
        ("import maestrowf.datastructures.core as core", "core.ParameterGenerator"),
        ("from maestrowf.datastructures import core", "core.ParameterGenerator"),
    ],
)
def test_every_import_form_reaches_the_class(statement: str, reach: str) -> None:
    namespace: dict = {}
    with shim():
        exec(statement, namespace)
        assert eval(reach, namespace) is ParameterGenerator


def test_install_is_undone() -> None:
    with shim() as added:
        assert set(added) == set(pgen_compat.MODULE_PATHS)
        with shim() as nested:
            assert nested == []  # already importable: nothing more registered, nothing removed later
        importlib.import_module("maestrowf.datastructures.core")
    assert not [name for name in sys.modules if name.split(".")[0] == "maestrowf"]
    with pytest.raises(ImportError):
        importlib.import_module("maestrowf.datastructures.core")


def test_unequal_lengths_compare_with_the_first_parameter() -> None:
    generator = ParameterGenerator()
    generator.add_parameter("A", range(3))
    with pytest.raises(ValueError, match="'B' has 2 values"):
        generator.add_parameter("B", [1, 2])
    assert list(generator.parameters) == ["A"]


def test_environment_find() -> None:
    env = StudyEnvironment({"TRIALS": "4", "SPECROOT": "/specs"})
    found = env.find("TRIALS")
    assert found.value == "4" and found.name == "TRIALS" and found == "4" and int(found) == 4
    assert env.find("MISSING") is None
    assert "SPECROOT" in env and "MISSING" not in env


def test_variable_is_text_with_a_name() -> None:
    root = Variable("SPECROOT", "/a/b")
    assert isinstance(root, str) and root.value == "/a/b" and root.name == "SPECROOT"
    assert Path(root) / "x" == Path("/a/b/x") and f"{root}/c" == "/a/b/c"
