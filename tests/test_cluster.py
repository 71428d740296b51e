"""Packed cluster execution on the real private SLURM the `slurm` fixture starts."""
from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "samples" / "batched_parameters"


def slurm_sample(folder: Path) -> Path:
    """The sample study with a SLURM batch block: the pgen, the CSV and the spec, in ``folder``."""
    for name in ("batched_demo_pgen.py", "params.csv"):
        shutil.copy(SAMPLE / name, folder / name)
    spec = (SAMPLE / "batched_parameters_demo.yaml").read_text()
    spec = spec.replace("study:", "batch:\n  type: slurm\n  host: local\n  bank: none\n  queue: debug\n\nstudy:", 1)
    path = folder / "spec.yaml"
    path.write_text(spec)
    return path


def legato(cluster, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "legato", *args], cwd=cwd, env=cluster.env(), capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


def study_rows(study: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(study / "legato.db") as db:
        return db.execute(sql).fetchall()


@pytest.mark.parametrize("mode, flags, rows, jobs", [
    ("packed", ["--pack", "10"], 20, 2),
    ("array", ["--pack", "10", "--array", "-t", "3"], 10, 1),
    ("per-instance", ["--pack", "1"], 4, 4),
])
def test_sample_on_slurm(slurm, tmp_path: Path, mode, flags, rows, jobs) -> None:
    spec = slurm_sample(tmp_path)
    done = legato(slurm, "run", str(spec), "--pgen", "batched_demo_pgen.py", "--pargs", "CSV:params.csv",
                  "--pargs", "INDEX:param_combo", "--pargs", f"NROWS:{rows}", "-o", "out", "-s", "0.5", *flags,
                  cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    study = tmp_path / "out"
    states = study_rows(study, "SELECT state, jobid FROM instances")
    assert len(states) == rows and {state for state, _ in states} == {"finished"}
    assert len({jobid.split("_")[0] for _, jobid in states}) == jobs  # that many sbatch submissions
    if mode == "array":
        (script,) = (study / "jobs").glob("*.sh")
        assert "--array=0-9%3" in script.read_text()  # -t caps the array's tasks running at once
    for folder in (study / "echo-params").iterdir():
        if folder.is_dir():
            assert (folder / "params.txt").read_text().startswith("PARAM1=")


FUNNEL = """
description: {name: funnel, description: a parameterized step and a funnel, on SLURM}
batch: {type: slurm, host: local, bank: none, queue: debug}
study:
  - name: square
    description: squares P; P=4 sleeps past its walltime on the first try
    run:
      cmd: if [ $(P) = 4 ] && [ ! -e tried ]; then touch tried; sleep 30; fi; echo $(( $(P) * $(P) )) > sq.txt
      walltime: "00:00:02"
  - name: total
    description: adds the squares
    run:
      cmd: cat $(cat $(square.workspace)/instances.txt | sed 's|$|/sq.txt|') | awk '{s += $1} END {print s}' > total.txt
      depends: [square_*]
global.parameters:
  P: {values: [1, 2, 3, 4], label: P.%%}
"""


def test_funnel_walltime_and_retry_on_slurm(slurm, tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(FUNNEL)
    done = legato(slurm, "run", "spec.yaml", "-o", "out", "-s", "0.5", "-a", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    study = tmp_path / "out"
    assert (study / "total" / "total.txt").read_text().strip() == "30"
    assert study_rows(study, "SELECT attempts FROM instances WHERE label = 'P.4'") == [(2,)]
    assert all(jobid for (jobid,) in study_rows(study, "SELECT jobid FROM instances"))
    listing = legato(slurm, "status", "out", "--state", "finished", "--json", cwd=tmp_path)
    assert '"jobid"' in listing.stdout


def test_cancel_leaves_no_job_on_slurm(slurm, tmp_path: Path) -> None:
    spec = slurm_sample(tmp_path)
    spec.write_text(spec.read_text().replace("> params.txt", "> params.txt; sleep 60"))
    assert legato(slurm, "run", "--dry", str(spec), "--pgen", "batched_demo_pgen.py", "--pargs", "CSV:params.csv",
                  "--pargs", "NROWS:4", "-o", "out", cwd=tmp_path).returncode == 0
    conductor = subprocess.Popen([sys.executable, "-m", "legato", "run", "--resume", "out", "-s", "0.5", "--pack", "2"],
                                 cwd=tmp_path, env=slurm.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    study = tmp_path / "out"
    import time
    deadline = time.monotonic() + 60
    while not study_rows(study, "SELECT count(*) FROM instances WHERE state = 'running'")[0][0]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    jobids = {jobid for (jobid,) in study_rows(study, "SELECT jobid FROM instances")}
    assert legato(slurm, "cancel", "out", cwd=tmp_path).returncode == 0
    conductor.wait(timeout=60)
    deadline = time.monotonic() + 30
    while any(slurm.run("squeue", "--noheader", "--jobs", jobid).stdout.strip() for jobid in jobids):
        assert time.monotonic() < deadline, "jobs still queued"
        time.sleep(0.5)
    assert {state for (state,) in study_rows(study, "SELECT state FROM instances")} <= {"cancelled", "pending"}


def test_campaign_on_slurm(slurm, tmp_path: Path) -> None:
    spec = slurm_sample(tmp_path)
    done = legato(slurm, "batch", str(spec), "--rows", "params.csv", "--index", "param_combo", "--max-rows", "10",
                  "--batch-size", "5", "--result", "echo-params:params.txt", "-o", "camp", "-s", "0.5", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    with sqlite3.connect(tmp_path / "camp" / "results.db") as db:
        assert db.execute("SELECT count(DISTINCT row_index), count(*) FROM results WHERE state = 'finished'").fetchone() == (10, 10)


OVERDUE = """
description: {name: overdue, description: a job that SLURM kills at its time limit}
batch: {type: slurm, host: local, bank: none, queue: debug}
study:
  - name: long
    description: sleeps through its first job, finishes at once in the retry
    run:
      cmd: if [ ! -e ../first ]; then touch ../first; sleep 300; fi; echo done > out.txt
      walltime: "00:01:00"
"""


def test_job_killed_at_its_time_limit_is_retried(slurm, tmp_path: Path) -> None:
    """SLURM checks time limits every 30 s; the running job's end is moved to now to trigger it."""
    import time

    (tmp_path / "spec.yaml").write_text(OVERDUE)
    conductor = subprocess.Popen([sys.executable, "-m", "legato", "run", "spec.yaml", "-o", "out", "-s", "0.5", "-a", "2"],
                                 cwd=tmp_path, env=slurm.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    study = tmp_path / "out"
    deadline = time.monotonic() + 60
    while not (study / "legato.db").exists() or not study_rows(study, "SELECT jobid FROM instances WHERE state = 'running'"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    (jobid,) = study_rows(study, "SELECT jobid FROM instances")[0]
    assert slurm.run("scontrol", "update", f"JobId={jobid}", "EndTime=now").returncode == 0
    output, _ = conductor.communicate(timeout=120)
    assert conductor.returncode == 0, output
    state, attempts, second = study_rows(study, "SELECT state, attempts, jobid FROM instances")[0]
    assert (state, attempts) == ("finished", 2) and second != jobid
    assert (study / "long" / "out.txt").read_text() == "done\n"
