"""``legato run --dry`` end to end: the real command in a subprocess, on the sample study and on bad input."""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import legato as legato_package
from tests import maestro
from tests.test_spec import ERRORS

SPECS = Path(__file__).resolve().parent / "specs"
SAMPLE_PARGS = ["--pargs", "INDEX:param_combo", "--pargs", "CSV:params.csv", "--pargs", "DEBUG:true"]
SAMPLE = ["run", "--dry", "batched_parameters_demo.yaml", "--pgen", "batched_demo_pgen.py", *SAMPLE_PARGS]


def legato(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The ``legato`` command of the code under test, never attached to a terminal: it must not prompt."""
    source = str(Path(legato_package.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "legato", *args], cwd=cwd, env=env, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=120,
    )


def csv_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "params.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def label(row: dict[str, str]) -> str:
    return ".".join(f"PARAM{i}.{row[f'param{i}']}" for i in (1, 2, 3))


def only_study(folder: Path) -> Path:
    studies = list((folder / "studies").iterdir())
    assert len(studies) == 1, studies
    return studies[0]


def instance_folders(step: Path) -> set[str]:
    return {path.name for path in step.iterdir() if path.is_dir()}


def assert_one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> str:
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# -- the sample study -----------------------------------------------------------------------


def test_sample_three_rows(sample_dir: Path) -> None:
    done = legato(*SAMPLE, "--pargs", "NROWS:3", cwd=sample_dir)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    rows = csv_rows(sample_dir)
    assert f"PARAM1: {[row['param1'] for row in rows[:3]]!r}" in done.stdout  # the pgen's DEBUG print
    assert "echo-params: 3 instances" in done.stdout
    study = only_study(sample_dir)
    assert re.fullmatch(r"batched_parameters_demo_\d{8}-\d{6}", study.name)
    assert instance_folders(study / "echo-params") == {label(row) for row in rows[:3]}
    assert "PARAM1.94.PARAM2.71.PARAM3.72" in instance_folders(study / "echo-params")
    assert f"in {study}; nothing ran" in done.stdout


def test_sample_window_past_the_end(sample_dir: Path) -> None:
    done = legato(*SAMPLE, "--pargs", "START:17", "--pargs", "NROWS:5", cwd=sample_dir)
    assert done.returncode == 0, done.stderr
    rows = csv_rows(sample_dir)
    assert len(rows) == 20
    assert instance_folders(only_study(sample_dir) / "echo-params") == {label(row) for row in rows[17:20]}


def test_sample_flat_layout(sample_dir: Path) -> None:
    done = legato(*SAMPLE, "--pargs", "NROWS:3", "--layout", "flat", "-o", "flat", cwd=sample_dir)
    assert done.returncode == 0, done.stderr
    assert (sample_dir / "flat" / "echo-params" / "PARAM1.94.PARAM2.71.PARAM3.72").is_dir()
    assert not (sample_dir / "studies").exists()


def test_sample_tree_layout_buckets_all_rows(sample_dir: Path) -> None:
    done = legato(*SAMPLE, "--fanout", "4", "-o", "tree", cwd=sample_dir)
    assert done.returncode == 0, done.stderr
    step = sample_dir / "tree" / "echo-params"
    listed = [Path(line) for line in (step / "instances.txt").read_text().splitlines()]
    assert sorted(path.name for path in listed) == sorted(label(row) for row in csv_rows(sample_dir))
    assert all(path.is_dir() and len(path.relative_to(step).parts) == 3 for path in listed)


def test_sample_matches_maestro(sample_dir: Path) -> None:
    maestro.require()
    args = ["run", "--dry", "batched_parameters_demo.yaml", "--pgen", "batched_demo_pgen.py", *SAMPLE_PARGS,
            "--pargs", "START:4", "--pargs", "NROWS:6"]
    subprocess.run([str(maestro.MAESTRO), *args, "-fg", "-y", "-o", "maestro"], cwd=sample_dir, env=maestro.env(),
                   capture_output=True, timeout=300, check=True, stdin=subprocess.DEVNULL)
    done = legato(*args, "-o", "legato", "--layout", "flat", cwd=sample_dir)
    assert done.returncode == 0, done.stderr
    expected = instance_folders(sample_dir / "maestro" / "echo-params")
    assert len(expected) == 6 and instance_folders(sample_dir / "legato" / "echo-params") == expected


def test_maestro_flags_are_accepted(sample_dir: Path) -> None:
    args = [*SAMPLE, "--pargs", "NROWS:2", "-o", "out"]
    assert legato(*args, cwd=sample_dir).returncode == 0
    done = legato(*args, "-y", "-n", "-fg", "-s", "5", cwd=sample_dir)
    assert done.returncode == 0, done.stderr
    assert len(instance_folders(sample_dir / "out" / "echo-params")) == 2


def test_existing_out_without_yes_never_prompts(sample_dir: Path) -> None:
    out = sample_dir / "out"
    out.mkdir()
    (out / "results.csv").write_text("precious")
    done = legato(*SAMPLE, "--pargs", "NROWS:2", "-o", "out", cwd=sample_dir)
    assert_one_line_error(done, str(out), "-y")
    assert [path.name for path in out.iterdir()] == ["results.csv"]
    done = legato(*SAMPLE, "--pargs", "NROWS:2", "-o", "out", "-y", cwd=sample_dir)
    assert_one_line_error(done, str(out), "not a legato study folder")
    assert (out / "results.csv").read_text() == "precious"


def test_pgen_kwargs_and_env_through_the_cli(tmp_path: Path) -> None:
    done = legato("run", "--dry", str(SPECS / "pgen_env.yaml"), "--pgen", str(SPECS / "pgen_env.py"),
                  "--pargs", "URL:http://x:1", "-o", "out", "--layout", "flat", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "trial: 3 instances" in done.stdout
    assert {p.name for p in (tmp_path / "out" / "trial").iterdir()} == {"TRIAL.0", "TRIAL.1", "TRIAL.2", "instances.txt"}


# -- every bad input: one line on stderr, non-zero exit ------------------------------------

SPEC_CASES = [
    "missing-cmd", "duplicate-steps", "unknown-depends", "cyclic-depends", "unequal-parameters", "label-list",
    "unknown-run-key", "empty-study", "missing-description-name", "not-a-mapping",
]


@pytest.mark.parametrize("case", SPEC_CASES)
def test_bad_specs(tmp_path: Path, case: str) -> None:
    text, expected = ERRORS[case]
    (tmp_path / "spec.yaml").write_text(text)
    assert_one_line_error(legato("run", "--dry", "spec.yaml", cwd=tmp_path), expected)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["spec.yaml"]  # nothing was created


def test_bad_yaml(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text("description:\n  name: x\n  description: [unclosed\nstudy: []\n")
    line = assert_one_line_error(legato("run", "--dry", "spec.yaml", cwd=tmp_path), "spec.yaml: line ", "invalid YAML")
    assert re.search(r"line \d+, column \d+", line)


def test_missing_spec(tmp_path: Path) -> None:
    assert_one_line_error(legato("run", "--dry", "nope.yaml", cwd=tmp_path), "nope.yaml: no such spec file")


PGEN_CASES = {
    "pgen_raises.py": "pgen_raises.py: get_custom_generator raised RuntimeError: the CSV has no header",
    "pgen_no_function.py": "pgen_no_function.py: the pgen defines no get_custom_generator",
    "pgen_wrong_type.py": "pgen_wrong_type.py: get_custom_generator returned dict",
    "pgen_unequal.py": "pgen_unequal.py: get_custom_generator raised ValueError",
    "pgen_syntax.py": "pgen_syntax.py: cannot load the pgen: SyntaxError",
    "pgen_short_labels.py": "pgen_short_labels.py: parameter A: 2 labels for 3 values",
    "no_such_pgen.py": "no_such_pgen.py: no such pgen file",
}


@pytest.mark.parametrize("pgen, expected", PGEN_CASES.items(), ids=PGEN_CASES.keys())
def test_bad_pgens(tmp_path: Path, pgen: str, expected: str) -> None:
    done = legato("run", "--dry", str(SPECS / "pgen_env.yaml"), "--pgen", str(SPECS / pgen), cwd=tmp_path)
    assert_one_line_error(done, expected)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--pgen", "batched_demo_pgen.py", "--pargs", "NOCOLON"], "--pargs 'NOCOLON': expected KEY:VALUE"),
        (["--pargs", "CSV:params.csv"], "--pargs needs --pgen"),
        (["--pgen", "batched_demo_pgen.py", "--pargs", "CSV:missing.csv"], "get_custom_generator raised FileNotFoundError"),
    ],
    ids=["no-colon", "pargs-without-pgen", "pgen-file-error"],
)
def test_bad_pargs(sample_dir: Path, args: list[str], expected: str) -> None:
    done = legato("run", "--dry", "batched_parameters_demo.yaml", *args, cwd=sample_dir)
    assert_one_line_error(done, expected)
    assert not (sample_dir / "studies").exists()


@pytest.mark.parametrize(
    "run, expected",
    [
        ("{cmd: echo, procs: $(P)}", "spec.yaml: step 's': run.procs is 'a', not a whole number"),
        ("{cmd: cat $(ghost.workspace)}", "spec.yaml: step 's': $(ghost.workspace) names no step"),
    ],
)
def test_bad_expansion(tmp_path: Path, run: str, expected: str) -> None:
    (tmp_path / "spec.yaml").write_text(
        "description: {name: x, description: d}\n"
        f"study:\n  - {{name: s, description: d, run: {run}}}\n"
        "global.parameters:\n  P: {values: [a, b], label: P.%%}\n"
    )
    assert_one_line_error(legato("run", "--dry", "spec.yaml", cwd=tmp_path), expected)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["spec.yaml"]


# -- known problems outside the modules these tests own (see the report) -------------------



@pytest.mark.parametrize("args", [["--fanout", "1"], ["--layout", "deep"], []], ids=["fanout", "layout", "no-spec"])
def test_usage_errors_are_one_line(sample_dir: Path, args: list[str]) -> None:
    spec = ["batched_parameters_demo.yaml"] if args else []
    assert_one_line_error(legato("run", "--dry", *spec, *args, cwd=sample_dir))



def test_yes_never_deletes_the_spec_folder(sample_dir: Path) -> None:
    done = legato(*SAMPLE, "--pargs", "NROWS:2", "-o", ".", "-y", cwd=sample_dir)
    assert (sample_dir / "params.csv").exists() and (sample_dir / "batched_parameters_demo.yaml").exists()
    assert_one_line_error(done)




def test_parameters_without_values_prepare_no_instances(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(
        "description: {name: x, description: d}\n"
        "study:\n  - {name: s, description: d, run: {cmd: echo $(P)}}\n"
        "global.parameters:\n  P: {values: [], label: P.%%}\n"
    )
    done = legato("run", "--dry", "spec.yaml", "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "s: 0 instances" in done.stdout
