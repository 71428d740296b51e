"""The campaign's ledger: one SQLite file in the campaign folder recording each batch's stage.

Every stage change is committed before the work of the next stage begins, so a driver killed
at any moment resumes each batch from where its ledger entry says it was. Every statement goes
through ``Ledger.db``, which turns SQLite's errors (a full disk above all) into one
``LegatoError`` naming the ledger, so that the driver's own bookkeeping never ends in a traceback.
A new ledger is written under a temporary name and renamed into place with its options saved:
a campaign folder holds a complete ledger or none.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from legato.campaign.options import CampaignOptions
from legato.errors import LegatoError

LEDGER = "campaign.db"
PARTIAL = f"{LEDGER}.partial"
"""The name a new ledger is built under; a folder holding only this is a campaign that never started."""


LEDGER_VERSION = 2
"""SQLite's user_version of a ledger this code reads (2: one instances row per source row, failed_rows per batch)."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS batches (
    number INTEGER PRIMARY KEY, start INTEGER NOT NULL, nrows INTEGER NOT NULL, phase TEXT NOT NULL,
    study TEXT NOT NULL, finished INTEGER, failed INTEGER, archive TEXT, sha256 TEXT, archive_bytes INTEGER,
    members INTEGER, started REAL, ended REAL, retry_of INTEGER, failed_rows INTEGER
);
CREATE TABLE IF NOT EXISTS instances (
    batch INTEGER NOT NULL, step TEXT NOT NULL, label TEXT NOT NULL, row_index TEXT, state TEXT NOT NULL,
    reason TEXT, workspace TEXT NOT NULL, params TEXT
);
CREATE INDEX IF NOT EXISTS instances_batch ON instances (batch);
CREATE INDEX IF NOT EXISTS instances_label ON instances (label);
"""


# A row whose instances all finished, or are pending because their step is outside the campaign's
# --only/--from/--until, did not fail.
_FAILED_ROWS = """
SELECT (SELECT count(*) FROM (SELECT DISTINCT row_index FROM instances
                              WHERE batch = :batch AND state NOT IN ('finished', 'retried', 'pending')
                                AND params IS NOT NULL))
     + (SELECT count(*) FROM instances
        WHERE batch = :batch AND params IS NULL AND state IN ('failed', 'timedout', 'cancelled'))
"""


@dataclass(frozen=True)
class Batch:
    number: int
    start: int
    nrows: int
    phase: str
    study: Path


class LedgerConnection:
    """The ledger's SQLite connection, whose errors are ``LegatoError``s naming the ledger file.

    It offers what the driver uses of a connection: ``execute``, ``executemany`` and ``with``
    (commit, or roll back on an error).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.doing = "read"  # what a failure could not do: "read" while opening, "update" once open
        self._db = self._call(sqlite3.connect, path, isolation_level=None, timeout=30)

    def _call(self, function, *args, **kwargs) -> Any:
        try:
            return function(*args, **kwargs)
        except sqlite3.Error as exc:
            raise LegatoError(f"{self.path}: cannot {self.doing} the campaign ledger: {exc}") from None

    def execute(self, sql: str, args: Any = ()) -> sqlite3.Cursor:
        return self._call(self._db.execute, sql, args)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        return self._call(self._db.executemany, sql, rows)

    def executescript(self, sql: str) -> None:
        self._call(self._db.executescript, sql)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "LedgerConnection":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._call(self._db.__exit__, exc_type, exc, tb)


class Ledger:
    """The campaign's record of batches and phases (one SQLite file in the campaign folder)."""

    def __init__(self, folder: Path, create: bool = False, *, path: Path | None = None) -> None:
        self.folder = folder
        path = path or folder / LEDGER
        if not create and not path.is_file():
            raise LegatoError(f"{folder}: not a legato campaign folder (no {LEDGER})")
        self.db = LedgerConnection(path)
        try:
            self._check_version(path)
            self.db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
        except LegatoError:
            self.db.close()
            raise
        self.db.doing = "update"

    def _check_version(self, path: Path) -> None:
        """A new ledger gets this code's format; an existing one must have it (its tables would not fit)."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'batches'").fetchone():
            self.db.execute(f"PRAGMA user_version = {LEDGER_VERSION}")
        elif version != LEDGER_VERSION:
            raise LegatoError(f"{path}: ledger format {version}, this legato reads format {LEDGER_VERSION}; "
                              "finish the campaign with the legato version that started it")

    @classmethod
    def create(cls, folder: Path, options: CampaignOptions, **values) -> None:
        """A new campaign's ledger with its options and ``values`` saved, appearing whole under its name or not at all."""
        partial = folder / PARTIAL
        for leftover in folder.glob(f"{PARTIAL}*"):
            leftover.unlink()
        ledger = cls(folder, create=True, path=partial)
        try:
            save_options(ledger, options)
            ledger.set(**values)
        finally:
            ledger.close()  # the last connection: SQLite folds the WAL back into the file
        os.replace(partial, folder / LEDGER)

    def close(self) -> None:
        self.db.close()

    def set(self, **values) -> None:
        self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()])

    def get(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def batches(self, unfinished: bool = False) -> list[Batch]:
        sql = "SELECT number, start, nrows, phase, study FROM batches"
        sql += " WHERE phase != 'cleaned'" if unfinished else ""
        return [Batch(n, s, r, p, Path(d)) for n, s, r, p, d in self.db.execute(sql + " ORDER BY number")]

    def batch(self, number: int) -> Batch:
        n, s, r, p, d = self.db.execute("SELECT number, start, nrows, phase, study FROM batches WHERE number = ?",
                                        (number,)).fetchone()
        return Batch(n, s, r, p, Path(d))

    def add_batch(self, number: int, start: int, nrows: int, study: Path, retry_of: int | None = None) -> Batch:
        self.db.execute(
            "INSERT INTO batches (number, start, nrows, phase, study, started, retry_of) VALUES (?, ?, ?, 'planned', ?, ?, ?)",
            (number, start, nrows, str(study), time.time(), retry_of),
        )
        return Batch(number, start, nrows, "planned", study)

    def advance(self, batch: Batch, phase: str, **columns) -> Batch:
        assignments = ", ".join(f"{key} = ?" for key in ["phase", *columns])
        self.db.execute(f"UPDATE batches SET {assignments} WHERE number = ?", (phase, *columns.values(), batch.number))
        return Batch(batch.number, batch.start, batch.nrows, phase, batch.study)

    def retry_of(self, number: int) -> int | None:
        """The batch whose failed rows batch ``number`` runs again, if it is a retry batch."""
        return self.db.execute("SELECT retry_of FROM batches WHERE number = ?", (number,)).fetchone()[0]

    def next_start(self) -> int:
        row = self.db.execute("SELECT max(start + nrows) FROM batches WHERE retry_of IS NULL").fetchone()
        return row[0] or 0

    def next_number(self) -> int:
        return (self.db.execute("SELECT max(number) FROM batches").fetchone()[0] or 0) + 1

    def progress(self) -> tuple[int, int, int]:
        """(batches, rows, archive bytes) done; a retry batch adds bytes but no rows: its rows were counted once already."""
        done, rows, archived = self.db.execute(
            "SELECT sum(retry_of IS NULL), sum(CASE WHEN retry_of IS NULL THEN nrows END), sum(archive_bytes) "
            "FROM batches WHERE phase = 'cleaned'").fetchone()
        return done or 0, rows or 0, archived or 0

    def failed_rows(self) -> int:
        """Rows of finished batches that some step did not finish, plus failed steps that stand for no row (funnels).

        Each batch keeps its own count (set when harvested, cleared when retried), so this stays
        one small sum however many instances the ledger holds.
        """
        return self.db.execute("SELECT coalesce(sum(failed_rows), 0) FROM batches WHERE phase = 'cleaned'").fetchone()[0]

    def count_failed(self, number: int) -> None:
        """Store batch ``number``'s failed rows; a skipped funnel is not counted: the failure that skipped it is."""
        self.db.execute("UPDATE batches SET failed_rows = (" + _FAILED_ROWS + ") WHERE number = :batch", {"batch": number})


def options_of(ledger: Ledger) -> CampaignOptions:
    saved = ledger.get("options")
    if saved is None:  # a ledger of an older legato killed before it saved the options: nothing ran
        raise LegatoError(f"{ledger.folder}: the campaign never started (no options saved); "
                          "start it again with the same legato batch command, which replaces this folder")
    return CampaignOptions(**saved)


def never_started(folder: Path) -> bool:
    """A folder left by a ``legato batch`` killed before its ledger was whole: only a partial ledger, or one without options."""
    names = {entry.name for entry in folder.iterdir()}
    if not names or not all(name.startswith(LEDGER) or name == ".campaign.lock" for name in names):
        return False  # anything else in the folder is not ours to remove
    if LEDGER not in names:
        return True
    ledger = Ledger(folder)
    try:
        return ledger.get("options") is None and not ledger.batches()
    finally:
        ledger.close()


def save_options(ledger: Ledger, options: CampaignOptions) -> None:
    ledger.set(options=asdict(options))
