"""End to end: ``legato run`` for real (no --dry), --resume, cancel, --detach and status through the
real CLI, in temporary folders. Specs are in ``run_files/``. Overlap is judged from the start and
end times the conductor stored, never from the test's clock."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.run_files.helpers import (
    Gates, copy_spec, group_alive, legato, one_line_error, process_alive, rows, source_env, spans, start_legato,
    states, wait_for,
)

PS = range(1, 7)


# -- a study with a failure ----------------------------------------------------------------------
def test_a_failure_skips_its_dependents_and_the_funnel_only(tmp_path: Path) -> None:
    done = legato("run", str(copy_spec("three_steps.yaml", tmp_path)), "-o", "out", "-j", "2", cwd=tmp_path)
    study = tmp_path / "out"
    assert done.returncode == 1, done.stderr
    found = states(study)
    assert found.pop("a/P.3") == "failed"
    assert found.pop("b/P.3") == "skipped" and found.pop("total") == "skipped"
    assert set(found.values()) == {"finished"} and len(found) == 10  # every independent instance ran
    assert (study / "b" / "P.5" / "double.txt").read_text() == "10\n"
    reasons = dict(rows(study, "SELECT step, reason FROM instances WHERE state = 'skipped'"))
    assert reasons == {"b": "a/P.3 failed", "total": "a/P.3 failed"}  # both name the failure to look at
    assert rows(study, "SELECT returncode, reason FROM instances WHERE state = 'failed'") == [(1, "exit code 1")]
    failure = study / "a" / "P.3"
    assert f"stdout {failure / 'a.out'}, stderr {failure / 'a.err'}" in done.stdout
    assert "10 finished, 1 failed, 2 skipped" in done.stdout


def test_the_funnel_reads_instances_txt_after_every_instance(tmp_path: Path) -> None:
    done = legato("run", str(copy_spec("three_steps.yaml", tmp_path, **{"FAILS: 3": "FAILS: 0"})), "-o", "out",
                  cwd=tmp_path)
    study = tmp_path / "out"
    assert done.returncode == 0, done.stdout + done.stderr
    assert (study / "total" / "sum.txt").read_text() == f"{2 * sum(PS)}\n"
    (funnel_start, _), = spans(study, "total")
    assert funnel_start >= max(end for _, end in spans(study, "b"))


# -- parallelism, throttle, procs ----------------------------------------------------------------
def test_two_jobs_overlap(tmp_path: Path) -> None:
    spec = copy_spec("sleeps.yaml", tmp_path, **{"values: [1, 2, 3, 4]": "values: [1, 2]"})
    assert legato("run", str(spec), "-o", "out", "-j", "2", cwd=tmp_path).returncode == 0
    (_, first_end), (second_start, _) = spans(tmp_path / "out")
    assert second_start < first_end


def test_throttle_one_never_runs_two_at_once(tmp_path: Path) -> None:
    spec = copy_spec("sleeps.yaml", tmp_path)
    assert legato("run", str(spec), "-o", "out", "-j", "2", "-t", "1", cwd=tmp_path).returncode == 0
    found = spans(tmp_path / "out")
    assert len(found) == 4
    assert all(later_start >= earlier_end for (_, earlier_end), (later_start, _) in zip(found, found[1:]))


def test_a_two_core_step_runs_alone(tmp_path: Path) -> None:
    assert legato("run", str(copy_spec("wide.yaml", tmp_path)), "-o", "out", "-j", "2", cwd=tmp_path).returncode == 0
    study = tmp_path / "out"
    everything = spans(study)
    assert len(everything) == 4
    for big in spans(study, "big"):
        others = [span for span in everything if span != big]
        assert all(end <= big[0] or start >= big[1] for start, end in others), (big, others)


def test_equal_instances_keep_both_workers_busy(tmp_path: Path) -> None:
    assert legato("run", str(copy_spec("sleeps.yaml", tmp_path)), "-o", "out", "-j", "2", cwd=tmp_path).returncode == 0
    found = spans(tmp_path / "out")
    for span in found:  # 4 equal instances on 2 cores: each runs beside another one
        assert any(other != span and other[0] < span[1] and span[0] < other[1] for other in found), found


# -- retries and walltime ------------------------------------------------------------------------
def test_attempts_retry_with_the_restart_command_where_given(tmp_path: Path) -> None:
    done = legato("run", str(copy_spec("retry.yaml", tmp_path)), "-o", "out", "-a", "3", cwd=tmp_path)
    study = tmp_path / "out"
    assert done.returncode == 0, done.stdout
    assert rows(study, "SELECT step, state, attempts FROM instances") == [
        ("plain", "finished", 3), ("restarted", "finished", 3)]
    assert (study / "plain" / "tries").read_text().split() == ["cmd", "cmd", "cmd"]
    assert (study / "restarted" / "tries").read_text().split() == ["cmd", "restart", "restart"]


def test_one_attempt_fails(tmp_path: Path) -> None:
    done = legato("run", str(copy_spec("retry.yaml", tmp_path)), "-o", "out", "-a", "1", cwd=tmp_path)
    assert done.returncode == 1
    assert rows(tmp_path / "out", "SELECT state, attempts FROM instances") == [("failed", 1), ("failed", 1)]


def test_walltime_times_out_and_kills_the_whole_group(tmp_path: Path) -> None:
    done = legato("run", str(copy_spec("walltime.yaml", tmp_path)), "-o", "out", cwd=tmp_path)
    study = tmp_path / "out"
    assert done.returncode == 1
    assert rows(study, "SELECT state, reason FROM instances") == [("timedout", "walltime exceeded")]
    assert "timedout: s/" in done.stdout
    child = int((study / "s" / "child").read_text())
    (pgid,) = rows(study, "SELECT pid FROM instances")[0]
    wait_for(lambda: not process_alive(child) and not group_alive(pgid), "the instance's child sleep to go")


# -- cancel, kill -9, resume ---------------------------------------------------------------------
@pytest.fixture
def gated(tmp_path: Path):
    """The gated study prepared in tmp_path/out, its gates closed; all open at the end, so that
    nothing a failed test left behind waits forever."""
    gates = Gates(tmp_path)
    assert legato("run", "--dry", str(copy_spec("gated.yaml", tmp_path)), "-o", "out", cwd=tmp_path).returncode == 0
    yield tmp_path / "out", gates
    gates.open_all()


def open_one_by_one(gates: Gates, count: int) -> None:
    for p in range(1, count + 1):
        gates.open(p)
        wait_for(lambda: gates.completions().get(p) == 1, f"P={p} to complete")


def resume_finishes_the_rest(tmp_path: Path, study: Path, gates: Gates) -> None:
    gates.open_all()
    done = legato("run", "--resume", str(study), "-j", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(states(study).values()) == {"finished"}
    assert gates.completions() == {p: 1 for p in PS}  # each ran to completion exactly once


def test_cancel_stops_the_conductor_and_resume_finishes(tmp_path: Path, gated: tuple[Path, Gates]) -> None:
    study, gates = gated
    conductor = start_legato("run", "--resume", str(study), "-j", "2", cwd=tmp_path)
    open_one_by_one(gates, 1)
    wait_for(lambda: len(gates.waiting()) == 2, "two instances to run")
    running = gates.waiting()
    done = legato("cancel", str(study), cwd=tmp_path)
    assert done.returncode == 0 and "stopped" in done.stdout, done.stdout + done.stderr
    assert conductor.wait(timeout=60) == 1
    assert f"continue with: legato run --resume {study}" in conductor.stdout.read()
    found = states(study)
    assert found.pop("s/P.1") == "finished"
    assert sorted(found.values()) == ["cancelled", "cancelled", "pending", "pending", "pending"]
    for pgid in running:
        wait_for(lambda: not group_alive(pgid), "the cancelled instance's process group to go")
    assert rows(study, "SELECT count(*) FROM instances WHERE state = 'cancelled' AND pid IS NOT NULL") == [(2,)]
    resume_finishes_the_rest(tmp_path, study, gates)
    assert len(gates.starts()[1]) == 1  # the finished instance never ran again


def test_cancel_right_after_detach(tmp_path: Path, gated: tuple[Path, Gates]) -> None:
    """--detach returns once its conductor holds the study, however slowly that one starts."""
    study, gates = gated
    slow = tmp_path / "slow_start"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text("import time\ntime.sleep(1)\n")  # every Python started with it
    env = source_env()
    env["PYTHONPATH"] = os.pathsep.join([str(slow), env["PYTHONPATH"]])
    detached = legato("run", "--resume", str(study), "--detach", "-j", "2", cwd=tmp_path, env=env)
    assert detached.returncode == 0, detached.stderr
    done = legato("cancel", str(study), cwd=tmp_path)
    assert done.returncode == 0 and "stopped" in done.stdout, done.stdout + done.stderr
    assert set(states(study).values()) <= {"pending", "cancelled"}
    for pgid in gates.waiting():
        wait_for(lambda: not group_alive(pgid), "the cancelled instance's process group to go")
    status = json.loads(legato("status", str(study), "--json", cwd=tmp_path).stdout)
    assert status["state"] == "cancelled"
    resume_finishes_the_rest(tmp_path, study, gates)


def test_detach_reports_a_background_conductor_that_could_not_start(tmp_path: Path, gated: tuple[Path, Gates]) -> None:
    """Another conductor takes the study between --detach's check and its conductor's start."""
    study, _ = gated
    early = tmp_path / "early"
    early.mkdir()
    (early / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import os
        if os.getsid(0) == os.getpid():  # the detached conductor: its own session
            import time
            from filelock import FileLock
            time.sleep(1)  # past the first check that it did not die at once
            taken = FileLock({str(study / ".conductor.lock")!r})
            taken.acquire()
    """))
    env = source_env()
    env["PYTHONPATH"] = os.pathsep.join([str(early), env["PYTHONPATH"]])
    one_line_error(legato("run", "--resume", str(study), "--detach", cwd=tmp_path, env=env), "already running")


@pytest.mark.parametrize("completed", [0, 1, 3])
def test_kill_9_then_resume_runs_each_instance_to_completion_once(
        tmp_path: Path, completed: int, gated: tuple[Path, Gates]) -> None:
    study, gates = gated
    conductor = start_legato("run", "--resume", str(study), "-j", "2", cwd=tmp_path)
    open_one_by_one(gates, completed)
    wait_for(lambda: len(gates.waiting()) == 2, "two instances to run")
    left = gates.waiting()
    conductor.kill()
    conductor.wait()
    assert all(group_alive(pgid) for pgid in left)  # the instances outlive their conductor...
    status = legato("status", str(study), cwd=tmp_path)
    assert "interrupted; continue with: legato run --resume" in status.stdout
    resumed = start_legato("run", "--resume", str(study), "-j", "2", cwd=tmp_path)
    for pgid in left:  # ...until the next conductor stops them, before they could complete
        wait_for(lambda: not group_alive(pgid), "the resumed conductor to stop what the killed one left")
    gates.open_all()
    assert resumed.wait(timeout=60) == 0, resumed.stdout.read() + resumed.stderr.read()
    assert set(states(study).values()) == {"finished"}
    assert gates.completions() == {p: 1 for p in PS}
    assert all(len(gates.starts()[p]) == 1 for p in range(1, completed + 1))  # finished work is never rerun


def test_an_instance_ending_while_no_conductor_runs_is_not_rerun(tmp_path: Path, gated: tuple[Path, Gates]) -> None:
    study, gates = gated
    conductor = start_legato("run", "--resume", str(study), "-j", "2", cwd=tmp_path)
    wait_for(lambda: len(gates.waiting()) == 2, "two instances to run")
    conductor.kill()
    conductor.wait()
    gates.open(*gates.starts())
    wait_for(lambda: len(gates.completions()) == 2, "the orphaned instances to complete")
    resume_finishes_the_rest(tmp_path, study, gates)


# -- detach, status, files, progress -------------------------------------------------------------
def test_detach_returns_at_once_without_legato_on_path(tmp_path: Path, gated: tuple[Path, Gates]) -> None:
    study, gates = gated
    env = source_env(PATH="/usr/bin:/bin")
    done = legato("run", "--resume", str(study), "--detach", "-j", "2", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert f"log: {study / 'conductor.log'}" in done.stdout
    assert not gates.completions()  # returned while every instance still waits for its gate
    gates.open_all()

    def finished() -> bool:
        status = legato("status", str(study), "--json", cwd=tmp_path)
        return json.loads(status.stdout)["state"] == "finished"

    wait_for(finished, "the detached conductor to finish")
    assert states(study) == {f"s/P.{p}": "finished" for p in PS}
    assert gates.completions() == {p: 1 for p in PS}


def test_status_after_a_run(tmp_path: Path) -> None:
    legato("run", str(copy_spec("three_steps.yaml", tmp_path)), "-o", "out", cwd=tmp_path)
    lines = legato("status", "out", cwd=tmp_path).stdout.splitlines()
    assert lines[0].startswith("three: failed")
    assert lines[1].split() == ["step", "finished", "failed", "skipped"]
    assert [line.split() for line in lines[2:]] == [
        ["a", "5", "1", "0"], ["b", "5", "0", "1"], ["total", "0", "0", "1"], ["total", "10", "1", "2"]]
    failed = legato("status", "out", "--state", "failed", cwd=tmp_path).stdout.splitlines()
    assert len(failed) == 1 and failed[0].startswith("failed    a/P.3 rc=1")
    listing = json.loads(legato("status", "out", "--step", "b", "--json", cwd=tmp_path).stdout)
    assert [(item["label"], item["state"]) for item in listing] == [
        (f"P.{p}", "skipped" if p == 3 else "finished") for p in PS]
    csv = legato("status", "out", "--csv", cwd=tmp_path).stdout
    assert csv.splitlines()[0] == ("Step Name,Job ID,Workspace,State,Run Time,Elapsed Time,Start Time,Submit Time,"
                                   "End Time,Number Restarts,Params")
    assert csv == (tmp_path / "out" / "status.csv").read_text()  # written by the run itself


def test_status_of_a_folder_that_is_no_study(tmp_path: Path) -> None:
    one_line_error(legato("status", str(tmp_path), cwd=tmp_path), "not a legato study folder")


def test_an_instance_folder_holds_only_its_output(tmp_path: Path) -> None:
    spec = copy_spec("three_steps.yaml", tmp_path, **{"FAILS: 3": "FAILS: 0"})
    assert legato("run", str(spec), "-o", "out", cwd=tmp_path).returncode == 0
    study = tmp_path / "out"
    own = {"a": {"value.txt"}, "b": {"double.txt"}, "total": {"all.txt", "sum.txt"}}
    for (step, workspace) in rows(study, "SELECT step, workspace FROM instances"):
        assert {p.name for p in (study / workspace).iterdir()} == own[step] | {f"{step}.out", f"{step}.err"}
    assert not list(study.rglob("*.sh"))
    assert legato("run", str(spec), "-o", "debug", "--write-scripts", cwd=tmp_path).returncode == 0
    assert (tmp_path / "debug" / "a" / "P.1" / "a.sh").is_file()


def test_piped_output_is_plain(tmp_path: Path) -> None:
    done = legato("run", str(copy_spec("three_steps.yaml", tmp_path)), "-o", "out", cwd=tmp_path)
    assert "\x1b" not in done.stdout and "done in" in done.stdout


def test_a_terminal_gets_the_live_table(tmp_path: Path) -> None:
    spec = copy_spec("three_steps.yaml", tmp_path)
    command = shlex.join([sys.executable, "-m", "legato", "run", str(spec), "-o", "out"])
    done = subprocess.run(["script", "-qec", command, "/dev/null"], cwd=tmp_path, env=source_env(TERM="xterm"),
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 1  # the exit status of legato: one instance fails
    assert "\x1b[" in done.stdout  # drawn, not printed
    assert all(word in done.stdout for word in ("step", "finished", "skipped", "total"))
    assert "done in" in done.stdout


# -- user mistakes -------------------------------------------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["run", "--resume", "."], ["not a legato study folder"]),
    (["run", "--resume", "nowhere"], ["not a legato study folder"]),
    (["status", "out", "--state", "bogus"], ["--state 'bogus'"]),
    (["run", "-j", "0", "three_steps.yaml"], ["-j"]),
    (["cancel", "."], ["not a legato study folder"]),
    (["run", "three_steps.yaml", "-o", "other", "--job-walltime", "soon"], ["--job-walltime", "walltime 'soon'"]),
    (["run", "three_steps.yaml", "-o", "other", "--pilots", "-1"], ["--pilots"]),
])
def test_bad_inputs(tmp_path: Path, args: list[str], words: list[str]) -> None:
    legato("run", "--dry", str(copy_spec("three_steps.yaml", tmp_path)), "-o", "out", cwd=tmp_path)
    one_line_error(legato(*args, cwd=tmp_path), *words)
    assert not (tmp_path / "other").exists()  # checked before any folder is made


def test_a_second_conductor_is_refused(tmp_path: Path, gated: tuple[Path, Gates]) -> None:
    study, gates = gated
    first = start_legato("run", "--resume", str(study), "-j", "2", cwd=tmp_path)
    try:
        wait_for(lambda: len(gates.waiting()) == 2, "two instances to run")
        one_line_error(legato("run", "--resume", str(study), cwd=tmp_path), "already running")
        one_line_error(legato("run", "--resume", str(study), "--detach", cwd=tmp_path), "already running")
    finally:
        gates.open_all()
        assert first.wait(timeout=60) == 0


def test_a_full_disk_during_a_run_is_one_line_and_resumable(tmp_path: Path, small_fs: Path) -> None:
    spec = copy_spec("filler.yaml", tmp_path)
    done = legato("run", str(spec), "-o", str(small_fs / "out"), "-j", "2", cwd=tmp_path)
    one_line_error(done, "full")
    status = legato("status", str(small_fs / "out"), cwd=tmp_path)
    assert status.returncode == 0 and "interrupted" in status.stdout, status.stdout + status.stderr
