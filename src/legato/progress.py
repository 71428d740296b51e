"""Progress of a running conductor or campaign: a live bar on a terminal, plain log lines otherwise."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, TextIO

from legato.conductor import STATE_NAMES, Conductor

if TYPE_CHECKING:
    from legato.campaign.ledger import Ledger

_SHOWN = ("finished", "running", "pending", "failed", "timedout", "skipped", "cancelled")


def reporter(stream: TextIO | None = None, interval: float = 10.0) -> "_LineReporter | _LiveReporter":
    """A progress callback for ``Conductor``: rich's live display when ``stream`` is a terminal."""
    stream = stream or sys.stdout
    if stream.isatty():
        return _LiveReporter(stream)
    return _LineReporter(stream, interval)


def rate_and_eta(conductor: Conductor) -> tuple[float, float | None]:
    """Instances done per second by this conductor (not earlier ones of a resumed study), and the seconds left."""
    counts = conductor.counts()
    elapsed = max(time.time() - conductor.started_at, 1e-6)
    rate = (conductor.done() - conductor.done_before) / elapsed
    remaining = counts["pending"] + counts["running"]
    return rate, (remaining / rate if rate > 0 else None)


def _eta_text(eta: float | None) -> str:
    if eta is None:
        return "--"
    minutes, seconds = divmod(int(eta), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


class _LineReporter:
    """One line every ``interval`` seconds: logs of detached or piped runs stay readable."""

    def __init__(self, stream: TextIO, interval: float) -> None:
        self.stream = stream
        self.interval = interval
        self.last = time.monotonic()

    def __call__(self, conductor: Conductor) -> None:
        if time.monotonic() - self.last < self.interval:
            return
        self.last = time.monotonic()
        counts = conductor.counts()
        rate, eta = rate_and_eta(conductor)
        parts = ", ".join(f"{counts[state]} {state}" for state in _SHOWN if counts[state])
        self.stream.write(f"{time.strftime('%H:%M:%S')} {parts}; {rate:.0f}/s, ETA {_eta_text(eta)}\n")
        self.stream.flush()

    def close(self) -> None:
        """The run's summary is printed by the caller; nothing to undo for plain lines."""


class _LiveReporter:
    """Per-step done/running/failed counts with rate and ETA, redrawn a few times a second."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self.live = Live(console=Console(file=stream), refresh_per_second=4, transient=False)
        self.live.start()
        self.last = 0.0

    def __call__(self, conductor: Conductor) -> None:
        if time.monotonic() - self.last < 0.25:
            return
        self.last = time.monotonic()
        self.conductor = conductor
        self.live.update(self._table(conductor))

    def close(self) -> None:
        if getattr(self, "conductor", None):
            self.live.update(self._table(self.conductor))
        self.live.stop()

    def _table(self, conductor: Conductor):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        rate, eta = rate_and_eta(conductor)
        counts = conductor.counts()
        total = sum(counts.values())
        failed = sum(counts[state] for state in ("failed", "timedout", "cancelled"))
        bar = Table.grid(padding=(0, 1))
        bar.add_row("instances", ProgressBar(total=total or None, completed=conductor.done(), width=40),
                    f"{conductor.done()}/{total}", f"[red]{failed} failed[/]", f"{rate:.0f}/s", f"ETA {_eta_text(eta)}")
        table = Table(title=conductor.root.name)
        table.add_column("step")
        for state in _SHOWN:
            table.add_column(state, justify="right")
        for step in conductor.steps:
            table.add_row(step.name, *(str(step.counts[STATE_NAMES.index(state)]) for state in _SHOWN))
        return Group(bar, table)


@dataclass(frozen=True)
class CampaignProgress:
    """A campaign at one moment, as the driver sees it: what a progress display needs and nothing else."""

    rows_total: int | None
    rows_done: int
    rows_failed: int
    started: float
    """Epoch seconds when this driver started (a resumed campaign's rate counts only its own rows)."""
    batches: Sequence[tuple[int, str]] = ()
    """(number, stage) of each batch in flight."""
    rows_before: int = 0
    """Rows done before this driver started."""

    def rate(self, now: float | None = None) -> float:
        elapsed = max((now or time.time()) - self.started, 1e-6)
        return (self.rows_done - self.rows_before) / elapsed

    def eta(self, now: float | None = None) -> float | None:
        rate = self.rate(now)
        if self.rows_total is None or rate <= 0:
            return None
        return max(self.rows_total - self.rows_done, 0) / rate


def campaign_snapshot(ledger: "Ledger", started: float, rows_before: int = 0) -> CampaignProgress:
    """The ledger's view: rows of cleaned batches done, their failed rows, the batches not yet cleaned.

    ``rows_before``: rows done when this driver started (a resumed campaign's rate counts only its own).
    """
    _, rows, _ = ledger.progress()
    flight = [(batch.number, batch.phase) for batch in ledger.batches(unfinished=True)]
    return CampaignProgress(ledger.get("total_rows"), rows, ledger.failed_rows(), started, flight, rows_before)


def campaign_reporter(stream: TextIO | None = None, interval: float = 5.0) -> "_CampaignLines | _CampaignBar":
    """A callback for ``CampaignProgress`` snapshots: a rich progress bar on a terminal, else a plain line every ``interval`` s."""
    stream = stream or sys.stdout
    return _CampaignBar(stream) if stream.isatty() else _CampaignLines(stream, interval)


def _in_flight(batches: Sequence[tuple[int, str]]) -> str:
    shown = ", ".join(f"{number} {stage}" for number, stage in batches[:4])
    return shown + (f", +{len(batches) - 4}" if len(batches) > 4 else "") if batches else "none"


def _total(snapshot: CampaignProgress) -> str:
    return "?" if snapshot.rows_total is None else str(snapshot.rows_total)


class _CampaignLines:
    """At most one line every ``interval`` seconds: a campaign's log stays short at a million rows."""

    def __init__(self, stream: TextIO, interval: float) -> None:
        self.stream = stream
        self.interval = interval
        self.last: float | None = None
        self.unshown: CampaignProgress | None = None

    def __call__(self, snapshot: CampaignProgress) -> None:
        if self.last is not None and time.monotonic() - self.last < self.interval:
            self.unshown = snapshot
            return
        self.last = time.monotonic()
        self.unshown = None
        self.stream.write(f"{time.strftime('%H:%M:%S')} rows {snapshot.rows_done}/{_total(snapshot)} done, "
                          f"{snapshot.rows_failed} failed; {snapshot.rate():.1f} rows/s, ETA {_eta_text(snapshot.eta())}; "
                          f"batches in flight: {_in_flight(snapshot.batches)}\n")
        self.stream.flush()

    def close(self) -> None:
        """The latest snapshot, if the interval held it back: the log ends with where the campaign got to."""
        if self.unshown:
            self.last = None
            self(self.unshown)


class _CampaignBar:
    """rich's progress bar: rows done of total, failed, rate, ETA and the batches in flight, redrawn 4 times a second."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("rows"), BarColumn(), MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed[/] {task.fields[rate]} rows/s ETA {task.fields[eta]}"),
            TextColumn("batches: {task.fields[batches]}"),
            console=Console(file=stream), refresh_per_second=4,
        )
        self.task = self.progress.add_task("rows", total=None, failed=0, rate="0.0", eta="--", batches="none")
        self.progress.start()

    def __call__(self, snapshot: CampaignProgress) -> None:
        self.progress.update(self.task, total=snapshot.rows_total, completed=snapshot.rows_done,
                             failed=snapshot.rows_failed, rate=f"{snapshot.rate():.1f}", eta=_eta_text(snapshot.eta()),
                             batches=_in_flight(snapshot.batches))

    def close(self) -> None:
        self.progress.stop()
