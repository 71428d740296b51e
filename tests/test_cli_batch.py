"""``legato batch``, ``status``, ``results`` and ``archive`` end to end: the real command in a subprocess, in tmp folders."""
from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest

from tests.campaign.files.checks import (
    HERE,
    assert_archives_verify,
    assert_each_row_once,
    assert_no_workspace,
    csv_rows,
    index_of,
    ledger_batches,
    legato,
    password_env,
    results,
    sqlite_from_csv,
)

SPEC = "batched_parameters_demo.yaml"
BATCH = ["batch", SPEC, "-b", "3", "--result", "echo-params:params.txt", "--min-free", "1M", "--min-inodes", "0",
         "-j", "2"]
CSV_ROWS = ["--rows", "params.csv", "--index", "param_combo"]
FIRST_LABEL = "PARAM1.94.PARAM2.71.PARAM3.72"


def assert_one_line_error(done, *fragments: str) -> str:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def batch(sample_dir: Path, *args: str, out: str = "camp", ok: bool = True):
    done = legato(*BATCH, *args, "-o", out, cwd=sample_dir)
    if ok:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def status(sample_dir: Path, folder: str = "camp") -> dict:
    done = legato("status", folder, "--json", cwd=sample_dir)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_whole_sample(sample_dir: Path, done, url: str | None = None, folder: str = "camp") -> None:
    """Acceptance 1: 7 batches (the last of 2 rows), 20 rows each once with its parsed params.txt, 7 verified archives."""
    assert "7 batches, 20 rows (0 failed)" in done.stdout, done.stdout
    assert [batch["nrows"] for batch in ledger_batches(sample_dir / folder)] == [3, 3, 3, 3, 3, 3, 2]
    assert_each_row_once(results(sample_dir / folder, url), csv_rows(sample_dir / "params.csv"))
    assert_archives_verify(sample_dir / folder, 7)
    assert_no_workspace(sample_dir / folder)


# -- acceptance 1: the sample through every kind of row source ---------------------------------------
def test_csv_source_with_status_results_and_archives(sample_dir, tmp_path):
    assert_whole_sample(sample_dir, batch(sample_dir, *CSV_ROWS))

    info = status(sample_dir)
    assert (info["state"], info["batches_done"], info["batches_total"]) == ("finished", 7, 7)
    assert (info["rows_done"], info["rows_total"], info["finished"], info["failed"]) == (20, 20, 20, 0)
    assert info["bytes_archived"] == sum(batch["archive_bytes"] for batch in ledger_batches(sample_dir / "camp")) > 0
    assert info["rows_per_second"] > 0 and info["eta_seconds"] == 0
    text = legato("status", "camp", cwd=sample_dir).stdout
    assert "camp: finished" in text and "batches  7/7" in text and "rows     20/20 (20 finished, 0 failed)" in text
    assert "archived " in text and "rows/s" in text and "ETA 0 s" in text

    stored = sorted(results(sample_dir / "camp"), key=lambda row: row["label"])
    done = legato("results", "camp", "--csv", str(tmp_path / "out.csv"), cwd=sample_dir)
    assert done.returncode == 0 and done.stdout.strip().startswith("20 rows written"), done.stderr
    with open(tmp_path / "out.csv", newline="") as handle:
        exported = sorted(csv.DictReader(handle), key=lambda row: row["label"])
    assert [{key: str(value) for key, value in row.items() if value is not None} for row in stored] == [
        {key: value for key, value in row.items() if value != ""} for row in exported]
    done = legato("results", "camp", "--parquet", str(tmp_path / "out.parquet"), cwd=sample_dir)
    assert done.returncode == 0, done.stderr
    assert sorted(pq.read_table(tmp_path / "out.parquet").to_pylist(), key=lambda row: row["label"]) == stored

    listing = legato("archive", "ls", "camp", cwd=sample_dir).stdout.splitlines()
    assert len(listing) == 7 and listing[0].endswith("(batch 1)") and "batch-000001.tar.gz" in listing[0]
    files = legato("archive", "ls", "camp", FIRST_LABEL, cwd=sample_dir).stdout
    assert f"echo-params/{FIRST_LABEL}/params.txt" in files and f"{FIRST_LABEL}/echo-params.out" in files
    done = legato("archive", "get", "camp", FIRST_LABEL, "params.txt", "-d", str(tmp_path / "back"), cwd=sample_dir)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "back" / "echo-params" / FIRST_LABEL / "params.txt").read_text() == "PARAM1=94 PARAM2=71 PARAM3=72\n"
    done = legato("archive", "get", "camp", f"echo-params/{FIRST_LABEL}", "-d", str(tmp_path / "all"), cwd=sample_dir)
    assert done.returncode == 0, done.stderr
    assert {path.name for path in (tmp_path / "all" / "echo-params" / FIRST_LABEL).iterdir()} >= {
        "params.txt", "echo-params.out", "echo-params.err"}
    assert_one_line_error(legato("archive", "get", "camp", "PARAM1.1000", cwd=sample_dir), "PARAM1.1000: no such instance")
    assert_one_line_error(legato("archive", "get", "camp", FIRST_LABEL, "nothing.txt", cwd=sample_dir), "nothing.txt")


def test_pgen_source(sample_dir):
    done = batch(sample_dir, "--pgen", "batched_demo_pgen.py", "--pargs", "CSV:params.csv", "--pargs", "INDEX:param_combo")
    assert_whole_sample(sample_dir, done)


def test_sqlite_source(sample_dir):
    sqlite_from_csv(sample_dir / "params.csv", sample_dir / "params.db")
    done = batch(sample_dir, "--rows", "sqlite:///params.db?table=params", "--index", "param_combo")
    assert_whole_sample(sample_dir, done)
    assert status(sample_dir)["batches_total"] == 7
    with sqlite3.connect(sample_dir / "camp" / "campaign.db") as ledger:  # counted up front, for the ETA
        assert ledger.execute("SELECT value FROM meta WHERE key = 'total_rows'").fetchone() == ("20",)


def test_spec_declared_results(sample_dir):
    shutil.copy(HERE / "declared.yaml", sample_dir)
    done = legato("batch", "declared.yaml", "-b", "3", *CSV_ROWS, "--min-free", "1M", "-o", "camp", cwd=sample_dir)
    assert done.returncode == 0, done.stderr
    assert_whole_sample(sample_dir, done)


# -- acceptance 2: PostgreSQL ------------------------------------------------------------------------
def test_postgres_results(sample_dir, postgres_url, tmp_path):
    done = batch(sample_dir, *CSV_ROWS, "--results", postgres_url, out="pg-results")
    assert_whole_sample(sample_dir, done, postgres_url, folder="pg-results")
    assert not (sample_dir / "pg-results" / "results.db").exists()
    exported = legato("results", "pg-results", "--csv", str(tmp_path / "out.csv"), cwd=sample_dir,
                      env=password_env(postgres_url))
    assert exported.returncode == 0 and exported.stdout.startswith("20 rows written"), exported.stderr


def test_postgres_rows(sample_dir, postgres_url):
    rows = list(csv_rows(sample_dir / "params.csv").values())
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE campaign_rows (param_combo INTEGER PRIMARY KEY, param1 TEXT, param2 TEXT, param3 TEXT)")
        with conn.cursor() as cursor:
            cursor.executemany("INSERT INTO campaign_rows VALUES (%(param_combo)s, %(param1)s, %(param2)s, %(param3)s)", rows)
    done = batch(sample_dir, "--rows", f"{postgres_url}?table=campaign_rows", "--index", "param_combo", out="pg-rows")
    assert_whole_sample(sample_dir, done, folder="pg-rows")
    assert_one_line_error(batch(sample_dir, "--rows", f"{postgres_url}?table=missing_rows", out="pg-bad", ok=False),
                          "no table 'missing_rows'")
    assert "legato-test-pw" not in json.dumps(status(sample_dir, "pg-rows"))


# -- acceptance 6: failing rows ----------------------------------------------------------------------
def failing(sample_dir: Path) -> set[str]:
    return {key for key, row in csv_rows(sample_dir / "params.csv").items() if int(row["param1"]) < 30}


def flaky_batch(sample_dir: Path, *args: str):
    shutil.copy(HERE / "flaky.yaml", sample_dir)
    (sample_dir / "fail.flag").touch()
    return legato(*[("flaky.yaml" if arg == SPEC else arg) for arg in BATCH], *CSV_ROWS, *args, "-o", "camp",
                  cwd=sample_dir)


def test_on_failure_continue_then_retry_failed(sample_dir):
    done = flaky_batch(sample_dir)
    bad = failing(sample_dir)
    assert done.returncode == 1 and f"7 batches, 20 rows ({len(bad)} failed)" in done.stdout, done.stdout + done.stderr
    assert "--retry-failed" in done.stdout
    failed = [row for row in results(sample_dir / "camp") if row["state"] != "finished"]
    assert {index_of(row) for row in failed} == bad
    assert {(row["state"], row["reason"]) for row in failed} == {("failed", "exit code 3")}
    assert (status(sample_dir)["failed"], status(sample_dir)["finished"]) == (len(bad), 20 - len(bad))
    listing = legato("status", "camp", "--state", "failed", cwd=sample_dir).stdout.splitlines()
    assert len(listing) == len(bad) and all("(exit code 3)" in line and ".tar.gz" in line for line in listing), listing
    listed = json.loads(legato("status", "camp", "--state", "failed", "--json", cwd=sample_dir).stdout)
    assert {record["row_index"] for record in listed} == bad
    assert_one_line_error(legato("status", "camp", "--state", "broken", cwd=sample_dir), "--state 'broken'")
    assert_one_line_error(legato("status", "camp", "--csv", cwd=sample_dir), "legato results")

    (sample_dir / "fail.flag").unlink()
    done = legato("batch", "--resume", "camp", "--retry-failed", cwd=sample_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_each_row_once(results(sample_dir / "camp"), csv_rows(sample_dir / "params.csv"))
    info = status(sample_dir)
    assert (info["state"], info["batches_done"], info["rows_done"], info["finished"], info["failed"]) == (
        "finished", 7, 20, 20, 0)
    assert legato("status", "camp", "--state", "failed", cwd=sample_dir).stdout == ""
    assert len(legato("status", "camp", "--state", "retried", cwd=sample_dir).stdout.splitlines()) == len(bad)
    got = legato("archive", "get", "camp", "PARAM1.0.PARAM2.30.PARAM3.95", "params.txt", "-d", "back", cwd=sample_dir)
    assert got.returncode == 0, got.stderr  # row 3 failed in batch 2: its files come from the retry batch
    assert (sample_dir / "back" / "echo-params" / "PARAM1.0.PARAM2.30.PARAM3.95" / "params.txt").read_text() == (
        "PARAM1=0 PARAM2=30 PARAM3=95\n")
    retries = [batch for batch in ledger_batches(sample_dir / "camp") if batch["retry_of"]]
    assert sum(batch["nrows"] for batch in retries) == len(bad)
    assert len(retries) == info["retry_batches"] == len({int(index) // 3 for index in bad})  # one per batch with failures
    assert_archives_verify(sample_dir / "camp", 7 + len(retries))


def test_on_failure_stop_stops_after_the_batch(sample_dir):
    """One batch at a time (``-w 1``): nothing after the failed batch was begun. With overlapping batches
    the ones already running finish too (test_on_failure_stop_lets_overlapping_batches_finish)."""
    done = flaky_batch(sample_dir, "--on-failure", "stop", "-w", "1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "stopped: batch 2 has failed rows (--on-failure stop)" in done.stdout
    assert [batch["phase"] for batch in ledger_batches(sample_dir / "camp")] == ["cleaned", "cleaned"]
    info = status(sample_dir)
    assert (info["state"], info["batches_done"], info["batches_total"], info["rows_done"]) == ("stopped", 2, 7, 6)
    assert info["eta_seconds"] > 0
    text = legato("status", "camp", cwd=sample_dir).stdout
    assert "camp: stopped (batch 2 has failed rows (--on-failure stop)); continue with: legato batch --resume" in text
    assert "batches  2/7" in text and "rows     6/20 (5 finished, 1 failed)" in text


def test_on_failure_stop_lets_overlapping_batches_finish(sample_dir):
    done = flaky_batch(sample_dir, "--on-failure", "stop", "-w", "2")
    assert done.returncode == 1 and "stopped: batch 2 has failed rows (--on-failure stop)" in done.stdout, done.stdout
    phases = [batch["phase"] for batch in ledger_batches(sample_dir / "camp")]
    assert phases[:2] == ["cleaned", "cleaned"] and len(phases) <= 3, phases  # batch 3 may have been running
    assert set(phases) <= {"cleaned", "prepared"}, phases


# -- acceptance 7: the disk guard ----------------------------------------------------------------------
def test_min_free_beyond_the_disk(sample_dir):
    done = batch(sample_dir, *CSV_ROWS, "--min-free", "1000T", ok=False)
    assert_one_line_error(done, "not enough room on", "--min-free is 1000.0 TiB")
    info = status(sample_dir)
    assert (info["state"], info["batches_done"]) == ("stopped", 0) and "not enough room" in info["reason"]
    assert_one_line_error(legato("batch", "--resume", "camp", cwd=sample_dir), "not enough room on")


def test_resume_can_lower_min_free(sample_dir):
    batch(sample_dir, *CSV_ROWS, "--min-free", "1000T", ok=False)
    done = legato("batch", "--resume", "camp", "--min-free", "1M", cwd=sample_dir)
    assert done.returncode == 0, done.stderr


# -- acceptance 8: bad input ---------------------------------------------------------------------------
BAD = {
    "no-batch-size": (["batch", SPEC, "--rows", "params.csv"], "--batch-size"),
    "no-rows": (["batch", SPEC, "-b", "3"], "needs rows"),
    "missing-csv": (["batch", SPEC, "-b", "3", "--rows", "missing.csv"], "missing.csv"),
    "url-scheme": (["batch", SPEC, "-b", "3", "--rows", "mysql://user@host/db?table=t"], "unsupported scheme 'mysql'"),
    "unknown-table": (["batch", SPEC, "-b", "3", "--rows", "sqlite:///params.db?table=nope"], "no table 'nope'"),
    "result-spec": (["batch", SPEC, "-b", "3", "--rows", "params.csv", "--result", "echo-params"], "STEP:FILE"),
    "result-format": (["batch", SPEC, "-b", "3", "--rows", "params.csv", "--result", "echo-params:x:yaml"], "json, kv or csv"),
    "result-step": (["batch", SPEC, "-b", "3", "--rows", "params.csv", "--result", "echo:params.txt"], "no step 'echo'"),
    "index": (["batch", SPEC, "-b", "3", "--rows", "params.csv", "--index", "nope"], "no index column 'nope'"),
    "results-url": (["batch", SPEC, "-b", "3", "--rows", "params.csv", "--results", "oracle://db"], "unsupported scheme"),
    "no-pgen": (["batch", SPEC, "-b", "3", "--pgen", "nope.py"], "nope.py"),
    "resume-other": (["batch", "--resume", "."], "not a legato campaign folder"),
    "resume-missing": (["batch", "--resume", "nowhere"], "not a legato campaign folder"),
    "retry-alone": (["batch", SPEC, "-b", "3", "--rows", "params.csv", "--retry-failed"], "--retry-failed"),
    "status": (["status", "nowhere"], "nowhere"),
    "results-format": (["results", ".", "--csv", "x.csv", "--json"], "give one of --csv, --parquet or --json"),
    "results-other": (["results", ".", "--csv", "x.csv"], "neither a study folder (no legato.db) nor a campaign folder"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line(sample_dir, case):
    sqlite_from_csv(sample_dir / "params.csv", sample_dir / "params.db")
    args, fragment = BAD[case]
    assert_one_line_error(legato(*args, cwd=sample_dir), fragment)


def test_existing_out_folder(sample_dir):
    (sample_dir / "camp").mkdir()
    (sample_dir / "camp" / "keep.txt").write_text("mine")
    assert_one_line_error(batch(sample_dir, *CSV_ROWS, ok=False), "exists and is not empty", "--resume")
    assert [path.name for path in (sample_dir / "camp").iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("case", ["missing-csv", "result-spec", "index"])
def test_bad_input_leaves_no_campaign_behind(sample_dir, case):
    """Else the corrected command fails with 'exists', and --resume replays the bad input."""
    args, _ = BAD[case]
    legato(*args, "-o", "camp", cwd=sample_dir)
    assert not (sample_dir / "camp").exists()
