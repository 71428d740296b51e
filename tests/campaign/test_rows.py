"""Row sources: CSV files read by pages from remembered offsets, SQLite and PostgreSQL tables and queries."""
from __future__ import annotations

import sqlite3
import uuid
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from legato.campaign import rows
from legato.campaign.rows import open_rows
from legato.errors import LegatoError
from tests.servers.postgres import free_port


def write_csv(path, text: str) -> str:
    path.write_bytes(text.encode())
    return str(path)


@pytest.fixture
def numbers_csv(tmp_path) -> str:
    lines = ["idx,a,b"] + [f"{i},{i * 2}, v{i} " for i in range(2500)]
    return write_csv(tmp_path / "params.csv", "\n".join(lines) + "\n")


def test_csv_pages_with_stripped_values(numbers_csv):
    source = open_rows(numbers_csv, index="idx")
    assert source.columns == ["idx", "a", "b"]
    assert source.read(0, 2) == [{"idx": "0", "a": "0", "b": "v0"}, {"idx": "1", "a": "2", "b": "v1"}]
    assert [row["idx"] for row in source.read(2498, 10)] == ["2498", "2499"]
    assert source.read(2500, 10) == []
    assert source.read(1200, 1) == [{"idx": "1200", "a": "2400", "b": "v1200"}]
    assert source.read(3, 0) == []
    assert source.count() == 2500
    source.close()


def test_csv_quoted_newlines_bom_crlf_and_blank_lines(tmp_path):
    path = write_csv(tmp_path / "p.csv", '\ufeff X , Y\r\n1,"two\nlines"\r\n\r\n3,4\r\n')
    source = open_rows(path)
    assert source.columns == ["X", "Y"]
    assert source.read(0, 5) == [{"X": "1", "Y": "two\nlines"}, {"X": "3", "Y": "4"}]
    assert source.read(1, 1) == [{"X": "3", "Y": "4"}]
    single = open_rows(write_csv(tmp_path / "one.csv", "only\n1\n\n2\n"))
    assert single.read(0, 5) == [{"only": "1"}, {"only": "2"}]


class CountingFile:
    """A binary file that counts the lines read through it."""

    def __init__(self, stream):
        self.stream, self.lines = stream, 0

    def readline(self):
        self.lines += 1
        return self.stream.readline()

    def seek(self, offset):
        return self.stream.seek(offset)

    def close(self):
        self.stream.close()


def test_csv_batches_cost_their_own_size_not_their_position(numbers_csv, monkeypatch):
    monkeypatch.setattr(rows, "CHECKPOINT", 100)
    opened = []
    monkeypatch.setattr(rows, "open", lambda path, mode: opened.append(CountingFile(open(path, mode))) or opened[-1],
                        raising=False)
    source = open_rows(numbers_csv)
    counter = opened[0]
    for start in range(0, 2500, 50):
        before = counter.lines
        batch = source.read(start, 50)
        assert [int(row["idx"]) for row in batch] == list(range(start, start + 50))
        assert counter.lines - before <= 51
    before = counter.lines
    assert source.read(1234, 3)[0]["idx"] == "1234"  # backwards: from the checkpoint at row 1200
    assert counter.lines - before <= 34 + 3
    before = counter.lines
    assert source.read(2499, 1)[0]["idx"] == "2499"
    assert counter.lines - before <= 100


def test_csv_errors_name_the_problem(tmp_path):
    with pytest.raises(LegatoError, match="missing.csv: no such file"):
        open_rows(str(tmp_path / "missing.csv"))
    with pytest.raises(LegatoError, match="empty file"):
        open_rows(write_csv(tmp_path / "empty.csv", ""))
    with pytest.raises(LegatoError, match="duplicate column names a"):
        open_rows(write_csv(tmp_path / "dup.csv", "a,b,a\n1,2,3\n"))
    with pytest.raises(LegatoError, match="no index column 'nope'"):
        open_rows(write_csv(tmp_path / "ok.csv", "a,b\n1,2\n"), index="nope")
    ragged = open_rows(write_csv(tmp_path / "ragged.csv", "a,b\n1,2\n3\n"))
    with pytest.raises(LegatoError, match="row 2 has 1 values, the header has 2"):
        ragged.read(0, 5)
    assert open_rows(write_csv(tmp_path / "header.csv", "a,b\n")).read(0, 5) == []


@pytest.fixture
def sqlite_db(tmp_path) -> str:
    path = tmp_path / "rows.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE keyed (k INTEGER PRIMARY KEY, name TEXT, x REAL)")
        conn.executemany("INSERT INTO keyed VALUES (?, ?, ?)", [(k, f"n{k}", k / 2) for k in (5, 1, 3, 2, 4)])
        conn.execute("CREATE TABLE plain (name TEXT, v INTEGER)")
        conn.executemany("INSERT INTO plain VALUES (?, ?)", [("c", 1), ("a", None), ("b", 3)])
    return str(path)


def test_sqlite_table_ordered_by_primary_key_then_rowid(sqlite_db):
    keyed = open_rows(f"sqlite:///{sqlite_db}?table=keyed")
    assert keyed.columns == ["k", "name", "x"]
    assert keyed.read(0, 2) == [{"k": "1", "name": "n1", "x": "0.5"}, {"k": "2", "name": "n2", "x": "1.0"}]
    assert [row["k"] for row in keyed.read(2, 10)] == ["3", "4", "5"]
    plain = open_rows(f"sqlite:///{sqlite_db}?table=plain")
    assert plain.read(0, 3) == [{"name": "c", "v": "1"}, {"name": "a", "v": ""}, {"name": "b", "v": "3"}]
    by_name = open_rows(f"sqlite:///{sqlite_db}?table=plain", index="name")
    assert [row["name"] for row in by_name.read(0, 3)] == ["a", "b", "c"]
    assert (keyed.count(), plain.count()) == (5, 3)


def test_sequential_pages_of_a_keyed_table_start_after_the_last_key(sqlite_db):
    statements: list[str] = []

    def remember(conn, cursor, statement, *args):
        statements.append(statement)

    pages = {}
    sa.event.listen(sa.Engine, "before_cursor_execute", remember)
    try:
        for table, column in (("keyed", "k"), ("plain", "name")):
            source = open_rows(f"sqlite:///{sqlite_db}?table={table}")
            pages[table] = [[row[column] for row in source.read(start, 2)] for start in (0, 2, 4, 1)]
            source.close()
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", remember)
    assert pages == {"keyed": [["1", "2"], ["3", "4"], ["5"], ["2", "3"]], "plain": [["c", "a"], ["b"], [], ["a", "b"]]}
    page_sql = [sql for sql in statements if "LIMIT" in sql]
    # keyset after each full page; OFFSET for the first page, past the end of plain, and for the jump back
    assert [") > (" in sql for sql in page_sql] == [False, True, True, False, False, True, False, False]
    assert "rowid" in page_sql[-1]


def test_sqlite_query_ordered_by_index_or_first_column(sqlite_db):
    query = quote("SELECT x, name FROM keyed WHERE k > 1;")
    source = open_rows(f"sqlite:///{sqlite_db}?query={query}")
    assert source.columns == ["x", "name"]
    assert [row["name"] for row in source.read(1, 2)] == ["n3", "n4"]
    assert source.count() == 4
    by_name = open_rows(f"sqlite:///{sqlite_db}?query={quote('SELECT name, k FROM keyed')}", index="name")
    assert by_name.read(4, 5) == [{"name": "n5", "k": "5"}]


def test_sql_errors_name_the_problem(sqlite_db, tmp_path):
    with pytest.raises(LegatoError, match="no table 'absent'"):
        open_rows(f"sqlite:///{sqlite_db}?table=absent")
    with pytest.raises(LegatoError, match="no such file"):
        open_rows(f"sqlite:///{tmp_path}/none.db?table=t")
    with pytest.raises(LegatoError, match="bad query: .*nosuch"):
        open_rows(f"sqlite:///{sqlite_db}?query={quote('SELECT * FROM nosuch')}")
    with pytest.raises(LegatoError, match="exactly one of"):
        open_rows(f"sqlite:///{sqlite_db}")
    with pytest.raises(LegatoError, match="unsupported scheme 'mysql'"):
        open_rows("mysql://u@h/db?table=t")
    with pytest.raises(LegatoError, match="not a database URL"):
        open_rows("postgresql://u@h:notaport/db?table=t")
    with pytest.raises(LegatoError, match="no index column 'zzz'"):
        open_rows(f"sqlite:///{sqlite_db}?table=keyed", index="zzz")


@pytest.fixture
def pg_table(postgres_url) -> tuple[str, str]:
    name = f"params_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE TABLE {name} (id INTEGER PRIMARY KEY, "PARAM1" TEXT, p2 DOUBLE PRECISION)')
        conn.exec_driver_sql(f"INSERT INTO {name} SELECT g, 'v' || g, g * 1.5 FROM generate_series(1, 250) AS g")
    engine.dispose()
    return postgres_url, name


def test_postgres_table_and_query_pages(pg_table):
    url, name = pg_table
    table = open_rows(f"{url}?table={name}", index="id")
    assert table.columns == ["id", "PARAM1", "p2"]
    assert table.read(0, 2) == [{"id": "1", "PARAM1": "v1", "p2": "1.5"}, {"id": "2", "PARAM1": "v2", "p2": "3.0"}]
    assert [row["id"] for row in table.read(2, 3)] == ["3", "4", "5"]  # after the last key
    assert [row["id"] for row in table.read(240, 100)] == [str(i) for i in range(241, 251)]
    table.close()
    query = quote(f'SELECT "PARAM1", id FROM {name} WHERE id % 2 = 0')
    source = open_rows(f"{url}?query={query}", index="id")
    assert source.read(0, 2) == [{"PARAM1": "v2", "id": "2"}, {"PARAM1": "v4", "id": "4"}]
    assert len(source.read(100, 1000)) == 25
    assert source.count() == 125
    source.close()


def test_postgres_failures_are_one_line(pg_table):
    url, name = pg_table
    wrong_password = url.replace(":legato-test-pw@", ":wrong@")
    with pytest.raises(LegatoError, match="cannot connect to .*password authentication failed") as caught:
        open_rows(f"{wrong_password}?table={name}")
    assert "wrong" not in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(LegatoError, match="no table 'missing_table'"):
        open_rows(f"{url}?table=missing_table")
    with pytest.raises(LegatoError, match="bad query: .*syntax error"):
        open_rows(f"{url}?query={quote('SELEC nothing')}")
    closed_port = sa.engine.make_url(url).set(port=free_port())
    with pytest.raises(LegatoError, match="cannot connect to .*127.0.0.1"):
        open_rows(f"{closed_port.render_as_string(hide_password=False)}?table={name}")



# -- the whole source checked before a campaign starts -----------------------------------------------
def check(path: str, index: str | None = "idx", **kwargs) -> int:
    source = open_rows(path, index)
    try:
        return rows.check_rows(source, index, **kwargs)
    finally:
        source.close()


def test_check_counts_every_row_of_a_good_source(numbers_csv):
    assert check(numbers_csv) == 2500
    assert check(numbers_csv, max_rows=1200) == 1200


@pytest.mark.parametrize("text, message", [
    ("idx,a\n", r"no rows \(only a header"),
    ("idx,a\n1,x\n2,y\n1,z\n", r"row 3: index value '1' appears twice"),
    ("idx,a\n1,x\n,y\n", "row 2: empty index value"),
    ("idx,a\n1,x\n2,y,extra\n", "row 2 has 3 values, the header has 2"),
    ("idx,a\n1,x\n2\n", "row 2 has 1 values, the header has 2"),
])
def test_check_refuses_bad_sources(tmp_path, text, message):
    with pytest.raises(LegatoError, match=message):
        check(write_csv(tmp_path / "bad.csv", text))


def test_the_one_pass_check_counts_what_reading_finds(tmp_path):
    """Blank lines, a quoted value over two lines, a byte-order mark: the fast check and the rows read agree."""
    path = tmp_path / "odd.csv"
    path.write_bytes('\ufeffidx,a\n1,x\n\n2,"two\nlines"\n , \n3,z\n'.encode())
    source = open_rows(str(path), "idx")
    try:
        assert [row["idx"] for row in source.read(0, 10)] == ["1", "2", "", "3"]
    finally:
        source.close()
    with pytest.raises(LegatoError, match="row 3: empty index value"):
        check(str(path))
    assert check(str(path), max_rows=2) == 2
    assert check(str(path), index=None) == 4


def test_a_bad_byte_is_reported_at_its_own_offset(tmp_path):
    body = b"idx,a\n" + b"".join(b"%d,v%d\n" % (i, i) for i in range(1500)) + b"1500,caf\xe9\n"
    path = tmp_path / "latin1.csv"
    path.write_bytes(body)
    offset = body.index(b"\xe9")
    with pytest.raises(LegatoError, match=rf"not UTF-8 text at byte {offset} \(row 1501\)"):
        check(str(path))
    path.write_bytes(b"\xef\xbb\xbfidx,\xff\n")
    with pytest.raises(LegatoError, match=r"not UTF-8 text at byte 7 \(the header\)"):
        open_rows(str(path))


def test_an_sqlite_source_is_checked_too(tmp_path):
    db = tmp_path / "rows.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE p (idx TEXT, a TEXT)")
        conn.executemany("INSERT INTO p VALUES (?, ?)", [("1", "x"), ("2", "y"), ("2", "z")])
    with pytest.raises(LegatoError, match="index value '2' appears twice"):
        check(f"sqlite:///{db}?table=p")
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM p")
    with pytest.raises(LegatoError, match="no rows"):
        check(f"sqlite:///{db}?table=p")


@pytest.mark.parametrize("value", ["$(rm -rf ~)", "`id`", "a;b", "a|b", "a&b", "a>b", "a<b", "two\nlines"])
def test_strict_values_refuse_shell_syntax(tmp_path, value):
    quoted = '"' + value.replace('"', '""') + '"'
    path = write_csv(tmp_path / "p.csv", f"idx,a\n1,plain\n2,{quoted}\n")
    assert check(path) == 2  # by default Maestro's textual substitution: any value
    with pytest.raises(LegatoError, match=r"row 2: column 'a' holds shell syntax .*refused by --strict-values"):
        check(path, strict=True)


def test_strict_values_accept_ordinary_values(tmp_path):
    path = write_csv(tmp_path / "p.csv", "idx,a,b\n1,1.5e-3,name-with_dots.and/slash\n2,-4,x y z\n")
    assert check(path, strict=True) == 2
