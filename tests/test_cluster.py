"""Packed cluster execution, end to end through the CLI, on the real private SLURM of the `slurm` fixture.

Jobs are counted by asking SLURM itself (``scontrol show job`` keeps ended jobs for an hour on
the private cluster), by the folder they ran in. About 20 jobs in all: the cluster starts
about one a second.
"""
from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "samples" / "batched_parameters"
FILES = Path(__file__).resolve().parent / "cluster_files"
SAMPLE_ARGS = ["--pgen", "batched_demo_pgen.py", "--pargs", "CSV:params.csv", "--pargs", "INDEX:param_combo"]


def slurm_sample(folder: Path) -> Path:
    """The sample study with a SLURM batch block (Maestro's keys): the pgen, the CSV and the spec, in ``folder``."""
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


def start_legato(cluster, *args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "legato", *args], cwd=cwd, env=cluster.env(), text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def study_rows(study: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(study / "legato.db") as db:
        return db.execute(sql).fetchall()


def ready_rows(study: Path, sql: str) -> list[tuple]:
    """``study_rows`` of a study that may still be being prepared: nothing until its store has its tables."""
    try:
        return study_rows(study, sql) if (study / "legato.db").exists() else []
    except sqlite3.OperationalError:
        return []


def slurm_jobs(cluster, below: Path) -> dict[str, str]:
    """SLURM's jobs that ran in a folder below ``below``: job (or array) id -> state of its last task."""
    shown = cluster.run("scontrol", "--oneliner", "show", "job").stdout
    jobs = {}
    for line in shown.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S+)", line))
        if fields.get("WorkDir", "").startswith(str(below)):
            jobs[fields.get("ArrayJobId", fields["JobId"])] = fields["JobState"]
    return jobs


def settled(cluster, below: Path) -> dict[str, str]:
    """``slurm_jobs`` once none is queued or running: pilots leave a moment after their driver."""
    wait_for(lambda: not {"RUNNING", "PENDING"} & set(slurm_jobs(cluster, below).values()), 30, "the jobs ending")
    return slurm_jobs(cluster, below)


def wait_for(check, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not after {timeout} s: {what}"
        time.sleep(0.2)


@pytest.mark.parametrize("mode, flags, rows, jobs", [
    ("pilots", ["--pack", "10"], 20, 2),
    ("packed", ["--pack", "10", "--pilots", "0"], 20, 2),
    ("array", ["--pack", "10", "--array", "-t", "3"], 10, 1),
    ("per-instance", ["--pack", "1"], 5, 5),
])
def test_sample_on_slurm(slurm, tmp_path: Path, mode, flags, rows, jobs) -> None:
    spec = slurm_sample(tmp_path)
    done = legato(slurm, "run", str(spec), *SAMPLE_ARGS, "--pargs", f"NROWS:{rows}", "-o", "out", "-s", "0.5", *flags,
                  cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    study = tmp_path / "out"
    submitted = settled(slurm, study)
    # a pilot still queued when the other had done all the work is cancelled unused, or finds none left
    ran = {jobid for jobid, state in submitted.items() if state == "COMPLETED"}
    assert len(submitted) == jobs and set(submitted.values()) - {"CANCELLED" if mode == "pilots" else ""} == {"COMPLETED"}
    states = study_rows(study, "SELECT state, jobid FROM instances")
    assert len(states) == rows and {state for state, _ in states} == {"finished"}
    used = {jobid.split("_")[0] for _, jobid in states}
    assert used == ran if mode != "pilots" else used and used <= ran
    if mode == "array":
        assert {jobid for _, jobid in states} == {f"{next(iter(submitted))}_{task}" for task in range(rows)}
        (script,) = (study / "jobs").glob("*.sh")
        assert "--array=0-9%3" in script.read_text()  # -t caps the array's tasks running at once
    params = sorted((study / "echo-params").glob("*/params.txt"))
    assert len(params) == rows and all(path.read_text().startswith("PARAM1=") for path in params)


def test_funnel_walltime_retry_and_status_on_slurm(slurm, tmp_path: Path) -> None:
    """The instance over its own walltime is stopped inside its pilot, retried, and the funnel adds all four:
    one pilot runs them all."""
    shutil.copy(FILES / "funnel.yaml", tmp_path / "spec.yaml")
    done = legato(slurm, "run", "spec.yaml", "-o", "out", "-s", "0.5", "-a", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    study = tmp_path / "out"
    assert (study / "total" / "total.txt").read_text().strip() == "30"
    assert study_rows(study, "SELECT attempts FROM instances WHERE label = 'P.4'") == [(2,)]
    submitted = settled(slurm, study)
    assert len(submitted) == 1  # the four squares, the retried one and the funnel, all in one pilot
    listing = legato(slurm, "status", "out", "--state", "finished", "--json", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    records = json.loads(listing.stdout)
    assert len(records) == 5 and {record["jobid"] for record in records} <= set(submitted)
    text = legato(slurm, "status", "out", "--state", "finished", cwd=tmp_path).stdout.splitlines()
    assert len(text) == 5 and all(f"job={record['jobid']}" in " ".join(text) for record in records)


def test_cancel_leaves_no_job_on_slurm(slurm, tmp_path: Path) -> None:
    spec = slurm_sample(tmp_path)
    spec.write_text(spec.read_text().replace("> params.txt", "> params.txt; sleep 60"))
    prepared = legato(slurm, "run", "--dry", str(spec), *SAMPLE_ARGS, "--pargs", "NROWS:4", "-o", "out", cwd=tmp_path)
    assert prepared.returncode == 0, prepared.stderr
    study = tmp_path / "out"
    conductor = start_legato(slurm, "run", "--resume", "out", "-s", "0.5", "--pack", "2", cwd=tmp_path)
    running = "SELECT count(*) FROM instances WHERE state = 'running'"
    wait_for(lambda: study_rows(study, running)[0][0] == 4, what="four instances running")
    cancelled = legato(slurm, "cancel", "out", cwd=tmp_path)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout, cancelled.stdout + cancelled.stderr
    conductor.communicate(timeout=60)
    assert conductor.returncode != 0  # a cancelled study did not finish
    wait_for(lambda: not slurm.run("squeue", "--noheader", "--format=%i %j %Z").stdout.count(str(study)),
             30, "the study's jobs leaving the queue")
    submitted = slurm_jobs(slurm, study)
    assert len(submitted) == 2 and set(submitted.values()) == {"CANCELLED"}
    assert study_rows(study, "SELECT DISTINCT state, reason FROM instances") == [("cancelled", "cancelled")]
    assert "CANCELLED" in (study / "status.csv").read_text()


def test_campaign_on_slurm(slurm, tmp_path: Path) -> None:
    spec = slurm_sample(tmp_path)
    done = legato(slurm, "batch", str(spec), "--rows", "params.csv", "--index", "param_combo", "--max-rows", "10",
                  "--batch-size", "5", "--result", "echo-params:params.txt", "-o", "camp", "-s", "0.5", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    with sqlite3.connect(tmp_path / "camp" / "results.db") as db:
        assert db.execute("SELECT count(DISTINCT row_index), count(*) FROM results WHERE state = 'finished'").fetchone() == (10, 10)
    submitted = settled(slurm, tmp_path / "camp")
    assert 1 <= len(submitted) <= 2 and set(submitted.values()) - {"CANCELLED"} == {"COMPLETED"}  # pilots serve both batches


def test_job_killed_at_its_time_limit_is_recorded_and_retried(slurm, tmp_path: Path) -> None:
    """A packed job (no pilots) ended by SLURM times its instance out. SLURM checks time limits every
    30 s; the running job's end is moved to now to trigger it."""
    shutil.copy(FILES / "overdue.yaml", tmp_path / "spec.yaml")
    conductor = start_legato(slurm, "run", "spec.yaml", "-o", "out", "-s", "0.5", "-a", "2", "--pilots", "0",
                             cwd=tmp_path)
    study = tmp_path / "out"
    wait_for(lambda: ready_rows(study, "SELECT jobid FROM instances WHERE state = 'running'"), what="the instance running")
    (jobid,) = study_rows(study, "SELECT jobid FROM instances")[0]
    assert slurm.run("scontrol", "update", f"JobId={jobid}", "EndTime=now").returncode == 0
    retrying = "SELECT state, reason FROM instances WHERE reason = 'attempt 1 timed out; retrying'"
    wait_for(lambda: study_rows(study, retrying) or conductor.poll() is not None, 90, "the timeout recorded")
    assert study_rows(study, retrying), "the timed-out attempt was never recorded"
    output, _ = conductor.communicate(timeout=120)
    assert conductor.returncode == 0, output
    state, attempts, second = study_rows(study, "SELECT state, attempts, jobid FROM instances")[0]
    assert (state, attempts) == ("finished", 2) and second != jobid
    assert slurm_jobs(slurm, study) == {jobid: "TIMEOUT", second: "COMPLETED"}
    assert (study / "long" / "out.txt").read_text() == "done\n"
