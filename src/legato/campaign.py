"""Batch campaigns: a study over many parameter rows, B rows at a time.

Each batch goes through the phases run -> harvest -> archive -> clean, and the ledger (the
campaign's own SQLite file) records each phase before the next begins. A campaign killed at
any moment therefore resumes at the phase it was in: a batch whose results were committed is
never run again, an archive is only trusted once verified, and a workspace is only deleted
after both. Rows come from a pgen (given START and NROWS per batch, so existing pgens batch
unchanged) or from a CSV/SQL row source read a page at a time.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from legato import api, parameters
from legato.errors import LegatoError
from legato.spec import ResultFile, Spec, load_spec
from legato.store import Store
from legato.selection import StepSelection
from legato.study import study_env

if TYPE_CHECKING:
    from legato.rows import RowSource

LEDGER = "campaign.db"
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
_FAILED_ROWS = """
SELECT (SELECT count(*) FROM (SELECT DISTINCT row_index FROM instances
                              WHERE batch = :batch AND state NOT IN ('finished', 'retried') AND params IS NOT NULL))
     + (SELECT count(*) FROM instances
        WHERE batch = :batch AND params IS NULL AND state IN ('failed', 'timedout', 'cancelled'))
"""


@dataclass
class CampaignOptions:
    """Everything a campaign needs to resume as it started; saved in the ledger."""

    spec: str
    batch_size: int
    pgen: str | None = None
    pargs: list[str] = field(default_factory=list)
    rows: str | None = None
    index: str | None = None
    max_rows: int | None = None
    results: str | None = None
    result_files: list[str] = field(default_factory=list)  # STEP:FILE[:FORMAT]
    archive: str | None = None
    archive_format: str = "tar.gz"
    no_archive: bool = False
    keep_workspace: bool = False
    on_failure: str = "continue"
    min_free: int = 1 << 30
    min_inodes: int = 100_000
    layout: str = "tree"
    fanout: int = 1000
    cwd: str = field(default_factory=os.getcwd)
    only: list[str] = field(default_factory=list)  # --only/--from/--until: the steps each batch runs
    start: str | None = None
    until: str | None = None

    def steps(self) -> StepSelection:
        return StepSelection(tuple(self.only), self.start, self.until)


@dataclass(frozen=True)
class Batch:
    number: int
    start: int
    nrows: int
    phase: str
    study: Path


@dataclass
class CampaignOutcome:
    """What the CLI reports when a campaign stops (finished, stopped on failure, or cancelled)."""

    folder: Path
    batches: int
    rows: int
    failed: int
    seconds: float
    stopped: str | None = None
    ran: int = 0  # rows (retried ones included) this process took through to cleaned: what the rate is made of
    log: Path | None = None  # set when the driver went to the background

    @property
    def ok(self) -> bool:
        return not self.failed and not self.stopped

    def summary(self) -> list[str]:
        if self.log:
            return [f"campaign driver started in the background; log: {self.log}",
                    f"follow it with: legato status {self.folder}"]
        rate = self.ran / self.seconds if self.seconds else 0.0
        this_run = f" ({self.ran} this run)" if self.ran != self.rows else ""
        lines = [f"{self.batches} batches, {self.rows} rows ({self.failed} failed){this_run} in {self.seconds:.1f} s, "
                 f"{rate:.1f} rows/s"]
        if self.stopped:
            lines.append(f"stopped: {self.stopped}; continue with: legato batch --resume {self.folder}")
        elif self.failed:
            lines.append(f"failed rows: legato status {self.folder} --state failed; "
                         f"rerun them: legato batch --resume {self.folder} --retry-failed")
        return lines


class Ledger:
    """The campaign's record of batches and phases (one SQLite file in the campaign folder)."""

    def __init__(self, folder: Path, create: bool = False) -> None:
        self.folder = folder
        path = folder / LEDGER
        if not create and not path.is_file():
            raise LegatoError(f"{folder}: not a legato campaign folder (no {LEDGER})")
        try:
            self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self._check_version(path)
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise LegatoError(f"{path}: cannot read the campaign ledger: {exc}") from None

    def _check_version(self, path: Path) -> None:
        """A new ledger gets this code's format; an existing one must have it (its tables would not fit)."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'batches'").fetchone():
            self.db.execute(f"PRAGMA user_version = {LEDGER_VERSION}")
        elif version != LEDGER_VERSION:
            self.db.close()
            raise LegatoError(f"{path}: ledger format {version}, this legato reads format {LEDGER_VERSION}; "
                              "finish the campaign with the legato version that started it")

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


class Campaign:
    """Drives the batches of one campaign folder; ``run()`` goes until the rows run out."""

    def __init__(self, folder: Path, options: CampaignOptions, ledger: Ledger, execution: dict | None = None,
                 log: Callable[[str], None] = print) -> None:
        self.folder = folder
        self.options = options
        self.ledger = ledger
        self.execution = execution or {}  # api.execute's keywords: jobs, throttle, attempts, cluster
        self.log = log
        self.spec = load_spec(options.spec)
        self.result_files = _result_files(self.spec, options.result_files)
        self.name = folder.name
        self.source: RowSource | None = None
        self.sink = None
        self.started = time.time()
        self.ran = 0
        self.cancelled = False

    # -- the loop -------------------------------------------------------------------------------
    def run(self, retry_failed: bool = False) -> CampaignOutcome:
        from legato.harvest import ResultSink

        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        self.ledger.set(reason=None)
        try:
            self.sink = ResultSink(self.options.results or f"sqlite:///{self.folder / 'results.db'}")
            outcome = self._outcome(self._loop(retry_failed))
        except LegatoError as error:
            self.ledger.set(state="stopped", reason=str(error))  # a full disk or a lost database: resumable
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.sink:
                self.sink.close()
            if self.source:
                self.source.close()
        self.ledger.set(reason=outcome.stopped)
        return outcome

    def _loop(self, retry_failed: bool) -> str | None:
        """Unfinished batches first, then retries, then new batches until the rows run out; why it stopped, if it did."""
        if self.ledger.get("total_rows") is None and (self.options.rows or self._spec_rows()):
            total = self._source().count() if self.options.rows else parameters.spec_rows(self.spec)
            self.ledger.set(total_rows=min(total, self.options.max_rows) if self.options.max_rows else total)
        for batch in self.ledger.batches(unfinished=True):
            if not self._process(batch):
                return "cancelled"
        if not self._retry_failed(rerun=retry_failed):
            return "cancelled"
        while not self.ledger.get("exhausted", False):
            stop = "cancelled" if self.cancelled else self._next_batch()
            if stop:
                return stop
        return None

    def _on_signal(self, signum, frame) -> None:
        """SIGTERM (legato cancel) or Ctrl-C: stop after the current phase (the conductor handles its own)."""
        self.cancelled = True

    def _next_batch(self) -> str | None:
        """Plan, run and finish one batch; a reason to stop, or None to go on."""
        self._guard()
        start = self.ledger.next_start()
        wanted = self.options.batch_size
        if self.options.max_rows is not None:
            wanted = min(wanted, self.options.max_rows - start)
        table = self._table(start, wanted) if wanted > 0 else parameters.ParameterTable()
        if table.length > wanted:
            raise LegatoError(f"{self.options.pgen}: gave {table.length} rows for START={start} NROWS={wanted}; "
                              "a campaign's pgen must return only the NROWS rows from row START on")
        if table.length == 0:
            self.ledger.set(exhausted=True)
            return None
        number = self.ledger.next_number()
        batch = self.ledger.add_batch(number, start, table.length, self.folder / "work" / f"batch-{number:06d}")
        if table.length < self.options.batch_size or (self.options.max_rows and start + table.length >= self.options.max_rows):
            self.ledger.set(exhausted=True)
        if not self._process(batch, table):
            return "cancelled"
        if self.options.on_failure == "stop" and self._failed(batch.number):
            return f"batch {batch.number} has failed rows (--on-failure stop)"
        return None

    def _process(self, batch: Batch, table: parameters.ParameterTable | None = None) -> bool:
        """Take a batch from whatever phase the ledger says through to cleaned; False if cancelled."""
        if batch.phase == "planned":
            outcome = self._run(batch, table)
            if outcome.cancelled:
                return False
            batch = self.ledger.advance(batch, "ran", finished=outcome.counts.get("finished", 0),
                                        failed=sum(n for s, n in outcome.counts.items() if s != "finished"))
        for phase, step in (("ran", self._harvest), ("harvested", self._archive), ("archived", self._clean)):
            if self.cancelled:
                return False
            if batch.phase == phase:
                batch = step(batch)
        self.ran += batch.nrows
        self._report(batch)
        return True

    # -- phases ---------------------------------------------------------------------------------
    def _run(self, batch: Batch, table: parameters.ParameterTable | None):
        meta = _study_state(batch.study)
        if meta in (None, "preparing"):
            if table is None:
                table = self._batch_table(batch)
            if batch.study.exists():
                shutil.rmtree(batch.study)  # a prepare cut short: the campaign owns its work folder
            api.prepare(self.options.spec, out=batch.study, replace=True, table=table,
                        layout=self.options.layout, fanout=self.options.fanout, steps=self.options.steps())
        return api.execute(batch.study, progress=False, steps=self.options.steps(), **self.execution)

    def _harvest(self, batch: Batch) -> Batch:
        rows, members = self._collect(batch)
        self.sink.write(self.name, batch.number, rows)
        with self.ledger.db:
            self.ledger.db.execute("BEGIN IMMEDIATE")
            self.ledger.db.execute("DELETE FROM instances WHERE batch = ?", (batch.number,))
            self.ledger.db.executemany("INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?)", members)
            self.ledger.count_failed(batch.number)
            return self.ledger.advance(batch, "harvested")

    def _collect(self, batch: Batch) -> tuple[list[dict], list[tuple]]:
        """One results row per source row and step, plus the ledger's record of where each instance lives.

        Rows whose parameters a step does not tell apart share one instance (Maestro's rules), so
        each of those rows gets that instance's state and results under its own index.
        """
        rows, members = [], []
        with Store.of_study(batch.study) as store:
            table, indexes = store.parameter_rows()
            cursor = store.db.execute(
                "SELECT step, label, row, workspace, state, returncode, started, ended, reason, params FROM instances ORDER BY id"
            )
            for _, instances in itertools.groupby(cursor, key=lambda record: record[0]):
                for record, shared in _source_rows(list(instances), table):
                    step, label, _, workspace, state, rc, started, ended, reason, _ = record
                    results = self._results(batch.study / workspace, step)
                    for row in shared:
                        values = table[row] if row is not None else {}
                        index = None if row is None else indexes[row] if indexes else str(batch.start + row)
                        rows.append({"step": step, "label": label, "index": index, "state": state, "returncode": rc,
                                     "started": started, "ended": ended, "reason": reason, "params": values,
                                     "results": results})
                        kept = json.dumps(values) if state != "finished" and row is not None else None
                        members.append((batch.number, step, label, index, state, reason, workspace, kept))
        return rows, members

    def _results(self, folder: Path, step: str) -> dict[str, object]:
        """The declared result files of one instance, parsed and merged."""
        from legato.harvest import parse_results

        results: dict[str, object] = {}
        for declared in self.result_files.get(step, ()):
            results.update(parse_results(str(folder / declared.file), declared.format))
        return results

    def _archive(self, batch: Batch) -> Batch:
        if self.options.no_archive:
            return self.ledger.advance(batch, "archived")
        from legato.archive import write_archive

        folder = Path(self.options.archive) / self.name if self.options.archive else self.folder / "archives"
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / f"{batch.study.name}.{self.options.archive_format}"
        Path(f"{dest}.partial").unlink(missing_ok=True)
        info = write_archive(str(batch.study), str(dest), self.options.archive_format)
        return self.ledger.advance(batch, "archived", archive=info.path, sha256=info.sha256,
                                   archive_bytes=info.bytes, members=info.members)

    def _clean(self, batch: Batch) -> Batch:
        if not self.options.keep_workspace and batch.study.exists():
            shutil.rmtree(batch.study)
        return self.ledger.advance(batch, "cleaned", ended=time.time())

    # -- rows ------------------------------------------------------------------------------------
    def _table(self, start: int, nrows: int) -> parameters.ParameterTable:
        if self.options.rows:
            return self._rows_table(start, nrows)
        if self.options.pgen:
            pargs = parameters.parse_pargs(self.options.pargs)
            pargs.update(START=str(start), NROWS=str(nrows))
            env = study_env(self.spec, self.folder / "work")
            return parameters.from_pgen(self.options.pgen, env, pargs, self.spec.raw_variables)
        if self._spec_rows():
            return parameters.from_spec(self.spec, start, nrows)
        raise LegatoError("a campaign needs rows: --rows SOURCE, --pgen FILE or the spec's legato.product")

    def _spec_rows(self) -> bool:
        """A spec with a ``legato.product`` is its own row source when no --rows or --pgen is given."""
        return bool(self.spec.product) and not self.options.pgen

    def _source(self) -> RowSource:
        from legato.rows import open_rows

        if self.source is None:
            assert self.options.rows is not None, "only a campaign over --rows has a row source"
            self.source = open_rows(self.options.rows, self.options.index)
        return self.source

    def _rows_table(self, start: int, nrows: int) -> parameters.ParameterTable:
        source = self._source()
        rows = source.read(start, nrows)
        table = parameters.ParameterTable()
        for column in source.columns:
            if column != self.options.index:
                table.add(column.strip().upper(), [row[column] for row in rows])
        if self.options.index:
            table.index = [row[self.options.index] for row in rows]
        if not table.values:
            table.add("ROW", [str(start + i) for i in range(len(rows))])
        return table

    def _batch_table(self, batch: Batch) -> parameters.ParameterTable:
        """Re-read a planned batch's rows on resume; a retry batch's rows come from the ledger."""
        retry_of = self.ledger.db.execute("SELECT retry_of FROM batches WHERE number = ?", (batch.number,)).fetchone()[0]
        if retry_of is None:
            return self._table(batch.start, batch.nrows)
        return _failed_table(self.ledger, retry_of)

    # -- failures, guard, report ---------------------------------------------------------------
    def _failed(self, number: int) -> int:
        return self.ledger.db.execute(
            "SELECT count(*) FROM instances WHERE batch = ? AND state NOT IN ('finished', 'retried')", (number,)
        ).fetchone()[0]

    def _retry_failed(self, rerun: bool) -> bool:
        """Run the failed rows of each batch again (``rerun``), as retry batches whose results replace theirs.

        A retry batch that finished before a crash is not run again: only the bookkeeping that
        retires the original failed rows is completed, so no row is ever harvested twice.
        """
        failed = [n for (n,) in self.ledger.db.execute(
            "SELECT number FROM batches WHERE failed_rows > 0 AND EXISTS (SELECT 1 FROM instances WHERE batch = number "
            "AND state NOT IN ('finished', 'retried') AND params IS NOT NULL) ORDER BY number")]
        for number in failed:
            done = self.ledger.db.execute("SELECT count(*) FROM batches WHERE retry_of = ?", (number,)).fetchone()[0]
            if not done:
                if not rerun:
                    continue
                self._guard()
                table = _failed_table(self.ledger, number)
                retry = self.ledger.next_number()
                study = self.folder / "work" / f"batch-{retry:06d}"
                if not self._process(self.ledger.add_batch(retry, 0, table.length, study, retry_of=number), table):
                    return False
            self._retire(number)
        return True

    def _retire(self, number: int) -> None:
        """Batch ``number``'s failed rows have new results in a retry batch: their old instances go, every step of them.

        The other unfinished instances of the batch (a funnel skipped because of them) go too:
        the retry batch ran its own. Both writes are idempotent, so a crash in between is harmless.
        """
        rows = list(_failed_rows(self.ledger, number))
        self.sink.drop_failed(self.name, number, rows)
        with self.ledger.db:
            self.ledger.db.execute("BEGIN IMMEDIATE")
            self.ledger.db.execute("UPDATE instances SET state = 'retried' WHERE batch = ? AND state != 'finished'", (number,))
            self.ledger.db.executemany("UPDATE instances SET state = 'retried' WHERE batch = ? AND row_index = ?",
                                       [(number, index) for index in rows])
            self.ledger.count_failed(number)

    def _guard(self) -> None:
        from legato.diskguard import check_room

        paths = [str(self.folder)]
        if self.options.archive and not self.options.no_archive:
            paths.append(self.options.archive)
        check_room(paths, self.options.min_free, self.options.min_inodes)

    def _report(self, batch: Batch) -> None:
        from legato.diskguard import human_size

        done, rows, archived = self.ledger.progress()
        retry = " (retry)" if self._is_retry(batch) else ""
        self.log(f"batch {batch.number}{retry}: {batch.nrows} rows done; campaign: {done} batches, {rows} rows, "
                 f"{self.ledger.failed_rows()} failed, {human_size(archived)} archived")

    def _is_retry(self, batch: Batch) -> bool:
        return self.ledger.db.execute("SELECT retry_of FROM batches WHERE number = ?", (batch.number,)).fetchone()[0] is not None

    def _outcome(self, stopped: str | None) -> CampaignOutcome:
        done, rows, _ = self.ledger.progress()
        return CampaignOutcome(self.folder, done, rows, self.ledger.failed_rows(), time.time() - self.started, stopped,
                               self.ran)


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


def _failed_rows(ledger: Ledger, number: int) -> dict[str, dict[str, str]]:
    """Row index -> parameters of every row of batch ``number`` that some step did not finish (once per row)."""
    rows: dict[str, dict[str, str]] = {}
    for index, params in ledger.db.execute(
            "SELECT row_index, params FROM instances WHERE batch = ? AND state NOT IN ('finished', 'retried') "
            "AND params IS NOT NULL ORDER BY rowid", (number,)):
        rows.setdefault(index, json.loads(params))
    return rows


def _failed_table(ledger: Ledger, number: int) -> parameters.ParameterTable:
    rows = _failed_rows(ledger, number)
    table = parameters.ParameterTable()
    for name in next(iter(rows.values()), {}):
        table.add(name, [values[name] for values in rows.values()])
    table.index = list(rows)
    return table


def _study_state(study: Path) -> str | None:
    if not (study / "legato.db").is_file():
        return None
    with Store.of_study(study) as store:
        return store.meta().get("state")


def _result_files(spec: Spec, cli: list[str]) -> dict[str, tuple[ResultFile, ...]]:
    """The spec's ``legato.results`` plus ``--result STEP:FILE[:FORMAT]`` entries.

    A misspelt step would otherwise harvest nothing, silently, for the whole campaign.
    """
    files = {step: list(entries) for step, entries in spec.results.items()}
    steps = {step.name for step in spec.steps}
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


def options_of(ledger: Ledger) -> CampaignOptions:
    saved = ledger.get("options")
    if saved is None:  # killed between creating the ledger and saving the options: nothing ran
        raise LegatoError(f"{ledger.folder}: the campaign never started (no options saved); delete the folder and start it again")
    return CampaignOptions(**saved)


def save_options(ledger: Ledger, options: CampaignOptions) -> None:
    ledger.set(options=asdict(options))
