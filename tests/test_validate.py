"""``legato validate``: what a dry run checks, with nothing written; exit 0/1; ``--json`` for editors and CI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli_dry import legato
from tests.test_spec import ERRORS

SPECS = Path(__file__).resolve().parent / "specs"
HEAD = "description: {name: checked, description: d}\n"


def files(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def test_valid_spec_is_reported_and_nothing_is_written(write_spec, tmp_path: Path) -> None:
    spec = write_spec(HEAD + "env:\n  variables: {OUTPUT_PATH: ./studies}\nstudy:\n"
                      + "  - {name: a, description: d, run: {cmd: echo $(X)}}\n"
                      + "  - {name: b, description: d, run: {cmd: echo done, depends: [a_*]}}\n"
                      + "global.parameters:\n  X: {values: [1, 2, 3], label: X.%%}\n")
    before = files(tmp_path)
    done = legato("validate", str(spec), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{spec}: valid: 4 instances of 2 steps"
    assert files(tmp_path) == before
    report = json.loads(legato("validate", "--json", str(spec), cwd=tmp_path).stdout)
    assert report == {"spec": str(spec), "valid": True, "errors": [], "warnings": [], "steps": {"a": 3, "b": 1},
                      "instances": 4, "parameters": 3}


@pytest.mark.parametrize("case", ["missing-cmd", "unknown-depends", "cyclic-depends", "label-list", "unknown-run-key"])
def test_spec_errors_name_the_file_and_key_path(case: str, write_spec, tmp_path: Path) -> None:
    text, expected = ERRORS[case]
    spec = write_spec(text)
    done = legato("validate", str(spec), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith(f"legato: error: {expected}"), done.stderr
    report = json.loads(legato("validate", "--json", str(spec), cwd=tmp_path).stdout)
    assert report["valid"] is False and report["errors"][0].startswith(expected)


@pytest.mark.parametrize("body, expected", [
    ("batch: {type: slurm}\nstudy:\n  - {name: s, description: d, run: {cmd: '$(LAUNCHER)[3p] a', procs: 2}}\n",
     "spec.yaml: step 's': run.cmd: $(LAUNCHER) overrides use 3 procs but the step asks for 2"),
    ("batch: {type: lsf}\nstudy:\n  - {name: s, description: d, run: {cmd: '$(LAUNCHER)[2n] a', procs: 2}}\n",
     "spec.yaml: step 's': run.cmd: $(LAUNCHER)[2n] is not one of the forms"),
    ("env:\n  dependencies:\n    paths: [{name: IN, path: ./nothing-here}]\nstudy:\n  - {name: s, description: d, run: {cmd: ls}}\n",
     "spec.yaml: env.dependencies.paths[0]: the path './nothing-here' of 'IN' does not exist"),
    ("env:\n  dependencies:\n    git: [{name: R, path: $(OUTPUT_PATH), url: ./no-repo}]\nstudy:\n  - {name: s, description: d, run: {cmd: ls}}\n",
     "spec.yaml: env.dependencies.git[0] (R): git ls-remote failed"),
    ("study:\n  - {name: s, description: d, run: {cmd: 'cat $(t.workspace)/x'}}\n",
     "spec.yaml: step 's': $(t.workspace) names no step"),
    ("study:\n  - {name: s, description: d, run: {cmd: e, nodes: $(N)}}\nglobal.parameters:\n  N: {values: [1, x], label: N.%%}\n",
     "spec.yaml: step 's': run.nodes is 'x', not a whole number"),
])
def test_expansion_errors_are_found_without_a_folder(body: str, expected: str, write_spec, tmp_path: Path) -> None:
    spec = write_spec(HEAD + body)
    before = files(tmp_path)
    done = legato("validate", str(spec), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith(f"legato: error: {expected}"), done.stderr
    assert files(tmp_path) == before


def test_pgen_is_loaded_and_its_labels_checked(write_spec, tmp_path: Path) -> None:
    spec = write_spec(HEAD + "study:\n  - {name: s, description: d, run: {cmd: echo $(TEST)}}\n")
    pgen = tmp_path / "gen.py"
    pgen.write_text("from maestrowf.datastructures.core import ParameterGenerator\n\n"
                    "def get_custom_generator(env, **kwargs):\n    p = ParameterGenerator()\n"
                    "    p.add_parameter('TEST', [1, 2, int(kwargs['N'])], 'TEST')\n    return p\n")
    report = json.loads(legato("validate", "--json", str(spec), "--pgen", str(pgen), "--pargs", "N:3", cwd=tmp_path).stdout)
    assert report["valid"] is True and report["steps"] == {"s": 1}
    assert "step 's': 2 parameter combinations share a label" in report["warnings"][0]
    done = legato("validate", str(spec), "--pgen", str(pgen), cwd=tmp_path)
    assert done.returncode == 1 and "gen.py: get_custom_generator raised KeyError" in done.stderr


def test_tokens_that_name_nothing_are_warnings(write_spec, tmp_path: Path) -> None:
    """A mistyped ``$(NAME)`` is left to the shell, which would run it as a command: said before anything runs."""
    spec = write_spec(HEAD + "env:\n  variables: {LULESH: /opt/lulesh}\nstudy:\n"
                      + "  - {name: a, description: d, run: {cmd: '$(LULSH)/run $(SIZE) $(SIZ.label) $(date) $(WORKSPACE)'}}\n"
                      + "  - {name: b, description: d, run: {cmd: 'ls $(a.workspace) $(LULESH) $(SPECROOT)', restart: '$(NOPE)'}}\n"
                      + "global.parameters:\n  SIZE: {values: [1, 2], label: S.%%}\n")
    report = json.loads(legato("validate", "--json", str(spec), cwd=tmp_path).stdout)
    assert report["valid"] is True
    assert report["warnings"] == [
        f"spec.yaml: step 'a': run.cmd: $({token}) names no variable, parameter or step; the shell will run it as a command"
        for token in ("LULSH", "SIZ.label")
    ] + ["spec.yaml: step 'b': run.restart: $(NOPE) names no variable, parameter or step; the shell will run it as a command"]
