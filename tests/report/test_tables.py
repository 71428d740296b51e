"""``legato results``: the real command on a finished campaign and on a plain study folder."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime

import pyarrow.parquet as pq

from tests.campaign.files.checks import csv_rows, legato


def failing(sample: dict) -> set[str]:
    return {key for key, row in sample.items() if int(row["param1"]) < 30}


def test_piped_results_are_csv_in_index_order_with_iso_times(campaign):
    done = legato("results", "camp", cwd=campaign.parent)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [row["param_combo"] for row in rows] == [str(n) for n in range(20)]  # 0, 1, 2, ... not 0, 1, 10, 11
    assert "row_index" not in rows[0]
    for row in rows:
        assert datetime.fromisoformat(row["started"]).tzinfo is not None
        assert datetime.fromisoformat(row["ended"]) >= datetime.fromisoformat(row["started"])
    assert legato("results", "camp", "--csv", "-", cwd=campaign.parent).stdout == done.stdout
    assert not (campaign.parent / "-").exists()


def test_failed_rows_as_json(campaign):
    done = legato("results", "camp", "--failed", "--json", cwd=campaign.parent)
    assert done.returncode == 0, done.stderr
    failed = json.loads(done.stdout)
    expected = failing(csv_rows(campaign.parent / "params.csv"))
    assert [str(row["param_combo"]) for row in failed] == sorted(expected, key=int)
    assert [row["param_combo"] for row in failed] == sorted(row["param_combo"] for row in failed)
    assert all(isinstance(row["param_combo"], int) for row in failed)
    assert {(row["state"], row["reason"], row["returncode"]) for row in failed} == {("failed", "exit code 3", 3)}


def test_files_csv_and_parquet(campaign, tmp_path):
    done = legato("results", "camp", "--parquet", str(tmp_path / "r.parquet"), cwd=campaign.parent)
    assert done.returncode == 0 and done.stdout.startswith("20 rows written"), done.stderr
    table = pq.read_table(tmp_path / "r.parquet")
    assert str(table.schema.field("param_combo").type) == "int64"
    assert table.column("param_combo").to_pylist() == list(range(20))
    done = legato("results", "camp", "--csv", str(tmp_path / "r.csv"), "--failed", cwd=campaign.parent)
    assert done.returncode == 0 and done.stdout.startswith(f"{len(failing(csv_rows(campaign.parent / 'params.csv')))} rows")


def test_study_folder_gives_one_row_per_instance(study):
    done = legato("results", "study", cwd=study.parent)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(rows) == 20
    assert list(rows[0])[:5] == ["step", "label", "PARAM1", "PARAM2", "PARAM3"]
    assert {"state", "returncode", "started", "ended", "reason"} <= set(rows[0])
    failed = [row for row in rows if row["state"] != "finished"]
    assert failed and all(int(row["PARAM1"]) < 30 and row["returncode"] == "3" for row in failed)
    listed = json.loads(legato("results", "study", "--failed", "--json", cwd=study.parent).stdout)
    assert len(listed) == len(failed) and all(isinstance(row["PARAM1"], int) for row in listed)


def test_bad_uses_are_one_line_errors(campaign, tmp_path):
    for args, fragment in ((["--csv", "a.csv", "--json"], "give one of"),
                           (["--csv", str(tmp_path / "no" / "a.csv")], "cannot write"),
                           (["--parquet", "-"], "Parquet goes to a file")):
        done = legato("results", "camp", *args, cwd=campaign.parent)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith("legato: error:") and fragment in done.stderr, done.stderr
    done = legato("results", str(tmp_path), cwd=campaign.parent)
    assert done.returncode == 2 and "neither a study folder" in done.stderr, done.stderr


def test_terminal_table_shows_both_ends_and_the_count(campaign, monkeypatch, capsys):
    from legato.report import tables

    monkeypatch.setattr(tables, "SHOWN", 3)
    monkeypatch.setenv("COLUMNS", "300")
    with tables.results(campaign) as (kinds, pages):
        assert tables.show_rows(kinds, pages, __import__("sys").stdout, "camp") == 20
    shown = capsys.readouterr().out
    lines = [line for line in shown.splitlines() if line.startswith("│")]
    assert len(lines) == 7 and "…" in lines[3] and "20 rows" in shown
    assert "PARAM1.94.PARAM2.71.PARAM3.72" in lines[0]
