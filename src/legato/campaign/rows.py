"""Row sources for batch campaigns: a CSV file or an SQL table/query, read one page at a time.

A campaign over 10^7 rows asks for rows [start, start + n) once per batch; holding the whole
source in memory or rescanning a CSV from its first line for every batch would make the
k-th batch cost O(k). The CSV reader therefore remembers the byte offset of every
``CHECKPOINT``-th row it passes (and where it stopped), so sequential batches cost O(batch)
and a resumed campaign seeks close to its first row. SQL sources page with a stable ORDER BY;
when that order is unique (a primary key, SQLite's rowid) the next page starts after the last
key read (``WHERE key > last``) instead of an OFFSET, which the database would have to count.
"""
from __future__ import annotations

import csv
import os
import re
from typing import IO, Any, Iterator, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from legato.errors import LegatoError

CHECKPOINT = 1000
"""Rows between remembered byte offsets in a CSV file: a seek lands at most this many rows early."""

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_PASSWORD = re.compile(r"^([^:/]+://[^:/@]*:)[^@]*@")
_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}


class RowSource(Protocol):
    """What the campaign driver reads parameter rows from."""

    columns: list[str]

    def read(self, start: int, nrows: int) -> list[dict[str, str]]:
        """Rows [start, start + nrows) as column -> text; fewer (or none) past the end."""
        ...

    def count(self) -> int:
        """How many rows the source holds now: what ``legato status`` needs for a total and an ETA."""
        ...

    def close(self) -> None:
        ...


def open_rows(location: str, index: str | None = None) -> RowSource:
    """A CSV path, or ``sqlite:///f.db?table=T`` / ``postgresql://...?query=SELECT...`` (URL-encoded)."""
    source: CsvRows | SqlRows
    source = SqlRows(location, index) if _URL.match(location) else CsvRows(location)
    if index is not None and index not in source.columns:
        source.close()
        raise LegatoError(f"row source {describe(location)}: no index column {index!r} (columns: {', '.join(source.columns)})")
    return source


SHELL_SYNTAX = re.compile(r"\$\(|`|;|\||&|<|>|\n|\r")
"""What ``--strict-values`` refuses in a row value: command substitution, command separators, pipes, redirections."""


def check_rows(source: RowSource, index: str | None, max_rows: int | None = None, *, strict: bool = False) -> int:
    """Read the whole source once (up to ``max_rows``) and refuse what would stop a campaign part way; the row count.

    A row source with no rows, a short or long row, a byte that is not UTF-8, an empty or
    repeated index value (results are keyed by it, and a retry would replace the wrong row),
    or with ``strict`` a value holding shell syntax: each found before any folder is made.
    """
    counted = source.check(index, max_rows) if isinstance(source, CsvRows) and not strict else None
    if counted is None:
        counted = _check_pages(source, index, max_rows, strict)
    if counted == 0:
        raise LegatoError(f"row source {describe(_where(source))}: no rows (only a header, or an empty table)")
    return counted


def _check_pages(source: RowSource, index: str | None, max_rows: int | None, strict: bool) -> int:
    seen: set[str] = set()
    start = 0
    while max_rows is None or start < max_rows:
        page = source.read(start, CHECKPOINT if max_rows is None else min(CHECKPOINT, max_rows - start))
        for number, row in enumerate(page, start + 1):
            if index is not None:
                _check_index(source, row[index], number, seen)
            if strict:
                check_values(row, f"row source {describe(_where(source))} row {number}")
        if not page:
            break
        start += len(page)
    return start


def _check_index(source: RowSource, value: str, number: int, seen: set[str]) -> None:
    if not value:
        raise LegatoError(f"row source {describe(_where(source))} row {number}: empty index value")
    if value in seen:
        raise LegatoError(f"row source {describe(_where(source))} row {number}: index value {value!r} appears twice")
    seen.add(value)


def check_values(row: dict[str, str], where: str) -> None:
    """``--strict-values``: a value that a shell would run as more than a word is refused, naming its column."""
    for name, value in row.items():
        if SHELL_SYNTAX.search(value):
            raise LegatoError(f"{where}: column {name!r} holds shell syntax {value!r} (refused by --strict-values)")


def _where(source: RowSource) -> str:
    return getattr(source, "path", None) or getattr(source, "where", "")


def describe(location: str) -> str:
    """A location fit for messages: URLs lose their password."""
    if not _URL.match(location):
        return location
    try:
        return make_url(location).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return _PASSWORD.sub(r"\1***@", location.split("?", 1)[0])


class CsvRows:
    """A CSV file with a header line; values and names stripped of surrounding blanks."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._file: IO[bytes] = open(path, "rb")
        except FileNotFoundError:
            raise LegatoError(f"row source {path}: no such file") from None
        except OSError as exc:
            raise LegatoError(f"row source {path}: {exc.strerror}") from None
        self._offset = 0
        self._records = self._reader()
        header = next(self._records, None)
        if header is None:
            self.close()
            raise LegatoError(f"row source {path}: empty file, expected a header line of column names")
        self.columns = _column_names(path, [name.strip() for name in header])
        self._marks: list[int] = [self._offset]
        self._row = 0

    def read(self, start: int, nrows: int) -> list[dict[str, str]]:
        if start < 0 or nrows < 0:
            raise LegatoError(f"row source {self.path}: bad range start={start} nrows={nrows}")
        self._seek(start)
        rows: list[dict[str, str]] = []
        while len(rows) < nrows:
            record = self._next_row()
            if record is None:
                break
            rows.append(dict(zip(self.columns, (value.strip() for value in record), strict=True)))
        return rows

    def count(self) -> int:
        """Lines after the header, counted in 1 MiB blocks (a quoted value spanning lines counts extra)."""
        lines, last = 0, b"\n"
        try:
            with open(self.path, "rb") as stream:
                while block := stream.read(1 << 20):
                    lines += block.count(b"\n")
                    last = block
        except OSError as exc:
            raise LegatoError(f"row source {self.path}: {exc.strerror}") from None
        return max(lines + (not last.endswith(b"\n")) - 1, 0)

    def check(self, index: str | None, max_rows: int | None) -> int | None:
        """``check_rows`` in one pass of the csv module over the decoded file, no row built: four times faster.

        None when the file is not UTF-8 text: reading it row by row then says at which byte.
        """
        width, count, seen = len(self.columns), 0, set()
        position = self.columns.index(index) if index is not None else None
        try:
            with open(self.path, encoding="utf-8-sig", newline="") as stream:
                records = csv.reader(stream)
                next(records, None)  # the header, read already
                for record in records:
                    if not record or (len(record) == 1 < width and not record[0].strip()):
                        continue  # a blank line
                    count += 1
                    if len(record) != width:
                        raise LegatoError(f"row source {self.path}: row {count} has {len(record)} values, "
                                          f"the header has {width}")
                    if position is not None:
                        _check_index(self, record[position].strip(), count, seen)
                    if count == max_rows:
                        break
        except UnicodeDecodeError:
            return None
        except csv.Error as exc:
            raise LegatoError(f"row source {self.path}: bad CSV after row {count}: {exc}") from None
        except OSError as exc:
            raise LegatoError(f"row source {self.path}: {exc.strerror}") from None
        return count

    def close(self) -> None:
        self._file.close()

    def _seek(self, start: int) -> None:
        """Go to the nearest known position at or before ``start`` (the current one or a checkpoint), then skip forward."""
        mark = min(start // CHECKPOINT, len(self._marks) - 1)
        if start < self._row or mark * CHECKPOINT > self._row:
            self._file.seek(self._marks[mark])
            self._offset, self._row = self._marks[mark], mark * CHECKPOINT
            self._records = self._reader()
        while self._row < start and self._next_row() is not None:
            pass

    def _next_row(self) -> list[str] | None:
        if self._row == len(self._marks) * CHECKPOINT:
            self._marks.append(self._offset)
        for record in self._records:
            if not record or (len(record) == 1 < len(self.columns) and not record[0].strip()):
                continue  # a blank line
            self._row += 1
            if len(record) != len(self.columns):
                raise LegatoError(
                    f"row source {self.path}: row {self._row} has {len(record)} values, the header has {len(self.columns)}"
                )
            return record
        return None

    def _reader(self) -> Iterator[list[str]]:
        """CSV records from the current file position; ``_offset`` is always where the next record starts."""
        try:
            yield from csv.reader(self._lines())
        except csv.Error as exc:
            raise LegatoError(f"row source {self.path}: bad CSV after row {self._row}: {exc}") from None

    def _lines(self) -> Iterator[str]:
        """Lines read one by one, so that the csv module never reads past the record it returns."""
        while line := self._file.readline():
            try:
                text = line.decode("utf-8-sig" if self._offset == 0 else "utf-8")
            except UnicodeDecodeError as exc:
                bom = 3 if self._offset == 0 and line.startswith(b"\xef\xbb\xbf") else 0  # utf-8-sig counts after it
                where = "the header" if self._offset == 0 else f"row {self._row + 1}"
                raise LegatoError(f"row source {self.path}: not UTF-8 text at byte {self._offset + bom + exc.start} "
                                  f"({where})") from None
            self._offset += len(line)
            yield text


def _column_names(where: str, names: list[str]) -> list[str]:
    if any(not name for name in names):
        raise LegatoError(f"row source {where}: an empty column name in the header {names}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise LegatoError(f"row source {where}: duplicate column names {', '.join(duplicates)}")
    return names


class SqlRows:
    """A table (``?table=``, optionally ``schema.table``) or a query (``?query=``) behind an SQLAlchemy URL."""

    def __init__(self, location: str, index: str | None = None) -> None:
        url, options = split_url(location, ("table", "query"))
        self.where = url.render_as_string(hide_password=True)
        if len(options) != 1:
            raise LegatoError(f"row source {self.where}: give exactly one of ?table=NAME or ?query=SELECT...")
        if url.get_backend_name() == "sqlite" and not os.path.isfile(url.database or ""):
            raise LegatoError(f"row source {self.where}: no such file {url.database}")
        self._engine = sql_engine(url)
        self._after: tuple[int, tuple] | None = None
        """(row number, key values of the row before it) where the last page ended, for keyset paging."""
        try:
            with connect(self._engine, self.where) as conn:
                if "table" in options:
                    data, self._order, unique = self._table(conn, options["table"], index)
                else:
                    data, self._order, unique = self._query(conn, options["query"], index)
        except BaseException:
            self.close()
            raise
        self.columns = [col.name for col in data.selected_columns]
        keys = [key.label(f"legato_key_{i}") for i, key in enumerate(self._order)] if unique else []
        self._select = data.add_columns(*keys).order_by(*self._order)

    def read(self, start: int, nrows: int) -> list[dict[str, str]]:
        if start < 0 or nrows < 0:
            raise LegatoError(f"row source {self.where}: bad range start={start} nrows={nrows}")
        if self._after and self._after[0] == start:
            page = self._select.where(sa.tuple_(*self._order) > sa.tuple_(*self._after[1]))
        else:
            page = self._select.offset(start)
        width = len(self.columns)
        with connect(self._engine, self.where) as conn:
            found = run(conn, page.limit(nrows), self.where).all()
        if found and len(found[0]) > width:
            self._after = (start + len(found), tuple(found[-1][width:]))
        return [{name: "" if value is None else str(value) for name, value in zip(self.columns, row[:width])}
                for row in found]

    def count(self) -> int:
        with connect(self._engine, self.where) as conn:
            return run(conn, sa.select(sa.func.count()).select_from(self._select.subquery()), self.where).scalar_one()

    def close(self) -> None:
        self._engine.dispose()

    def _table(self, conn: sa.Connection, name: str, index: str | None) -> tuple[sa.Select, list, bool]:
        """Ordered by the index column, else the primary key, else SQLite's rowid, else every column; unique?"""
        schema, _, table_name = name.rpartition(".")
        try:
            table = sa.Table(table_name, sa.MetaData(), autoload_with=conn, schema=schema or None)
        except sa.exc.NoSuchTableError:
            raise LegatoError(f"row source {self.where}: no table {name!r}") from None
        except sa.exc.DBAPIError as exc:
            raise LegatoError(f"row source {self.where}: cannot read table {name!r}: {first_line(exc)}") from None
        primary: list[sa.ColumnElement[Any]] = list(table.primary_key.columns)
        order: list[sa.ColumnElement[Any]]
        if index is not None and index in table.c:
            order, unique = [table.c[index]], [col.name for col in primary] == [index]
        elif primary:
            order, unique = primary, True
        elif conn.dialect.name == "sqlite" and table_name in sa.inspect(conn).get_table_names(schema=schema or None):
            order, unique = [sa.literal_column("rowid")], True
        else:
            order, unique = list(table.c), False
        return sa.select(table), order, unique

    def _query(self, conn: sa.Connection, query: str, index: str | None) -> tuple[sa.Select, list, bool]:
        """Wrapped as a subquery ordered by the index column, else by its first column."""
        query = query.strip().rstrip(";")
        probe = sa.text(f"SELECT * FROM ({query}) AS legato_rows LIMIT 0")
        names = list(run(conn, probe, self.where).keys())
        _column_names(self.where, names)
        rows = sa.text(query).columns(*(sa.column(name) for name in names)).subquery("legato_rows")
        return sa.select(rows), [rows.c[index if index is not None and index in names else names[0]]], False


def split_url(location: str, own: tuple[str, ...] = ()) -> tuple[URL, dict[str, str]]:
    """The URL for SQLAlchemy and legato's own query options (``table``, ``query``), which the driver must not see."""
    try:
        url = make_url(location)
    except (sa.exc.ArgumentError, ValueError):
        raise LegatoError(f"{describe(location)}: not a database URL (sqlite:///path.db or postgresql://user@host/db)") from None
    if url.drivername not in _DRIVERS and url.drivername != "postgresql+psycopg":
        raise LegatoError(f"{describe(location)}: unsupported scheme {url.drivername!r}, use sqlite:// or postgresql://")
    options = {}
    for key in own:
        value = url.query.get(key)
        if isinstance(value, tuple):
            raise LegatoError(f"{describe(location)}: ?{key}= given more than once")
        if value:
            options[key] = value
    url = url.difference_update_query(own).set(drivername=_DRIVERS.get(url.drivername, url.drivername))
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise LegatoError(f"{describe(location)}: an SQLite URL needs a file, e.g. sqlite:///path/to/file.db")
    return url, options


def sql_engine(url: URL, **kwargs: object) -> Engine:
    """An engine that gives up on unreachable PostgreSQL servers in seconds instead of minutes."""
    if url.get_backend_name() == "postgresql":
        kwargs.setdefault("connect_args", {"connect_timeout": 10})
    return sa.create_engine(url, **kwargs)


def connect(engine: Engine, where: str) -> sa.Connection:
    """A connection, with refused connections and failed logins as one-line LegatoErrors."""
    try:
        return engine.connect()
    except sa.exc.DBAPIError as exc:
        hint = ""
        if engine.url.password is None and "password" in first_line(exc):
            hint = " (legato keeps no passwords: set PGPASSWORD or add the server to ~/.pgpass, or the file PGPASSFILE names)"
        raise LegatoError(f"cannot connect to {where}: {first_line(exc)}{hint}") from None


def run(conn: sa.Connection, statement: sa.Executable, where: str) -> sa.CursorResult:
    """Execute a statement built from the user's table or query: SQL errors are the user's to fix."""
    try:
        return conn.execute(statement)
    except sa.exc.DBAPIError as exc:
        raise LegatoError(f"row source {where}: bad query: {first_line(exc)}") from None


def first_line(exc: sa.exc.DBAPIError) -> str:
    """The driver's own message, without SQLAlchemy's SQL echo and background link."""
    text = str(exc.orig).strip() or type(exc.orig).__name__
    return text.splitlines()[0]
