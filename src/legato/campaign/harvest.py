"""Results files parsed and written, one row per instance, into one SQLite or PostgreSQL table.

The table ``results`` is plain SQL so that pandas, DuckDB or psql read it with no legato code:
fixed columns (the row source's index under its own name, times as ISO-8601 text with the
zone), then one column per parameter and one per result key, added as they first appear; the
small table ``result_columns`` says which column is a parameter and which a result. A column's
type only ever widens (integer -> double -> text), so a later batch with a float or a word
where earlier batches had integers never fails; PostgreSQL columns are altered, SQLite stores
any value in any column anyway (except that it turns text like ``007`` into the number 7 in an
integer column). Writing a batch replaces that batch's rows
inside one transaction (schema changes included), so a crash mid-write leaves the old rows or
the new ones, never both: the campaign driver may simply harvest a batch again after a crash.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import re
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import sqlalchemy as sa

from legato.campaign.rows import connect, first_line, split_url, sql_engine
from legato.errors import LegatoError
from legato.spec import ResultFile, Spec
from legato.store import Store

TABLE = "results"
INT, FLOAT, TEXT = 0, 1, 2
"""Column kinds, in widening order."""
INDEX = "row_index"
"""The index column's name when the rows have no index column of their own (the row's number)."""
FIXED = {"campaign": TEXT, "batch": INT, "step": TEXT, "label": TEXT, INDEX: INT, "state": TEXT,
         "returncode": INT, "started": TEXT, "ended": TEXT, "reason": TEXT}
"""Every instance's bookkeeping; ``started``/``ended`` are ISO-8601 with the local zone's offset."""
ROLES = "result_columns"
"""Table of (name, role): ``parameter`` or ``result``, so readers tell inputs from outputs."""
PAGE = 5000
_INT_BIT, _FLOAT_BIT, _TEXT_BIT = 1, 2, 4
_KIND_BITS: dict[type, int] = {type(None): 0, int: _INT_BIT, float: _FLOAT_BIT, str: _TEXT_BIT}
"""What kinds a column's values have, or-ed together; ``_plain`` has made every value one of these types."""
_TYPES = {INT: int, FLOAT: float, TEXT: str}
_SQL_TYPES: dict[int, sa.types.TypeEngine[Any]] = {INT: sa.BigInteger(), FLOAT: sa.Double(), TEXT: sa.Text()}
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_PAIR = re.compile(r"""([^\s=]+)\s*=\s*("[^"]*"|'[^']*'|\S*)""")
_PG_NAME_BYTES = 63
_READ_SIZE = 1 << 16
_IN_LIST = 500
"""Values per ``IN (...)`` list: well under SQLite's oldest limit of 999 bound parameters."""


def parse_results(path: str, fmt: str | None = None) -> dict[str, object]:
    """A results file as flat key -> value; ``{}`` when the instance wrote none (the driver says why)."""
    fmt = fmt or {".json": "json", ".csv": "csv"}.get(os.path.splitext(path)[1].lower(), "kv")
    parser = _PARSERS.get(fmt)
    if parser is None:
        raise LegatoError(f"results format {fmt!r}: expected one of {', '.join(_PARSERS)}")
    try:
        text = _read_bytes(path).decode("utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise LegatoError(f"results file {path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    return parser(path, text)


def _read_bytes(path: str) -> bytes:
    """A whole file through bare descriptors: a Python file object per results file costs as much as the reading."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, _READ_SIZE):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def to_number(text: str) -> object:
    """An int or float when the text is plainly one (not ``007``, ``nan`` or beyond 64 bits), else the text."""
    if _INT.fullmatch(text):
        number = int(text)
        return number if -(2**63) <= number < 2**63 else text
    return float(text) if _FLOAT.fullmatch(text) else text


def _parse_json(path: str, text: str) -> dict[str, object]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LegatoError(f"results file {path}: bad JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise LegatoError(f"results file {path}: expected a JSON object, found {type(data).__name__}")
    return _flatten(data)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, object]:
    """Nested objects become dotted keys; lists stay whole, as JSON text, because they have no natural columns."""
    flat: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return flat


def _parse_kv(path: str, text: str) -> dict[str, object]:
    """``key=value`` pairs, several per line allowed, ``#`` comment lines; values may be quoted."""
    values: dict[str, object] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        end = 0
        for match in _PAIR.finditer(line):
            if line[end:match.start()].strip():
                break
            key, value = match.groups()
            quoted = len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""
            values[key] = value[1:-1] if quoted else to_number(value)
            end = match.end()
        if line[end:].strip():
            raise LegatoError(f"results file {path} line {lineno}: expected key=value pairs, found {line[end:].strip()!r}")
    return values


def _parse_csv(path: str, text: str) -> dict[str, object]:
    """A header and the first data row (a results file describes one instance)."""
    try:
        records = [record for record in csv.reader(io.StringIO(text)) if record]
    except csv.Error as exc:
        raise LegatoError(f"results file {path}: bad CSV: {exc}") from None
    if len(records) < 2:
        return {}
    header, row = records[0], records[1]
    if len(header) != len(row):
        raise LegatoError(f"results file {path}: {len(row)} values for {len(header)} columns")
    return {name.strip(): to_number(value.strip()) for name, value in zip(header, row, strict=True)}


_PARSERS: dict[str, Callable[[str, str], dict[str, object]]] = {"json": _parse_json, "kv": _parse_kv, "csv": _parse_csv}


class Stored(NamedTuple):
    """What a study's store says of its instances: the parameter table, the index values, one record per instance."""

    table: list[dict[str, str]]
    indexes: list[str] | None
    instances: list[tuple]
    """(step, label, row, workspace, state, returncode, started, ended, reason, params), in id order."""


def stored_instances(study: Path) -> Stored:
    """Read once and closed at once: the batch's archive may be written while the results are read."""
    with Store.of_study(study) as store:
        table, indexes = store.parameter_rows()
        return Stored(table, indexes, store.db.execute(
            "SELECT step, label, row, workspace, state, returncode, started, ended, reason, params FROM instances ORDER BY id"
        ).fetchall())


def collect(study: Path, number: int, start: int, files: dict[str, tuple[ResultFile, ...]], stored: Stored | None = None
            ) -> tuple[list[dict], list[tuple]]:
    """One results row per source row and step of batch ``number``, plus the ledger's record of each instance.

    Rows whose parameters a step does not tell apart share one instance (Maestro's rules), so
    each of those rows gets that instance's state and results under its own index. A finished
    instance whose results file cannot be parsed is a failed row, the parse error its reason:
    its parameters are kept in the ledger like any failure's, so ``--retry-failed`` runs it again.
    """
    rows, members = [], []
    table, indexes, records = stored or stored_instances(study)
    for _, instances in itertools.groupby(records, key=lambda record: record[0]):
        for record, shared in _source_rows(list(instances), table):
            step, label, _, workspace, state, rc, started, ended, reason, _ = record
            try:
                results = instance_results(f"{study}/{workspace}", files.get(step, ()))
            except LegatoError as error:  # that row failed; the others are harvested
                results, state, reason = {}, "failed", str(error)
            for row in shared:
                values = table[row] if row is not None else {}
                index = None if row is None else indexes[row] if indexes else str(start + row)
                rows.append({"step": step, "label": label, "index": index, "state": state, "returncode": rc,
                             "started": started, "ended": ended, "reason": reason, "params": values,
                             "results": results})
                kept = json.dumps(values) if state != "finished" and row is not None else None
                members.append((number, step, label, index, state, reason, workspace, kept))
    return rows, members


def instance_results(folder: str, declared: tuple[ResultFile, ...]) -> dict[str, object]:
    """The declared result files of one instance, parsed and merged (plain strings: pathlib costs a fifth of a harvest)."""
    results: dict[str, object] = {}
    for entry in declared:
        results.update(parse_results(f"{folder}/{entry.file}", entry.format))
    return results


def _source_rows(instances: list[tuple], table: list[dict[str, str]]) -> Iterator[tuple[tuple, list[int | None]]]:
    """Each instance of one step with the table rows it stands for (``[None]``: an unparameterized step)."""
    if instances[0][-1] is None:
        for record in instances:
            yield record, [None]
        return
    if len(instances) == len(table):  # no two rows share an instance: each stands for the row it was made from
        for record in instances:
            yield record, [record[2]]
        return
    names = list(json.loads(instances[0][-1]))
    shared: dict[tuple, list[int | None]] = {}
    for row, values in enumerate(table):
        shared.setdefault(tuple(values[name] for name in names), []).append(row)
    for record in instances:
        yield record, shared[tuple(json.loads(record[-1]).values())]


def result_files(spec: Spec, cli: list[str]) -> dict[str, tuple[ResultFile, ...]]:
    """The spec's ``legato.results`` plus ``--result STEP:FILE[:FORMAT]`` entries.

    A misspelt step would otherwise harvest nothing, silently, for the whole campaign.
    """
    return parse_result_options(cli, {step.name for step in spec.steps}, spec.results)


def parse_result_options(cli: list[str], steps: set[str], declared: dict[str, tuple[ResultFile, ...]] | None = None
                         ) -> dict[str, tuple[ResultFile, ...]]:
    """``--result STEP:FILE[:FORMAT]`` entries checked against the study's ``steps``, added to ``declared``."""
    files = {step: list(entries) for step, entries in (declared or {}).items()}
    for entry in cli:
        parts = entry.split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise LegatoError(f"--result {entry!r}: expected STEP:FILE or STEP:FILE:FORMAT")
        if len(parts) == 3 and parts[2] not in ("json", "kv", "csv"):
            raise LegatoError(f"--result {entry!r}: format must be json, kv or csv")
        if parts[0] not in steps:
            raise LegatoError(f"--result {entry!r}: the spec has no step {parts[0]!r} (steps: {', '.join(sorted(steps))})")
        files.setdefault(parts[0], []).append(ResultFile(parts[1], parts[2] if len(parts) == 3 else None))
    return {step: tuple(entries) for step, entries in files.items()}


class ResultSink:
    """The ``results`` table behind ``sqlite:///abs/path.db`` or ``postgresql://user:pw@host:port/db``."""

    def __init__(self, url: str, index: str | None = None) -> None:
        """``index``: the row source's index column, kept under its own name (else ``row_index``)."""
        sa_url, _ = split_url(url)
        self.where = sa_url.render_as_string(hide_password=True)
        self.index = index or INDEX
        self.fixed = {(self.index if name == INDEX else name): kind for name, kind in FIXED.items()}
        self._postgres = sa_url.get_backend_name() == "postgresql"
        if self._postgres:
            self._engine = sql_engine(sa_url)
        else:
            folder = os.path.dirname(os.path.abspath(sa_url.database or ""))
            if not os.path.isdir(folder):
                raise LegatoError(f"results database {self.where}: no folder {folder}")
            self._engine = sql_engine(sa_url, connect_args={"timeout": 60})
            _sqlite_transactions(self._engine)
        with self._transaction() as conn:
            metadata = sa.MetaData()
            sa.Table(TABLE, metadata, *(sa.Column(name, _SQL_TYPES[kind]) for name, kind in self.fixed.items()),
                     sa.Index(f"{TABLE}_campaign_batch", "campaign", "batch"))
            sa.Table(ROLES, metadata, sa.Column("name", sa.Text(), primary_key=True), sa.Column("role", sa.Text()))
            metadata.create_all(conn, checkfirst=True)

    def write(self, campaign: str, batch: int, rows: list[dict[str, Any]]) -> None:
        """Replace the rows of (campaign, batch) with these, atomically."""
        names = _Naming(self.fixed, self.index,
                        {name.casefold() for keys in {tuple(row["params"]) for row in rows} for name in keys})
        records = [names.record(campaign, batch, row) for row in rows]
        with self._transaction() as conn:
            columns, casts = self._columns(conn, records, names.roles)
            table = sa.table(TABLE, sa.column("campaign"), sa.column("batch"))
            conn.execute(sa.delete(table).where(table.c.campaign == campaign, table.c.batch == batch))
            self._insert(conn, columns, records, casts)
            self._record_roles(conn, names.roles)

    def drop_failed(self, campaign: str, batch: int, rows: Sequence[str] = ()) -> int:
        """Remove a batch's unfinished rows once a retry batch holds their new results; returns how many went.

        The retry batch ran every step of a failed row again, so the rows given by index go whole,
        their finished steps included; else those steps would be in the table twice.
        """
        table = sa.table(TABLE, sa.column("campaign"), sa.column("batch"), sa.column("state"), sa.column(self.index))
        mine = sa.and_(table.c.campaign == campaign, table.c.batch == batch)
        with self._transaction() as conn:
            gone = conn.execute(sa.delete(table).where(mine, table.c.state.is_distinct_from("finished"))).rowcount
            kind = next(_kind_of(col["type"]) for col in sa.inspect(conn).get_columns(TABLE) if col["name"] == self.index)
            for start in range(0, len(rows), _IN_LIST):
                chunk = [cast_value(index_value(index), kind) for index in rows[start:start + _IN_LIST]]
                gone += conn.execute(sa.delete(table).where(mine, table.c[self.index].in_(chunk))).rowcount
            return gone

    def batches(self, campaign: str) -> set[int]:
        table = sa.table(TABLE, sa.column("campaign"), sa.column("batch"))
        with self._transaction(write=False) as conn:
            found = conn.execute(sa.select(table.c.batch).where(table.c.campaign == campaign).distinct())
            return {int(batch) for batch in found.scalars()}

    @contextmanager
    def read(self, campaign: str | None, failed: bool = False
             ) -> Iterator[tuple[dict[str, int], Iterator[Sequence[sa.Row]]]]:
        """The table (one campaign or all; only unfinished rows if ``failed``) as column kinds and pages of rows.

        Rows come in index order (then step and label), the order of the source's rows.
        """
        with self._transaction(write=False) as conn:
            kinds = self._export_kinds(conn, campaign)
            table = sa.table(TABLE, *(sa.column(name) for name in kinds))
            order = [name for name in ("campaign", self.index, "batch", "step", "label") if name in kinds]
            query = sa.select(table).order_by(*(table.c[name] for name in order))
            if campaign is not None:
                query = query.where(table.c.campaign == campaign)
            if failed:
                query = query.where(table.c.state.is_distinct_from("finished"))
            yield kinds, conn.execution_options(stream_results=True, yield_per=PAGE).execute(query).partitions()

    def roles(self) -> dict[str, str]:
        """Column name -> ``parameter`` or ``result``."""
        table = sa.table(ROLES, sa.column("name"), sa.column("role"))
        with self._transaction(write=False) as conn:
            return dict(conn.execute(sa.select(table.c.name, table.c.role)).all())

    def export(self, campaign: str | None, path: str, fmt: str) -> int:
        """Write the table (one campaign or all) to a CSV or Parquet file, a page at a time; returns the row count."""
        from legato.report.tables import write_rows

        with self.read(campaign) as (kinds, pages):
            return write_rows(kinds, pages, path, fmt)

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[sa.Connection]:
        """One transaction; database errors become LegatoErrors naming the database."""
        with connect(self._engine, self.where) as conn:
            try:
                with conn.execution_options(legato_write=write).begin():
                    yield conn
            except sa.exc.DBAPIError as exc:
                raise LegatoError(f"results database {self.where}: {first_line(exc)}") from None

    def _columns(self, conn: sa.Connection, records: list[dict[str, object]], roles: dict[str, str]
                 ) -> tuple[dict[str, int], set[str]]:
        """Columns the records need, added or widened, and those whose values need a cast to the column's kind.

        Records are renamed to existing spellings (SQLite ignores case); the spellings are worked
        out once per set of keys (a batch's records mostly share one). The values of the fixed
        columns other than the index always have their declared kind, so only the others are looked at.
        """
        existing = {col["name"]: _kind_of(col["type"]) for col in sa.inspect(conn).get_columns(TABLE)}
        fold = (lambda name: name) if self._postgres else str.casefold
        spelled = {fold(name): name for name in existing}
        renames_of: dict[tuple[str, ...], list[tuple[str, str]]] = {}
        settled = {name: kind for name, kind in self.fixed.items() if name != self.index}
        seen: dict[str, int] = {}
        for record in records:
            keys = tuple(record)
            renames = renames_of.get(keys)
            if renames is None:
                renames = renames_of[keys] = [(name, actual) for name in keys
                                              if (actual := spelled.setdefault(fold(name), name)) != name]
                for name, actual in renames:
                    if name in roles:
                        roles[actual] = roles.pop(name)
            for name, actual in renames:
                record[actual] = record.pop(name)
            for name, value in record.items():
                if name not in settled:
                    seen[name] = seen.get(name, 0) | _KIND_BITS.get(type(value), _TEXT_BIT)
        needed = {name: TEXT if bits & _TEXT_BIT else FLOAT if bits & _FLOAT_BIT else INT for name, bits in seen.items()}
        for name, kind in needed.items():
            if name not in existing:
                self._alter(conn, "ADD COLUMN {name} {type}", name, kind)
            elif kind > existing[name] and self._postgres:
                self._alter(conn, "ALTER COLUMN {name} TYPE {type} USING {name}::{type}", name, kind)
        kinds = {name: max(kind, existing.get(name, INT)) for name, kind in needed.items()}
        casts = {name for name, kind in kinds.items() if seen[name] & ~_KIND_BITS[_TYPES[kind]]}
        return settled | kinds, casts

    def _record_roles(self, conn: sa.Connection, roles: dict[str, str]) -> None:
        """Name each parameter and result column once; a name keeps the role it was first given."""
        table = sa.table(ROLES, sa.column("name"), sa.column("role"))
        known = set(conn.execute(sa.select(table.c.name)).scalars())
        new = [{"name": name, "role": role} for name, role in roles.items() if name not in known]
        if new:
            conn.execute(sa.insert(table), new)

    def _alter(self, conn: sa.Connection, change: str, name: str, kind: int) -> None:
        if not name or (self._postgres and len(name.encode()) > _PG_NAME_BYTES):
            raise LegatoError(f"results database {self.where}: {name!r} cannot be a column name (1 to 63 bytes)")
        sql_type = _SQL_TYPES[kind].compile(dialect=conn.dialect)
        quoted = conn.dialect.identifier_preparer.quote(name)
        conn.exec_driver_sql(f"ALTER TABLE {TABLE} " + change.format(name=quoted, type=sql_type))

    def _insert(self, conn: sa.Connection, columns: dict[str, int], records: list[dict[str, object]],
                casts: set[str]) -> None:
        """One driver-level executemany of plain tuples: SQLAlchemy's per-row parameter handling was most of a harvest.

        Only the ``casts`` columns hold values of another kind than theirs (an int in a double
        column, a number in a text column). Column names may hold any character (``a.b``, ``a b``,
        ``%``): they are quoted, and a ``%`` doubled where the driver's placeholders are ``%s``.
        """
        names = list(columns)
        quote = conn.dialect.identifier_preparer.quote
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        quoted = ", ".join(quote(name) for name in names)
        if mark == "%s":
            quoted = quoted.replace("%", "%%")
        statement = f"INSERT INTO {TABLE} ({quoted}) VALUES ({', '.join([mark] * len(names))})"
        cast_at = [(position, columns[name]) for position, name in enumerate(names) if name in casts]
        for start in range(0, len(records), PAGE):
            rows = [tuple(map(record.get, names)) for record in records[start:start + PAGE]]
            if cast_at:
                rows = [_cast_row(row, cast_at) for row in rows]
            conn.exec_driver_sql(statement, rows)

    def _export_kinds(self, conn: sa.Connection, campaign: str | None) -> dict[str, int]:
        """Declared types in PostgreSQL; in SQLite, what the stored values are (its columns never narrow a value)."""
        declared = {col["name"]: _kind_of(col["type"]) for col in sa.inspect(conn).get_columns(TABLE)}
        if self._postgres:
            return declared
        table = sa.table(TABLE, *(sa.column(name) for name in declared))
        probes = []
        for name in declared:
            stored = sa.func.typeof(table.c[name])
            probes += [sa.func.max(stored.in_(["text", "blob"])), sa.func.max(stored == "real")]
        query = sa.select(*probes).select_from(table)
        if campaign is not None:
            query = query.where(table.c.campaign == campaign)
        flags = conn.execute(query).one()
        return {name: TEXT if flags[2 * i] else max(kind, FLOAT) if flags[2 * i + 1] else kind
                for i, (name, kind) in enumerate(declared.items())}


def _sqlite_transactions(engine: sa.Engine) -> None:
    """Let SQLite's BEGIN cover schema changes too, and take the write lock up front when writing.

    Python's sqlite3 module starts transactions itself only before INSERT/UPDATE/DELETE, so an
    ALTER TABLE would commit on its own; with the driver in autocommit mode SQLAlchemy's own BEGIN
    governs everything. BEGIN IMMEDIATE makes a second writer wait (busy timeout) instead of
    failing on a lock upgrade; readers use a plain BEGIN and, in WAL mode, never block the writer.
    """
    @sa.event.listens_for(engine, "connect")
    def _driver_autocommit(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        dbapi_conn.execute("PRAGMA journal_mode=WAL")

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("legato_write") else "BEGIN")


class _Naming:
    """Each row as column -> value, the column names worked out once per set of keys (a batch's rows mostly share one).

    Names are compared without case (SQLite ignores it, and a table should not change shape with
    the backend): a parameter named like a fixed column becomes ``param_<name>``; a result key
    named like a fixed column or any parameter of the batch (``params``, folded) becomes
    ``<step>_<key>``. ``roles`` gathers which column is a parameter and which a result.
    """

    def __init__(self, fixed: dict[str, int], index: str, params: set[str]) -> None:
        self.index = index
        self.fixed = {name.casefold() for name in fixed}
        self.clash = self.fixed | params
        self.roles: dict[str, str] = {}
        self._params: dict[tuple[str, ...], list[str]] = {}
        self._results: dict[tuple[str, tuple[str, ...]], list[str]] = {}

    def record(self, campaign: str, batch: int, row: dict[str, Any]) -> dict[str, object]:
        record: dict[str, object] = {
            "campaign": campaign, "batch": batch, "step": row["step"], "label": row["label"],
            self.index: index_value(row.get("index")), "state": row["state"], "returncode": row["returncode"],
            "started": iso_time(row["started"]), "ended": iso_time(row["ended"]), "reason": row.get("reason"),
        }
        params = row["params"]
        for column, value in zip(self._param_columns(tuple(params)), params.values()):
            record[column] = _plain(to_number(value) if isinstance(value, str) else value)
        results = row.get("results")
        if results:
            for column, value in zip(self._result_columns(row["step"], tuple(results)), results.values()):
                record[column] = _plain(value)
        return record

    def _param_columns(self, keys: tuple[str, ...]) -> list[str]:
        columns = self._params.get(keys)
        if columns is None:
            columns = self._params[keys] = [f"param_{name}" if name.casefold() in self.fixed else name for name in keys]
            for column in columns:
                self.roles.setdefault(column, "parameter")
        return columns

    def _result_columns(self, step: str, keys: tuple[str, ...]) -> list[str]:
        columns = self._results.get((step, keys))
        if columns is None:
            columns = self._results[step, keys] = [f"{step}_{key}" if key.casefold() in self.clash else key
                                                   for key in keys]
            for column in columns:
                self.roles.setdefault(column, "result")
        return columns


def index_value(index: object) -> object:
    """A row's index as its source had it: a CSV's ``17`` is the number 17 (so rows sort 9, 10, 11), ``007`` stays text."""
    return to_number(index) if isinstance(index, str) else index


def iso_time(value: object) -> str | None:
    """Seconds since the epoch (or a datetime) as ISO-8601 in the local zone, with its offset: readable and exact.

    Milliseconds are added to a per-second text made once: a batch's instances end within a
    few seconds of each other, and formatting each time whole was a tenth of a harvest.
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.astimezone().isoformat(timespec="milliseconds")
    fraction, whole = math.modf(float(value))
    micro = round(fraction * 1e6)  # rounded as datetime.fromtimestamp rounds
    if micro >= 1_000_000:
        whole, micro = whole + 1, micro - 1_000_000
    elif micro < 0:
        whole, micro = whole - 1, micro + 1_000_000
    second, offset = _second(int(whole))
    return f"{second}.{micro // 1000:03d}{offset}"


@lru_cache(maxsize=4096)
def _second(whole: int) -> tuple[str, str]:
    """``YYYY-MM-DDTHH:MM:SS`` and the zone's offset at that second."""
    text = datetime.fromtimestamp(whole, timezone(timedelta(seconds=time.localtime(whole).tm_gmtoff))).isoformat()
    return text[:19], text[19:]


def _plain(value: object) -> object:
    """A value SQL stores natively: bools as 0/1, huge ints and anything else as text."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)
    if value is None or isinstance(value, (float, str)):
        return value
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _kind_of(sql_type: sa.types.TypeEngine) -> int:
    if isinstance(sql_type, sa.Integer):
        return INT
    return FLOAT if isinstance(sql_type, (sa.Float, sa.Numeric)) else TEXT


def _cast_row(row: tuple, cast_at: list[tuple[int, int]]) -> tuple:
    values = list(row)
    for position, kind in cast_at:
        values[position] = cast_value(values[position], kind)
    return tuple(values)


def cast_value(value: object, kind: int) -> object:
    if value is None or kind == INT:
        return value
    if kind == FLOAT:
        return float(value) if isinstance(value, int) else value
    return value if isinstance(value, str) else str(value)
