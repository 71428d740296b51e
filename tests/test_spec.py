"""Spec loading: every valid Maestro spec loads, every mistake is one line naming file, key path and reason."""
from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from legato.errors import LegatoError
from legato.spec import Dependency, find_cycle, key_path, load_spec
from tests import maestro

SPECS = Path(__file__).resolve().parent / "specs"
MAESTRO_SPECS = sorted(SPECS.glob("maestro_*.yaml"))

HEAD = """\
description:
  name: test
  description: a test study
"""


def step_spec(run: str, extra: str = "") -> str:
    """A one-step spec whose ``run`` mapping is ``run`` (YAML lines, unindented)."""
    return HEAD + "study:\n  - name: s\n    description: d\n    run:\n" + textwrap.indent(run, "      ") + extra


def load_error(write_spec, text: str) -> str:
    with pytest.raises(LegatoError) as caught:
        load_spec(write_spec(text))
    message = str(caught.value)
    assert "\n" not in message, message
    assert message.startswith("spec.yaml: "), message
    return message


# -- valid specs ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", MAESTRO_SPECS, ids=lambda p: p.name)
def test_fixture_specs_load(path: Path) -> None:
    spec = load_spec(path)
    assert spec.steps and spec.name and spec.path == path.resolve()


def test_every_section_is_modelled() -> None:
    spec = load_spec(SPECS / "maestro_full.yaml")
    assert spec.name == "full study"
    assert spec.description.startswith("Uses every section")
    assert spec.variables == {"OUTPUT_PATH": "./full_output", "TRIALS": "4", "RATE": "0.5", "GREETING": "hello"}
    assert spec.labels == {"OUTFILE": "$(GREETING).$(SIZE.label).log"}
    assert spec.sources == ["source ./setup.sh"]
    assert spec.dependencies["paths"] == [{"name": "INPUTS", "path": "/tmp/legato-inputs"}]
    assert spec.dependencies["git"][0]["tag"] == "v1.1.9"
    assert spec.batch == {
        "type": "slurm", "host": "quartz", "bank": "science", "queue": "pbatch", "shell": "/bin/bash",
        "args": {"mpibind": "off"},
    }
    build = spec.step("build")
    assert build.run["cores per task"] == 2
    assert build.run["exclusive"] == {"allocation": True, "launcher": False}
    assert build.run["priority"] == "High"
    assert build.run["walltime"] == "00:10:00"
    assert {"pre", "post", "restart", "nested", "waitable", "bind gpus", "rs per node"} <= set(build.run)
    simulate = spec.step("simulate")
    assert simulate.run["walltime"] == 3600 and simulate.run["nodes"] == "$(NODES)"
    assert simulate.depends == (Dependency("build", False),)
    assert spec.step("collect").depends == (Dependency("simulate", True),)
    assert [(p.name, p.values, p.label) for p in spec.parameters][:2] == [
        ("SIZE", [10, 20], "SIZE.%%"), ("ITER", [1, 2], "ITER.%%"),
    ]


def test_label_without_placeholder_is_accepted(write_spec) -> None:
    """Maestro takes ``label: NAME`` as the literal label of every value (study expansion then warns)."""
    spec = load_spec(write_spec(HEAD + "study:\n  - {name: a, description: d, run: {cmd: echo $(X)}}\n"
                                + "global.parameters:\n  X: {values: [1, 2], label: NAME}\n"))
    assert spec.parameters[0].label == "NAME"


@pytest.mark.parametrize("funnel", ["first_*", "first*"])
def test_funnel_depends_forms(write_spec, funnel: str) -> None:
    text = HEAD + f"""\
study:
  - name: first
    description: d
    run: {{cmd: echo 1}}
  - name: second
    description: d
    run: {{cmd: echo 2, depends: ["{funnel}"]}}
"""
    assert load_spec(write_spec(text)).step("second").depends == (Dependency("first", True),)


@pytest.mark.parametrize(
    "run",
    [
        "walltime: 60", "walltime: 0", "walltime: '1:00:00'", "walltime: $(WALL)",
        "nodes: $(N)", "procs: 4", "gpus: 0", "gpus: $(G)", "cores per task: 3", "cores per task: $(C)",
        "tasks per rs: 1", "rs per node: $(R)", "cpus per rs: 2", "bind: rs", "bind gpus: none",
        "exclusive: true", "exclusive: $(X)", "exclusive: {allocation: $(X), launcher: true}", "exclusive: {}",
        "priority: HELD", "priority: minimal", "priority: Medium", "priority: 0", "priority: 1.0", "priority: 0.3",
        "nested: false", "waitable: true", "reservation: r", "qos: debug", "pre: echo", "post: echo",
        "restart: echo again", "depends: []",
    ],
)
def test_run_key_variants_accepted(write_spec, run: str) -> None:
    key = run.split(":")[0]
    spec = load_spec(write_spec(step_spec(f"cmd: echo\n{run}\n")))
    assert key in spec.steps[0].run


@pytest.mark.parametrize(
    "text",
    [
        HEAD + "study:\n  - {name: s, description: d, run: {cmd: echo}}\nsomething_else: [1, 2]\nbatch: {}\n",
        HEAD + "env:\nbatch:\nglobal.parameters:\nstudy:\n  - {name: s, description: d, run: {cmd: echo}}\n",
        HEAD.replace("description: a test", "extra: [1]\n  description: a test") + "study:\n  - {name: s, description: d, run: {cmd: e}}\n",
    ],
    ids=["unknown-top-level-keys", "empty-sections", "extra-description-keys"],
)
def test_lenient_where_maestro_is(write_spec, text: str) -> None:
    assert load_spec(write_spec(text)).steps[0].cmd


# -- errors ---------------------------------------------------------------------------------

STEP = "  - name: {0}\n    description: d\n    run:\n      cmd: echo {0}\n"

ERRORS = {
    "missing-cmd": (
        HEAD + "study:\n" + STEP.format("a") + "  - name: b\n    description: d\n    run:\n      restart: x\n",
        "spec.yaml: study[1].run: 'cmd' is required",
    ),
    "duplicate-steps": (
        HEAD + "study:\n" + STEP.format("a") + STEP.format("b") + STEP.format("a"),
        "spec.yaml: study[2].name: duplicate step name 'a' (also study[0])",
    ),
    "unknown-depends": (
        HEAD + "study:\n" + STEP.format("a") + "      depends: [ghost]\n",
        "spec.yaml: study[0].run.depends: unknown step 'ghost'",
    ),
    "unknown-funnel": (
        HEAD + "study:\n" + STEP.format("a") + "      depends: [ghost_*]\n",
        "spec.yaml: study[0].run.depends: unknown step 'ghost'",
    ),
    "self-depends": (
        HEAD + "study:\n" + STEP.format("a") + "      depends: [a]\n",
        "spec.yaml: study[0].run.depends: step 'a' depends on itself",
    ),
    "cyclic-depends": (
        HEAD + "study:\n" + STEP.format("a") + "      depends: [c]\n" + STEP.format("b") + "      depends: [a]\n"
        + STEP.format("c") + "      depends: [b_*]\n",
        "spec.yaml: study: cyclic depends: a -> c -> b -> a",
    ),
    "repeated-depends": (
        HEAD + "study:\n" + STEP.format("a") + STEP.format("b") + "      depends: [a, a]\n",
        "spec.yaml: study[1].run.depends: has repeated entries",
    ),
    "unequal-parameters": (
        HEAD + "study:\n" + STEP.format("a")
        + "global.parameters:\n  X: {values: [1, 2], label: X.%%}\n  Y: {values: [1, 2, 3], label: Y.%%}\n",
        "spec.yaml: global.parameters: all parameters need the same number of values (X has 2, Y has 3)",
    ),
    "label-list": (
        HEAD + "study:\n" + STEP.format("a") + "global.parameters:\n  X: {values: [1, 2], label: [one, two]}\n",
        "spec.yaml: global.parameters.X.label: must be of type string, not list",
    ),
    "parameter-without-values": (
        HEAD + "study:\n" + STEP.format("a") + "global.parameters:\n  X: {label: X.%%}\n",
        "spec.yaml: global.parameters.X: 'values' is required",
    ),
    "parameter-unknown-key": (
        HEAD + "study:\n" + STEP.format("a") + "global.parameters:\n  X: {values: [1], label: X.%%, name: x}\n",
        "spec.yaml: global.parameters.X: unknown key 'name'",
    ),
    "unknown-run-key": (
        HEAD + "study:\n" + STEP.format("a") + "      cpus: 4\n",
        "spec.yaml: study[0].run: unknown key 'cpus'",
    ),
    "unknown-step-key": (
        HEAD + "study:\n" + STEP.format("a") + "    depends: [b]\n",
        "spec.yaml: study[0]: unknown key 'depends'",
    ),
    "empty-study": (HEAD + "study: []\n", "spec.yaml: study: must not be empty"),
    "missing-study": (HEAD, "spec.yaml: (top level): 'study' is required"),
    "missing-description-name": (
        "description:\n  description: d\nstudy:\n" + STEP.format("a"),
        "spec.yaml: description: 'name' is required",
    ),
    "empty-description-name": (
        "description:\n  name: ''\n  description: d\nstudy:\n" + STEP.format("a"),
        "spec.yaml: description.name: must not be empty",
    ),
    "missing-description": ("study:\n" + STEP.format("a"), "spec.yaml: (top level): 'description' is required"),
    "description-not-mapping": (
        "description: my study\nstudy:\n" + STEP.format("a"),
        "spec.yaml: description: must be of type object, not str",
    ),
    "env-not-mapping": (
        HEAD + "env: [1]\nstudy:\n" + STEP.format("a"),
        "spec.yaml: env: must be of type object or null, not list",
    ),
    "step-not-mapping": (HEAD + "study:\n  - echo hi\n", "spec.yaml: study[0]: must be of type object, not str"),
    "nodes-zero": (step_spec("cmd: e\nnodes: 0\n"), "spec.yaml: study[0].run.nodes: 0 is not valid here"),
    "nodes-label-token": (
        step_spec("cmd: e\nnodes: $(N.label)\n"),
        "spec.yaml: study[0].run.nodes: '$(N.label)' is not valid here (expected integer >= 1 or a '$(NAME)' token)",
    ),
    "gpus-negative": (step_spec("cmd: e\ngpus: -1\n"), "spec.yaml: study[0].run.gpus: -1 is not valid here"),
    "priority-unknown": (step_spec("cmd: e\npriority: urgent\n"), "spec.yaml: study[0].run.priority: 'urgent'"),
    "priority-above-one": (step_spec("cmd: e\npriority: 2\n"), "spec.yaml: study[0].run.priority: 2 is not valid here (expected one of HELD/MINIMAL/LOW/MEDIUM/HIGH/"
        "EXPEDITED or number 0.0..1.0)"),
    "exclusive-word": (
        step_spec("cmd: e\nexclusive: yes please\n"),
        "spec.yaml: study[0].run.exclusive: 'yes please' is not valid here (expected true/false or a '$(NAME)' token or object)",
    ),
    "walltime-negative": (step_spec("cmd: e\nwalltime: -5\n"), "spec.yaml: study[0].run.walltime: -5 is not valid"),
    "cmd-empty": (step_spec("cmd: ''\n"), "spec.yaml: study[0].run.cmd: must not be empty"),
    "cmd-not-text": (step_spec("cmd: [ls]\n"), "spec.yaml: study[0].run.cmd: must be of type string, not list"),
    "env-unknown-key": (
        HEAD + "env:\n  vars: {A: 1}\nstudy:\n" + STEP.format("a"), "spec.yaml: env: unknown key 'vars'"
    ),
    "env-variable-empty": (
        HEAD + "env:\n  variables: {A: ''}\nstudy:\n" + STEP.format("a"), "spec.yaml: env.variables.A: '' is not valid here (expected non-empty string or number)"
    ),
    "env-label-is-variable": (
        HEAD + "env:\n  variables: {A: x}\n  labels: {A: y}\nstudy:\n" + STEP.format("a"),
        "spec.yaml: env.labels.A: the name is already an env variable",
    ),
    "env-dependency-is-variable": (
        HEAD + "env:\n  variables: {A: x}\n  dependencies:\n    paths: [{name: A, path: /tmp}]\nstudy:\n" + STEP.format("a"),
        "spec.yaml: env.dependencies.paths[0].name: 'A' is already an env variable or label",
    ),
    "env-path-without-path": (
        HEAD + "env:\n  dependencies:\n    paths: [{name: A}]\nstudy:\n" + STEP.format("a"),
        "spec.yaml: env.dependencies.paths[0]: 'path' is required",
    ),
    "env-git-without-url": (
        HEAD + "env:\n  dependencies:\n    git: [{name: A, path: /tmp}]\nstudy:\n" + STEP.format("a"),
        "spec.yaml: env.dependencies.git[0]: 'url' is required",
    ),
    "not-a-mapping": ("- just\n- a list\n", "spec.yaml: a study spec must be a YAML mapping"),
    "empty-file": ("", "spec.yaml: a study spec must be a YAML mapping"),
    "results-unknown-step": (
        HEAD + "study:\n" + STEP.format("a") + "legato:\n  results:\n    b: [out.json]\n",
        "spec.yaml: legato.results: unknown step 'b'",
    ),
}


@pytest.mark.parametrize("text, expected", ERRORS.values(), ids=ERRORS.keys())
def test_errors_are_one_line_with_key_path(write_spec, text: str, expected: str) -> None:
    assert load_error(write_spec, text).startswith(expected)


def test_the_outermost_of_several_problems_is_reported(write_spec) -> None:
    text = "description:\n  description: d\nstudy:\n" + STEP.format("a") + "      cpus: 4\n" + "  - name: b\n"
    assert load_error(write_spec, text) == "spec.yaml: description: 'name' is required"


def test_bad_yaml_names_the_line(write_spec) -> None:
    text = HEAD + "study:\n  - name: a\n    description: d\n    run:\n      cmd: echo [unclosed\n   bad: : :\n"
    message = load_error(write_spec, text)
    assert re.match(r"spec\.yaml: line (\d+), column \d+: invalid YAML: ", message), message
    assert re.match(r"spec\.yaml: line (\d+)", message).group(1) in ("8", "9")


def test_bad_yaml_tab_indent_names_the_line(write_spec) -> None:
    message = load_error(write_spec, HEAD + "study:\n\t- name: a\n")
    assert message.startswith("spec.yaml: line 5, column 1: invalid YAML: "), message


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(LegatoError, match=r"nope\.yaml: no such spec file"):
        load_spec(tmp_path / "nope.yaml")


def test_folder_as_spec_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LegatoError, match="cannot read the spec"):
        load_spec(tmp_path)


def test_step_lookup_error_names_the_step() -> None:
    with pytest.raises(LegatoError, match="no step named 'ghost'"):
        load_spec(SPECS / "maestro_minimal.yaml").step("ghost")


# -- helpers --------------------------------------------------------------------------------


def test_key_path_notation() -> None:
    assert key_path(["study", 1, "run", "cores per task"]) == "study[1].run.cores per task"
    assert key_path([]) == "(top level)"


def test_find_cycle() -> None:
    assert find_cycle({"a": [], "b": ["a"], "c": ["a", "b"]}) is None
    cycle = find_cycle({"a": ["c"], "b": ["a"], "c": ["b"], "d": []})
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}


# -- cross-check with maestrowf itself, when a venv with it exists ---------------------------


def maestro_verdict(path: Path) -> tuple[bool, str]:
    """Load and verify ``path`` with maestrowf's own YAMLSpecification in its venv."""
    code = (
        "import sys\nfrom maestrowf.specification import YAMLSpecification\n"
        "spec = YAMLSpecification.load_specification(sys.argv[1])\nspec.verify()\n"
    )
    maestro.require()
    done = subprocess.run([str(maestro.PYTHON), "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    return done.returncode == 0, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""


@pytest.mark.parametrize("path", MAESTRO_SPECS, ids=lambda p: p.name)
def test_maestro_accepts_the_fixture_specs(path: Path) -> None:
    ok, detail = maestro_verdict(path)
    assert ok, detail


@pytest.mark.parametrize(
    "case", ["missing-cmd", "unknown-run-key", "unknown-step-key", "empty-study", "nodes-zero", "priority-unknown",
             "missing-description-name", "env-unknown-key", "unequal-parameters", "parameter-unknown-key"],
)
def test_maestro_refuses_what_legato_refuses(write_spec, case: str) -> None:
    text, _ = ERRORS[case]
    path = write_spec(text)
    with pytest.raises(LegatoError):
        load_spec(path)
    ok, _ = maestro_verdict(path)
    assert not ok
