"""A pilot: one cluster allocation that pulls chunks of instances until no work is left or its time runs short.

``python -m legato.pilot FOLDER NAME --slots N --walltime S --margin S --idle S``

The driver (``legato.execute.pilots``) puts chunks in FOLDER's queue; the pilot claims them
by atomic rename (``legato.chunks``), runs their instances on its cores with the local
executor, and appends every start and end to its own record file: compute nodes never write
the study's SQLite store. It claims the next chunk before the cores run dry, and starts an
instance only while the allocation has more time left than the instance's walltime (or the
margin, for instances without one). When nothing more fits it puts the unstarted rest of its
chunks back in the queue and leaves, so the driver's next pilot goes on with them. It also
leaves after ``idle`` seconds without work, or at once when idle and the driver has finished
(FOLDER/stop) or FOLDER is gone. On SIGTERM (``scancel``, the scheduler's walltime) it stops its instances and
records only those that really ended: the driver returns the others to the queue.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO

from legato.chunks import CLAIMED, QUEUE, RECORDS, STOP, claim, put_back
from legato.execute.local import MAX_DEPTH, Finished, LocalExecutor, Started, Task
from legato.worker import write_event

LOOK_SECONDS = 0.5
"""How often a pilot with room for work looks at an empty queue (a directory listing on a shared file system)."""
SLACK_SECONDS = 30.0
"""Time kept back at the end of the allocation (at most 2% of it): the job started before the pilot."""


class Pilot:
    """One pilot's run; ``run()`` returns its exit status."""

    def __init__(self, folder: Path, name: str, slots: int, walltime: float, margin: float, idle: float) -> None:
        self.folder = Path(folder)
        self.name = name
        self.slots = slots
        slack = min(SLACK_SECONDS, 0.02 * walltime)
        self.deadline = time.monotonic() + walltime - slack if walltime > 0 else math.inf
        self.margin = margin
        self.idle = idle
        self.chunks: dict[str, dict] = {}  # claimed chunk name -> the chunk as claimed
        self.left: dict[str, set[int]] = {}  # claimed chunk name -> keys not yet ended
        self.chunk_of: dict[int, str] = {}
        self.pending: list[Task] = []  # claimed, not started
        self.running = 0
        self.signalled = False
        self.record: IO[str] | None = None
        self._looked = -math.inf  # when the queue was last found empty

    def run(self) -> int:
        (self.folder / CLAIMED / self.name).mkdir(parents=True, exist_ok=True)
        signal.signal(signal.SIGTERM, self._on_signal)
        with open(self.folder / RECORDS / f"{self.name}.record", "a") as self.record, \
                LocalExecutor(self.slots, tag=f"pilot-{self.name}") as executor:
            reason = self._loop(executor)
            self._line({"event": "exit", "reason": reason, "time": time.time()})
        return 143 if reason == "signalled" else 0

    def _on_signal(self, signum, frame) -> None:
        self.signalled = True

    def _loop(self, executor: LocalExecutor) -> str:
        """Why the pilot leaves: signalled, walltime (its unstarted work returned), idle or stopped."""
        idle_since = time.monotonic()
        while True:
            if self.signalled:
                self._stop(executor)
                return "signalled"
            self._claim_more()
            self._start(executor)
            if self.running:
                for event in executor.poll(LOOK_SECONDS):
                    self._event(event)
                idle_since = time.monotonic()
            elif self.pending or self._remaining() < self.margin:
                self._return_all()
                return "walltime"
            elif (self.folder / STOP).exists() or not (self.folder / QUEUE).is_dir():  # done, or its folder cleaned away
                return "stopped"
            elif time.monotonic() - idle_since >= self.idle:
                return "idle"
            else:
                time.sleep(LOOK_SECONDS)

    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _claim_more(self) -> None:
        """Take a chunk when a core would otherwise idle, while there is time for more: taking more
        would keep it from a pilot with idle cores."""
        while self.running + len(self.pending) < self.slots and self._remaining() >= self.margin and not self.signalled:
            now = time.monotonic()
            if now - self._looked < LOOK_SECONDS:
                return
            taken = claim(self.folder, self.name)
            if taken is None:
                self._looked = now
                return
            name, chunk = taken
            keys = {task["key"] for task in chunk["tasks"]}
            self.chunks[name], self.left[name] = chunk, keys
            for fields in chunk["tasks"]:
                self.chunk_of[fields["key"]] = name
                # an instance asking for more cores than the pilot has gets them all, rather than waiting forever
                self.pending.append(Task(**{**fields, "slots": min(fields["slots"], self.slots)}))
            self._line({"event": "claimed", "chunk": name, "time": time.time(), "keys": len(keys)})

    def _start(self, executor: LocalExecutor) -> None:
        """Start what fits in the free cores and in the time left; the rest waits.

        The local executor also queues tasks behind running ones (what keeps trivial instances
        fast); a queued task starts later, so it is queued only while a full worker queue of
        tasks as long as it would still end in time.
        """
        waiting = []
        for index, task in enumerate(self.pending):
            if not executor.free_slots:
                waiting.extend(self.pending[index:])
                break
            need = task.walltime or self.margin
            ahead = 1 if self.running < self.slots else MAX_DEPTH + 1
            if task.slots <= executor.free_slots and need * ahead <= self._remaining():
                executor.submit(task)
                self.running += 1
            else:
                waiting.append(task)
        self.pending = waiting

    def _event(self, event: Started | Finished) -> None:
        if isinstance(event, Started):
            write_event(self.record, event)
            return
        self.running -= 1
        if event.cancelled or (self.signalled and event.returncode != 0):
            return  # stopped with the pilot, not by its own doing: its chunk keeps it for the driver to requeue
        write_event(self.record, event)
        name = self.chunk_of.pop(event.key)
        left = self.left[name]
        left.discard(event.key)
        if not left:  # recorded first, then dropped: a pilot killed in between leaves nothing to redo
            (self.folder / CLAIMED / self.name / f"{name}.json").unlink(missing_ok=True)
            del self.left[name], self.chunks[name]

    def _stop(self, executor: LocalExecutor) -> None:
        executor.cancel()
        while self.running:
            for event in executor.poll(LOOK_SECONDS):
                self._event(event)

    def _return_all(self) -> None:
        """Give the unstarted rest of every held chunk back to the queue, for the next pilot."""
        for name, left in self.left.items():
            chunk = self.chunks[name]
            put_back(self.folder, self.name, name, {**chunk, "tasks": [t for t in chunk["tasks"] if t["key"] in left]})
            self._line({"event": "returned", "chunk": name, "keys": sorted(left)})
        self.left.clear()
        self.chunks.clear()
        self.pending.clear()

    def _line(self, line: dict) -> None:
        self.record.write(json.dumps(line) + "\n")
        self.record.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m legato.pilot", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="the driver's shared folder (queue/, claimed/, records/)")
    parser.add_argument("name", help="this pilot's name: its claimed/ folder and record file")
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1, help="cores to keep busy")
    parser.add_argument("--walltime", type=float, default=0.0, help="seconds the allocation lasts (0: no limit)")
    parser.add_argument("--margin", type=float, default=60.0, help="claim no work with less time than this left")
    parser.add_argument("--idle", type=float, default=60.0, help="leave after this many seconds without work")
    args = parser.parse_args(argv)
    return Pilot(Path(args.folder), args.name, max(1, args.slots), args.walltime, args.margin, args.idle).run()


if __name__ == "__main__":
    sys.exit(main())
