"""The parameter table: global.parameters, pargs, and pgen files run as Maestro runs them."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from legato import parameters
from legato.errors import LegatoError
from legato.spec import load_spec
from legato.study import study_env

SPECS = Path(__file__).resolve().parent / "specs"


def pgen_table(name: str, pargs: dict[str, str] | None = None, root: Path = Path("/tmp/study")):
    spec = load_spec(SPECS / "pgen_env.yaml")
    return parameters.from_pgen(SPECS / name, study_env(spec, root), pargs or {})


# -- pargs ----------------------------------------------------------------------------------


def test_pargs_split_on_the_first_colon() -> None:
    assert parameters.parse_pargs(["URL:http://x:1", " CSV : a b.csv ", "EMPTY:", "N:1", "N:2"]) == {
        "URL": "http://x:1", "CSV": "a b.csv", "EMPTY": "", "N": "2",
    }


@pytest.mark.parametrize("entry", ["NOCOLON", ":value", "  :x", ""])
def test_bad_pargs_are_named(entry: str) -> None:
    with pytest.raises(LegatoError) as caught:
        parameters.parse_pargs(["GOOD:1", entry])
    assert str(caught.value) == f"--pargs {entry!r}: expected KEY:VALUE"


# -- global.parameters ----------------------------------------------------------------------


def test_from_spec_zips_values_as_text() -> None:
    table = parameters.from_spec(load_spec(SPECS / "maestro_lulesh.yaml"))
    assert table.length == 9
    assert table.values["SIZE"][:4] == ["100", "100", "100", "200"]
    assert table.label("SIZE", 3) == "SIZE.200"
    assert table.label("ITERATIONS", 1) == "ITER.20"
    assert table.row(4) == {"SIZE": "200", "ITERATIONS": "20"}


def test_from_spec_booleans_as_text() -> None:
    full = parameters.from_spec(load_spec(SPECS / "maestro_full.yaml"))
    assert full.values["EXCL"] == ["True", "False"]  # str(value), as Maestro renders it


def test_no_parameters_is_an_empty_table() -> None:
    table = parameters.from_spec(load_spec(SPECS / "maestro_minimal.yaml"))
    assert table.length == 0 and not table.values


# -- pgen files -----------------------------------------------------------------------------


def test_maestrowf_is_not_installed_here() -> None:
    """The pgen tests below prove the shim; they would prove nothing with maestrowf present."""
    assert importlib.util.find_spec("maestrowf") is None, "maestrowf is importable: pgens would not use the shim"


def test_pgen_reads_env_and_gets_kwargs(tmp_path: Path) -> None:
    table = pgen_table("pgen_env.py", {"URL": "http://x:1"}, root=tmp_path / "study")
    assert table.length == 3
    assert table.values["TRIAL"] == ["0", "1", "2"]  # TRIALS: 3 read with env.find("TRIALS").value
    assert table.values["URL"] == ["http://x:1"] * 3
    assert table.values["OUTPUT_PATH"] == [str(tmp_path / "study")] * 3
    assert table.values["SPECROOT"] == [str(SPECS)] * 3
    assert table.values["KINDS"] == ["str"] * 3
    assert table.label("URL", 2) == "URL-2" and table.label("TRIAL", 1) == "TRIAL.1"
    assert table.names["TRIAL"] == "TRIAL"


def test_pargs_override_env_in_the_pgen() -> None:
    assert pgen_table("pgen_env.py", {"COUNT": "5"}).length == 5


def test_pgen_leaves_no_maestrowf_module_behind() -> None:
    pgen_table("pgen_env.py")
    assert not [name for name in sys.modules if name.split(".")[0] == "maestrowf"]


def test_pgen_importing_the_package_path_works() -> None:
    table = pgen_table("pgen_module_import.py")
    assert table.values == {"X": ["a", "b"]} and table.label("X", 1) == "X.b"


def test_sample_pgen_reads_a_window_of_rows(sample_dir: Path) -> None:
    spec = load_spec(sample_dir / "batched_parameters_demo.yaml")
    pargs = parameters.parse_pargs(["INDEX:param_combo", "CSV:params.csv", "START:17", "NROWS:5"])
    table = parameters.from_pgen(sample_dir / "batched_demo_pgen.py", study_env(spec, sample_dir / "s"), pargs)
    rows = [line.split(",") for line in (sample_dir / "params.csv").read_text().splitlines()[18:]]
    assert table.length == 3
    assert table.values == {f"PARAM{i}": [row[i] for row in rows] for i in (1, 2, 3)}


PGEN_ERRORS = {
    "pgen_raises.py": "pgen_raises.py: get_custom_generator raised RuntimeError: the CSV has no header",
    "pgen_no_function.py": "pgen_no_function.py: the pgen defines no get_custom_generator(env, **kwargs) function",
    "pgen_wrong_type.py": "pgen_wrong_type.py: get_custom_generator returned dict, not a ParameterGenerator",
    "pgen_unequal.py": "pgen_unequal.py: get_custom_generator raised ValueError: parameter 'B' has 3 values",
    "pgen_syntax.py": "pgen_syntax.py: cannot load the pgen: SyntaxError: ",
    "pgen_short_labels.py": "pgen_short_labels.py: parameter A: 2 labels for 3 values",
}


@pytest.mark.parametrize("name, expected", PGEN_ERRORS.items(), ids=PGEN_ERRORS.keys())
def test_pgen_errors_are_one_line_naming_the_file(name: str, expected: str) -> None:
    with pytest.raises(LegatoError) as caught:
        pgen_table(name)
    message = str(caught.value)
    assert message.startswith(expected) and "\n" not in message, message


def test_pgen_import_failure_is_reported(tmp_path: Path) -> None:
    pgen = tmp_path / "gen.py"
    pgen.write_text("import no_such_module_for_legato\n")
    with pytest.raises(LegatoError, match=r"^gen\.py: cannot load the pgen: ModuleNotFoundError: "):
        parameters.from_pgen(pgen, {}, {})


def test_generator_with_unequal_lists_is_refused(tmp_path: Path) -> None:
    """A generator built without add_parameter's check still cannot produce a ragged table."""
    pgen = tmp_path / "ragged.py"
    pgen.write_text(
        "class G:\n    parameters = {'A': [1, 2], 'B': [1]}\n\n"
        "def get_custom_generator(env, **kwargs):\n    return G()\n"
    )
    with pytest.raises(LegatoError, match=r"^ragged\.py: the generator's parameters have different numbers of values"):
        parameters.from_pgen(pgen, {}, {})


@pytest.mark.parametrize("name", ["missing.py", "."])
def test_missing_pgen_is_named(name: str, tmp_path: Path) -> None:
    with pytest.raises(LegatoError, match="no such pgen file"):
        parameters.from_pgen(tmp_path / name, {}, {})


def test_pgen_sees_its_own_folder_on_the_import_path(tmp_path: Path) -> None:
    (tmp_path / "legato_test_helper_values.py").write_text("VALUES = [3, 4]\n")
    pgen = tmp_path / "gen.py"
    pgen.write_text(
        "from maestrowf.datastructures.core import ParameterGenerator\n"
        "from legato_test_helper_values import VALUES\n\n"
        "def get_custom_generator(env, **kwargs):\n"
        "    generator = ParameterGenerator()\n    generator.add_parameter('V', VALUES)\n    return generator\n"
    )
    assert parameters.from_pgen(pgen, {}, {}).values == {"V": ["3", "4"]}
    assert str(tmp_path) not in sys.path


def test_pgen_may_define_dataclasses(tmp_path: Path) -> None:
    pgen = tmp_path / "typed.py"
    pgen.write_text(
        "from __future__ import annotations\nfrom dataclasses import dataclass\n"
        "from maestrowf.datastructures.core import ParameterGenerator\n\n"
        "@dataclass\nclass Row:\n    size: int\n\n"
        "def get_custom_generator(env, **kwargs):\n"
        "    generator = ParameterGenerator()\n"
        "    generator.add_parameter('SIZE', [Row(8).size, Row(16).size])\n    return generator\n"
    )
    assert parameters.from_pgen(pgen, {}, {}).values == {"SIZE": ["8", "16"]}


def test_pgen_that_is_not_python_is_named(tmp_path: Path) -> None:
    pgen = tmp_path / "gen.txt"
    pgen.write_text("def get_custom_generator(env, **kwargs):\n    return None\n")
    with pytest.raises(LegatoError, match=r"gen\.txt: not a Python file"):
        parameters.from_pgen(pgen, {}, {})


def test_pgen_env_values_keep_their_yaml_type(write_spec, tmp_path: Path) -> None:
    """Maestro hands a pgen ``SEED: 1777`` as the int: seeding with the text would give other values."""
    spec = load_spec(write_spec(
        "description: {name: typed, description: d}\n"
        "env:\n  variables: {SEED: 1777, RATE: 0.5, NAME: x, LIST_TEXT: '[1]'}\n"
        "study:\n  - {name: s, description: d, run: {cmd: echo}}\n"
    ))
    pgen = tmp_path / "typed_env.py"
    pgen.write_text(
        "from random import randint, seed\n"
        "from maestrowf.datastructures.core import ParameterGenerator\n\n"
        "def get_custom_generator(env, **kwargs):\n"
        "    names = ['SEED', 'RATE', 'NAME', 'LIST_TEXT']\n"
        "    seed(a=env.find('SEED').value)\n"
        "    generator = ParameterGenerator()\n"
        "    generator.add_parameter('TYPE', [type(env.find(n).value).__name__ for n in names])\n"
        "    generator.add_parameter('SIZE', [randint(10, 30) for n in names])\n"
        "    return generator\n"
    )
    table = parameters.from_pgen(pgen, study_env(spec, tmp_path), {}, spec.raw_variables)
    assert table.values["TYPE"] == ["int", "float", "str", "str"]
    assert table.values["SIZE"] == ["28", "21", "17", "10"]  # Maestro's montecarlo sample with SEED 1777


PRODUCT = """\
description: {name: product, description: d}
study:
  - {name: s, description: d, run: {cmd: echo $(MODEL) $(MESH) $(SIZE) $(ITER)}}
global.parameters:
  MODEL: {values: [lin, cub], label: MODEL.%%}
  MESH: {values: [8, 16], label: MESH.%%}
legato:
  product:
    SIZE: {values: [10, 20, 30], label: SIZE.%%}
    ITER: {values: [1, 2], label: I.%%}
"""


def test_product_combines_the_zipped_rows_with_every_product_value(write_spec) -> None:
    import itertools

    spec = load_spec(write_spec(PRODUCT))
    table = parameters.from_spec(spec)
    expected = list(itertools.product([("lin", "8"), ("cub", "16")], ["10", "20", "30"], ["1", "2"]))
    assert parameters.spec_rows(spec) == table.length == 12
    assert [(r["MODEL"], r["MESH"]) for r in map(table.row, range(12))] == [e[0] for e in expected]
    assert [(table.row(i)["SIZE"], table.row(i)["ITER"]) for i in range(12)] == [e[1:] for e in expected]
    assert table.label("ITER", 1) == "I.2"
    for start, nrows in [(0, 5), (5, 5), (10, 5), (3, 0), (12, 4)]:
        page = parameters.from_spec(spec, start, nrows)
        assert [page.row(i) for i in range(page.length)] == [table.row(i) for i in range(start, min(12, start + nrows))]


def test_product_without_global_parameters(write_spec) -> None:
    spec = load_spec(write_spec(PRODUCT.split("global.parameters:")[0] + "legato:" + PRODUCT.split("legato:")[1]))
    table = parameters.from_spec(spec, 2, 3)
    assert [table.row(i) for i in range(3)] == [{"SIZE": "20", "ITER": "1"}, {"SIZE": "20", "ITER": "2"},
                                                 {"SIZE": "30", "ITER": "1"}]


@pytest.mark.parametrize("extra, message", [
    ("    MODEL: {values: [a], label: M.%%}\n", "spec.yaml: legato.product.MODEL: already in global.parameters"),
    ("    EMPTY: {values: [], label: E.%%}\n", "spec.yaml: legato.product.EMPTY.values: must not be empty"),
    ("    NOLABEL: {values: [1]}\n", "spec.yaml: legato.product.NOLABEL: 'label' is required"),
])
def test_bad_product_is_named(extra: str, message: str, write_spec) -> None:
    with pytest.raises(LegatoError, match=re.escape(message)):
        load_spec(write_spec(PRODUCT + extra))


def test_product_in_run_and_as_a_campaigns_rows(write_spec, tmp_path: Path) -> None:
    """``legato run`` expands the product; ``legato batch`` pages through it, START/NROWS at a time."""
    import csv

    from tests.test_cli_dry import legato

    spec = write_spec(PRODUCT.replace("echo $(MODEL) $(MESH) $(SIZE) $(ITER)", "echo $(SIZE) $(ITER)"))
    done = legato("run", str(spec), "-o", "out", "--layout", "flat", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "s").iterdir() if p.is_dir()) == sorted(
        f"I.{i}.SIZE.{s}" for s in (10, 20, 30) for i in (1, 2))  # MODEL/MESH unused: one instance per label
    done = legato("batch", str(spec), "-b", "5", "-o", "camp", "--no-archive", "--min-inodes", "0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert legato("results", "camp", "--csv", "r.csv", cwd=tmp_path).returncode == 0
    with open(tmp_path / "r.csv", newline="") as handle:
        rows = sorted((int(r["row_index"]), r["MODEL"], r["SIZE"], r["ITER"], r["state"]) for r in csv.DictReader(handle))
    table = parameters.from_spec(load_spec(spec))
    assert rows == [(i, table.row(i)["MODEL"], table.row(i)["SIZE"], table.row(i)["ITER"], "finished") for i in range(12)]
