"""Results files parsed, and written idempotently into SQLite and a real PostgreSQL server."""
from __future__ import annotations

import csv
import random
import sqlite3
import time
from datetime import datetime

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from legato.campaign import harvest
from legato.campaign.harvest import ResultSink, parse_results
from legato.errors import LegatoError
from tests.servers.postgres import free_port


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_json_is_flattened_with_lists_as_json_text(tmp_path):
    path = write(tmp_path / "r.json", '{"energy": -1.5, "n": 3, "mesh": {"cells": 10, "kind": {"name": "hex"}}, '
                                      '"series": [1, 2.5], "ok": true, "none": null}')
    assert parse_results(path) == {"energy": -1.5, "n": 3, "mesh.cells": 10, "mesh.kind.name": "hex",
                                   "series": "[1, 2.5]", "ok": True, "none": None}


def test_json_errors_name_the_file(tmp_path):
    with pytest.raises(LegatoError, match=r"bad.json: bad JSON at line 2"):
        parse_results(write(tmp_path / "bad.json", '{"a": 1,\n oops}'))
    with pytest.raises(LegatoError, match="list.json: expected a JSON object"):
        parse_results(write(tmp_path / "list.json", "[1, 2]"))


def test_kv_pairs_several_per_line(tmp_path):
    path = write(tmp_path / "params.txt", "# a comment\nPARAM1=94 PARAM2=71 PARAM3=72\n\n"
                                          "x = 1.5e3  name='two words' code=007 big=123456789012345678901234 word=abc\n")
    assert parse_results(path) == {"PARAM1": 94, "PARAM2": 71, "PARAM3": 72, "x": 1500.0, "name": "two words",
                                   "code": "007", "big": "123456789012345678901234", "word": "abc"}
    with pytest.raises(LegatoError, match=r"junk.txt line 2: expected key=value pairs, found 'done'"):
        parse_results(write(tmp_path / "junk.txt", "a=1\na=2 done\n"))


def test_csv_takes_the_first_data_row(tmp_path):
    assert parse_results(write(tmp_path / "r.csv", "a, b ,c\n1, x ,2.5\n9,9,9\n")) == {"a": 1, "b": "x", "c": 2.5}
    assert parse_results(write(tmp_path / "h.csv", "a,b\n")) == {}
    with pytest.raises(LegatoError, match="short.csv: 1 values for 2 columns"):
        parse_results(write(tmp_path / "short.csv", "a,b\n1\n"))


def test_format_by_argument_extension_and_missing_files(tmp_path):
    assert parse_results(write(tmp_path / "out.dat", '{"a": 1}'), "json") == {"a": 1}
    assert parse_results(write(tmp_path / "out.log", "a=1")) == {"a": 1}
    assert parse_results(str(tmp_path / "absent.json")) == {}
    with pytest.raises(LegatoError, match="results format 'xml'"):
        parse_results(str(tmp_path / "out.log"), "xml")


@pytest.fixture(params=["sqlite", "postgresql"])
def sink_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/results.db"
    url = request.getfixturevalue("postgres_url")
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS results, result_columns")
    engine.dispose()
    return url


def instance(label: str, params: dict[str, str], results: dict[str, object], step: str = "sim", **extra) -> dict:
    return {"step": step, "label": label, "index": label[-1], "state": "finished", "returncode": 0,
            "started": 1700000000.25, "ended": 1700000003.5, "params": params, "results": results, **extra}


def table_rows(url: str, where: str = "") -> list[dict]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        found = conn.exec_driver_sql(f"SELECT * FROM results {where} ORDER BY campaign, batch, label")
        rows = [dict(row._mapping) for row in found]
    engine.dispose()
    return rows


BATCH = [
    instance("P.1", {"PARAM1": "94", "NAME": "a"}, {"energy": 1, "PARAM1": 7, "state": "x", "mesh.cells": 10}),
    instance("P.2", {"PARAM1": "48", "NAME": "b"}, {"energy": 2.5, "series": "[1, 2]"}),
]


def test_columns_per_parameter_and_result_with_numbers_as_numbers(sink_url):
    sink = ResultSink(sink_url)
    sink.write("camp", 0, BATCH)
    first, second = table_rows(sink_url)
    assert first["campaign"] == "camp" and first["batch"] == 0 and first["label"] == "P.1"
    assert first["row_index"] == 1 and first["state"] == "finished" and first["returncode"] == 0
    assert datetime.fromisoformat(first["started"]).timestamp() == 1700000000.25 and first["reason"] is None
    assert first["PARAM1"] == 94 and first["NAME"] == "a"
    assert first["sim_PARAM1"] == 7 and first["sim_state"] == "x" and first["mesh.cells"] == 10
    assert first["energy"] == 1.0 and second["energy"] == 2.5 and second["series"] == "[1, 2]"
    assert second["sim_PARAM1"] is None
    sink.close()


def test_one_batch_with_mixed_kinds_in_a_column(sink_url):
    """Ints, floats and words in one column of one write: each value is cast to the column's widest kind."""
    sink = ResultSink(sink_url)
    sink.write("camp", 0, [instance("P.1", {"PARAM1": "1", "NAME": "a"}, {"v": 1, "w": 2}),
                           instance("P.2", {"PARAM1": "x1", "NAME": "b"}, {"v": 2.5, "w": 3.5}),
                           instance("P.3", {"PARAM1": "3", "NAME": "c"}, {"v": "word", "w": None})])
    rows = table_rows(sink_url)
    assert [row["v"] for row in rows] == ["1", "2.5", "word"]
    assert [row["w"] for row in rows] == [2.0, 3.5, None] and isinstance(rows[0]["w"], float)
    assert [row["PARAM1"] for row in rows] == ["1", "x1", "3"]
    sink.close()


def test_rewriting_a_batch_replaces_it_and_columns_widen(sink_url):
    sink = ResultSink(sink_url)
    sink.write("camp", 0, BATCH)
    sink.write("camp", 1, BATCH[:1])
    sink.write("other", 0, BATCH)
    changed = [instance("P.1", {"PARAM1": "94", "NAME": "a"}, {"energy": "diverged", "extra": 3})]
    sink.write("camp", 0, changed)
    sink.write("camp", 0, changed)
    rows = table_rows(sink_url, "WHERE campaign = 'camp'")
    assert [(row["batch"], row["label"]) for row in rows] == [(0, "P.1"), (1, "P.1")]
    assert rows[0]["energy"] == "diverged" and rows[0]["extra"] == 3
    assert str(rows[1]["energy"]) in ("1", "1.0") and rows[1]["extra"] is None
    assert sink.batches("camp") == {0, 1} and sink.batches("other") == {0} and sink.batches("none") == set()
    assert len(table_rows(sink_url)) == 4
    sink.close()


def test_a_crash_mid_write_keeps_the_old_rows(sink_url, monkeypatch):
    sink = ResultSink(sink_url)
    sink.write("camp", 0, BATCH)
    real_insert = ResultSink._insert

    def insert_then_crash(self, conn, columns, records, casts):
        real_insert(self, conn, columns, records, casts)
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(ResultSink, "_insert", insert_then_crash)
    with pytest.raises(RuntimeError):
        sink.write("camp", 0, [instance("P.9", {"PARAM1": "1", "NAME": "z"}, {"brand_new": 1})])
    rows = table_rows(sink_url)
    assert [row["label"] for row in rows] == ["P.1", "P.2"]
    assert "brand_new" not in rows[0]  # the schema change was rolled back too
    sink.close()


def test_drop_failed_removes_only_unfinished_rows_of_one_batch(sink_url):
    sink = ResultSink(sink_url)
    failed = instance("P.3", {"PARAM1": "1", "NAME": "c"}, {}, state="failed", reason="exit 1")
    sink.write("camp", 0, [*BATCH, failed])
    sink.write("camp", 1, [failed])
    assert sink.drop_failed("camp", 0) == 1
    assert sink.drop_failed("camp", 0) == 0
    assert [(row["batch"], row["label"]) for row in table_rows(sink_url)] == [(0, "P.1"), (0, "P.2"), (1, "P.3")]
    sink.close()


def test_index_keeps_its_name_and_type_and_rows_come_in_index_order(sink_url, tmp_path):
    """Rows 0..11 over two batches: sorted as numbers (0, 1, 2, ..., 10, 11), not as text (0, 1, 10, 11, 2)."""
    sink = ResultSink(sink_url, index="param_combo")
    for batch, rows in ((1, range(6, 12)), (0, range(6))):
        sink.write("camp", batch, [instance(f"P.{row}", {"X": str(row)}, {"y": row * 0.5}, index=str(row)) for row in rows])
    exported = tmp_path / "camp.csv"
    assert sink.export("camp", str(exported), "csv") == 12
    with open(exported, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["param_combo"] for row in rows] == [str(n) for n in range(12)]
    assert "row_index" not in rows[0]
    started = datetime.fromisoformat(rows[0]["started"])
    assert started.tzinfo is not None and started.timestamp() == 1700000000.25
    assert table_rows(sink_url)[0]["param_combo"] == 0  # an integer column, not text
    assert sink.roles() == {"X": "parameter", "y": "result"}
    with sink.read("camp", failed=True) as (_, pages):
        assert [row for page in pages for row in page] == []
    sink.write("camp", 2, [instance("P.x", {"X": "1"}, {}, index="x7", state="failed")])
    with sink.read("camp", failed=True) as (kinds, pages):
        assert [row[list(kinds).index("param_combo")] for page in pages for row in page] == ["x7"]
    assert sink.drop_failed("camp", 1, ["6", "7"]) == 2
    sink.close()


def test_parameter_named_like_a_fixed_column(sink_url):
    sink = ResultSink(sink_url)
    sink.write("camp", 3, [instance("L.1", {"batch": "9", "Label": "q"}, {"batch": 1})])
    (row,) = table_rows(sink_url)
    assert row["batch"] == 3 and row["param_batch"] == 9 and row["param_Label"] == "q" and row["sim_batch"] == 1
    sink.close()


def test_export_csv_and_parquet_read_back(sink_url, tmp_path, monkeypatch):
    monkeypatch.setattr("legato.campaign.harvest.PAGE", 2)
    sink = ResultSink(sink_url)
    sink.write("camp", 0, BATCH)
    sink.write("camp", 1, [instance("P.3", {"PARAM1": "x1", "NAME": "c"}, {"energy": 4})])
    sink.write("other", 0, BATCH[:1])
    assert sink.export("camp", str(tmp_path / "camp.csv"), "csv") == 3
    with open(tmp_path / "camp.csv", newline="") as stream:
        exported = list(csv.DictReader(stream))
    assert [(row["batch"], row["label"], row["PARAM1"]) for row in exported] == [("0", "P.1", "94"), ("0", "P.2", "48"),
                                                                                 ("1", "P.3", "x1")]
    assert exported[1]["sim_PARAM1"] == "" and float(exported[2]["energy"]) == 4.0
    assert sink.export(None, str(tmp_path / "all.parquet"), "parquet") == 4
    table = pq.read_table(tmp_path / "all.parquet")
    assert str(table.schema.field("PARAM1").type) == "string"  # widened by the text value x1
    assert str(table.schema.field("energy").type) == "double"
    assert str(table.schema.field("batch").type) == "int64"
    assert table.column("label").to_pylist() == ["P.1", "P.2", "P.3", "P.1"]
    assert table.column("PARAM1").to_pylist() == ["94", "48", "x1", "94"]
    assert sink.export("nobody", str(tmp_path / "none.parquet"), "parquet") == 0
    assert pq.read_table(tmp_path / "none.parquet").num_rows == 0
    with pytest.raises(LegatoError, match="export format 'xlsx'"):
        sink.export(None, str(tmp_path / "x.xlsx"), "xlsx")
    with pytest.raises(LegatoError, match="cannot write .*no_dir"):
        sink.export(None, str(tmp_path / "no_dir" / "x.csv"), "csv")
    sink.close()


def test_sqlite_table_is_plain_sql(tmp_path):
    url = f"sqlite:///{tmp_path}/plain.db"
    sink = ResultSink(url)
    sink.write("camp", 0, BATCH)
    sink.close()
    with sqlite3.connect(tmp_path / "plain.db") as conn:
        found = conn.execute('SELECT PARAM1, energy, typeof(PARAM1), "mesh.cells" FROM results ORDER BY label').fetchall()
    assert found == [(94, 1.0, "integer", 10), (48, 2.5, "integer", None)]


def test_bad_or_unreachable_databases(tmp_path, postgres_url):
    with pytest.raises(LegatoError, match="no folder"):
        ResultSink(f"sqlite:///{tmp_path}/missing/r.db")
    with pytest.raises(LegatoError, match="unsupported scheme 'oracle'"):
        ResultSink("oracle://u@h/db")
    refused = sa.engine.make_url(postgres_url).set(port=free_port()).render_as_string(hide_password=False)
    with pytest.raises(LegatoError, match="cannot connect to postgresql"):
        ResultSink(refused)
    with pytest.raises(LegatoError, match="password authentication failed"):
        ResultSink(postgres_url.replace(":legato-test-pw@", ":nope@"))


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "Asia/Kathmandu", "America/St_Johns"])
def test_iso_times_match_datetime_to_the_millisecond(monkeypatch, zone):
    """Per-second texts are cached: a rounding carry or a change of offset (DST) must still come out as datetime says."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    harvest._second.cache_clear()
    try:
        rng = random.Random(7)
        moments = [rng.uniform(-1e9, 2e9) for _ in range(2000)] + [
            1700000000.9999996, 1700000000.0000004, 1711846799.9996, 1711846800.0004, -0.0000004, 0, 1e9 + 0.9995]
        for moment in moments:
            assert harvest.iso_time(moment) == datetime.fromtimestamp(moment).astimezone().isoformat(
                timespec="milliseconds"), moment
    finally:
        monkeypatch.undo()  # the zone back before the cache is refilled by another test
        time.tzset()
        harvest._second.cache_clear()
