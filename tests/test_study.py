"""Expansion of steps over parameters, with Maestro's semantics for used parameters, funnels and tokens."""
from __future__ import annotations

import inspect
import itertools
import os
import re
import subprocess
from pathlib import Path

import pytest

from legato.errors import LegatoError
from legato.parameters import ParameterTable, from_spec
from legato.spec import load_spec
from legato.study import Instance, StudyPlan, study_env, substitute
from tests import maestro

SPECS = Path(__file__).resolve().parent / "specs"

HEAD = """\
description:
  name: expansion
  description: an expansion test
"""


def make_plan(write_spec, text: str, root: Path, table: ParameterTable | None = None, **options) -> StudyPlan:
    spec = load_spec(write_spec(HEAD + text))
    return StudyPlan(spec, table if table is not None else from_spec(spec), root, **options)


def by_step(plan: StudyPlan) -> dict[str, list[Instance]]:
    grouped: dict[str, list[Instance]] = {}
    for instance in plan.instances():
        grouped.setdefault(instance.step, []).append(instance)
    return grouped


PARAMS = """
global.parameters:
  A:
    values: [1, 2, 3]
    label: A.%%
  B:
    values: [x, y, z]
    label: B.%%
"""


# -- which parameters a step expands over ----------------------------------------------------


def test_steps_expand_only_over_parameters_they_use(write_spec, tmp_path: Path) -> None:
    text = """
study:
  - {name: setup, description: uses nothing, run: {cmd: echo setup}}
  - {name: a, description: uses A, run: {cmd: echo $(A), depends: [setup]}}
  - {name: b, description: uses B and inherits A, run: {cmd: echo $(B.label), depends: [a]}}
  - {name: funnel, description: waits for all of b, run: {cmd: echo done, depends: [b_*]}}
  - {name: star, description: Maestro's other funnel form, run: {cmd: echo done, depends: ["a*"]}}
  - {name: reader, description: reads a's folder, run: {cmd: cat $(a.workspace)/out}}
  - {name: alone, description: uses nothing at all, run: {cmd: date}}
""" + PARAMS
    plan = make_plan(write_spec, text, tmp_path / "study")
    params = {step.name: step.params for step in plan.steps}
    assert params == {
        "setup": (), "a": ("A",), "b": ("A", "B"), "funnel": (), "star": (), "reader": ("A",), "alone": (),
    }
    counts = {step.name: step.count for step in plan.steps}
    assert counts == {"setup": 1, "a": 3, "b": 3, "funnel": 1, "star": 1, "reader": 3, "alone": 1}
    assert plan.total == 13
    steps = by_step(plan)
    assert [i.label for i in steps["b"]] == ["A.1.B.x", "A.2.B.y", "A.3.B.z"]
    assert [i.parents for i in steps["b"]] == [(a.id,) for a in steps["a"]]
    assert steps["a"][0].parents == (steps["setup"][0].id,)
    assert steps["funnel"][0].parents == () and steps["funnel"][0].label == ""
    assert {s.name: s.funnel_parents for s in plan.steps}["funnel"] == ["b"]
    assert {s.name: s.funnel_parents for s in plan.steps}["star"] == ["a"]
    assert [i.parents for i in steps["reader"]] == [(a.id,) for a in steps["a"]]
    assert steps["alone"][0].workspace == "alone" and steps["alone"][0].params == {}


def test_repeated_values_give_one_instance_each(write_spec, tmp_path: Path) -> None:
    text = """
study:
  - {name: a, description: uses A only, run: {cmd: echo $(A)}}
  - {name: ab, description: uses both, run: {cmd: echo $(B), depends: [a]}}
global.parameters:
  A: {values: [1, 1, 2, 2], label: A.%%}
  B: {values: [w, x, y, z], label: B.%%}
"""
    steps = by_step(make_plan(write_spec, text, tmp_path / "study"))
    assert [i.label for i in steps["a"]] == ["A.1", "A.2"]
    assert [i.parents for i in steps["ab"]] == [(1,), (1,), (2,), (2,)]
    assert [i.id for plan in steps.values() for i in plan] == list(range(1, 7))


def test_parameter_prefix_is_not_a_use(write_spec, tmp_path: Path) -> None:
    """Maestro's regex counts ``$(PX)`` as a use of ``P``; legato does not."""
    text = """
study:
  - {name: s, description: d, run: {cmd: echo $(PX) $(P_2) $(P.other)}}
global.parameters:
  P: {values: [1, 2], label: P.%%}
  PX: {values: [a, b], label: PX.%%}
"""
    plan = make_plan(write_spec, text, tmp_path / "study")
    assert plan.steps[0].params == ("PX",)
    assert [i.script for i in plan.instances()] == ["echo a $(P_2) $(P.other)", "echo b $(P_2) $(P.other)"]


def test_parameters_used_in_name_description_and_resources_count(write_spec, tmp_path: Path) -> None:
    text = """
study:
  - {name: s, description: size $(N.label), run: {cmd: echo, nodes: $(N)}}
  - {name: t, description: d, run: {cmd: echo, walltime: $(W)}}
global.parameters:
  N: {values: [1, 2], label: N.%%}
  W: {values: ["1:00", "2:00"], label: W-%%}
"""
    steps = by_step(make_plan(write_spec, text, tmp_path / "study"))
    assert [i.resources for i in steps["s"]] == [{"nodes": 1}, {"nodes": 2}]
    assert [i.resources for i in steps["t"]] == [{"walltime": "1:00"}, {"walltime": "2:00"}]


def test_parents_run_first_whatever_the_spec_order(write_spec, tmp_path: Path) -> None:
    text = """
study:
  - {name: late, description: d, run: {cmd: echo, depends: [early]}}
  - {name: early, description: d, run: {cmd: echo}}
"""
    plan = make_plan(write_spec, text, tmp_path / "study")
    assert [s.name for s in plan.steps] == ["early", "late"]
    assert [i.parents for i in plan.instances()] == [(), (1,)]


def test_empty_parameter_lists_give_no_instances(write_spec, tmp_path: Path) -> None:
    """Maestro stages no instance of a step over an empty parameter list; unparameterized steps still run."""
    text = """
study:
  - {name: s, description: d, run: {cmd: echo $(P)}}
  - {name: t, description: d, run: {cmd: echo once, depends: [s_*]}}
global.parameters:
  P: {values: [], label: P.%%}
"""
    plan = make_plan(write_spec, text, tmp_path / "study")
    assert [(s.name, s.count) for s in plan.steps] == [("s", 0), ("t", 1)]
    assert [i.script for i in plan.instances()] == ["echo once"]


def test_a_table_without_parameters_leaves_tokens(write_spec, tmp_path: Path) -> None:
    """A pgen that read no rows gives no parameters: the step runs once, like Maestro's."""
    plan = make_plan(write_spec, "study:\n  - {name: s, description: d, run: {cmd: echo $(P)}}\n",
                     tmp_path / "study", table=ParameterTable())
    assert [i.script for i in plan.instances()] == ["echo $(P)"]


# -- tokens ---------------------------------------------------------------------------------


def test_every_token_kind(write_spec, tmp_path: Path) -> None:
    text = """
env:
  variables:
    GREETING: hello
    FULL: $(GREETING) world
    DATA: $(SPECROOT)/data
    LATER: $(OUT)/later
    OUT: $(OUTPUT_PATH)/out
  labels:
    LOG: $(P.label).$(GREETING).log
  dependencies:
    paths: [{name: TOOLS, path: /opt/tools}]
    git: [{name: REPO, path: /src, url: https://example.org/r.git}]
study:
  - name: first
    description: d
    run:
      cmd: echo $(P) $(P.label) $(P.name) > $(LOG); cd $(WORKSPACE)
      restart: echo retry $(P) in $(WORKSPACE)
  - name: second
    description: d
    run:
      cmd: $(LAUNCHER) x $(LAUNCHER)[2n, 4p] $(first.workspace) $(FULL) $(DATA) $(LATER) $(TOOLS) $(REPO) $(date) $(SPECROOT)
      depends: [first]
  - name: third
    description: d
    run:
      cmd: ls $(first.workspace) $(second.workspace) $(WORKSPACE) $(OUTPUT_PATH)
      depends: [first_*, second*]
global.parameters:
  P: {values: [7, 8], label: P-%%}
"""
    root = tmp_path / "study"
    steps = by_step(make_plan(write_spec, text, root, layout="flat"))
    assert [i.script for i in steps["first"]] == [
        f"echo 7 P-7 P > P-7.hello.log; cd {root}/first/P-7", f"echo 8 P-8 P > P-8.hello.log; cd {root}/first/P-8",
    ]
    assert steps["first"][1].restart == f"echo retry 8 in {root}/first/P-8"
    assert steps["second"][0].script == (
        f" x  {root}/first/P-7 hello world {tmp_path}/data {root}/out/later /opt/tools /src/REPO $(date) {tmp_path}"
    )
    assert steps["third"][0].script == f"ls {root}/first {root}/second {root}/third {root}"
    assert steps["second"][1].params == {"P": "8"} and steps["second"][1].restart is None


def test_launcher_is_given_the_resources(write_spec, tmp_path: Path) -> None:
    text = """
study:
  - {name: s, description: d, run: {cmd: $(LAUNCHER) ./app, procs: $(N), nodes: 1}}
global.parameters:
  N: {values: [2, 4], label: N.%%}
"""
    plan = make_plan(write_spec, text, tmp_path / "study", launcher=lambda text, r: text.replace("$(LAUNCHER)", f"srun -N{r['nodes']} -n{r['procs']}"))
    assert [i.script for i in plan.instances()] == ["srun -N1 -n2 ./app", "srun -N1 -n4 ./app"]


def test_labels_sorted_by_parameter_name(write_spec, tmp_path: Path) -> None:
    text = """
study:
  - {name: echo-params, description: d, run: {cmd: echo $(PARAM3) $(PARAM1) $(PARAM2)}}
global.parameters:
  PARAM3: {values: [72, 60], label: PARAM3.%%}
  PARAM1: {values: [94, 48], label: PARAM1.%%}
  PARAM2: {values: [71, 18], label: PARAM2.%%}
"""
    plan = make_plan(write_spec, text, tmp_path / "study", layout="flat")
    assert [(i.label, i.workspace, i.script) for i in plan.instances()] == [
        ("PARAM1.94.PARAM2.71.PARAM3.72", "echo-params/PARAM1.94.PARAM2.71.PARAM3.72", "echo 72 94 71"),
        ("PARAM1.48.PARAM2.18.PARAM3.60", "echo-params/PARAM1.48.PARAM2.18.PARAM3.60", "echo 60 48 18"),
    ]


def test_env_references_resolve_in_any_order(write_spec, tmp_path: Path) -> None:
    spec = load_spec(write_spec(HEAD + """
env:
  variables: {A: $(B)/a, B: $(OUTPUT_PATH)/b, SELF: x$(SELF), C1: $(C2), C2: $(C1)}
  labels: {L: $(A).$(N.label)}
study:
  - {name: s, description: d, run: {cmd: echo}}
"""))
    env = study_env(spec, Path("/r"))
    assert env["A"] == "/r/b/a" and env["B"] == "/r/b" and env["L"] == "/r/b/a.$(N.label)"
    assert env["SELF"] == "x$(SELF)" and "$(" in env["C1"]


def test_substitute_leaves_unknown_tokens() -> None:
    assert substitute("a $(X) $(Y) $(date +%s) $(", {"X": "1"}) == "a 1 $(Y) $(date +%s) $("


def test_resource_tokens_must_be_numbers_before_anything_runs(write_spec, tmp_path: Path) -> None:
    text = """
study:
  - {name: s, description: d, run: {cmd: echo, procs: $(N)}}
global.parameters:
  N: {values: [1, two], label: N.%%}
"""
    with pytest.raises(LegatoError, match=r"^spec\.yaml: step 's': run\.procs is 'two', not a whole number$"):
        make_plan(write_spec, text, tmp_path / "study")
    with pytest.raises(LegatoError, match=r"^spec\.yaml: step 's': run\.nodes '\$\(GHOST\)' names no parameter"):
        make_plan(write_spec, "study:\n  - {name: s, description: d, run: {cmd: echo, nodes: $(GHOST)}}\n",
                  tmp_path / "study")


def test_exclusive_tokens_must_be_flags(write_spec, tmp_path: Path) -> None:
    text = """
study:
  - {name: s, description: d, run: {cmd: echo, exclusive: $(X)}}
global.parameters:
  X: {values: [true, maybe], label: X.%%}
"""
    with pytest.raises(LegatoError, match=r"^spec\.yaml: step 's': run\.exclusive is 'maybe', not true or false$"):
        make_plan(write_spec, text, tmp_path / "study")


def test_exclusive_tokens_become_booleans(write_spec, tmp_path: Path) -> None:
    text = """
study:
  - {name: s, description: d, run: {cmd: echo, exclusive: $(X)}}
  - {name: t, description: d, run: {cmd: echo, exclusive: {allocation: $(X), launcher: true}}}
global.parameters:
  X: {values: [true, false], label: X.%%}
"""
    steps = by_step(make_plan(write_spec, text, tmp_path / "study"))
    assert [i.resources["exclusive"] for i in steps["s"]] == [True, False]
    assert [i.resources["exclusive"] for i in steps["t"]] == [
        {"allocation": True, "launcher": True}, {"allocation": False, "launcher": True},
    ]


@pytest.mark.parametrize(
    "cmd, message",
    [
        ("cat $(ghost.workspace)", r"^spec\.yaml: step 'a': \$\(ghost\.workspace\) names no step$"),
        ("cat $(b.workspace)", r"^spec\.yaml: study: cyclic dependency: "),
    ],
)
def test_workspace_reference_errors(write_spec, tmp_path: Path, cmd: str, message: str) -> None:
    text = f"""
study:
  - {{name: a, description: d, run: {{cmd: "{cmd}"}}}}
  - {{name: b, description: d, run: {{cmd: echo, depends: [a]}}}}
"""
    with pytest.raises(LegatoError, match=message):
        make_plan(write_spec, text, tmp_path / "study")


# -- streaming ------------------------------------------------------------------------------


def reachable_strings(root: object) -> set[str]:
    """Every string held by an object graph of plain containers, dataclasses and objects."""
    seen: set[int] = set()
    found: set[str] = set()
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, str):
            found.add(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif hasattr(item, "__dict__") and not inspect.isroutine(item) and not isinstance(item, type):
            stack.extend(vars(item).values())
        elif hasattr(item, "__slots__"):
            stack.extend(getattr(item, name) for name in item.__slots__ if hasattr(item, name))
    return found


def test_instances_stream_and_the_plan_holds_no_scripts(write_spec, tmp_path: Path) -> None:
    count = 20_000
    table = ParameterTable()
    table.add("P", range(count))
    plan = make_plan(write_spec, "study:\n  - {name: s, description: d, run: {cmd: run-me --value $(P)}}\n",
                     tmp_path / "study", table=table)
    stream = plan.instances()
    assert inspect.isgenerator(stream)
    first = list(itertools.islice(stream, 3))
    assert [i.script for i in first] == ["run-me --value 0", "run-me --value 1", "run-me --value 2"]
    assert plan.total == count
    last = None
    for last in stream:
        pass
    assert last.script == f"run-me --value {count - 1}" and last.id == count
    held = reachable_strings(plan)
    assert not [text for text in held if re.fullmatch(r"run-me --value \d+", text)]
    assert "run-me --value $(P)" in held  # the step's template is all it keeps


# -- agreement with maestrowf itself --------------------------------------------------------


def maestro_dry_run(spec: Path, out: Path) -> dict[str, str]:
    """Folder -> script body of every step instance of a Maestro ``run --dry``."""
    maestro.require()
    subprocess.run([str(maestro.MAESTRO), "run", "--dry", "-fg", "-y", "-o", str(out), str(spec)],
                   env=maestro.env(), capture_output=True, timeout=300, check=True, stdin=subprocess.DEVNULL)
    scripts = {}
    for script in out.rglob("*.sh"):
        if not script.name.endswith(".restart.sh"):
            scripts[str(script.parent.relative_to(out))] = script.read_text().split("\n", 2)[2].rstrip("\n")
    return scripts


@pytest.mark.parametrize("name", ["maestro_tokens.yaml", "maestro_lulesh.yaml"])
def test_same_folders_and_scripts_as_maestro(tmp_path: Path, name: str) -> None:
    out = tmp_path / "maestro"
    expected = maestro_dry_run(SPECS / name, out)
    spec = load_spec(SPECS / name)
    plan = StudyPlan(spec, from_spec(spec), out, layout="flat")
    assert {i.workspace: i.script.rstrip("\n") for i in plan.instances()} == expected


def test_label_without_placeholder_collapses_like_maestro(write_spec, tmp_path: Path) -> None:
    """Every value shares the literal label: one instance, with the last combination's values, and a warning."""
    text = """\
study:
  - {name: one, description: d, run: {cmd: echo $(X)}}
  - {name: both, description: d, run: {cmd: echo $(X) $(Y)}}
global.parameters:
  X: {values: [1, 2, 3], label: NAME}
  Y: {values: [1, 2, 3], label: Y.%%}
"""
    plan = make_plan(write_spec, text, tmp_path / "study")
    steps = by_step(plan)
    assert [(i.label, i.script) for i in steps["one"]] == [("NAME", "echo 3")]
    assert [i.label for i in steps["both"]] == ["NAME.Y.1", "NAME.Y.2", "NAME.Y.3"]
    assert len(plan.warnings) == 1 and "step 'one': 2 parameter combinations share a label" in plan.warnings[0]


def test_label_list_keeps_repeated_values_apart(write_spec, tmp_path: Path) -> None:
    """A pgen's label list names each combination: equal values with different labels are different instances."""
    spec = load_spec(write_spec(HEAD + "study:\n  - {name: s, description: d, run: {cmd: echo $(X)}}\n"))
    table = ParameterTable()
    table.add("X", [1, 1, 2], ["a", "b", "c"])
    plan = StudyPlan(spec, table, tmp_path / "study")
    assert [(i.label, i.script) for i in plan.instances()] == [("a", "echo 1"), ("b", "echo 1"), ("c", "echo 2")]
    assert not plan.warnings
