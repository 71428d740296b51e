"""kill -9 of the campaign driver, and of its whole process tree, at every phase and at random instants.

Each kill is followed by ``legato status``, which must answer without a traceback; then
``legato batch --resume`` (killed again, for the random kills, until it finishes) must end
with every row harvested exactly once, every archive verifying with plain ``tar -tf``, and no
workspace left behind.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.campaign.files.checks import (
    HERE,
    check_campaign,
    csv_rows,
    kill_tree,
    ledger_batches,
    legato,
    process_tree,
    python_legato,
    run_with_kills,
    source_env,
    status_answers,
)

pytestmark = pytest.mark.faults

RESULT = "echo-params:params.txt"
ARGS = ["batch", "batched_parameters_demo.yaml", "-b", "3", "--rows", "params.csv", "--index", "param_combo",
        "--result", RESULT, "--max-rows", "9", "--min-free", "1M", "--min-inodes", "0", "-j", "2", "-o", "camp"]
"""Three batches of three rows, two batch workspaces at once (the default window): phases overlap."""

PHASES = {
    # start-up: killed while the ledger is built (a partial ledger), then once it is whole but nothing ran
    "start-ledger": (1,), "start-after": (1,),
    # each batch's set-up: the store created but empty, the plan cut short
    "store-created": (1, 2, 3), "prepare": (1, 2, 3),
    # running: in the middle of the executor's loop
    "running": (2, 3, 5),
    # harvest, archive, clean: before, inside and after each
    "harvest-before": (1, 3), "harvest-inside": (1, 2), "harvest-after": (2, 3),
    "archive-partial": (1, 3), "archive-after": (1, 2),
    "clean-partial": (1, 3), "clean-after": (2, 3),
    # finishing: the record of how the campaign ended
    "finishing": (1,),
}
KILLS = [(point, nth) for point, nths in PHASES.items() for nth in nths]


def finish(sample_dir: Path, rows: int = 9, batches: int = 3) -> None:
    """Resume (or, for a campaign killed before its ledger was whole, start again) and check the end state."""
    camp = sample_dir / "camp"
    if (camp / "campaign.db").is_file():
        done = legato("batch", "--resume", "camp", cwd=sample_dir)
    else:
        done = legato(*ARGS, cwd=sample_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = {key: row for key, row in csv_rows(sample_dir / "params.csv").items() if int(key) < rows}
    check_campaign(camp, expected, batches)


@pytest.mark.parametrize("point, nth", KILLS, ids=[f"{point}-{nth}" for point, nth in KILLS])
def test_kill_at_a_phase_then_resume(sample_dir, point, nth):
    done = subprocess.run([sys.executable, str(HERE / "crash.py"), point, str(nth), *ARGS], cwd=sample_dir,
                          env=source_env(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stdout, done.stderr)
    if (sample_dir / "camp").exists():
        status_answers(sample_dir / "camp")
    finish(sample_dir)


def test_a_start_killed_before_its_ledger_was_whole_is_removed_by_resume(sample_dir):
    done = subprocess.run([sys.executable, str(HERE / "crash.py"), "start-ledger", "1", *ARGS], cwd=sample_dir,
                          env=source_env(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == -signal.SIGKILL
    resumed = legato("batch", "--resume", "camp", cwd=sample_dir)
    assert resumed.returncode == 2 and "the campaign never started" in resumed.stderr and "Traceback" not in resumed.stderr
    assert not (sample_dir / "camp").exists()
    finish(sample_dir)


RANDOM_KILLS = 12


def test_kill_the_whole_process_tree_at_random_instants(sample_dir):
    """The driver, its worker shells and their instances all killed at once, again and again, until it finishes.

    Campaigns of ten two-row batches whose instances pause up to 90 ms (``jittery.yaml``), so
    that the kills fall in every phase; a campaign that finishes before the kills are all
    made is followed by another.
    """
    shutil.copy(HERE / "jittery.yaml", sample_dir / "jittery.yaml")
    rng = random.Random(13)
    kills, campaigns = 0, []
    while kills < RANDOM_KILLS:
        camp = sample_dir / f"camp{len(campaigns)}"
        campaigns.append(camp)
        first = ["batch", "jittery.yaml", "-b", "2", "--rows", "params.csv", "--index", "param_combo", "--result", RESULT,
                 "--min-free", "1M", "--min-inodes", "0", "-j", "2", "-o", camp.name]
        kills += run_with_kills(sample_dir, camp, first, rng, RANDOM_KILLS - kills, kill_tree)
    for camp in campaigns:
        check_campaign(camp, csv_rows(sample_dir / "params.csv"), 10)


def test_instances_ending_after_the_driver_died_are_not_run_again(sample_dir):
    """kill -9 of the driver alone while instances run: its worker shells let the running instances end,
    journal them and start nothing more; the resume then runs each instance exactly once in all."""
    shutil.copy(HERE.parent.parent / "faults" / "files" / "counted.yaml", sample_dir / "counted.yaml")
    (sample_dir / "runs").mkdir()
    args = ["batch", "counted.yaml", "-b", "4", "--rows", "params.csv", "--index", "param_combo", "--result", RESULT,
            "--min-free", "1M", "--min-inodes", "0", "-j", "2", "-o", "camp"]
    process = subprocess.Popen(python_legato(*args), cwd=sample_dir, env=source_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while len(list((sample_dir / "runs").iterdir())) < 3:  # the second batch is under way
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    tree = process_tree(process.pid)
    shells = [pid for pid in tree if _command(pid).startswith("/bin/bash") or "bash" in _command(pid).split(" ")[0]]
    for pid in tree:
        if pid not in shells and "python" in _command(pid):
            os.kill(pid, signal.SIGKILL)  # the driver and its finisher: the worker shells are orphaned
    killed_at = time.time()
    process.wait()
    while any(_alive(pid) for pid in shells):
        assert time.monotonic() < deadline, "orphaned worker shells did not go"
        time.sleep(0.05)
    starts = [float(line) for path in (sample_dir / "runs").iterdir() for line in path.read_text().split()]
    late = [start - killed_at for start in starts if start > killed_at + 0.2]
    assert not late, f"instances started {late} s after the driver died"
    done = legato("batch", "--resume", "camp", cwd=sample_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = {path.name: len(path.read_text().split()) for path in (sample_dir / "runs").iterdir()}
    combos = {f"{row['param1']}_{row['param2']}_{row['param3']}" for row in csv_rows(sample_dir / "params.csv").values()}
    assert set(runs) == combos and set(runs.values()) == {1}, runs
    check_campaign(sample_dir / "camp", csv_rows(sample_dir / "params.csv"), 5)


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]
    except OSError:
        return False


def test_a_batch_store_without_tables_is_set_up_again(sample_dir):
    """What a kill during a batch's set-up used to leave (a WAL-mode legato.db without tables): status, cancel and
    resume each treat it as a set-up that did not finish, instead of failing on 'no such table: meta'."""
    done = subprocess.run([sys.executable, str(HERE / "crash.py"), "prepare", "2", *ARGS], cwd=sample_dir,
                          env=source_env(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == -signal.SIGKILL, done.stderr
    planned = [Path(batch["study"]) / "legato.db" for batch in ledger_batches(sample_dir / "camp")
               if batch["phase"] == "planned"]
    assert planned
    for path in planned:  # the old artifact, in place of whatever the kill left in a set-up cut short
        for leftover in path.parent.glob("legato.db*"):
            leftover.unlink()
        db = sqlite3.connect(path)
        db.execute("PRAGMA journal_mode=WAL")
        db.close()
    status_answers(sample_dir / "camp")
    cancelled = legato("cancel", "camp", cwd=sample_dir)
    assert cancelled.returncode == 0 and "Traceback" not in cancelled.stderr, cancelled.stderr
    finish(sample_dir)
