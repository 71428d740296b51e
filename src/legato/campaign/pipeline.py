"""Batch campaigns: a study over many parameter rows, B rows at a time.

Each batch goes through the phases run -> harvest -> archive -> clean, and the ledger (the
campaign's own SQLite file) records each phase before the next begins. A campaign killed at
any moment therefore resumes at the phase it was in: a batch whose results were committed is
never run again, an archive is only trusted once verified, and a workspace is only deleted
after both. Rows come from a pgen (given START and NROWS per batch, so existing pgens batch
unchanged) or from a CSV/SQL row source read a page at a time.
"""
from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from legato import parameters
from legato.campaign.harvest import ResultSink, collect, result_files
from legato.campaign.ledger import Batch, Ledger
from legato.campaign.options import CampaignOptions, CampaignOutcome
from legato.campaign.study_harvest import judge, keep_failed, parse_rules
from legato.errors import LegatoError
from legato.launch import execute
from legato.prepare import prepare
from legato.spec import load_spec
from legato.store import Store
from legato.study import study_env

if TYPE_CHECKING:
    from legato.campaign.rows import RowSource


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
        self.result_files = result_files(self.spec, options.result_files)
        self.rules = parse_rules(options.success, {step.name for step in self.spec.steps})
        self.name = folder.name
        self.source: RowSource | None = None
        self.sink = None
        self.started = time.time()
        self.ran = 0
        self.cancelled = False

    # -- the loop -------------------------------------------------------------------------------
    def run(self, retry_failed: bool = False) -> CampaignOutcome:

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
        if self.ledger.get("total_rows") is None and self.options.rows:
            total = self._source().count()
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
            prepare(self.options.spec, out=batch.study, replace=True, table=table,
                        layout=self.options.layout, fanout=self.options.fanout)
        return execute(batch.study, progress=False, **self.execution)

    def _harvest(self, batch: Batch) -> Batch:
        rows, members = judge(batch.study, *collect(batch.study, batch.number, batch.start, self.result_files), self.rules)
        if self.options.keep_failed:
            keep_failed(batch.study, members, self.folder / "failed" / batch.study.name)
        self.sink.write(self.name, batch.number, rows)
        with self.ledger.db:
            self.ledger.db.execute("BEGIN IMMEDIATE")
            self.ledger.db.execute("DELETE FROM instances WHERE batch = ?", (batch.number,))
            self.ledger.db.executemany("INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?)", members)
            self.ledger.count_failed(batch.number)
            return self.ledger.advance(batch, "harvested")

    def _archive(self, batch: Batch) -> Batch:
        if self.options.no_archive:
            return self.ledger.advance(batch, "archived")
        from legato.campaign.archive import archive_batch

        folder = Path(self.options.archive) / self.name if self.options.archive else self.folder / "archives"
        folder.mkdir(parents=True, exist_ok=True)
        info = archive_batch(batch.study, folder, self.options.archive_mode, self.options.archive_format)
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
            return parameters.from_pgen(self.options.pgen, env, pargs)
        raise LegatoError("a campaign needs rows: --rows SOURCE or --pgen FILE")

    def _source(self) -> RowSource:
        from legato.campaign.rows import open_rows

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
        from legato.campaign.diskguard import check_room

        paths = [str(self.folder)]
        if self.options.archive and not self.options.no_archive:
            paths.append(self.options.archive)
        check_room(paths, self.options.min_free, self.options.min_inodes)

    def _report(self, batch: Batch) -> None:
        from legato.campaign.diskguard import human_size

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


