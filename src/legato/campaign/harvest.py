"""Results files parsed and written, one row per instance, into one SQLite or PostgreSQL table.

The table ``results`` is plain SQL so that pandas, DuckDB or psql read it with no legato code:
fixed columns, then one column per parameter and one per result key, added as they first
appear. A column's type only ever widens (integer -> double -> text), so a later batch with a
float or a word where earlier batches had integers never fails; PostgreSQL columns are altered,
SQLite stores any value in any column anyway. Writing a batch replaces that batch's rows
inside one transaction (schema changes included), so a crash mid-write leaves the old rows or
the new ones, never both: the campaign driver may simply harvest a batch again after a crash.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import sqlalchemy as sa

from legato.campaign.rows import connect, first_line, split_url, sql_engine
from legato.errors import LegatoError
from legato.spec import ResultFile, Spec
from legato.store import Store

TABLE = "results"
INT, FLOAT, TEXT = 0, 1, 2
"""Column kinds, in widening order."""
FIXED = {"campaign": TEXT, "batch": INT, "step": TEXT, "label": TEXT, "row_index": TEXT, "state": TEXT,
         "returncode": INT, "started": FLOAT, "ended": FLOAT, "reason": TEXT}
"""Every instance's bookkeeping; ``started``/``ended`` are seconds since the epoch."""
PAGE = 5000
_SQL_TYPES: dict[int, sa.types.TypeEngine[Any]] = {INT: sa.BigInteger(), FLOAT: sa.Double(), TEXT: sa.Text()}
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_PAIR = re.compile(r"""([^\s=]+)\s*=\s*("[^"]*"|'[^']*'|\S*)""")
_PG_NAME_BYTES = 63
_IN_LIST = 500
"""Values per ``IN (...)`` list: well under SQLite's oldest limit of 999 bound parameters."""


def parse_results(path: str, fmt: str | None = None) -> dict[str, object]:
    """A results file as flat key -> value; ``{}`` when the instance wrote none (the driver says why)."""
    fmt = fmt or {".json": "json", ".csv": "csv"}.get(os.path.splitext(path)[1].lower(), "kv")
    parser = _PARSERS.get(fmt)
    if parser is None:
        raise LegatoError(f"results format {fmt!r}: expected one of {', '.join(_PARSERS)}")
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise LegatoError(f"results file {path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    return parser(path, text)


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


def collect(study: Path, number: int, start: int, files: dict[str, tuple[ResultFile, ...]]
            ) -> tuple[list[dict], list[tuple]]:
    """One results row per source row and step of batch ``number``, plus the ledger's record of each instance.

    Rows whose parameters a step does not tell apart share one instance (Maestro's rules), so
    each of those rows gets that instance's state and results under its own index. A finished
    instance whose results file cannot be parsed is a failed row, the parse error its reason:
    its parameters are kept in the ledger like any failure's, so ``--retry-failed`` runs it again.
    """
    rows, members = [], []
    with Store.of_study(study) as store:
        table, indexes = store.parameter_rows()
        cursor = store.db.execute(
            "SELECT step, label, row, workspace, state, returncode, started, ended, reason, params FROM instances ORDER BY id"
        )
        for _, instances in itertools.groupby(cursor, key=lambda record: record[0]):
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

    def __init__(self, url: str) -> None:
        sa_url, _ = split_url(url)
        self.where = sa_url.render_as_string(hide_password=True)
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
            sa.Table(TABLE, sa.MetaData(), *(sa.Column(name, _SQL_TYPES[kind]) for name, kind in FIXED.items()),
                     sa.Index(f"{TABLE}_campaign_batch", "campaign", "batch")).create(conn, checkfirst=True)

    def write(self, campaign: str, batch: int, rows: list[dict[str, Any]]) -> None:
        """Replace the rows of (campaign, batch) with these, atomically."""
        clash = {name.casefold() for name in FIXED} | {p.casefold() for row in rows for p in row["params"]}
        records = [_record(campaign, batch, row, clash) for row in rows]
        with self._transaction() as conn:
            columns = self._columns(conn, records)
            table = sa.table(TABLE, sa.column("campaign"), sa.column("batch"))
            conn.execute(sa.delete(table).where(table.c.campaign == campaign, table.c.batch == batch))
            self._insert(conn, columns, records)

    def drop_failed(self, campaign: str, batch: int, rows: Sequence[str] = ()) -> int:
        """Remove a batch's unfinished rows once a retry batch holds their new results; returns how many went.

        The retry batch ran every step of a failed row again, so the rows given by index go whole,
        their finished steps included; else those steps would be in the table twice.
        """
        table = sa.table(TABLE, sa.column("campaign"), sa.column("batch"), sa.column("state"), sa.column("row_index"))
        mine = sa.and_(table.c.campaign == campaign, table.c.batch == batch)
        with self._transaction() as conn:
            gone = conn.execute(sa.delete(table).where(mine, table.c.state.is_distinct_from("finished"))).rowcount
            for start in range(0, len(rows), _IN_LIST):
                chunk = list(rows[start:start + _IN_LIST])
                gone += conn.execute(sa.delete(table).where(mine, table.c.row_index.in_(chunk))).rowcount
            return gone

    def batches(self, campaign: str) -> set[int]:
        table = sa.table(TABLE, sa.column("campaign"), sa.column("batch"))
        with self._transaction(write=False) as conn:
            found = conn.execute(sa.select(table.c.batch).where(table.c.campaign == campaign).distinct())
            return {int(batch) for batch in found.scalars()}

    def export(self, campaign: str | None, path: str, fmt: str) -> int:
        """Write the table (one campaign or all) to a CSV or Parquet file, a page at a time; returns the row count."""
        if fmt not in ("csv", "parquet"):
            raise LegatoError(f"export format {fmt!r}: expected csv or parquet")
        with self._transaction(write=False) as conn:
            kinds = self._export_kinds(conn, campaign)
            table = sa.table(TABLE, *(sa.column(name) for name in kinds))
            query = sa.select(table).order_by(*(table.c[name] for name in ("campaign", "batch", "step", "label")))
            if campaign is not None:
                query = query.where(table.c.campaign == campaign)
            pages = conn.execution_options(stream_results=True, yield_per=PAGE).execute(query).partitions()
            try:
                return (_write_csv if fmt == "csv" else _write_parquet)(path, kinds, pages)
            except OSError as exc:
                raise LegatoError(f"cannot write {path}: {exc.strerror or exc}") from None

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

    def _columns(self, conn: sa.Connection, records: list[dict[str, object]]) -> dict[str, int]:
        """Columns the records need, added or widened; records are renamed to existing spellings (SQLite ignores case)."""
        existing = {col["name"]: _kind_of(col["type"]) for col in sa.inspect(conn).get_columns(TABLE)}
        fold = (lambda name: name) if self._postgres else str.casefold
        spelled = {fold(name): name for name in existing}
        needed: dict[str, int] = {}
        for record in records:
            for name in list(record):
                actual = spelled.setdefault(fold(name), name)
                if actual != name:
                    record[actual] = record.pop(name)
                needed[actual] = max(needed.get(actual, INT), _kind(record[actual]))
        for name, kind in needed.items():
            if name not in existing:
                self._alter(conn, "ADD COLUMN {name} {type}", name, kind)
            elif kind > existing[name] and self._postgres:
                self._alter(conn, "ALTER COLUMN {name} TYPE {type} USING {name}::{type}", name, kind)
        return {name: max(kind, existing.get(name, INT)) for name, kind in needed.items()}

    def _alter(self, conn: sa.Connection, change: str, name: str, kind: int) -> None:
        if not name or (self._postgres and len(name.encode()) > _PG_NAME_BYTES):
            raise LegatoError(f"results database {self.where}: {name!r} cannot be a column name (1 to 63 bytes)")
        sql_type = _SQL_TYPES[kind].compile(dialect=conn.dialect)
        quoted = conn.dialect.identifier_preparer.quote(name)
        conn.exec_driver_sql(f"ALTER TABLE {TABLE} " + change.format(name=quoted, type=sql_type))

    def _insert(self, conn: sa.Connection, columns: dict[str, int], records: list[dict[str, object]]) -> None:
        """Binds are named p0, p1, ... because column names may hold any character (``a.b``, ``a b``, ``%``)."""
        names = list(columns)
        table = sa.table(TABLE, *(sa.column(name) for name in names))
        statement = sa.insert(table).values({name: sa.bindparam(f"p{i}") for i, name in enumerate(names)})
        for start in range(0, len(records), PAGE):
            page = records[start:start + PAGE]
            conn.execute(statement, [{f"p{i}": _cast(rec.get(name), columns[name]) for i, name in enumerate(names)}
                                     for rec in page])

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


def _record(campaign: str, batch: int, row: dict[str, Any], clash: set[str]) -> dict[str, object]:
    """One instance as column -> value.

    Names are compared without case (SQLite ignores it, and a table should not change shape with
    the backend): a parameter named like a fixed column becomes ``param_<name>``; a result key
    named like a fixed column or any parameter of the batch becomes ``<step>_<key>``.
    """
    record: dict[str, object] = {
        "campaign": campaign, "batch": batch, "step": row["step"], "label": row["label"],
        "row_index": row.get("index"), "state": row["state"], "returncode": row["returncode"],
        "started": _epoch(row["started"]), "ended": _epoch(row["ended"]), "reason": row.get("reason"),
    }
    for name, value in row["params"].items():
        record[f"param_{name}" if name.casefold() in FIXED else name] = _plain(to_number(value) if isinstance(value, str) else value)
    for key, value in (row.get("results") or {}).items():
        record[f"{row['step']}_{key}" if key.casefold() in clash else key] = _plain(value)
    return record


def _epoch(value: object) -> float | None:
    if value is None or isinstance(value, (int, float)):
        return value
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.timestamp()


def _plain(value: object) -> object:
    """A value SQL stores natively: bools as 0/1, huge ints and anything else as text."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)
    if value is None or isinstance(value, (float, str)):
        return value
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _kind(value: object) -> int:
    return INT if value is None or isinstance(value, int) else FLOAT if isinstance(value, float) else TEXT


def _kind_of(sql_type: sa.types.TypeEngine) -> int:
    if isinstance(sql_type, sa.Integer):
        return INT
    return FLOAT if isinstance(sql_type, (sa.Float, sa.Numeric)) else TEXT


def _cast(value: object, kind: int) -> object:
    if value is None or kind == INT:
        return value
    if kind == FLOAT:
        return float(value) if isinstance(value, int) else value
    return value if isinstance(value, str) else str(value)


def _write_csv(path: str, kinds: dict[str, int], pages: Iterator[Sequence[sa.Row]]) -> int:
    count = 0
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(list(kinds))
        for page in pages:
            writer.writerows(["" if value is None else value for value in row] for row in page)
            count += len(page)
    return count


def _write_parquet(path: str, kinds: dict[str, int], pages: Iterator[Sequence[sa.Row]]) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise LegatoError("Parquet export needs pyarrow: pip install 'legato[parquet]'") from None
    arrow_types = {INT: pa.int64(), FLOAT: pa.float64(), TEXT: pa.string()}
    schema = pa.schema([(name, arrow_types[kind]) for name, kind in kinds.items()])
    count = 0
    with pq.ParquetWriter(path, schema) as writer:
        for page in pages:
            columns = [pa.array([_cast(row[i], kind) for row in page], type=arrow_types[kind])
                       for i, kind in enumerate(kinds.values())]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))
            count += len(page)
    return count
