"""Run the legato CLI with one function wrapped to SIGKILL this very process at a chosen moment.

usage: python crash.py POINT N LEGATO-ARGS...

The N-th call of the wrapped function (1-based) kills the process group, possibly after doing part
of its work, so a crash test can stop a campaign at an exact point of a phase and then check
that ``legato batch --resume`` harvests every row exactly once.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys

import legato.campaign.archive
import legato.campaign.harvest
import legato.campaign.ledger
import legato.campaign.pipeline
import legato.execute.local
import legato.prepare
import legato.store
from legato.cli import main


def die() -> None:
    """SIGKILL to the whole process group: the driver and the child that finishes its batches die together."""
    os.killpg(0, signal.SIGKILL)


def wrap(owner: object, name: str, nth: int, action) -> None:
    """Replace ``owner.name`` so that its ``nth`` call runs ``action(original, *args)``, which ends in die()."""
    original = getattr(owner, name)
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == nth:
            action(original, *args, **kwargs)
            die()
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def nothing(original, *args, **kwargs) -> None:
    """Die before the call does anything."""


def whole(original, *args, **kwargs) -> None:
    """Die right after the call finished, before its caller records it."""
    original(*args, **kwargs)


def first_record(original, sink, conn, columns, records, *rest) -> None:
    """Insert one results row inside the open transaction, then die: nothing may be committed."""
    original(sink, conn, columns, records[:1], *rest)


def one_step_folder(original, path, *args, **kwargs) -> None:
    """Delete one step folder of the batch workspace, then die: the workspace is half gone."""
    steps = sorted(entry for entry in os.scandir(path) if entry.is_dir())
    original(steps[0].path)


def remove_workspace(nth: int, action) -> None:
    """The campaign's clean stage: its ``nth`` removal of a batch workspace runs ``action(rmtree, path)``, then dies."""
    wrap(legato.campaign.pipeline, "remove_workspace", nth, lambda original, path: action(shutil.rmtree, path))


def finishing(nth: int) -> None:
    """The driver's last words: its ``nth`` record of how the campaign ended (finished, failed or stopped)."""
    original = legato.campaign.ledger.Ledger.set
    calls = [0]

    def record(ledger, **values):
        if values.get("state") in ("finished", "failed", "stopped"):
            calls[0] += 1
            if calls[0] == nth:
                die()
        return original(ledger, **values)

    legato.campaign.ledger.Ledger.set = record


POINTS = {
    "start-ledger": lambda n: wrap(legato.campaign.ledger, "save_options", n, nothing),
    "start-after": lambda n: wrap(legato.campaign.ledger.Ledger, "create", n, whole),
    "store-created": lambda n: wrap(legato.store.Store, "set_meta", n, nothing),
    "running": lambda n: wrap(legato.execute.local.LocalExecutor, "poll", n, nothing),
    "finishing": finishing,

    "prepare": lambda n: wrap(legato.prepare, "_write_plan", n, nothing),
    "harvest-before": lambda n: wrap(legato.campaign.harvest.ResultSink, "write", n, nothing),
    "harvest-inside": lambda n: wrap(legato.campaign.harvest.ResultSink, "_insert", n, first_record),
    "harvest-after": lambda n: wrap(legato.campaign.harvest.ResultSink, "write", n, whole),
    "archive-partial": lambda n: wrap(legato.campaign.archive, "_verify", n, nothing),
    "archive-after": lambda n: wrap(legato.campaign.archive, "write_archive", n, whole),
    "instance-partial": lambda n: wrap(legato.campaign.archive, "_pack_small", n, nothing),
    "copy-partial": lambda n: wrap(legato.campaign.archive, "_copy", n, nothing),
    "folder-after": lambda n: wrap(legato.campaign.archive, "archive_batch", n, whole),
    "clean-partial": lambda n: remove_workspace(n, one_step_folder),
    "clean-after": lambda n: remove_workspace(n, lambda original, path: original(path)),
    "retry-after": lambda n: wrap(legato.campaign.harvest.ResultSink, "drop_failed", n, nothing),
}


if __name__ == "__main__":
    os.setsid()  # a process group of its own, which die() kills whole
    point, nth, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    POINTS[point](nth)
    sys.argv = ["legato", *args]
    main()
