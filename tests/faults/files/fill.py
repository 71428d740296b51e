"""Run the legato CLI with the disk filled up just before the N-th call of a named function.

usage: python fill.py POINT N FILLER LEGATO-ARGS...

Another process taking the last bytes at that moment is what this imitates: FILLER, a file on
the small file system the campaign lives on, grows until the file system has no byte left,
then the wrapped call runs (and whatever it or its caller writes next meets a full disk).
"""
from __future__ import annotations

import errno
import os
import sys

import legato.campaign.archive
import legato.campaign.harvest
import legato.campaign.ledger
import legato.campaign.pipeline
import legato.execute.local
from legato.cli import main


def fill(path: str) -> None:
    """Write to ``path`` until the file system is full, in ever smaller pieces down to one byte."""
    with open(path, "ab", buffering=0) as filler:
        size = 1 << 20
        while size:
            try:
                filler.write(b"\0" * size)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                size //= 2


def wrap(owner: object, name: str, nth: int, filler: str) -> None:
    original = getattr(owner, name)
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == nth:
            fill(filler)
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


POINTS = {
    "set-up": (legato.campaign.pipeline, "prepare"),
    "running": (legato.execute.local.LocalExecutor, "poll"),
    "ledger": (legato.campaign.ledger.Ledger, "advance"),
    "harvest": (legato.campaign.harvest.ResultSink, "write"),
    "archive": (legato.campaign.archive, "write_archive"),
    "clean": (legato.campaign.pipeline, "remove_workspace"),
}


if __name__ == "__main__":
    point, nth, filler, args = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    wrap(*POINTS[point], nth, os.path.abspath(filler))
    sys.argv = ["legato", *args]
    main()
