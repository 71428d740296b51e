"""The campaign pipeline: batches flow through one executor, overlapping, never as barriers.

Three threads share the work. The *planner* reads each batch's rows and sets up its
workspace and store ahead of time, in batch order, while at most ``--window`` batch
workspaces exist. The *driver* (the main thread) keeps one executor for the whole campaign
and a conductor per batch in flight over it: earlier batches dispatch first, so a later one
fills the slots that an earlier one's tail leaves idle. The *finisher* harvests a batch whose
last instance ended, archives it (verified) and removes its workspace while later batches
run, at a lower CPU priority.

Each batch's stage is committed to the ledger before the next stage's work starts
(planned -> prepared -> running -> ran -> harvested -> archived -> cleaned), so after a kill
at any moment ``--resume`` takes every batch on from its stage: a batch set up halfway is set
up again, a running one resumes with what its store and the campaign journal recorded, a
harvested one is never harvested twice, an archive is only trusted once verified, and a
workspace is only removed after both.
"""
from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from legato import selection
from legato.campaign.batches import BatchRows, failed_rows, failed_table
from legato.campaign.diskguard import note_high_water
from legato.campaign.harvest import ResultSink, collect, result_files, stored_instances
from legato.campaign.ledger import Batch, Ledger
from legato.campaign.options import CampaignOptions, CampaignOutcome
from legato.campaign.study_harvest import judge, keep_failed, parse_rules
from legato.campaign.window import Window
from legato.conductor import Conductor
from legato.errors import LegatoError
from legato.execute.local import kill_leftovers, read_journal
from legato.execute.shared import MASK, SHIFT, SharedExecutor
from legato.launch import JOURNAL_NAME, ClusterOptions, _executor, recover_finished
from legato.parameters import ParameterTable
from legato.prepare import _scheduler_for, prepare
from legato.progress import CampaignProgress, campaign_snapshot
from legato.spec import load_spec
from legato.store import Store

if TYPE_CHECKING:
    from legato.campaign.archive import BatchArchive

BACKGROUND_NICENESS = 10
"""How much lower the planner and finisher threads run than the driver and its instances."""
_REMOVERS = 2


@dataclass
class _Flight:
    """A batch the driver runs: its ledger entry, its store and its conductor."""

    batch: Batch
    store: Store
    conductor: Conductor


class Campaign:
    """Drives one campaign folder until its rows run out, it is cancelled, or something stops it."""

    def __init__(self, folder: Path, options: CampaignOptions, ledger: Ledger, execution: dict | None = None,
                 log: Callable[[str], None] = print) -> None:
        self.folder = folder
        self.options = options
        self.ledger = ledger
        self.execution = execution or {}  # jobs, throttle, attempts, cluster
        self.log = log
        self.spec = load_spec(options.spec)
        self.files = result_files(self.spec, options.result_files)
        self.rules = parse_rules(options.success, {step.name for step in self.spec.steps})
        self.window = Window(options.window)
        self.ready: queue.Queue[Batch | None] = queue.Queue()
        self.started = time.time()
        self.cancelled = False
        self.on_progress: Callable[[CampaignProgress], None] | None = None
        self.rows_before = ledger.progress()[1]
        self.shown = self.sampled = 0.0

    def run(self, retry_failed: bool = False) -> CampaignOutcome:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        self.ledger.set(reason=None)
        try:
            stopped, ran = self._drive(retry_failed)
        except LegatoError as error:
            with contextlib.suppress(LegatoError):  # on a full disk this write may fail too: the first error says why
                self.ledger.set(state="stopped", reason=str(error))  # a full disk or a lost database: resumable
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.ledger.set(reason=stopped)
        done, rows, _ = self.ledger.progress()
        return CampaignOutcome(self.folder, done, rows, self.ledger.failed_rows(), time.time() - self.started,
                               stopped, ran)

    def _on_signal(self, signum, frame) -> None:
        """SIGTERM (``legato cancel``) or Ctrl-C: running instances are terminated, every batch keeps its stage."""
        self.cancelled = True

    # -- start-up ---------------------------------------------------------------------------------
    def _drive(self, retry_failed: bool) -> tuple[str | None, int]:
        """Resume what an earlier driver left, then stream new batches; (why it stopped, rows finished here)."""
        self._count_rows()
        unfinished = self.ledger.batches(unfinished=True)
        retries = self._retries(rerun=retry_failed)
        for batch in unfinished:
            if batch.phase != "planned":
                self.window.hold()  # its workspace is on disk already
        tag = self._claim(unfinished)
        planner = Planner(self, [b for b in unfinished if b.phase == "planned"], retries)
        finisher = Finisher(self)
        finisher.start()  # a fork: before any thread or worker shell exists
        try:
            with self._executor(tag) as executor:
                for batch in unfinished:
                    if batch.phase in ("ran", "harvested", "archived"):
                        finisher.put(batch)
                    elif batch.phase in ("prepared", "running"):
                        self.ready.put(batch)
                planner.start()
                stopped = self._loop(SharedExecutor(executor, self._throttle()), planner, finisher)
        except BaseException:
            planner.stopping = True
            finisher.cancel()  # finish the stage at hand only
            raise
        finally:
            self.window.close()
            planner.join()
            finisher.finish()
        for thread in (planner, finisher):
            if thread.error:
                raise thread.error
        return stopped or finisher.stop_reason, finisher.ran

    def _count_rows(self) -> None:
        """The campaign's total, once, for status and the ETA (a pgen cannot tell it in advance)."""
        if self.ledger.get("total_rows") is None and (self.options.rows or self.spec.product):
            rows = BatchRows(self.options, self.spec, self.folder / "work")
            try:
                self.ledger.set(total_rows=rows.count())
            finally:
                rows.close()

    def _retries(self, rerun: bool) -> list[int]:
        """Batches whose failed rows run again (``--retry-failed``), as retry batches whose results replace theirs.

        A retry batch harvested before a crash is not run again: only the bookkeeping that
        retires the original failed rows is completed, so no row is ever harvested twice.
        """
        wanted = []
        for number, retry, phase in self.ledger.db.execute(
                "SELECT b.number, r.number, r.phase FROM batches b LEFT JOIN batches r ON r.retry_of = b.number "
                "WHERE b.failed_rows > 0 AND EXISTS (SELECT 1 FROM instances WHERE batch = b.number "
                "AND state NOT IN ('finished', 'retried') AND params IS NOT NULL) ORDER BY b.number").fetchall():
            if retry is None and rerun:
                wanted.append(number)
            elif phase in ("harvested", "archived", "cleaned"):
                sink = self._sink()
                try:
                    retire(self.ledger, sink, self.folder.name, number)
                finally:
                    sink.close()
        return wanted

    def _claim(self, unfinished: list[Batch]) -> str:
        """Take over from an earlier driver: its leftover instances stop, the ends its journal saw are kept."""
        import uuid

        tag = self.ledger.get("tag")
        journal = self.folder / JOURNAL_NAME
        if tag:
            kill_leftovers(None, tag)
            ends = read_journal(str(journal))
            for batch in unfinished:
                if batch.phase == "running":
                    with Store.of_study(batch.study) as store:
                        recover_finished(store, {key & MASK: status for key, status in ends.items()
                                                 if key >> SHIFT == batch.number})
        else:
            tag = uuid.uuid4().hex
            self.ledger.set(tag=tag)
        journal.unlink(missing_ok=True)
        return tag

    def _executor(self, tag: str):
        cluster = self.execution.get("cluster") or ClusterOptions()
        scheduler = None if cluster.local else _scheduler_for(self.spec.batch)
        return _executor(self.folder, scheduler, self.execution.get("jobs"), self.execution.get("throttle", 0), tag,
                         cluster)

    def _throttle(self) -> int:
        """``-t`` for the whole campaign; a cluster executor applies it to its jobs itself."""
        cluster = self.execution.get("cluster") or ClusterOptions()
        local = cluster.local or _scheduler_for(self.spec.batch) is None
        return self.execution.get("throttle", 0) if local else 0

    def _sink(self) -> ResultSink:
        return ResultSink(self.options.results or f"sqlite:///{self.folder / 'results.db'}", index=self.options.index)

    # -- the driver's loop ------------------------------------------------------------------------
    def _loop(self, shared: SharedExecutor, planner: Planner, finisher: Finisher) -> str | None:
        flights: dict[int, _Flight] = {}
        stopping = False
        while True:
            self._admit(flights, shared)
            if not stopping and (self.cancelled or planner.error or finisher.error or finisher.stop_reason):
                stopping = True
                planner.stopping = True
                self.window.close()
                if self.cancelled:
                    finisher.cancel()
                    for flight in flights.values():
                        flight.conductor.cancel()
            if not flights:
                if stopping or (not planner.is_alive() and self.ready.empty()):
                    break
                self._wait_ready(flights, shared)
                continue
            for flight in flights.values():
                flight.conductor.dispatch()
            for namespace, event in shared.poll(0.25 if shared.in_flight else 0):
                flights[namespace].conductor.handle(event)
            for number in list(flights):
                self._tend(flights, number, finisher)
            self._progress()
        self._progress(last=True)
        return "cancelled" if self.cancelled else None

    def _progress(self, last: bool = False) -> None:
        """A snapshot for the progress display about 4 times a second; the disk's high water for the report
        every 2 s (each new high is a ledger commit, which the driver's loop should not pay 4 times a second)."""
        now = time.monotonic()
        if last or now - self.sampled >= 2.0:
            self.sampled = now
            note_high_water(self.ledger, str(self.folder))
        if self.on_progress and (last or now - self.shown >= 0.25):
            self.shown = now
            self.on_progress(campaign_snapshot(self.ledger, self.started, self.rows_before))

    def _admit(self, flights: dict[int, _Flight], shared: SharedExecutor) -> None:
        """Batches the planner set up (or a resume found) start running at once; none after a cancel."""
        while not self.cancelled:
            try:
                batch = self.ready.get_nowait()
            except queue.Empty:
                return
            store = Store.of_study(batch.study)
            store.set_meta(state="running")
            if batch.phase != "running":
                batch = self.ledger.advance(batch, "running")
            selected, _ = selection.for_study(store.meta(), self.options.steps()) if self.options.steps() else (None, [])
            conductor = Conductor(batch.study, store, shared.view(batch.number),
                                  attempts=self.execution.get("attempts", 1), selected=selected)
            conductor.open()
            flights[batch.number] = _Flight(batch, store, conductor)

    def _wait_ready(self, flights: dict[int, _Flight], shared: SharedExecutor) -> None:
        """Nothing runs: wait for the planner's next batch (or for it to end)."""
        try:
            batch = self.ready.get(timeout=0.1)
        except queue.Empty:
            return
        self.ready.put(batch)
        self._admit(flights, shared)

    def _tend(self, flights: dict[int, _Flight], number: int, finisher: Finisher) -> None:
        """Flush a batch's changes; once nothing of it is left to run, hand it to the finisher."""
        flight = flights[number]
        conductor = flight.conductor
        conductor.maybe_flush()
        if conductor.active:
            return
        conductor.close()
        del flights[number]
        counts = conductor.counts()
        cancelled = conductor.cancel_requested and (counts["pending"] or counts["cancelled"])
        ok = counts["finished"] + conductor.unselected() == sum(counts.values())
        flight.store.set_meta(state="cancelled" if cancelled else ("finished" if ok else "failed"))
        flight.store.close()
        if cancelled:
            return  # stays 'running': a resume runs what is left of it
        batch = self.ledger.advance(flight.batch, "ran", finished=counts["finished"],
                                    failed=sum(n for state, n in counts.items() if state != "finished"))
        finisher.put(batch)


class Planner(threading.Thread):
    """Sets up batches ahead of the executor, in batch order, while the window has room.

    A thread of the driver, at a lower CPU priority: setting up a batch is mostly file-system
    work (folders, the store), which leaves the interpreter lock to the driver's loop.
    """

    def __init__(self, campaign: Campaign, redo: list[Batch], retries: list[int]) -> None:
        super().__init__(name="legato-planner", daemon=True)
        self.campaign = campaign
        self.redo = redo
        self.retries = retries
        self.error: BaseException | None = None
        self.stopping = False

    def run(self) -> None:
        with contextlib.suppress(OSError):  # not allowed here: plan at the driver's priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
        try:
            self._plan()
        except BaseException as error:  # noqa: BLE001  (the driver raises it)
            self.error = error

    def _plan(self) -> None:
        campaign = self.campaign
        ledger = Ledger(campaign.folder)
        rows = BatchRows(campaign.options, campaign.spec, campaign.folder / "work")
        try:
            for batch in self.redo:
                if not self._take():
                    return
                self._set_up(ledger, batch, rows.of(batch, ledger))
            for number in self.retries:
                if not self._take():
                    return
                table = failed_table(ledger, number)
                retry = ledger.next_number()
                self._set_up(ledger, ledger.add_batch(retry, 0, table.length, self._study(retry), number), table)
            while not self.stopping and not ledger.get("exhausted", False):
                if not self._take():
                    return
                self._next(ledger, rows)
        finally:
            rows.close()
            ledger.close()

    def _take(self) -> bool:
        """A place in the window for one more workspace, with room on disk for it; False once the campaign stops."""
        if not self.campaign.window.take():
            return False
        self._guard()
        return True

    def _next(self, ledger: Ledger, rows: BatchRows) -> None:
        """Plan and set up the next batch of new rows, in the place just taken."""
        start = ledger.next_start()
        wanted = rows.wanted(start)
        table = rows.table(start, wanted)
        if table.length == 0:
            ledger.set(exhausted=True)
            self.campaign.window.give()
            return
        number = ledger.next_number()
        batch = ledger.add_batch(number, start, table.length, self._study(number))
        if table.length < wanted or wanted < self.campaign.options.batch_size:
            ledger.set(exhausted=True)
        self._set_up(ledger, batch, table)

    def _set_up(self, ledger: Ledger, batch: Batch, table: ParameterTable) -> None:
        """Make the batch's workspace and store (anew: a set-up cut short left no instance that ran)."""
        options = self.campaign.options
        if batch.study.exists():
            shutil.rmtree(batch.study)
        prepare(options.spec, out=batch.study, replace=True, table=table, layout=options.layout, fanout=options.fanout,
                steps=options.steps())
        self.campaign.ready.put(ledger.advance(batch, "prepared"))

    def _study(self, number: int) -> Path:
        return self.campaign.folder / "work" / f"batch-{number:06d}"

    def _guard(self) -> None:
        """Room for one more batch on top of those on disk: each may still grow to the limits the user set."""
        from legato.campaign.diskguard import check_room

        options = self.campaign.options
        paths = [str(self.campaign.folder)]
        if options.archive and not options.no_archive:
            paths.append(options.archive)
        check_room(paths, options.min_free, options.min_inodes, batches=self.campaign.window.used)


class Finisher:
    """Harvests, archives and cleans each batch the driver is done with, in the order they come.

    The work runs in a child process forked when the campaign starts (before any thread), so
    parsing results and writing archives never hold the driver's interpreter lock and run at a
    lower CPU priority than the instances. A thread of the driver feeds it batch numbers and
    reads back one JSON line per batch. The child dies with the driver; it commits each stage
    to the ledger itself, so a kill of either leaves every batch at a stage a resume takes on.
    """

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign
        self.batches: queue.Queue[Batch | None] = queue.Queue()
        self.error: BaseException | None = None
        self.stop_reason: str | None = None
        self.stopping = False
        self.ran = 0
        self.pid = 0

    def start(self) -> None:
        """Fork the child; the driver's side keeps a feeding thread."""
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        driver = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:  # the child's whole life; it never returns into the driver's code
            os.close(down_w)
            os.close(up_r)
            os._exit(_finishing(self.campaign, driver, down_r, up_w))
        os.close(down_r)
        os.close(up_w)
        self._down = os.fdopen(down_w, "w", buffering=1)
        self._up = os.fdopen(up_r)
        self._thread = threading.Thread(target=self._feed, name="legato-finisher", daemon=True)
        self._thread.start()

    def put(self, batch: Batch) -> None:
        self.batches.put(batch)

    def cancel(self) -> None:
        """Finish the stage at hand only (the child commits it), then stop."""
        self.stopping = True
        if self.pid:
            os.kill(self.pid, signal.SIGTERM)

    def finish(self) -> None:
        """No more batches will come: finish those queued (unless cancelled), then end the child."""
        self.batches.put(None)
        if self.pid:
            self._thread.join()
            with contextlib.suppress(BrokenPipeError):  # the child ended first (its error is already known)
                self._down.close()
            os.waitpid(self.pid, 0)
            self._up.close()

    def _feed(self) -> None:
        import json

        while (batch := self.batches.get()) is not None:
            if self.stopping or self.error:
                continue
            try:
                self._down.write(f"{batch.number}\n")
            except BrokenPipeError:
                pass  # the child ended: its last words (or their absence) say why
            reply = self._up.readline()
            if not reply:
                self.error = LegatoError("the process that harvests and archives batches ended unexpectedly; "
                                         f"continue with: legato batch --resume {self.campaign.folder}")
                return
            done = json.loads(reply)
            if "error" in done:
                self.error = LegatoError(done["error"])
                return
            if done.get("stop") and not self.stop_reason:
                self.stop_reason = done["stop"]
                self.campaign.window.close()  # no new batch is set up from now on
                self.campaign.log(f"stopping: {self.stop_reason}")
            if done.get("cleaned"):
                self.campaign.window.give()
                self.ran += batch.nrows
                self.campaign.log(done["report"])


def _finishing(campaign: Campaign, driver: int, commands: int, replies: int) -> int:
    """The finishing child: one batch number in, its stages done, one JSON line out."""
    import ctypes
    import json

    cancelled = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: cancelled.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the driver, which cancels this child
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the driver
    if os.getppid() != driver:
        return 1
    with contextlib.suppress(OSError):
        os.nice(BACKGROUND_NICENESS)
    out = os.fdopen(replies, "w", buffering=1)
    try:
        ledger = Ledger(campaign.folder)
        sink = campaign._sink()
        with os.fdopen(commands) as numbers, ThreadPoolExecutor(1, thread_name_prefix="legato-pack") as packer:
            for line in numbers:
                batch, stop = _finish(campaign, ledger, sink, ledger.batch(int(line)), cancelled, packer)
                report = _report(ledger, batch) if batch.phase == "cleaned" else ""
                out.write(json.dumps({"cleaned": batch.phase == "cleaned", "stop": stop, "report": report}) + "\n")
        return 0
    except LegatoError as error:
        out.write(json.dumps({"error": str(error)}) + "\n")
        return 1
    except BaseException as error:  # noqa: BLE001  (a bug: its traceback goes to the driver's stderr)
        import traceback

        traceback.print_exc()
        out.write(json.dumps({"error": f"internal error while finishing batches: {error!r}"}) + "\n")
        return 1


def _finish(campaign: Campaign, ledger: Ledger, sink: ResultSink, batch: Batch, cancelled: threading.Event,
            packer: ThreadPoolExecutor) -> tuple[Batch, str | None]:
    """Take one batch through its remaining stages; (where it got to, a reason to stop the campaign).

    A batch that just ran is archived on ``packer``'s thread while its results are parsed and
    written: tar and the compressor hardly need the interpreter lock, and once the last batch
    has run nothing else is left to overlap with. The batch's store is read (and closed) first,
    so that tar never sees its journal files come and go. The ledger still says harvested
    before archived.
    """
    stop = packed = None
    if batch.phase == "ran" and not cancelled.is_set():
        stored = stored_instances(batch.study)
        packing = packer.submit(pack, campaign, batch)
        try:
            batch = harvest(campaign, ledger, sink, batch,
                            *collect(batch.study, batch.number, batch.start, campaign.files, stored))
        finally:
            wait([packing])  # no archive is left half written behind an error
        packed = packing.result()
        if campaign.options.on_failure == "stop" and _failed(ledger, batch.number):
            stop = f"batch {batch.number} has failed rows (--on-failure stop)"
    if batch.phase == "harvested" and not cancelled.is_set():
        batch = _archived(ledger, batch, packed or pack(campaign, batch))
    if batch.phase == "archived" and not cancelled.is_set():
        if not campaign.options.keep_workspace:
            remove_workspace(batch.study)
        batch = ledger.advance(batch, "cleaned", ended=time.time())
    return batch, stop


def harvest(campaign: Campaign, ledger: Ledger, sink: ResultSink, batch: Batch, rows: list[dict], members: list[tuple]
            ) -> Batch:
    """``collect()``'s rows judged, then results and the ledger's record of them, each in one transaction;
    a retry retires its original."""
    rows, members = judge(batch.study, rows, members, campaign.rules)
    if campaign.options.keep_failed:
        keep_failed(batch.study, members, campaign.folder / "failed" / batch.study.name)
    sink.write(campaign.folder.name, batch.number, rows)
    with ledger.db:
        ledger.db.execute("BEGIN IMMEDIATE")
        ledger.db.execute("DELETE FROM instances WHERE batch = ?", (batch.number,))
        ledger.db.executemany("INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?)", members)
        ledger.count_failed(batch.number)
        batch = ledger.advance(batch, "harvested")
    original = ledger.retry_of(batch.number)
    if original is not None:
        retire(ledger, sink, campaign.folder.name, original)
    return batch


def pack(campaign: Campaign, batch: Batch) -> BatchArchive | None:
    """The batch's archive, written and verified (None: the campaign keeps none); the ledger does not know it yet."""
    options = campaign.options
    if options.no_archive:
        return None
    from legato.campaign.archive import archive_batch  # tar, zstd: loaded by the finishing child only

    folder = Path(options.archive) / campaign.folder.name if options.archive else campaign.folder / "archives"
    folder.mkdir(parents=True, exist_ok=True)
    return archive_batch(batch.study, folder, options.archive_mode, options.archive_format)


def _archived(ledger: Ledger, batch: Batch, info: BatchArchive | None) -> Batch:
    if info is None:
        return ledger.advance(batch, "archived")
    return ledger.advance(batch, "archived", archive=info.path, sha256=info.sha256, archive_bytes=info.bytes,
                          members=info.members)


def _report(ledger: Ledger, batch: Batch) -> str:
    from legato.campaign.diskguard import human_size

    done, rows, archived = ledger.progress()
    retry = " (retry)" if ledger.retry_of(batch.number) is not None else ""
    return (f"batch {batch.number}{retry}: {batch.nrows} rows done; campaign: {done} batches, {rows} rows, "
            f"{ledger.failed_rows()} failed, {human_size(archived)} archived")


def remove_workspace(study: Path) -> None:
    """A batch workspace goes once its results are committed and its archive verified.

    Its big folders are removed by two threads (unlinking releases the interpreter lock): the
    last batch's removal is time nothing else overlaps with.
    """
    try:
        with ThreadPoolExecutor(_REMOVERS, thread_name_prefix="legato-clean") as pool:
            for _ in pool.map(_remove_if_there, _subtrees(str(study))):
                pass
        _remove_if_there(str(study))
    except OSError as exc:
        raise LegatoError(f"cannot remove batch workspace {study}: {exc.strerror} ({exc.filename})") from None


def _subtrees(root: str, depth: int = 3) -> list[str]:
    """The first level of folders below ``root`` (at most ``depth`` down) with enough of them to share out."""
    level = [root]
    for _ in range(depth):
        below = []
        for folder in level:
            with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
                below += [entry.path for entry in entries if entry.is_dir(follow_symlinks=False)]
        if len(below) >= 2 * _REMOVERS or not below:
            return below
        level = below
    return level


def _remove_if_there(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):  # gone already: removed before a crash
        _remove_tree(None, path)


def _remove_tree(parent: int | None, name: str) -> None:
    """Depth first, every call relative to an open folder and no stat: a fifth faster than ``shutil.rmtree``.

    Links are removed, never followed (the folder is opened with O_NOFOLLOW, entries tell their
    type from the directory itself).
    """
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    try:
        with os.scandir(fd) as listing:
            entries = list(listing)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                _remove_tree(fd, entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


def retire(ledger: Ledger, sink: ResultSink, campaign: str, number: int) -> None:
    """Batch ``number``'s failed rows have new results in a retry batch: their old instances go, every step of them.

    The other unfinished instances of the batch (a funnel skipped because of them) go too:
    the retry batch ran its own. Both writes are idempotent, so a crash in between is harmless.
    """
    rows = list(failed_rows(ledger, number))
    sink.drop_failed(campaign, number, rows)
    with ledger.db:
        ledger.db.execute("BEGIN IMMEDIATE")
        ledger.db.execute("UPDATE instances SET state = 'retried' WHERE batch = ? AND state != 'finished'", (number,))
        ledger.db.executemany("UPDATE instances SET state = 'retried' WHERE batch = ? AND row_index = ?",
                              [(number, index) for index in rows])
        ledger.count_failed(number)


def _failed(ledger: Ledger, number: int) -> int:
    return ledger.db.execute(
        "SELECT count(*) FROM instances WHERE batch = ? AND state NOT IN ('finished', 'retried')", (number,)
    ).fetchone()[0]
