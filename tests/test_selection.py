"""Step subsets (``--only/--from/--until``, ``--rerun`` on a resume) and keep-going steps."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from legato.errors import LegatoError
from legato.selection import StepSelection
from tests.test_cli_dry import assert_one_line_error, legato

GRAPH = {"build": [], "run": ["build"], "check": ["build"], "post": ["run", "check"], "report": ["post"]}


@pytest.mark.parametrize("selection, expected", [
    (StepSelection(), None),
    (StepSelection(only=("run", "post")), ["run", "post"]),
    (StepSelection(start="run"), ["run", "post", "report"]),
    (StepSelection(until="post"), ["build", "run", "check", "post"]),
    (StepSelection(start="run", until="post"), ["run", "post"]),
    (StepSelection(only=("build", "report"), start="check"), ["report"]),
])
def test_selection_resolves_on_the_step_graph(selection, expected) -> None:
    assert selection.resolve(GRAPH) == expected


@pytest.mark.parametrize("selection, message", [
    (StepSelection(only=("nope",)), "--only 'nope': no such step (the steps are build, run, check, post, report)"),
    (StepSelection(start="report", until="build"), "--from report --until build: selects no step"),
    (StepSelection(rerun=("x",)), "--rerun 'x': no such step"),
])
def test_bad_selection_is_named(selection, message) -> None:
    with pytest.raises(LegatoError, match=message.replace("(", r"\(").replace(")", r"\)")):
        selection.resolve(GRAPH)
        selection.check_rerun(GRAPH)


SPEC = """\
description: {name: subset, description: d}
study:
  - {name: a, description: d, run: {cmd: "echo a-$(X) > out.txt"}}
  - {name: b, description: d, run: {cmd: "cat $(a.workspace)/out.txt; test $(X) != $(FAIL)", depends: [a]}}
  - {name: c, description: d, run: {cmd: "echo c; cat $LEGATO_FAILED_PARENTS", depends: [b_*]}}
  - {name: d, description: d, run: {cmd: "echo d", depends: [c]}}
env:
  variables: {FAIL: none}
global.parameters:
  X: {values: [1, 2, 3], label: X.%%}
"""


def states(root: Path) -> dict[str, list[str]]:
    with sqlite3.connect(root / "legato.db") as db:
        found: dict[str, list[str]] = {}
        for step, state in db.execute("SELECT step, state FROM instances ORDER BY id"):
            found.setdefault(step, []).append(state)
    return found


def attempts(root: Path) -> list[int]:
    with sqlite3.connect(root / "legato.db") as db:
        return [n for (n,) in db.execute("SELECT attempts FROM instances ORDER BY id")]


def test_until_then_resume_from(write_spec, tmp_path: Path) -> None:
    spec = write_spec(SPEC)
    done = legato("run", str(spec), "-o", "out", "--until", "b", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 instances of steps outside the selection did not run" in done.stdout
    root = tmp_path / "out"
    assert states(root) == {"a": ["finished"] * 3, "b": ["finished"] * 3, "c": ["pending"], "d": ["pending"]}
    done = legato("run", "--resume", "out", "--from", "c", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert states(root)["d"] == ["finished"]


def test_only_a_later_step_does_not_wait_for_unselected_parents(write_spec, tmp_path: Path) -> None:
    done = legato("run", str(write_spec(SPEC)), "-o", "out", "--only", "c", "--only", "d", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert states(tmp_path / "out") == {"a": ["pending"] * 3, "b": ["pending"] * 3, "c": ["finished"], "d": ["finished"]}


def test_rerun_runs_a_step_and_its_dependents_again(write_spec, tmp_path: Path) -> None:
    assert legato("run", str(write_spec(SPEC)), "-o", "out", cwd=tmp_path).returncode == 0
    root = tmp_path / "out"
    (root / "a" / "X.1" / "out.txt").write_text("changed\n")
    done = legato("run", "--resume", "out", "--rerun", "b", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (root / "b" / "X.1" / "b.out").read_text() == "changed\n"  # b ran again, a did not
    assert attempts(root) == [1, 1, 1, 1, 1, 1, 1, 1]
    assert states(root)["d"] == ["finished"]


@pytest.mark.parametrize("args, message", [
    (["--only", "x"], "--only 'x': no such step (the steps are a, b, c, d)"),
    (["--rerun", "b"], "--rerun goes with --resume STUDY_DIR"),
])
def test_bad_selection_leaves_no_folder(args, message, write_spec, tmp_path: Path) -> None:
    done = legato("run", str(write_spec(SPEC)), "-o", "out", *args, cwd=tmp_path)
    assert_one_line_error(done, message)
    assert not (tmp_path / "out").exists()


def test_keep_going_step_runs_after_a_failed_parent_and_is_told_which(write_spec, tmp_path: Path) -> None:
    text = SPEC.replace("FAIL: none", "FAIL: 2") + "legato:\n  keep_going: [c]\n"
    done = legato("run", str(write_spec(text)), "-o", "out", cwd=tmp_path)
    assert done.returncode == 1  # a failure is still a failure
    root = tmp_path / "out"
    assert states(root) == {"a": ["finished"] * 3, "b": ["finished", "failed", "finished"],
                            "c": ["finished"], "d": ["finished"]}
    assert (root / "c" / "c.out").read_text() == f"c\n{root / 'b' / 'X.2'}\n"


def test_without_keep_going_failure_skips_dependents_as_in_maestro(write_spec, tmp_path: Path) -> None:
    done = legato("run", str(write_spec(SPEC.replace("FAIL: none", "FAIL: 2"))), "-o", "out", cwd=tmp_path)
    assert done.returncode == 1
    assert states(tmp_path / "out")["c"] == ["skipped"] and states(tmp_path / "out")["d"] == ["skipped"]


def test_keep_going_names_must_be_steps(write_spec, tmp_path: Path) -> None:
    done = legato("validate", str(write_spec(SPEC + "legato:\n  keep_going: [c, nope]\n")), cwd=tmp_path)
    assert done.returncode == 1
    assert "spec.yaml: legato.keep_going[1]: unknown step 'nope'" in done.stderr


def test_keep_going_instance_parent_skipped_upstream(write_spec, tmp_path: Path) -> None:
    """A keep-going step with per-instance parents runs for each, seeing the parent that was skipped."""
    text = SPEC.replace("FAIL: none", "FAIL: 2").replace("depends: [b_*]", "depends: [b]") + "legato:\n  keep_going: [c]\n"
    done = legato("run", str(write_spec(text)), "-o", "out", cwd=tmp_path)
    root = tmp_path / "out"
    assert states(root)["c"] == ["finished"] * 3
    assert (root / "c" / "X.2" / "failed_parents.txt").read_text() == f"{root / 'b' / 'X.2'}\n"
    assert (root / "c" / "X.1" / "failed_parents.txt").read_text() == ""


def test_campaign_batches_run_the_selected_steps(write_spec, tmp_path: Path) -> None:
    import csv

    spec = write_spec(SPEC.replace("global.parameters:\n  X: {values: [1, 2, 3], label: X.%%}\n", ""))
    (tmp_path / "rows.csv").write_text("X\n1\n2\n3\n4\n5\n")
    done = legato("batch", str(spec), "-b", "2", "--rows", "rows.csv", "-o", "camp", "--until", "b", "--no-archive",
                  cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert legato("results", "camp", "--csv", "r.csv", cwd=tmp_path).returncode == 0
    with open(tmp_path / "r.csv", newline="") as handle:
        by_step: dict[str, set[str]] = {}
        for row in csv.DictReader(handle):
            by_step.setdefault(row["step"], set()).add(row["state"])
    assert by_step == {"a": {"finished"}, "b": {"finished"}, "c": {"pending"}, "d": {"pending"}}
    resumed = legato("batch", "--resume", "camp", "--only", "c", cwd=tmp_path)
    assert_one_line_error(resumed, "--only/--from/--until are kept with the campaign")
