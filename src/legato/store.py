"""The SQLite state of one study: the single source of truth for its instances.

One database file per study, in WAL mode so that ``legato status`` reads while the
conductor writes. Its tables are created before the switch to WAL, in the file's first
transaction: a process killed while creating the store leaves either no tables at all (an
empty file, which opening treats as a set-up that did not finish) or all of them. Scripts live here rather than in per-instance files (fewer inodes), and
state changes are written in batches (``update_many``) so the store never limits throughput.
"""
from __future__ import annotations

import json
import queue
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from legato.errors import LegatoError

DB_NAME = "legato.db"
STATES = ("pending", "running", "finished", "failed", "timedout", "cancelled", "skipped")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS steps (
    name TEXT PRIMARY KEY, position INTEGER, first_id INTEGER, instances INTEGER,
    funnel_parents TEXT, folder TEXT
);
CREATE TABLE IF NOT EXISTS instances (
    id INTEGER PRIMARY KEY, step TEXT NOT NULL, label TEXT NOT NULL, row INTEGER, workspace TEXT NOT NULL,
    params TEXT, script TEXT NOT NULL, restart TEXT, resources TEXT, parents TEXT,
    state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    returncode INTEGER, started REAL, ended REAL, pid INTEGER, jobid TEXT, reason TEXT
);
CREATE INDEX IF NOT EXISTS instances_step_state ON instances (step, state);
CREATE TABLE IF NOT EXISTS parameters (position INTEGER PRIMARY KEY, name TEXT NOT NULL, "values" TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Record:
    """An instance as the conductor needs it back from the store (on start and on resume)."""

    id: int
    step: str
    label: str
    workspace: str
    script: str
    restart: str | None
    resources: dict[str, Any]
    parents: tuple[int, ...]
    state: str
    attempts: int
    pid: int | None


class Store:
    """Open (or create) a study's database. ``path`` is the database file.

    A store without tables (its creator was killed before the first commit) gets them: it
    then reads as a study whose set-up never finished (no ``state`` in its meta), which a
    campaign prepares again and ``status`` shows as empty, instead of failing on a missing table.
    """

    def __init__(self, path: str | Path, create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise LegatoError(f"{self.path.parent}: not a legato study folder (no {DB_NAME})")
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            if not self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
                self.db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as exc:
            raise LegatoError(f"{self.path}: cannot open the study database: {exc}") from None

    @classmethod
    def of_study(cls, folder: str | Path, create: bool = False) -> "Store":
        return cls(Path(folder) / DB_NAME, create=create)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- meta -------------------------------------------------------------------------------
    def set_meta(self, **values: Any) -> None:
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [(key, json.dumps(value)) for key, value in values.items()],
            )

    def meta(self) -> dict[str, Any]:
        return {key: json.loads(value) for key, value in self.db.execute("SELECT key, value FROM meta")}

    # -- writing a planned study ------------------------------------------------------------
    def add_step(self, name: str, position: int, first_id: int, instances: int, funnel_parents: list[str], folder: str) -> None:
        self.db.execute(
            "INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?)",
            (name, position, first_id, instances, json.dumps(funnel_parents), folder),
        )

    def add_instances(self, rows: Iterable[tuple]) -> None:
        """Rows of (id, step, label, row, workspace, params, script, restart, resources, parents)."""
        self.db.executemany(
            "INSERT INTO instances (id, step, label, row, workspace, params, script, restart, resources, parents) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def add_parameters(self, columns: dict[str, list[str]], index: list[str] | None) -> None:
        """The parameter table, one JSON list per column (a row of JSON each would cost ~10x more).

        A row source's index column is kept as the column named ``None`` (position -1).
        """
        rows = [(position, name, json.dumps(values)) for position, (name, values) in enumerate(columns.items())]
        if index is not None:
            rows.append((-1, "", json.dumps(index)))
        self.db.executemany('INSERT INTO parameters (position, name, "values") VALUES (?, ?, ?)', rows)

    def parameter_rows(self) -> tuple[list[dict[str, str]], list[str] | None]:
        """Every combination's parameters (row by row) and the row source's index values, if any."""
        columns, index = {}, None
        for position, name, values in self.db.execute('SELECT position, name, "values" FROM parameters ORDER BY position'):
            if position < 0:
                index = json.loads(values)
            else:
                columns[name] = json.loads(values)
        length = len(next(iter(columns.values()))) if columns else 0
        return [{name: values[row] for name, values in columns.items()} for row in range(length)], index

    def transaction(self) -> "_Transaction":
        return _Transaction(self.db, self.path)

    # -- state changes ----------------------------------------------------------------------
    def update_many(self, changes: list[dict[str, Any]]) -> None:
        """Apply many instance changes in one transaction; each dict has ``id`` plus columns.

        Changes are grouped by their keys as they come (one statement per group, with numbered
        parameters in that order), so that a flush of a conductor's changes, which share a few
        shapes, costs SQLite's work and little more.
        """
        if not changes:
            return
        groups: dict[tuple[str, ...], list[tuple]] = {}
        for change in changes:
            groups.setdefault(tuple(change), []).append(tuple(change.values()))
        with self.transaction():
            for columns, rows in groups.items():
                assignments = ", ".join(f"{column} = ?{n}" for n, column in enumerate(columns, 1) if column != "id")
                self.db.executemany(f"UPDATE instances SET {assignments} WHERE id = ?{columns.index('id') + 1}", rows)

    # -- reading ----------------------------------------------------------------------------
    def steps(self) -> list[dict[str, Any]]:
        cursor = self.db.execute(
            "SELECT name, position, first_id, instances, funnel_parents, folder FROM steps ORDER BY position"
        )
        return [
            {"name": n, "position": p, "first_id": f, "instances": c, "funnel_parents": json.loads(fp), "folder": d}
            for n, p, f, c, fp, d in cursor
        ]

    def records(self) -> Iterator[Record]:
        cursor = self.db.execute(
            "SELECT id, step, label, workspace, script, restart, resources, parents, state, attempts, pid "
            "FROM instances ORDER BY id"
        )
        for row in cursor:
            yield Record(
                row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6] or "{}"),
                tuple(json.loads(row[7] or "[]")), row[8], row[9], row[10],
            )

    def counts(self) -> dict[str, dict[str, int]]:
        """``{step: {state: n}}`` from the (step, state) index: fast on millions of instances."""
        counts: dict[str, dict[str, int]] = {}
        for step, state, n in self.db.execute("SELECT step, state, count(*) FROM instances GROUP BY step, state"):
            counts.setdefault(step, {})[state] = n
        return counts

    def select(self, states: Iterable[str] = (), steps: Iterable[str] = (), limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Instances matching the filters, for ``status --state/--step`` and status.csv."""
        where, args = [], []
        for column, values in (("state", list(states)), ("step", list(steps))):
            if values:
                where.append(f"{column} IN ({', '.join('?' * len(values))})")
                args.extend(values)
        sql = (
            "SELECT id, step, label, workspace, params, state, attempts, returncode, started, ended, pid, jobid, reason "
            "FROM instances" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        columns = ("id", "step", "label", "workspace", "params", "state", "attempts", "returncode",
                   "started", "ended", "pid", "jobid", "reason")
        for row in self.db.execute(sql, args):
            record = dict(zip(columns, row))
            record["params"] = json.loads(record["params"] or "{}")
            yield record


class ChangeWriter:
    """Writes a conductor's batches of instance changes from a thread of its own, on a connection
    of its own: while a commit waits for the disk (SQLite lets go of the GIL), the conductor goes
    on feeding the workers, whose queues would otherwise run dry.

    An error (a full disk, a lost database) is raised, as a ``LegatoError``, by the next call.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._batches: queue.SimpleQueue = queue.SimpleQueue()
        self._error: LegatoError | None = None
        self._thread = threading.Thread(target=self._run, name="legato-store-writer", daemon=True)
        self._thread.start()

    def write(self, changes: list[dict[str, Any]]) -> None:
        self._raise()
        if changes:
            self._batches.put(changes)

    def close(self) -> None:
        if self._thread.is_alive():
            self._batches.put(None)
            self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        store = None
        while (batch := self._batches.get()) is not None:
            if self._error is None:
                try:
                    store = store or Store(self.path)
                    store.update_many(batch)
                except LegatoError as exc:
                    self._error = exc
        if store is not None:
            store.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``: one fsync for a whole batch of writes.

    Every write of the store goes through one, so SQLite's errors in it (a full disk above
    all) leave the transaction rolled back and reach the user as one ``LegatoError``.
    """

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db = db
        self.path = path

    def __enter__(self) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        except sqlite3.Error as error:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise self._error(exc if isinstance(exc, sqlite3.Error) else error) from None
        if isinstance(exc, sqlite3.Error):
            raise self._error(exc) from None

    def _error(self, exc: sqlite3.Error) -> LegatoError:
        return LegatoError(f"{self.path}: cannot write the study database: {exc}")
