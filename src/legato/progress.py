"""Progress of a running conductor: a live table on a terminal, plain log lines otherwise."""
from __future__ import annotations

import sys
import time
from typing import TextIO

from legato.conductor import STATE_NAMES, Conductor

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
        from rich.table import Table

        rate, eta = rate_and_eta(conductor)
        table = Table(title=f"{conductor.root.name}: {rate:.0f} instances/s, ETA {_eta_text(eta)}")
        table.add_column("step")
        for state in _SHOWN:
            table.add_column(state, justify="right")
        for step in conductor.steps:
            table.add_row(step.name, *(str(step.counts[STATE_NAMES.index(state)]) for state in _SHOWN))
        return table
