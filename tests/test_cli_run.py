"""End to end: `legato run` for real, through the CLI, in temporary folders."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

LEGATO = [sys.executable, "-m", "legato"]

THREE_STEPS = """
description: {name: three, description: a parameterized step, a per-instance child and a funnel}
study:
  - name: a
    description: writes its value, fails for P=3
    run: {cmd: "[ $(P) != 3 ] && echo $(P) > value.txt"}
  - name: b
    description: doubles it
    run:
      cmd: echo $(( $(cat $(a.workspace)/value.txt) * 2 )) > double.txt
      depends: [a]
  - name: total
    description: sums every b
    run:
      cmd: cat $(cat $(b.workspace)/instances.txt | sed 's|$|/double.txt|') > all.txt
      depends: [b_*]
global.parameters:
  P: {values: [1, 2, 3, 4, 5, 6], label: P.%%}
"""


def legato(*args: str, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*LEGATO, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def rows(study: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(study / "legato.db") as db:
        return db.execute(sql).fetchall()


def states(study: Path) -> dict[str, str]:
    return {f"{step}/{label}": state for step, label, state in rows(study, "SELECT step, label, state FROM instances")}


def write(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    for word in words:
        assert word in done.stderr


def test_failure_skips_dependents_and_funnel(tmp_path: Path) -> None:
    done = legato("run", str(write(tmp_path, THREE_STEPS)), "-o", "out", "-j", "2", cwd=tmp_path)
    study = tmp_path / "out"
    assert done.returncode == 1
    found = states(study)
    assert found["a/P.3"] == "failed" and found["b/P.3"] == "skipped" and found["total/"] == "skipped"
    assert all(found[f"a/P.{p}"] == "finished" and found[f"b/P.{p}"] == "finished" for p in (1, 2, 4, 5, 6))
    assert (study / "b" / "P.5" / "double.txt").read_text() == "10\n"
    assert str(study / "a" / "P.3" / "a.err") in done.stdout
    reason = rows(study, "SELECT reason FROM instances WHERE label = 'P.3' AND step = 'b'")[0][0]
    assert "failed" in reason


def test_funnel_runs_after_all_inputs(tmp_path: Path) -> None:
    spec = write(tmp_path, THREE_STEPS.replace("[ $(P) != 3 ] && ", ""))
    done = legato("run", str(spec), "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(int(x) for x in (tmp_path / "out" / "total" / "all.txt").read_text().split()) == [2, 4, 6, 8, 10, 12]
    csv = (tmp_path / "out" / "status.csv").read_text().splitlines()
    assert csv[0].startswith("Step Name,Job ID,Workspace,State") and len(csv) == 14


def test_instances_run_in_parallel_and_throttle_limits(tmp_path: Path) -> None:
    spec = write(tmp_path, """
description: {name: p, description: d}
study:
  - {name: s, description: d, run: {cmd: sleep 0.5}}
global.parameters:
  P: {values: [1, 2, 3, 4], label: P.%%}
""")
    assert legato("run", str(spec), "-o", "wide", "-j", "4", cwd=tmp_path).returncode == 0
    spans = rows(tmp_path / "wide", "SELECT started, ended FROM instances")
    assert max(start for start, _ in spans) < min(end for _, end in spans)  # all four overlapped
    assert legato("run", str(spec), "-o", "narrow", "-j", "4", "-t", "1", cwd=tmp_path).returncode == 0
    spans = sorted(rows(tmp_path / "narrow", "SELECT started, ended FROM instances"))
    assert all(later[0] >= earlier[1] - 0.05 for earlier, later in zip(spans, spans[1:]))


def test_retries_use_the_restart_command(tmp_path: Path) -> None:
    spec = write(tmp_path, """
description: {name: r, description: d}
study:
  - name: s
    description: fails twice, then the restart command succeeds
    run:
      cmd: echo x >> tries; [ $(wc -l < tries) -ge 3 ]
      restart: echo x >> tries; echo restarted > how; [ $(wc -l < tries) -ge 3 ]
""")
    done = legato("run", str(spec), "-o", "out", "-a", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stdout
    assert rows(tmp_path / "out", "SELECT state, attempts FROM instances") == [("finished", 3)]
    assert (tmp_path / "out" / "s" / "how").read_text() == "restarted\n"
    assert legato("run", str(spec), "-o", "once", "-a", "1", cwd=tmp_path).returncode == 1


def test_walltime_kills_the_process_group(tmp_path: Path) -> None:
    spec = write(tmp_path, """
description: {name: w, description: d}
study:
  - {name: s, description: d, run: {cmd: "sleep 30 & echo $! > child; wait", walltime: "00:00:01"}}
""")
    done = legato("run", str(spec), "-o", "out", cwd=tmp_path)
    assert done.returncode == 1
    assert rows(tmp_path / "out", "SELECT state FROM instances") == [("timedout",)]
    child = int((tmp_path / "out" / "s" / "child").read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split(")")[1][:3]


SLOW = """
description: {name: slow, description: d}
study:
  - name: s
    description: counts its runs outside the study, then sleeps
    run: {cmd: "echo $(P) >> COUNTS/$(P); sleep SECONDS"}
global.parameters:
  P: {values: [1, 2, 3, 4, 5, 6], label: P.%%}
"""


def slow_spec(tmp_path: Path, seconds: float) -> Path:
    counts = tmp_path / "counts"
    counts.mkdir(exist_ok=True)
    return write(tmp_path, SLOW.replace("COUNTS", str(counts)).replace("SECONDS", str(seconds)))


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


@pytest.mark.parametrize("after", [1, 3])
def test_kill_9_then_resume_runs_each_instance_once(tmp_path: Path, after: int) -> None:
    spec = slow_spec(tmp_path, 0.6)
    assert legato("run", "--dry", str(spec), "-o", "out", cwd=tmp_path).returncode == 0
    study = tmp_path / "out"
    conductor = subprocess.Popen([*LEGATO, "run", "--resume", str(study), "-j", "2"], cwd=tmp_path,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: len(list((tmp_path / "counts").iterdir())) >= after)
    conductor.send_signal(signal.SIGKILL)
    conductor.wait()
    finished_before = [label.split(".")[1] for label, state in states(study).items() if state == "finished"]
    done = legato("run", "--resume", str(study), cwd=tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    assert set(states(study).values()) == {"finished"}
    runs = {p.name: len(p.read_text().split()) for p in (tmp_path / "counts").iterdir()}
    assert sorted(runs) == [str(p) for p in range(1, 7)]
    assert all(runs[p] == 1 for p in finished_before)  # finished work is never redone
    assert sum(n == 2 for n in runs.values()) <= 2 and max(runs.values()) <= 2  # only the interrupted ones rerun


def test_cancel_then_resume(tmp_path: Path) -> None:
    spec = slow_spec(tmp_path, 30)
    assert legato("run", "--dry", str(spec), "-o", "out", cwd=tmp_path).returncode == 0
    study = tmp_path / "out"
    conductor = subprocess.Popen([*LEGATO, "run", "--resume", str(study), "-j", "2"], cwd=tmp_path,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: sorted(set(states(study).values())) == ["pending", "running"]
             and list(states(study).values()).count("running") == 2)
    pids = [pid for (pid,) in rows(study, "SELECT pid FROM instances WHERE state = 'running'")]
    done = legato("cancel", str(study), cwd=tmp_path)
    assert done.returncode == 0 and "stopped" in done.stdout
    assert conductor.wait(timeout=30) == 1
    found = list(states(study).values())
    assert found.count("cancelled") >= 2 and found.count("cancelled") + found.count("pending") == 6
    assert rows(study, "SELECT count(*) FROM instances WHERE state = 'cancelled' AND pid IS NULL") == [(0,)]
    for pid in pids:
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3], 10)
    (tmp_path / "spec.yaml").write_text("")  # the resume reads nothing but the store
    fast = rows(study, "SELECT count(*) FROM instances")[0][0]
    with sqlite3.connect(study / "legato.db") as db:
        db.execute("UPDATE instances SET script = replace(script, 'sleep 30', 'sleep 0')")
    assert legato("run", "--resume", str(study), cwd=tmp_path).returncode == 0
    assert list(states(study).values()).count("finished") == fast


def test_detach_works_without_legato_on_path(tmp_path: Path) -> None:
    spec = slow_spec(tmp_path, 0)
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    done = legato("run", str(spec), "-o", "out", "--detach", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "conductor.log" in done.stdout

    def finished() -> bool:
        status = legato("status", "out", "--json", cwd=tmp_path)
        return json.loads(status.stdout)["steps"]["s"] == {"finished": 6}

    wait_for(finished)


def test_status_views(tmp_path: Path) -> None:
    legato("run", str(write(tmp_path, THREE_STEPS)), "-o", "out", cwd=tmp_path)
    text = legato("status", "out", cwd=tmp_path).stdout
    assert "finished" in text and "skipped" in text and "total" in text
    failed = legato("status", "out", "--state", "failed", cwd=tmp_path).stdout.strip().splitlines()
    assert len(failed) == 1 and "a/P.3" in failed[0] and "rc=1" in failed[0]
    listing = json.loads(legato("status", "out", "--step", "b", "--json", cwd=tmp_path).stdout)
    assert len(listing) == 6 and {item["state"] for item in listing} == {"finished", "skipped"}
    csv = legato("status", "out", "--csv", cwd=tmp_path).stdout.splitlines()
    assert len(csv) == 14 and any(",FAILED," in line for line in csv)


def test_few_files_per_instance(tmp_path: Path) -> None:
    spec = write(tmp_path, THREE_STEPS.replace("[ $(P) != 3 ] && ", ""))
    legato("run", str(spec), "-o", "out", cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "out" / "a" / "P.1").iterdir()) == ["a.err", "a.out", "value.txt"]
    legato("run", str(spec), "-o", "debug", "--write-scripts", cwd=tmp_path)
    assert (tmp_path / "debug" / "a" / "P.1" / "a.sh").is_file()


def test_piped_progress_has_no_escapes(tmp_path: Path) -> None:
    done = legato("run", str(write(tmp_path, THREE_STEPS)), "-o", "out", cwd=tmp_path)
    assert "\x1b[" not in done.stdout


@pytest.mark.parametrize("args, words", [
    (["run", "--resume", "."], ["not a legato study folder"]),
    (["status", "--state", "bogus", "out"], ["--state 'bogus'"]),
    (["run", "-j", "0", "spec.yaml"], ["-j"]),
])
def test_bad_inputs(tmp_path: Path, args: list[str], words: list[str]) -> None:
    write(tmp_path, THREE_STEPS)
    legato("run", "--dry", "spec.yaml", "-o", "out", cwd=tmp_path)
    one_line_error(legato(*args, cwd=tmp_path), *words)


def test_a_second_conductor_is_refused(tmp_path: Path) -> None:
    spec = slow_spec(tmp_path, 5)
    assert legato("run", "--dry", str(spec), "-o", "out", cwd=tmp_path).returncode == 0
    first = subprocess.Popen([*LEGATO, "run", "--resume", "out"], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: "running" in states(tmp_path / "out").values())
        one_line_error(legato("run", "--resume", "out", cwd=tmp_path), "already running")
    finally:
        legato("cancel", "out", cwd=tmp_path)
        first.wait(timeout=30)
