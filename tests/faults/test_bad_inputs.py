"""Malformed results files of every format, and every kind of bad row source, through the real CLI.

A results file that cannot be parsed fails its row only, with the parse error as the reason,
and ``--retry-failed`` reruns exactly those rows. A bad row source is refused, in one line,
before any folder exists.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from legato.status import campaign_summary
from tests.campaign.files.checks import assert_each_row_once, csv_rows, index_of, legato, results
from tests.faults.test_kills import check_campaign

pytestmark = pytest.mark.faults

HERE = Path(__file__).resolve().parent / "files"

MALFORMED = {
    "json-syntax": ("json", b'{"energy": 1.5}\n', b'{"energy": 1.5,\n', "bad JSON at line 2"),
    "json-not-object": ("json", b'{"energy": 1.5}\n', b"[1.5, 2.5]\n", "expected a JSON object, found list"),
    "kv-spaces": ("kv", b"energy=1.5\n", b"energy=1.5 label=two words\n", "expected key=value pairs, found 'words'"),
    "csv-short-row": ("csv", b"energy,label\n1.5,x\n", b"energy,label\n1.5\n", "1 values for 2 columns"),
    "not-utf8": ("kv", b"energy=1.5\n", b"energy=caf\xe9\n", "cannot read it"),
}


def small_rows(sample_dir: Path) -> set[str]:
    return {key for key, row in csv_rows(sample_dir / "params.csv").items() if int(row["param1"]) < 30}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_results_file_fails_its_row_only_then_retries(sample_dir, case):
    fmt, good, bad, message = MALFORMED[case]
    shutil.copy(HERE / "results.yaml", sample_dir / "results.yaml")
    (sample_dir / "good.dat").write_bytes(good)
    (sample_dir / "bad.dat").write_bytes(bad)
    args = ["batch", "results.yaml", "-b", "4", "--rows", "params.csv", "--index", "param_combo", "--result",
            "echo-params:params.txt", "--result", f"echo-params:out.dat:{fmt}", "--min-free", "1M", "--min-inodes", "0",
            "-j", "2", "-o", "camp"]
    done = legato(*args, cwd=sample_dir)
    assert "Traceback" not in done.stderr and "legato: error" not in done.stderr, done.stderr
    failing = small_rows(sample_dir)
    rows = {index_of(row): row for row in results(sample_dir / "camp")}
    assert len(rows) == 20
    for index, row in rows.items():
        if index in failing:
            assert row["state"] == "failed" and message in row["reason"] and "out.dat" in row["reason"], row
        else:
            assert row["state"] == "finished" and row["energy"] == 1.5, row
    assert campaign_summary(sample_dir / "camp")["failed"] == len(failing)

    (sample_dir / "bad.dat").unlink()
    retried = legato("batch", "--resume", "camp", "--retry-failed", cwd=sample_dir)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert_each_row_once(results(sample_dir / "camp"), csv_rows(sample_dir / "params.csv"))
    summary = campaign_summary(sample_dir / "camp")
    assert (summary["failed"], summary["finished"], summary["retry_batches"]) == (0, 20, len({int(i) // 4 for i in failing}))


def test_resuming_without_retry_does_not_repeat_a_parse_error(sample_dir):
    """The row is failed, not finished: a plain resume has nothing left to do and says nothing about it."""
    fmt, good, bad, _ = MALFORMED["json-syntax"]
    shutil.copy(HERE / "results.yaml", sample_dir / "results.yaml")
    (sample_dir / "good.dat").write_bytes(good)
    (sample_dir / "bad.dat").write_bytes(bad)
    legato("batch", "results.yaml", "-b", "10", "--rows", "params.csv", "--index", "param_combo", "--result",
           f"echo-params:out.dat:{fmt}", "--min-free", "1M", "--min-inodes", "0", "-o", "camp", cwd=sample_dir)
    again = legato("batch", "--resume", "camp", cwd=sample_dir)
    assert "bad JSON" not in again.stderr and "Traceback" not in again.stderr, again.stderr
    assert len(results(sample_dir / "camp")) == 20


CSV_HEADER = "param_combo,param1,param2,param3\n"
BAD_SOURCES = {
    "header-only": (CSV_HEADER.encode(), "no rows (only a header"),
    "duplicate-index": ((CSV_HEADER + "0,1,2,3\n1,4,5,6\n0,7,8,9\n").encode(), "row 3: index value '0' appears twice"),
    "empty-index": ((CSV_HEADER + "0,1,2,3\n,4,5,6\n").encode(), "row 2: empty index value"),
    "short-row": ((CSV_HEADER + "0,1,2,3\n" * 0 + "".join(f"{i},1,2,3\n" for i in range(12)) + "12,1,2\n").encode(),
                  "row 13 has 3 values, the header has 4"),
    "long-row": ((CSV_HEADER + "".join(f"{i},1,2,3\n" for i in range(12)) + "12,1,2,3,4\n").encode(),
                 "row 13 has 5 values, the header has 4"),
    "not-utf8": ((CSV_HEADER + "".join(f"{i},1,2,3\n" for i in range(12))).encode() + b"12,1,2,caf\xe9\n", "not UTF-8"),
    "no-header": (b"", "empty file"),
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_a_bad_row_source_is_refused_before_any_folder(sample_dir, case):
    text, message = BAD_SOURCES[case]
    (sample_dir / "bad.csv").write_bytes(text)
    done = legato("batch", "batched_parameters_demo.yaml", "-b", "4", "--rows", "bad.csv", "--index", "param_combo",
                  "-o", "camp", cwd=sample_dir)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("legato: error: row source ") and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (sample_dir / "camp").exists()
    if case == "not-utf8":
        assert f"at byte {text.index(bytes([0xE9]))} (row 13)" in done.stderr


def test_the_same_command_starts_once_the_source_is_fixed(sample_dir):
    """A refused source left nothing behind: fixing it and running the same command starts the campaign."""
    (sample_dir / "rows.csv").write_bytes(BAD_SOURCES["duplicate-index"][0])
    args = ["batch", "batched_parameters_demo.yaml", "-b", "2", "--rows", "rows.csv", "--index", "param_combo",
            "--result", "echo-params:params.txt", "--min-free", "1M", "--min-inodes", "0", "-o", "camp"]
    assert legato(*args, cwd=sample_dir).returncode == 2
    shutil.copy(sample_dir / "params.csv", sample_dir / "rows.csv")
    done = legato(*args, cwd=sample_dir)
    assert done.returncode == 0, done.stderr
    check_campaign(sample_dir / "camp", csv_rows(sample_dir / "params.csv"), 10)


def test_strict_values_refuse_shell_syntax_before_any_folder(sample_dir):
    (sample_dir / "rows.csv").write_text(CSV_HEADER + "0,1,2,3\n1,$(touch pwned),5,6\n")
    args = ["batch", "batched_parameters_demo.yaml", "-b", "4", "--rows", "rows.csv", "--index", "param_combo", "-o", "camp"]
    done = legato(*args, "--strict-values", cwd=sample_dir)
    assert done.returncode == 2 and "row 2: column 'param1' holds shell syntax" in done.stderr, done.stderr
    assert not (sample_dir / "camp").exists()
    default = legato(*args, "--min-free", "1M", "--min-inodes", "0", cwd=sample_dir)  # Maestro's substitution
    assert (sample_dir / "camp").exists() and "Traceback" not in default.stderr


def test_strict_values_check_rows_a_database_gained_after_the_start(sample_dir):
    """Rows others write: a value with shell syntax added to the table while the campaign runs stops it at that batch."""
    import sqlite3

    from tests.campaign.files.checks import sqlite_from_csv

    sqlite_from_csv(sample_dir / "params.csv", sample_dir / "rows.db")
    args = ["--min-free", "1M", "--min-inodes", "0", "--result", "echo-params:params.txt"]
    first = legato("batch", "batched_parameters_demo.yaml", "-b", "10", "--rows", "sqlite:///rows.db?table=params",
                   "--index", "param_combo", "--max-rows", "30", "--strict-values", "-o", "camp", *args, cwd=sample_dir)
    assert first.returncode == 0, first.stderr
    with sqlite3.connect(sample_dir / "rows.db") as db:
        db.execute("INSERT INTO params VALUES (20, '1; rm -rf ~', '2', '3')")
    with sqlite3.connect(sample_dir / "camp" / "campaign.db") as db:
        db.execute("""UPDATE meta SET value = 'false' WHERE key = 'exhausted'""")
    again = legato("batch", "--resume", "camp", cwd=sample_dir)
    assert again.returncode == 2 and "row 21: column 'param1' holds shell syntax" in again.stderr, again.stderr
    assert "Traceback" not in again.stderr
