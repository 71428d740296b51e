"""Runs a prepared study's instance graph on an executor, recording every change in the store.

The graph is held as flat arrays indexed by instance id (state code, parents still to
finish, step), children lists only where an instance has any, and funnels per step, so a
study of 10^5-10^6 instances fits in a few tens of MB. Scripts stay in the store and are
read in chunks just before dispatch. State changes are written in one transaction per
flush interval, by a thread of their own, so the conductor loop, not SQLite, sets the pace.
"""
from __future__ import annotations

import json
import shlex
import signal
import threading
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from legato.execute import Queued
from legato.execute.local import Finished, LocalExecutor, Started, Task
from legato.store import ChangeWriter, Store
from legato.walltime import parse_walltime

PENDING, RUNNING, FINISHED, FAILED, TIMEDOUT, CANCELLED, SKIPPED = range(7)
STATE_NAMES = ("pending", "running", "finished", "failed", "timedout", "cancelled", "skipped")
_CODES = {name: code for code, name in enumerate(STATE_NAMES)}
_FLUSH_SECONDS = 0.5
_FLUSH_CHANGES = 5000
_FETCH = 1000
FAILED_PARENTS = "failed_parents.txt"
"""In a keep-going instance's folder: its parents' folders that did not finish."""


@dataclass
class StepState:
    """Per-step counters: what funnels wait for and what the progress display shows."""

    name: str
    first_id: int
    count: int
    funnel_children: list[int] = field(default_factory=list)  # step indexes
    unfinished: int = 0
    failed: int = 0
    counts: list[int] = field(default_factory=lambda: [0] * len(STATE_NAMES))
    selected: bool = True  # outside --only/--from/--until: does not run, and nothing waits for it
    keep_going: bool = False  # runs once its parents ended, finished or not (the spec's legato.keep_going)


@dataclass
class Outcome:
    """How a conductor run ended, for the CLI's summary and exit status."""

    root: Path
    counts: dict[str, int]
    seconds: float
    failures: list[dict]
    cancelled: bool = False
    log: Path | None = None
    unselected: int = 0  # pending instances of steps outside --only/--from/--until: not run, not a failure

    @property
    def ok(self) -> bool:
        left = dict(self.counts, pending=self.counts.get("pending", 0) - self.unselected)
        return all(left.get(state, 0) == 0 for state in STATE_NAMES if state != "finished")

    def summary(self) -> list[str]:
        if self.log:
            return [f"conductor started in the background; log: {self.log}", f"follow it with: legato status {self.root}"]
        done = ", ".join(f"{n} {state}" for state, n in self.counts.items() if n)
        lines = [f"{'cancelled' if self.cancelled else 'done'} in {self.seconds:.1f} s: {done or 'nothing to run'}"]
        shown = self.failures[:10]
        for failure in shown:
            lines.append(f"  {failure['state']}: {failure['where']} (stdout {failure['stdout']}, stderr {failure['stderr']})")
        more = self.counts.get("failed", 0) + self.counts.get("timedout", 0) - len(shown)
        if more > 0:
            lines.append(f"  ... and {more} more: legato status {self.root} --state failed --state timedout")
        if self.unselected:
            lines.append(f"  {self.unselected} instances of steps outside the selection did not run")
        if self.counts.get("pending", 0) > self.unselected or self.counts.get("cancelled"):
            lines.append(f"continue with: legato run --resume {self.root}")
        return lines


class Conductor:
    """One conductor per study folder; ``run()`` returns when nothing more can run."""

    def __init__(
        self,
        root: Path,
        store: Store,
        executor: LocalExecutor,
        *,
        throttle: int = 0,
        attempts: int = 1,
        on_progress: Callable[["Conductor"], None] | None = None,
        selected: list[str] | None = None,
        rerun: list[str] = (),
    ) -> None:
        self.root = Path(root)
        self._root = str(self.root)
        self.store = store
        self.executor = executor
        self._base = getattr(executor, "base", 0)  # a shared executor's key space for this study
        self.throttle = throttle
        self.attempts = attempts
        self.on_progress = on_progress
        self.cancel_requested = False
        self._cancelling = False
        self.total_slots = getattr(executor, "slots", None) or executor.free_slots
        self.started_at = time.time()
        self._changes: dict[int, dict] = {}  # id -> columns, merged until the next flush
        self._last_flush = time.monotonic()
        self._ready: deque[int] = deque()
        self._fetched: dict[int, tuple[str, str, str | None]] = {}
        self._in_flight: dict[int, int] = {}  # id -> slots
        self._load(selected, list(rerun))
        self.done_before = self.done()  # a resumed run's rate counts only what it does itself

    # -- loading the graph --------------------------------------------------------------------
    def _load(self, selected: list[str] | None, rerun: list[str]) -> None:
        steps = self.store.steps()
        keep_going = set(self.store.meta().get("keep_going") or ())
        self.steps = [StepState(s["name"], s["first_id"], s["instances"]) for s in steps]
        for step in self.steps:
            step.selected = selected is None or step.name in selected
            step.keep_going = step.name in keep_going
        index = {s.name: i for i, s in enumerate(self.steps)}
        for i, s in enumerate(steps):
            for parent in s["funnel_parents"]:
                self.steps[index[parent]].funnel_children.append(i)
        size = sum(s.count for s in self.steps) + 1
        self.state = bytearray(size)
        self.waiting = array("i", bytes(4 * size))
        self.attempts_done = array("H", bytes(2 * size))
        self.step_of = array("H", bytes(2 * size))
        self.slots = array("H", [1]) * size
        self.children: dict[int, list[int]] = {}
        self.walltime: dict[int, float] = {}
        parents_of: dict[int, list[int]] = {}
        cursor = self.store.db.execute("SELECT id, step, state, attempts, parents, resources FROM instances")
        for id_, step, state, attempts, parents, resources in cursor:
            self.state[id_] = _CODES[state]
            self.attempts_done[id_] = attempts
            self.step_of[id_] = index[step]
            if parents:
                parents_of[id_] = json.loads(parents)
                for parent in parents_of[id_]:
                    self.children.setdefault(parent, []).append(id_)
            if resources:
                self._resources(id_, json.loads(resources))
        self.parents_of = {id_: ids for id_, ids in parents_of.items() if self.steps[self.step_of[id_]].keep_going}
        self._rerun([index[name] for name in rerun])
        self._reset_interrupted()
        self._count()
        self._seed(parents_of)

    def _resources(self, id_: int, resources: dict) -> None:
        self.slots[id_] = max(1, min(int(resources.get("procs") or 1), self.total_slots))
        seconds = parse_walltime(resources.get("walltime"))
        if seconds:
            self.walltime[id_] = float(seconds)

    def _rerun(self, steps: list[int]) -> None:
        """``--rerun``: the steps' instances and every instance that depends on them run again from scratch."""
        todo = [id_ for step in steps for id_ in self._instances_of(step)]
        seen: set[int] = set()
        while todo:
            id_ = todo.pop()
            if id_ in seen:
                continue
            seen.add(id_)
            self.state[id_] = PENDING
            self.attempts_done[id_] = 0
            self._change(id_, state="pending", attempts=0, returncode=None, pid=None, jobid=None, started=None,
                         ended=None, reason=None)
            todo.extend(self.children.get(id_, ()))
            if id_ == self.steps[self.step_of[id_]].first_id:  # once per step: its funnel children
                for child_step in self.steps[self.step_of[id_]].funnel_children:
                    todo.extend(self._instances_of(child_step))

    def _reset_interrupted(self) -> None:
        """Instances left running or cancelled by an earlier conductor run again; skips are re-derived."""
        for id_ in range(1, len(self.state)):
            if self.state[id_] in (RUNNING, CANCELLED, SKIPPED):
                self.state[id_] = PENDING
                self._change(id_, state="pending", pid=None, started=None, reason=None)

    def _count(self) -> None:
        for id_ in range(1, len(self.state)):
            step = self.steps[self.step_of[id_]]
            step.counts[self.state[id_]] += 1
            if self.state[id_] == PENDING:
                step.unfinished += 1
            elif self.state[id_] in (FAILED, TIMEDOUT):
                step.failed += 1

    def _seed(self, parents_of: dict[int, list[int]]) -> None:
        """Work out what each pending instance still waits for, skipping those that can never run.

        Parents outside the selection are not waited for; a keep-going instance waits for its
        parents to end, and a failed parent is no reason to skip it.
        """
        funnel_parents: dict[int, list[int]] = {}
        for i, step in enumerate(self.steps):
            for child in step.funnel_children:
                funnel_parents.setdefault(child, []).append(i)
        for id_ in range(1, len(self.state)):
            if self.state[id_] != PENDING:
                continue
            own = self.steps[self.step_of[id_]]
            cause = None
            for parent in parents_of.get(id_, ()):
                if not self.steps[self.step_of[parent]].selected:
                    continue
                if self.state[parent] in (FAILED, TIMEDOUT, SKIPPED):
                    if not own.keep_going:
                        cause = cause or self._failure(parent)
                elif self.state[parent] != FINISHED:
                    self.waiting[id_] += 1
            for parent_step in funnel_parents.get(self.step_of[id_], ()):
                step = self.steps[parent_step]
                if not step.selected:
                    continue
                if step.failed and not own.keep_going:
                    cause = cause or f"an instance of {step.name} failed"
                elif step.unfinished:
                    self.waiting[id_] += 1
            if cause:
                self._skip(id_, cause)
            elif self.waiting[id_] == 0 and own.selected:
                self._ready.append(id_)

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> Outcome:
        """SIGTERM (``legato cancel``) and Ctrl-C cancel the run; only the main thread can catch
        them, so a conductor in another thread (the Python API) leaves signals as they are."""
        main = threading.current_thread() is threading.main_thread()
        signals = (signal.SIGTERM, signal.SIGINT) if main else ()
        previous = {sig: signal.signal(sig, self._on_signal) for sig in signals}
        self.open()
        try:
            while self.active:
                if self.cancel_requested and not self._cancelling:
                    self.cancel()
                self.dispatch()
                for event in self.executor.poll(0.25 if self._in_flight else 0):
                    self.handle(event)
                self.maybe_flush()
                if self.on_progress:
                    self.on_progress(self)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()
        return self.outcome()

    # -- driven from outside: a campaign runs several conductors over one executor --------------
    def open(self) -> None:
        """Start the store writer; ``close()`` writes what is left and stops it."""
        self._writer = ChangeWriter(self.store.path)

    def close(self) -> None:
        self._writer.write(self._take_changes())
        self._writer.close()

    @property
    def active(self) -> bool:
        """Something is ready to run or running: the conductor still needs the executor."""
        return bool(self._ready or self._in_flight)

    def _on_signal(self, signum, frame) -> None:
        self.cancel_requested = True

    def cancel(self) -> None:
        """Stop dispatching; terminate what runs. Pending instances stay pending, for --resume."""
        self.cancel_requested = True
        self._cancelling = True
        self._ready.clear()
        self.executor.cancel([self._base | id_ for id_ in self._in_flight])

    def dispatch(self) -> None:
        while self._ready:
            if self.throttle and len(self._in_flight) >= self.throttle:
                return
            id_ = self._ready[0]
            if self.slots[id_] > self.executor.free_slots:
                return
            self._ready.popleft()
            workspace, script, restart = self._script(id_)
            if self.attempts_done[id_] and restart:
                script = restart  # Maestro's restart command, used on a retry where given
            folder = f"{self._root}/{workspace}"  # plain strings: pathlib costs more than the rest of a dispatch
            if self.steps[self.step_of[id_]].keep_going:
                script = self._tell_failed_parents(id_, folder) + script
            step = self.steps[self.step_of[id_]].name
            self.executor.submit(Task(self._base | id_, script, folder, f"{folder}/{step}.out", f"{folder}/{step}.err",
                                      self.slots[id_], self.walltime.get(id_)))
            self._in_flight[id_] = self.slots[id_]

    def _tell_failed_parents(self, id_: int, folder: str) -> str:
        """A keep-going instance finds the folders of its parents that did not finish in the file
        ``$LEGATO_FAILED_PARENTS`` (one per line; empty when all finished)."""
        ids = [parent for parent in self.parents_of.get(id_, ()) if self.state[parent] != FINISHED]
        for parent_step in range(len(self.steps)):
            if self.step_of[id_] in self.steps[parent_step].funnel_children and self.steps[parent_step].failed:
                ids += [i for i in self._instances_of(parent_step) if self.state[i] != FINISHED]
        folders = []
        for start in range(0, len(ids), _FETCH):
            chunk = ids[start:start + _FETCH]
            rows = dict(self.store.db.execute(
                f"SELECT id, workspace FROM instances WHERE id IN ({', '.join('?' * len(chunk))})", chunk))
            folders += [f"{self._root}/{rows[i]}" for i in chunk]
        path = f"{folder}/{FAILED_PARENTS}"
        with open(path, "w") as listing:
            listing.writelines(f"{line}\n" for line in folders)
        return f"export LEGATO_FAILED_PARENTS={shlex.quote(path)}\n"

    def _script(self, id_: int) -> tuple[str, str, str | None]:
        """Read scripts from the store a chunk of ready instances at a time."""
        if id_ not in self._fetched:
            wanted = [id_] + [i for i in list(self._ready)[: _FETCH - 1] if i not in self._fetched]
            marks = ", ".join("?" * len(wanted))
            for row in self.store.db.execute(
                f"SELECT id, workspace, script, restart FROM instances WHERE id IN ({marks})", wanted
            ):
                self._fetched[row[0]] = row[1:]
        return self._fetched.pop(id_)

    def handle(self, event: Started | Finished | Queued) -> None:
        id_ = event.key - self._base
        if isinstance(event, Queued):
            self._change(id_, jobid=event.jobid)
            return
        if isinstance(event, Started):
            self._move(id_, RUNNING)
            self._change(id_, state="running", pid=event.pid, started=event.time)
            return
        self._in_flight.pop(id_, None)
        attempts = self.attempts_done[id_] + 1
        self.attempts_done[id_] = attempts
        common = {"returncode": event.returncode, "ended": event.ended, "started": event.started, "attempts": attempts,
                  "pid": event.pid or None}
        if event.returncode == 0 and not event.timed_out and not event.cancelled:  # the common case, first
            self._move(id_, FINISHED)
            self._change(id_, state="finished", reason=None, **common)
            self._release(id_)
        elif event.cancelled and not event.pid:
            self.attempts_done[id_] = attempts - 1  # queued, never started: it simply waits for a resume
            self._move(id_, PENDING)
            self._change(id_, state="pending", pid=None, jobid=None)
        elif event.cancelled:  # not the instance's doing: the attempt does not count against -a
            self.attempts_done[id_] = attempts - 1
            self._move(id_, CANCELLED)
            self._change(id_, state="cancelled", reason="cancelled", **{**common, "attempts": attempts - 1})
        elif attempts < self.attempts and not self.cancel_requested:
            self._move(id_, PENDING)
            reason = "timed out" if event.timed_out else f"exit code {event.returncode}"
            self._change(id_, state="pending", reason=f"attempt {attempts} {reason}; retrying", **common)
            self._ready.append(id_)
        else:
            final = TIMEDOUT if event.timed_out else FAILED
            self._move(id_, final)
            reason = "walltime exceeded" if event.timed_out else f"exit code {event.returncode}"
            self._change(id_, state=STATE_NAMES[final], reason=reason, **common)
            self._fail(id_, self._failure(id_))

    def _move(self, id_: int, new: int) -> None:
        step = self.steps[self.step_of[id_]]
        step.counts[self.state[id_]] -= 1
        step.counts[new] += 1
        self.state[id_] = new

    def _release(self, id_: int) -> None:
        for child in self.children.get(id_, ()):
            self._one_less(child)
        step = self.steps[self.step_of[id_]]
        step.unfinished -= 1
        self._release_funnels(step)

    def _release_funnels(self, step: StepState) -> None:
        """Once every instance of a step ended, its funnel children may run: all of them if none
        failed, else only keep-going ones (the others were skipped at the first failure)."""
        if step.unfinished:
            return
        for child_step in step.funnel_children:
            if not step.failed or self.steps[child_step].keep_going:
                for child in self._instances_of(child_step):
                    self._one_less(child)

    def _one_less(self, child: int) -> None:
        if self.state[child] != PENDING:
            return
        self.waiting[child] -= 1
        if self.waiting[child] == 0 and self.steps[self.step_of[child]].selected:
            self._ready.append(child)

    def _fail(self, id_: int, cause: str) -> None:
        """A final failure skips every instance that depends on it, directly or through a funnel;
        each skip gives the failure at the root as its reason: that is where the user must look.
        Keep-going dependents are not skipped: for them the failed parent has simply ended."""
        step = self.steps[self.step_of[id_]]
        step.unfinished -= 1
        step.failed += 1
        doomed = list(self.children.get(id_, ()))
        if step.failed == 1:
            for child_step in step.funnel_children:
                if not self.steps[child_step].keep_going:
                    doomed.extend(self._instances_of(child_step))
        for child in doomed:
            if self.state[child] != PENDING:
                continue
            if self.steps[self.step_of[child]].keep_going:
                self._one_less(child)
            else:
                self._skip(child, cause)
        self._release_funnels(step)

    def _skip(self, id_: int, cause: str) -> None:
        self._move(id_, SKIPPED)
        self._change(id_, state="skipped", reason=cause)
        self._fail(id_, cause)

    def _failure(self, id_: int) -> str:
        """``step/label failed`` (or ``timedout``): labels stay in the store, read only for failures."""
        step, label = self.store.db.execute("SELECT step, label FROM instances WHERE id = ?", (id_,)).fetchone()
        return f"{step}/{label} {STATE_NAMES[self.state[id_]]}" if label else f"{step} {STATE_NAMES[self.state[id_]]}"

    def _instances_of(self, step_index: int) -> range:
        step = self.steps[step_index]
        return range(step.first_id, step.first_id + step.count)

    # -- store writes -------------------------------------------------------------------------
    def _change(self, id_: int, **columns) -> None:
        self._changes.setdefault(id_, {"id": id_}).update(columns)

    def maybe_flush(self) -> None:
        if len(self._changes) >= _FLUSH_CHANGES or time.monotonic() - self._last_flush >= _FLUSH_SECONDS:
            self._writer.write(self._take_changes())

    def _take_changes(self) -> list[dict]:
        changes, self._changes = list(self._changes.values()), {}
        self._last_flush = time.monotonic()
        return changes

    # -- results ------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        totals = [0] * len(STATE_NAMES)
        for step in self.steps:
            for code, n in enumerate(step.counts):
                totals[code] += n
        return {name: totals[code] for code, name in enumerate(STATE_NAMES)}

    def done(self) -> int:
        """Instances that need nothing more: finished, failed for good or skipped."""
        counts = self.counts()
        return sum(counts[state] for state in ("finished", "failed", "timedout", "skipped"))

    def outcome(self) -> Outcome:
        failures = []
        for record in self.store.select(states=("failed", "timedout"), limit=11):
            folder = self.root / record["workspace"]
            failures.append({
                "state": record["state"], "where": f"{record['step']}/{record['label'] or '-'}",
                "stdout": folder / f"{record['step']}.out", "stderr": folder / f"{record['step']}.err",
            })
        return Outcome(self.root, self.counts(), time.time() - self.started_at, failures, self.cancel_requested,
                       unselected=self.unselected())

    def unselected(self) -> int:
        """Pending instances of steps outside the selection: left for a later run, not a failure."""
        return sum(step.counts[PENDING] for step in self.steps if not step.selected)

