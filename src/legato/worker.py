"""Runs a chunk of instances inside one cluster allocation: ``python -m legato.worker CHUNK RECORD``.

A packed job is one scheduler job for many instances. The conductor writes the chunk (the
instances' scripts and folders) as JSON; this worker runs them in parallel on the
allocation's cores with the same executor as local runs, and appends one JSON line per
event to its own RECORD file. Compute nodes therefore never write the study's SQLite store
(which may sit on a network file system); the conductor reads the records and merges them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import IO

from legato.execute.local import Finished, LocalExecutor, Started, Task


def load_chunk(path: str) -> dict:
    with open(path) as stream:
        return json.load(stream)


def run_chunk(chunk: dict, record: IO[str], slots: int, only: int | None = None) -> int:
    """Run the chunk's tasks (or only task ``only``, for job arrays); returns how many failed."""
    tasks = chunk["tasks"] if only is None else [chunk["tasks"][only]]
    # an instance asking for more cores than the job has gets them all, rather than waiting forever
    pending = [Task(**{**task, "slots": min(task["slots"], slots)}) for task in reversed(tasks)]
    failed = running = 0
    with LocalExecutor(slots, tag=chunk.get("tag", "")) as executor:
        while pending or running:
            while pending and pending[-1].slots <= executor.free_slots:
                executor.submit(pending.pop())
                running += 1
            for event in executor.poll(None):
                write_event(record, event)
                if isinstance(event, Finished):
                    running -= 1
                    failed += event.returncode != 0
    return failed


def write_event(record: IO[str], event: Started | Finished) -> None:
    """One record line; pilots (legato.pilot) write the same lines."""
    if isinstance(event, Started):
        line = {"event": "started", "key": event.key, "pid": event.pid, "time": event.time}
    else:
        line = {"event": "finished", "key": event.key, "returncode": event.returncode, "started": event.started,
                "ended": event.ended, "pid": event.pid, "timed_out": event.timed_out}
    record.write(json.dumps(line) + "\n")
    record.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m legato.worker", description=__doc__.splitlines()[0])
    parser.add_argument("chunk")
    parser.add_argument("record")
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--index", help="run only this task of the chunk (an array job's index)")
    args = parser.parse_args(argv)
    chunk = load_chunk(args.chunk)
    only = int(args.index) if args.index not in (None, "") else None
    with open(args.record, "a") as record:
        run_chunk(chunk, record, max(1, args.slots), only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
