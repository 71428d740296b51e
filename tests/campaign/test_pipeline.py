"""Batch campaigns through the Python API, and kill -9 at every phase followed by ``--resume``.

The crash tests run the real CLI in a subprocess through ``files/crash.py``, which
wraps one function (a results write, an archive verification, the workspace removal...) so
that the process SIGKILLs itself at an exact moment, sometimes after doing part of the work.
Whatever the moment, the resumed campaign must hold every row exactly once and every archive
must verify.
"""
from __future__ import annotations

import json
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

from legato import api
from legato.campaign import diskguard
from legato.campaign import ledger as campaign
from legato.campaign.ledger import Ledger
from legato.campaign.options import CampaignOptions
from legato.errors import LegatoError
from legato.status import campaign_summary
from tests.campaign.files.checks import (
    HERE,
    assert_archives_verify,
    assert_each_row_once,
    assert_no_workspace,
    check_campaign,
    csv_rows,
    index_of,
    kill_group,
    ledger_batches,
    legato,
    password_env,
    python_legato,
    results,
    run_with_kills,
    source_env,
)

SPEC = "batched_parameters_demo.yaml"
RESULT = ["echo-params:params.txt"]


def options(**changes) -> CampaignOptions:
    values = dict(spec=SPEC, batch_size=3, rows="params.csv", index="param_combo", result_files=RESULT, min_free=1 << 20,
                  min_inodes=0)
    values.update(changes)
    return CampaignOptions(**values)


def run_batch(folder: Path, **changes):
    lines: list[str] = []
    outcome = api.batch(options(**changes), out=folder, execution={"jobs": 2}, log=lines.append)
    return outcome, lines


def copy_spec(sample_dir: Path, name: str) -> str:
    shutil.copy(HERE / name, sample_dir / name)
    return name


# -- whole campaigns ---------------------------------------------------------------------------
def test_twenty_rows_in_batches_of_three(sample_dir):
    outcome, lines = run_batch(sample_dir / "camp")
    assert outcome.ok and (outcome.batches, outcome.rows, outcome.failed) == (7, 20, 0)
    assert [batch["nrows"] for batch in ledger_batches(sample_dir / "camp")] == [3, 3, 3, 3, 3, 3, 2]
    assert [batch["start"] for batch in ledger_batches(sample_dir / "camp")] == [0, 3, 6, 9, 12, 15, 18]
    assert len(lines) == 7 and lines[-1].startswith("batch 7: 2 rows done")
    assert_each_row_once(results(sample_dir / "camp"), csv_rows(sample_dir / "params.csv"))
    assert_archives_verify(sample_dir / "camp", 7)
    assert_no_workspace(sample_dir / "camp")


def test_max_rows_zstd_archives_elsewhere(sample_dir, tmp_path):
    outcome, _ = run_batch(sample_dir / "camp", max_rows=7, archive=str(tmp_path / "store"), archive_format="tar.zst")
    assert (outcome.batches, outcome.rows) == (3, 7)
    assert [batch["nrows"] for batch in ledger_batches(sample_dir / "camp")] == [3, 3, 1]
    expected = {key: row for key, row in csv_rows(sample_dir / "params.csv").items() if int(key) < 7}
    assert_each_row_once(results(sample_dir / "camp"), expected)
    recorded = assert_archives_verify(sample_dir / "camp", 3)
    assert sorted(Path(batch["archive"]).name for batch in recorded) == [
        f"batch-00000{n}.tar.zst" for n in (1, 2, 3)]
    assert all(Path(batch["archive"]).parent == tmp_path / "store" / "camp" for batch in recorded)
    assert not (sample_dir / "camp" / "archives").exists()


def test_campaigns_sharing_an_archive_folder_keep_their_own_archives(sample_dir, tmp_path):
    run_batch(sample_dir / "first", max_rows=3, archive=str(tmp_path / "store"))
    run_batch(sample_dir / "second", max_rows=3, archive=str(tmp_path / "store"), index=None)
    assert_archives_verify(sample_dir / "first", 1)
    assert_archives_verify(sample_dir / "second", 1)
    assert sorted(path.parent.name for path in (tmp_path / "store").glob("*/*.tar.gz")) == ["first", "second"]


def test_no_archive_and_keep_workspace(sample_dir):
    run_batch(sample_dir / "harvest-only", no_archive=True, max_rows=6)
    assert all(batch["archive"] is None for batch in ledger_batches(sample_dir / "harvest-only"))
    assert not (sample_dir / "harvest-only" / "archives").exists()
    assert_no_workspace(sample_dir / "harvest-only")
    assert len(results(sample_dir / "harvest-only")) == 6

    run_batch(sample_dir / "kept", keep_workspace=True, max_rows=6)
    outputs = sorted((sample_dir / "kept" / "work").glob("batch-*/echo-params/*/params.txt"))
    assert len(outputs) == 6
    assert_archives_verify(sample_dir / "kept", 2)


def test_a_pgen_gets_start_and_nrows(sample_dir):
    outcome, _ = run_batch(sample_dir / "camp", rows=None, index=None, pgen="batched_demo_pgen.py",
                           pargs=["CSV:params.csv", "INDEX:param_combo"], batch_size=4)
    assert (outcome.batches, outcome.rows) == (5, 20)
    assert [batch["nrows"] for batch in ledger_batches(sample_dir / "camp")] == [4] * 5
    assert_each_row_once(results(sample_dir / "camp"), csv_rows(sample_dir / "params.csv"))


def test_a_pgen_must_honour_start_and_nrows(sample_dir):
    shutil.copy(HERE / "greedy_pgen.py", sample_dir)
    with pytest.raises(LegatoError, match=r"greedy_pgen.py: gave 5 rows for START=0 NROWS=3; a campaign's pgen must"):
        run_batch(sample_dir / "camp", rows=None, index=None, pgen="greedy_pgen.py")
    assert campaign_summary(sample_dir / "camp")["state"] == "stopped"
    assert ledger_batches(sample_dir / "camp") == []


def test_spec_declared_results_and_unknown_steps(sample_dir):
    spec = copy_spec(sample_dir, "declared.yaml")
    run_batch(sample_dir / "camp", spec=spec, result_files=[], max_rows=5)
    expected = {key: row for key, row in csv_rows(sample_dir / "params.csv").items() if int(key) < 5}
    assert_each_row_once(results(sample_dir / "camp"), expected)
    with pytest.raises(LegatoError, match="--result 'nostep:out.txt': the spec has no step 'nostep'"):
        run_batch(sample_dir / "bad", result_files=["nostep:out.txt"])


def test_resuming_a_finished_campaign_changes_nothing(sample_dir):
    first, _ = run_batch(sample_dir / "camp", max_rows=6)
    assert first.ran == 6 and first.summary()[0].startswith("2 batches, 6 rows (0 failed) in ")
    before = results(sample_dir / "camp")
    outcome = api.resume_batch(sample_dir / "camp", log=lambda line: None)
    assert outcome.ok and (outcome.batches, outcome.rows, outcome.ran) == (2, 6, 0)
    assert outcome.summary()[0].startswith("2 batches, 6 rows (0 failed) (0 this run) in ")
    assert sorted(map(repr, results(sample_dir / "camp"))) == sorted(map(repr, before))
    assert len(ledger_batches(sample_dir / "camp")) == 2


# -- failures -------------------------------------------------------------------------------------
def failing_rows(sample_dir: Path) -> set[str]:
    return {key for key, row in csv_rows(sample_dir / "params.csv").items() if int(row["param1"]) < 30}


def test_failed_rows_recorded_then_retried_once(sample_dir):
    spec = copy_spec(sample_dir, "flaky.yaml")
    (sample_dir / "fail.flag").touch()
    outcome, _ = run_batch(sample_dir / "camp", spec=spec)
    assert not outcome.ok and outcome.failed == len(failing_rows(sample_dir)) and outcome.stopped is None
    failed = {index_of(row): row for row in results(sample_dir / "camp") if row["state"] != "finished"}
    assert set(failed) == failing_rows(sample_dir)
    assert all(row["reason"] == "exit code 3" and row["returncode"] == 3 for row in failed.values())
    summary = campaign_summary(sample_dir / "camp")
    assert (summary["failed"], summary["finished"], summary["state"]) == (len(failed), 20 - len(failed), "failed")

    (sample_dir / "fail.flag").unlink()
    retried = api.resume_batch(sample_dir / "camp", retry_failed=True, log=lambda line: None)
    assert retried.ok and (retried.batches, retried.rows, retried.failed) == (7, 20, 0)
    assert_each_row_once(results(sample_dir / "camp"), csv_rows(sample_dir / "params.csv"))
    summary = campaign_summary(sample_dir / "camp")
    assert (summary["failed"], summary["finished"], summary["state"]) == (0, 20, "finished")
    assert (summary["batches_done"], summary["batches_total"], summary["rows_done"]) == (7, 7, 20)
    assert summary["retry_batches"] == len({int(key) // 3 for key in failed})


def test_retry_of_a_chain_keeps_every_step_of_a_row_once(sample_dir):
    """A row whose second step failed reruns whole; its first step's old result must go, and a funnel runs per batch."""
    spec = copy_spec(sample_dir, "chain.yaml")
    (sample_dir / "fail.flag").touch()
    outcome, _ = run_batch(sample_dir / "camp", spec=spec, max_rows=9, result_files=["echo-params:params.txt"])
    assert not outcome.ok
    (sample_dir / "fail.flag").unlink()
    assert api.resume_batch(sample_dir / "camp", retry_failed=True, log=lambda line: None).ok
    rows = results(sample_dir / "camp")
    expected = {key: row for key, row in csv_rows(sample_dir / "params.csv").items() if int(key) < 9}
    assert_each_row_once(rows, expected, step="echo-params")
    assert_each_row_once(rows, expected, step="check", parsed=False)
    assert all(row["state"] == "finished" for row in rows)
    # rows 3 and 6 failed their check in batches 2 and 3, which skipped those batches' funnels; retries 4 and 5 ran theirs
    assert sorted(row["batch"] for row in rows if row["step"] == "collect") == [1, 4, 5]


def test_rows_sharing_an_instance_each_get_a_result_row_and_a_retry(sample_dir):
    """Rows a step does not tell apart run once (Maestro's rules) but are harvested, counted and retried row by row."""
    spec = copy_spec(sample_dir, "shared.yaml")
    rows = {"a": ("1", "x"), "b": ("1", "x"), "c": ("2", "y"), "d": ("1", "z"), "e": ("3", "x"), "f": ("3", "x")}
    (sample_dir / "shared.csv").write_text("id,p,q\n" + "".join(f"{k},{p},{q}\n" for k, (p, q) in rows.items()))
    (sample_dir / "fail.flag").touch()
    outcome, _ = run_batch(sample_dir / "camp", spec=spec, rows="shared.csv", index="id", batch_size=6,
                           result_files=["pair:out.txt", "single:out.txt"])
    assert (outcome.rows, outcome.failed) == (6, 2)
    harvested = results(sample_dir / "camp")
    for step in ("pair", "single"):
        mine = {index_of(row): row for row in harvested if row["step"] == step}
        assert sorted(mine) == sorted(rows) and len(mine) == len([r for r in harvested if r["step"] == step])
        assert all((str(row["P"]), str(row["Q"])) == rows[key] for key, row in mine.items())
    single = {index_of(row): row["seen"] for row in harvested if row["step"] == "single"}
    assert single == {key: p for key, (p, _) in rows.items()}  # text: "pair" wrote words to the same column
    assert {index_of(row) for row in harvested if row["state"] == "failed"} == {"e", "f"}

    (sample_dir / "fail.flag").unlink()
    retried = api.resume_batch(sample_dir / "camp", retry_failed=True, log=lambda line: None)
    assert retried.ok and (retried.rows, retried.failed) == (6, 0)
    harvested = results(sample_dir / "camp")
    pair = {index_of(row): row["seen"] for row in harvested if row["step"] == "pair"}
    assert len([r for r in harvested if r["step"] == "pair"]) == 6
    assert pair == {key: p + q for key, (p, q) in rows.items()}
    assert sorted(index_of(r) for r in harvested if r["step"] == "single") == sorted(rows)


def test_on_failure_stop_then_resume(sample_dir):
    """With a window of one batch nothing overlaps: the campaign stops right after the batch that failed."""
    spec = copy_spec(sample_dir, "flaky.yaml")
    (sample_dir / "fail.flag").touch()
    outcome, _ = run_batch(sample_dir / "camp", spec=spec, on_failure="stop", window=1)
    assert outcome.stopped == "batch 2 has failed rows (--on-failure stop)" and outcome.batches == 2
    summary = campaign_summary(sample_dir / "camp")
    assert (summary["state"], summary["batches_done"], summary["rows_done"]) == ("stopped", 2, 6)
    assert summary["rows_per_second"] > 0 and summary["eta_seconds"] > 0
    outcome = api.resume_batch(sample_dir / "camp", log=lambda line: None)
    assert outcome.stopped == "batch 3 has failed rows (--on-failure stop)"
    assert len(ledger_batches(sample_dir / "camp")) == 3


# -- the disk guard ------------------------------------------------------------------------------
def test_a_full_disk_stops_before_a_batch_and_resumes_later(sample_dir, monkeypatch):
    real = os.statvfs
    full = os.statvfs_result((4096, 4096, 10**6, 10, 10, 10**6, 10**6, 10**6, 0, 255))
    calls = {"n": 0}

    def statvfs(path):
        calls["n"] += 1
        return full if calls["n"] > 2 else real(path)

    monkeypatch.setattr(diskguard.os, "statvfs", statvfs)
    with pytest.raises(LegatoError, match=r"not enough room on .*camp: 40.0 KiB free, --min-free is 1\.0 MiB"):
        run_batch(sample_dir / "camp", max_rows=9)
    summary = campaign_summary(sample_dir / "camp")
    assert (summary["state"], summary["batches_done"]) == ("stopped", 2)
    monkeypatch.setattr(diskguard.os, "statvfs", real)
    assert api.resume_batch(sample_dir / "camp", log=lambda line: None).ok
    expected = {key: row for key, row in csv_rows(sample_dir / "params.csv").items() if int(key) < 9}
    assert_each_row_once(results(sample_dir / "camp"), expected)
    assert_archives_verify(sample_dir / "camp", 3)


# -- status --------------------------------------------------------------------------------------
def test_status_of_a_killed_campaign_says_so(sample_dir):
    run_batch(sample_dir / "camp", max_rows=3)
    ledger = Ledger(sample_dir / "camp")
    dead = subprocess.Popen(["true"])
    dead.wait()
    ledger.set(state="running", pid=dead.pid)
    ledger.close()
    assert campaign_summary(sample_dir / "camp")["state"] == "interrupted"


def test_ledger_refuses_other_folders(tmp_path):
    with pytest.raises(LegatoError, match="not a legato campaign folder"):
        Ledger(tmp_path)
    (tmp_path / "campaign.db").write_bytes(b"this is no SQLite file" * 100)
    with pytest.raises(LegatoError, match="campaign.db: cannot read the campaign ledger: file is not a database"):
        Ledger(tmp_path)


def test_a_ledger_of_another_format_is_refused(tmp_path):
    Ledger(tmp_path, create=True).close()
    with sqlite3.connect(tmp_path / "campaign.db") as db:
        db.execute("PRAGMA user_version = 1")
    with pytest.raises(LegatoError, match="ledger format 1, this legato reads format 2"):
        Ledger(tmp_path)


def test_a_campaign_killed_before_its_options_were_saved(tmp_path):
    Ledger(tmp_path, create=True).close()
    with pytest.raises(LegatoError, match="the campaign never started"):
        campaign_summary(tmp_path)
    with pytest.raises(LegatoError, match="the campaign never started"):
        api.resume_batch(tmp_path)


# -- kill -9 at every phase ------------------------------------------------------------------------
SAMPLE_ARGS = ["batch", SPEC, "-b", "3", "--rows", "params.csv", "--index", "param_combo", "--result", RESULT[0],
               "--max-rows", "9", "--min-free", "1M", "--min-inodes", "0", "-j", "2", "-o", "camp", "-w", "1"]
"""A window of one batch: each kill at a named point then finds the earlier batches done and the later ones not
begun. Kills of overlapping batches are in test_kill_at_random_moments_of_overlapping_batches."""


def crash(sample_dir: Path, point: str, nth: int, args: list[str] = SAMPLE_ARGS) -> None:
    done = subprocess.run([sys.executable, str(HERE / "crash.py"), point, str(nth), *args], cwd=sample_dir,
                          env=source_env(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stdout, done.stderr)


def resume_and_check(sample_dir: Path, *extra: str, rows: int = 9, batches: int = 3, retries: int = 0) -> None:
    done = legato("batch", "--resume", "camp", *extra, cwd=sample_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = {key: row for key, row in csv_rows(sample_dir / "params.csv").items() if int(key) < rows}
    assert_each_row_once(results(sample_dir / "camp"), expected)
    assert_archives_verify(sample_dir / "camp", batches + retries)
    assert_no_workspace(sample_dir / "camp")
    summary = campaign_summary(sample_dir / "camp")
    assert (summary["state"], summary["batches_done"], summary["retry_batches"], summary["rows_done"],
            summary["finished"], summary["failed"]) == ("finished", batches, retries, rows, rows, 0)


@pytest.mark.parametrize("point", [
    "prepare", "harvest-before", "harvest-inside", "harvest-after", "archive-partial", "archive-after",
    "clean-partial", "clean-after",
])
def test_kill_during_a_phase_then_resume(sample_dir, point):
    crash(sample_dir, point, 2)
    phases = [batch["phase"] for batch in ledger_batches(sample_dir / "camp")]
    assert phases[0] == "cleaned" and phases[1] != "cleaned", phases
    if point == "archive-partial":
        assert list((sample_dir / "camp" / "archives").glob("*.partial"))
    if point == "harvest-inside":
        assert {row["batch"] for row in results(sample_dir / "camp")} == {1}
    resume_and_check(sample_dir)


@pytest.mark.parametrize("point, mode", [
    ("instance-partial", ["--archive-mode", "instance", "--archive-format", "tar.zst"]),
    ("copy-partial", ["--archive-format", "none"]),
    ("folder-after", ["--archive-mode", "step"]),
])
def test_kill_during_a_folder_archive_then_resume(sample_dir, point, mode):
    """A step, instance or copy archive cut short stays ``.partial`` (never complete-looking); the resume finishes it.

    The archive is written while the batch's results are harvested, so the kill may come before
    or after the harvest's commit."""
    crash(sample_dir, point, 5 if point != "folder-after" else 2, SAMPLE_ARGS + mode)
    phases = [batch["phase"] for batch in ledger_batches(sample_dir / "camp")]
    assert phases[-1] in ("ran", "harvested") and set(phases[:-1]) <= {"cleaned"}, phases
    partial = list((sample_dir / "camp" / "archives").glob("*.partial"))
    assert bool(partial) == (point != "folder-after"), partial
    resume_and_check(sample_dir)
    assert len(list((sample_dir / "camp" / "archives").glob("batch-*"))) == 3


@pytest.mark.parametrize("point", ["harvest-inside", "harvest-after"])
def test_kill_during_a_postgres_harvest_then_resume(sample_dir, postgres_url, point):
    args = [arg if arg != "camp" else f"pg-{point}" for arg in SAMPLE_ARGS] + ["--results", postgres_url]
    crash(sample_dir, point, 2, args)
    committed = {row["batch"] for row in results(sample_dir / f"pg-{point}", postgres_url)}
    assert committed == ({1} if point == "harvest-inside" else {1, 2})
    done = legato("batch", "--resume", f"pg-{point}", cwd=sample_dir, env=password_env(postgres_url))
    assert done.returncode == 0, done.stdout + done.stderr
    expected = {key: row for key, row in csv_rows(sample_dir / "params.csv").items() if int(key) < 9}
    assert_each_row_once(results(sample_dir / f"pg-{point}", postgres_url), expected)
    assert_archives_verify(sample_dir / f"pg-{point}", 3)


def recorded_running(study: Path) -> list[int]:
    """Pids of the instances the study's store shows running (what a resume knows to kill)."""
    if not (study / "legato.db").is_file():
        return []
    with sqlite3.connect(study / "legato.db") as db:
        return [pid for (pid,) in db.execute("SELECT pid FROM instances WHERE state = 'running' AND pid IS NOT NULL")]


@pytest.mark.parametrize("moment", [
    "recorded",
    "unrecorded",
])
def test_kill_while_a_slow_step_runs_then_resume(sample_dir, moment):
    """The campaign dies while batch 2 runs; its orphaned instance must be stopped by the resume, and rerun.

    ``recorded``: killed once the store shows the instance running; ``unrecorded``: the moment it started.
    """
    spec = copy_spec(sample_dir, "slow.yaml")
    (sample_dir / "slow.flag").touch()
    args = [spec if arg == SPEC else arg for arg in SAMPLE_ARGS]
    process = subprocess.Popen(python_legato(*args), cwd=sample_dir, env=source_env(), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        marker = wait_for(lambda: next(sample_dir.glob("running.*"), None))
        if moment == "recorded":
            wait_for(lambda: recorded_running(sample_dir / "camp" / "work" / "batch-000002"))
        live = json.loads(legato("status", "camp", "--json", cwd=sample_dir).stdout)
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()
    assert (live["state"], live["batches_done"], live["batches_total"], live["rows_done"], live["rows_total"]) == (
        "running", 1, 3, 3, 9)
    assert live["rows_per_second"] > 0 and live["eta_seconds"] == pytest.approx(6 / live["rows_per_second"])
    assert live["in_flight"] == [{"batch": 2, "stage": "running", "rows": 3}]
    assert campaign_summary(sample_dir / "camp")["state"] == "interrupted"
    orphan = int(marker.read_text())
    assert marker.name == "running.0.30.95"  # row 3, in batch 2: PARAM1 is 0
    assert [batch["phase"] for batch in ledger_batches(sample_dir / "camp")] == ["cleaned", "running"]
    (sample_dir / "slow.flag").unlink()
    try:
        resume_and_check(sample_dir)
        assert not alive(orphan)
    finally:
        if alive(orphan):  # do not leave it sleeping after the test
            os.kill(orphan, signal.SIGKILL)


def test_kill_at_random_moments_of_overlapping_batches(sample_dir):
    """30 kill -9 of the driver's whole process group at random moments while batches overlap (``-w 2``).

    After every kill ``legato status`` answers without a traceback; each campaign is resumed
    (and killed again) until it finishes, then holds every row exactly once, each batch's
    archive verified and readable by plain tar, and no workspace left.
    """
    spec = copy_spec(sample_dir, "jittery.yaml")
    rng = random.Random(17)
    kills, campaigns = 0, []
    while kills < 30:
        camp = sample_dir / f"camp{len(campaigns)}"
        campaigns.append(camp)
        args = ["batch", spec, "-b", "2", "--rows", "params.csv", "--index", "param_combo", "--result", RESULT[0],
                "--min-free", "1M", "--min-inodes", "0", "-j", "2", "-w", "2", "-o", camp.name]
        kills += run_with_kills(sample_dir, camp, args, rng, 30 - kills, kill_group, pause=(0.3, 1.5))
    for camp in campaigns:
        check_campaign(camp, csv_rows(sample_dir / "params.csv"), 10)


def test_kill_after_a_retry_batch_then_plain_resume(sample_dir):
    """Killed once batch 2's retry batch is done but before the failed row it replaces is dropped.

    A plain resume finishes that bookkeeping without running anything again; batch 3's failed
    row waits for --retry-failed.
    """
    spec = copy_spec(sample_dir, "flaky.yaml")
    (sample_dir / "fail.flag").touch()
    args = [spec if arg == SPEC else arg for arg in SAMPLE_ARGS]
    assert legato(*args, cwd=sample_dir).returncode == 1
    (sample_dir / "fail.flag").unlink()
    crash(sample_dir, "retry-after", 1, ["batch", "--resume", "camp", "--retry-failed"])
    assert [batch["retry_of"] for batch in ledger_batches(sample_dir / "camp")] == [None, None, None, 2]
    done = legato("batch", "--resume", "camp", cwd=sample_dir)
    assert done.returncode == 1 and "3 batches, 9 rows (1 failed)" in done.stdout, done.stdout + done.stderr
    rows = results(sample_dir / "camp")
    assert sorted((index_of(row), row["state"], row["batch"]) for row in rows if index_of(row) in ("3", "6")) == [
        ("3", "finished", 4), ("6", "failed", 3)]
    assert len(ledger_batches(sample_dir / "camp")) == 4
    resume_and_check(sample_dir, "--retry-failed", retries=2)  # the retry batches of batches 2 and 3


def test_cancel_stops_the_campaign_and_resume_finishes(sample_dir):
    spec = copy_spec(sample_dir, "slow.yaml")
    (sample_dir / "slow.flag").touch()
    args = [spec if arg == SPEC else arg for arg in SAMPLE_ARGS]
    process = subprocess.Popen(python_legato(*args), cwd=sample_dir, env=source_env(), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: next(sample_dir.glob("running.*"), None))
        message = api.cancel(sample_dir / "camp")
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert message.startswith("cancelled: the campaign in"), message
    assert process.returncode == 1 and "stopped: cancelled" in out, out + err
    assert campaign_summary(sample_dir / "camp")["state"] == "stopped"
    (sample_dir / "slow.flag").unlink()
    resume_and_check(sample_dir)


def wait_for(probe, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_options_survive_in_the_ledger(sample_dir):
    run_batch(sample_dir / "camp", max_rows=3, pargs=[])
    with sqlite3.connect(sample_dir / "camp" / "campaign.db") as db:
        saved = json.loads(db.execute("SELECT value FROM meta WHERE key = 'options'").fetchone()[0])
    assert saved["rows"] == str(sample_dir / "params.csv") and saved["cwd"] == str(sample_dir)
    ledger = Ledger(sample_dir / "camp")
    assert campaign.options_of(ledger).max_rows == 3
    ledger.close()
