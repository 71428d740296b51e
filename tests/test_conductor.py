"""The conductor's graph walk, at the API level.

Most tests drive ``Conductor`` with ``ScriptedExecutor``, which runs nothing and ends each task
the way the test says, so order, throttle, slots, retries, cancel and resume are checked exactly;
the rest use ``api.execute`` and ``api.cancel`` with the real local executor.
"""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from legato import api, launch
from legato.conductor import Conductor, Outcome
from legato.execute.local import Finished, Started, Task
from legato.progress import rate_and_eta, reporter
from legato.store import Store
from tests.run_files.helpers import Gates, copy_spec, rows, source_env, states


class ScriptedExecutor:
    """Runs nothing: ``outcome(task)`` gives each task's exit status (or "timeout"). One task ends
    per poll, oldest first, so others are still in flight meanwhile; ``log`` keeps the order."""

    def __init__(self, slots: int = 2, outcome: Callable[[Task], int | str] = lambda task: 0) -> None:
        self.slots = slots
        self.outcome = outcome
        self.submitted: list[Task] = []
        self.log: list[tuple[str, int]] = []  # ("submit" | "end", key)
        self.in_flight: dict[int, Task] = {}
        self.started: set[int] = set()
        self.cancelled: set[int] = set()
        self.company: dict[int, set[int]] = {}  # key -> keys in flight beside it at some point
        self.peak = 0  # most tasks in flight at once

    @property
    def free_slots(self) -> int:
        return self.slots - sum(task.slots for task in self.in_flight.values())

    def submit(self, task: Task) -> None:
        assert task.slots <= self.free_slots, "the conductor overfilled the executor"
        self.submitted.append(task)
        self.log.append(("submit", task.key))
        self.company[task.key] = set(self.in_flight)
        for key in self.in_flight:
            self.company[key].add(task.key)
        self.in_flight[task.key] = task
        self.peak = max(self.peak, len(self.in_flight))

    def poll(self, timeout: float | None) -> list[Started | Finished]:
        now = time.time()
        events: list[Started | Finished] = []
        for key in self.in_flight.keys() - self.started - self.cancelled:
            self.started.add(key)
            events.append(Started(key, 1000 + key, now))
        ending = [key for key in self.in_flight if key in self.cancelled] or list(self.in_flight)[:1]
        for key in ending:
            task = self.in_flight.pop(key)
            self.log.append(("end", key))
            pid = 1000 + key if key in self.started else 0
            self.started.discard(key)
            if key in self.cancelled:
                events.append(Finished(key, -signal.SIGTERM, now, now, pid, cancelled=True))
                continue
            result = self.outcome(task)
            timed_out = result == "timeout"
            events.append(Finished(key, -signal.SIGTERM if timed_out else int(result), now, now, pid, timed_out))
        return events

    def cancel(self, keys=None) -> None:
        self.cancelled |= set(self.in_flight)

    def keys(self) -> list[int]:
        return [task.key for task in self.submitted]

    def when(self, kind: str, key: int) -> int:
        return self.log.index((kind, key))


def prepare(tmp_path: Path, spec: str, **replace: str) -> Path:
    return api.prepare(copy_spec(spec, tmp_path, **replace), out=tmp_path / "out").root


def conduct(study: Path, executor: ScriptedExecutor, **options) -> Outcome:
    with Store.of_study(study) as store:
        return Conductor(study, store, executor, **options).run()


def ids(study: Path) -> dict[str, int]:
    """``{"step/label": id}``."""
    return {f"{step}/{label}" if label else step: id_ for id_, step, label in
            rows(study, "SELECT id, step, label FROM instances")}


def fail(study: Path, *names: str, result: int | str = 1) -> Callable[[Task], int | str]:
    """An outcome: the named instances fail (every attempt), the others succeed."""
    failing = {ids(study)[name] for name in names}
    return lambda task: result if task.key in failing else 0


PS = range(1, 7)


# -- order -----------------------------------------------------------------------------------------
def test_children_wait_for_their_parent_and_the_funnel_for_every_instance(tmp_path: Path) -> None:
    study = prepare(tmp_path, "three_steps.yaml", **{"FAILS: 3": "FAILS: 0"})
    executor = ScriptedExecutor()
    outcome = conduct(study, executor)
    assert outcome.ok and outcome.counts["finished"] == 13
    key = ids(study)
    for p in PS:
        assert executor.when("end", key[f"a/P.{p}"]) < executor.when("submit", key[f"b/P.{p}"])
    funnel = executor.when("submit", key["total"])
    assert all(executor.when("end", key[f"b/P.{p}"]) < funnel for p in PS)
    assert len(executor.submitted) == 13  # each instance once
    assert rows(study, "SELECT DISTINCT state, attempts FROM instances") == [("finished", 1)]


def test_a_failure_skips_what_depends_on_it_with_the_failure_as_reason(tmp_path: Path) -> None:
    study = prepare(tmp_path, "three_steps.yaml")
    executor = ScriptedExecutor(outcome=fail(study, "a/P.3"))
    outcome = conduct(study, executor)
    key = ids(study)
    assert key["b/P.3"] not in executor.keys() and key["total"] not in executor.keys()
    assert outcome.counts == {"pending": 0, "running": 0, "finished": 10, "failed": 1, "timedout": 0,
                              "cancelled": 0, "skipped": 2}
    assert not outcome.ok and not outcome.cancelled
    assert [(f["state"], f["where"], f["stderr"]) for f in outcome.failures] == [
        ("failed", "a/P.3", study / "a" / "P.3" / "a.err")]
    assert any("a/P.3" in line and "a.out" in line for line in outcome.summary())
    assert rows(study, "SELECT step, reason FROM instances WHERE state != 'finished' ORDER BY id") == [
        ("a", "exit code 1"), ("b", "a/P.3 failed"), ("total", "a/P.3 failed")]


def test_resume_reruns_what_was_running_and_skips_again_what_cannot_run(tmp_path: Path) -> None:
    study = prepare(tmp_path, "three_steps.yaml", **{"FAILS: 3": "FAILS: 0"})
    key = ids(study)
    with Store.of_study(study) as store:  # a conductor killed mid-run left this
        store.update_many([{"id": key[f"a/P.{p}"], "state": "finished", "attempts": 1} for p in (1, 4, 5, 6)]
                          + [{"id": key["a/P.2"], "state": "running", "pid": 1},
                             {"id": key["a/P.3"], "state": "failed", "attempts": 1},
                             {"id": key["b/P.1"], "state": "skipped"}])
    executor = ScriptedExecutor()
    outcome = conduct(study, executor)
    assert sorted(executor.keys()) == sorted([key["a/P.2"], *(key[f"b/P.{p}"] for p in (1, 2, 4, 5, 6))])
    assert (outcome.counts["finished"], outcome.counts["failed"], outcome.counts["skipped"]) == (10, 1, 2)
    assert rows(study, "SELECT reason FROM instances WHERE state = 'skipped'") == [("a/P.3 failed",)] * 2


# -- how much runs at once -------------------------------------------------------------------------
@pytest.mark.parametrize("throttle, most", [(0, 4), (1, 1), (3, 3)])
def test_throttle_caps_the_instances_in_flight(tmp_path: Path, throttle: int, most: int) -> None:
    study = prepare(tmp_path, "sleeps.yaml", **{"values: [1, 2, 3, 4]": "values: [1, 2, 3, 4, 5, 6]"})
    executor = ScriptedExecutor(slots=4)
    assert conduct(study, executor, throttle=throttle).ok
    assert executor.peak == most


@pytest.mark.parametrize("procs", ["2", "8"])
def test_an_instance_takes_its_procs_in_slots_at_most_all_of_them(tmp_path: Path, procs: str) -> None:
    study = prepare(tmp_path, "wide.yaml", **{"procs: 2": f"procs: {procs}"})
    executor = ScriptedExecutor(slots=2)
    assert conduct(study, executor).ok
    key = ids(study)
    for p in (1, 2):
        big = key[f"big/P.{p}"]
        assert next(task.slots for task in executor.submitted if task.key == big) == 2
        assert executor.company[big] == set()  # it ran alone
    assert executor.company[key["small/Q.1"]] or executor.company[key["small/Q.2"]]  # one-slot ones share


# -- retries and walltime --------------------------------------------------------------------------
def failing_twice() -> Callable[[Task], int]:
    tries: dict[int, int] = {}

    def outcome(task: Task) -> int:
        tries[task.key] = tries.get(task.key, 0) + 1
        return 0 if tries[task.key] == 3 else 1

    return outcome


def test_retries_run_the_restart_command_where_given(tmp_path: Path) -> None:
    study = prepare(tmp_path, "retry.yaml")
    executor = ScriptedExecutor(outcome=failing_twice())
    assert conduct(study, executor, attempts=3).ok
    scripts = {}
    for task in executor.submitted:
        scripts.setdefault(Path(task.cwd).name, []).append(task.script.split(";")[0])
    assert scripts == {"plain": ["echo cmd >> tries"] * 3,
                       "restarted": ["echo cmd >> tries", "echo restart >> tries", "echo restart >> tries"]}
    assert rows(study, "SELECT state, attempts, reason FROM instances") == [("finished", 3, None)] * 2


def test_attempts_run_out(tmp_path: Path) -> None:
    study = prepare(tmp_path, "retry.yaml")
    executor = ScriptedExecutor(outcome=failing_twice())
    assert conduct(study, executor, attempts=2).counts["failed"] == 2
    assert len(executor.submitted) == 4
    assert rows(study, "SELECT state, attempts, reason FROM instances") == [("failed", 2, "exit code 1")] * 2


def test_walltime_reaches_the_executor_in_seconds_and_a_timeout_is_recorded(tmp_path: Path) -> None:
    study = prepare(tmp_path, "walltime.yaml")
    executor = ScriptedExecutor(outcome=lambda task: "timeout")
    outcome = conduct(study, executor, attempts=2)
    assert [task.walltime for task in executor.submitted] == [1.0, 1.0]  # retried once, then given up
    assert outcome.counts["timedout"] == 1 and outcome.failures[0]["state"] == "timedout"
    assert rows(study, "SELECT state, reason, attempts FROM instances") == [("timedout", "walltime exceeded", 2)]


# -- cancel ----------------------------------------------------------------------------------------
def test_cancel_terminates_what_runs_and_leaves_the_rest_for_a_resume(tmp_path: Path) -> None:
    study = prepare(tmp_path, "sleeps.yaml")
    missed: list[int] = []

    def then_cancel(task: Task) -> int:
        os.kill(os.getpid(), signal.SIGTERM)  # what `legato cancel` sends
        return 0

    def ours(signum, frame) -> None:
        missed.append(signum)

    previous = signal.signal(signal.SIGTERM, ours)  # a conductor that missed the signal must not end the tests
    try:
        outcome = conduct(study, ScriptedExecutor(outcome=then_cancel))
        assert signal.getsignal(signal.SIGTERM) is ours and not missed  # the conductor took it, then gave it back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert outcome.cancelled and not outcome.ok
    assert outcome.counts == {"pending": 2, "running": 0, "finished": 1, "failed": 0, "timedout": 0,
                              "cancelled": 1, "skipped": 0}
    assert outcome.summary()[0].startswith("cancelled in")
    assert outcome.summary()[-1] == f"continue with: legato run --resume {study}"
    # a cancelled attempt was not the instance's doing: it keeps every try for the resume
    assert rows(study, "SELECT attempts FROM instances WHERE state = 'cancelled'") == [(0,)]
    before = states(study)
    again = ScriptedExecutor()
    assert conduct(study, again).ok
    assert sorted(again.keys()) == sorted(ids(study)[name] for name, state in before.items() if state != "finished")


# -- the real executor, through the API -----------------------------------------------------------
@pytest.fixture
def gated(tmp_path: Path):
    gates = Gates(tmp_path)
    yield api.prepare(copy_spec("gated.yaml", tmp_path), out=tmp_path / "out").root, gates
    gates.open_all()  # nothing a failed test left behind waits forever


def test_execute_again_runs_nothing_more(tmp_path: Path, gated) -> None:
    study, gates = gated
    gates.open_all()
    first = api.execute(study, jobs=2, progress=False)
    assert first.ok and first.counts["finished"] == 6
    again = api.execute(study, jobs=2, progress=False)
    assert again.counts["finished"] == 6
    assert gates.completions() == {p: 1 for p in PS}
    assert Store.of_study(study).meta()["state"] == "finished"


def test_execute_in_another_thread(tmp_path: Path, gated) -> None:
    study, gates = gated
    gates.open_all()
    outcomes: list[Outcome] = []
    worker = threading.Thread(target=lambda: outcomes.append(api.execute(study, jobs=2, progress=False)))
    worker.start()
    worker.join(timeout=120)
    assert outcomes and outcomes[0].ok


def test_cancel_waits_for_a_starting_conductor_to_record_its_pid(tmp_path: Path, gated) -> None:
    study, _ = gated
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with Store.of_study(study) as store:
        store.set_meta(conductor_pid=int(gone.stdout), state="running")  # left by an earlier, dead conductor
    starting = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, time
        from filelock import FileLock
        from legato.store import Store
        lock = FileLock({str(study / launch.LOCK_NAME)!r})
        lock.acquire()
        print("locked", flush=True)
        time.sleep(0.5)
        Store.of_study({str(study)!r}).set_meta(conductor_pid=os.getpid())
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True, env=source_env())
    try:
        assert starting.stdout.readline() == "locked\n"
        assert "stopped" in api.cancel(study, wait=60)
        assert starting.wait(timeout=10) == -signal.SIGTERM
    finally:
        starting.kill()
    assert Store.of_study(study).meta()["state"] == "cancelled"


def test_cancel_without_a_conductor_keeps_finished_work(tmp_path: Path, gated) -> None:
    study, _ = gated
    key = ids(study)
    with Store.of_study(study) as store:  # a killed conductor's last record, and what ended after it
        store.update_many([{"id": key["s/P.1"], "state": "running"}, {"id": key["s/P.2"], "state": "running"}])
        store.set_meta(state="running", tag="no-such-tag")
    (study / launch.JOURNAL_NAME).write_text(f"d {key['s/P.1']} 1.5 0\nd {key['s/P.2']} 1.5 1\n")
    assert api.cancel(study).startswith("no conductor was running")
    found = states(study)
    assert found["s/P.1"] == "finished" and found["s/P.2"] == "cancelled"
    assert Store.of_study(study).meta()["state"] == "cancelled"


def test_cancel_of_a_finished_study_changes_nothing(tmp_path: Path, gated) -> None:
    study, gates = gated
    gates.open_all()
    assert api.execute(study, jobs=2, progress=False).ok
    api.cancel(study)
    assert Store.of_study(study).meta()["state"] == "finished"
    assert set(states(study).values()) == {"finished"}


def test_piped_progress_is_plain_lines(tmp_path: Path) -> None:
    study = prepare(tmp_path, "sleeps.yaml")
    stream = io.StringIO()
    show = reporter(stream, interval=0)
    with Store.of_study(study) as store:
        Conductor(study, store, ScriptedExecutor(), on_progress=show).run()
    show.close()
    lines = stream.getvalue().splitlines()
    assert lines and "\x1b" not in stream.getvalue()
    assert lines[-1].split(" ", 1)[1].startswith("4 finished;")


def test_a_resumed_run_rates_only_its_own_work(tmp_path: Path) -> None:
    study = prepare(tmp_path, "sleeps.yaml")
    with Store.of_study(study) as store:
        store.update_many([{"id": id_, "state": "finished"} for id_ in (1, 2, 3)])  # done by an earlier conductor
        conductor = Conductor(study, store, ScriptedExecutor())
        assert rate_and_eta(conductor) == (0.0, None)  # nothing done yet by this one: no rate, no ETA
        conductor.run()
        rate, eta = rate_and_eta(conductor)
        assert rate > 0 and eta == 0


def test_the_summary_shows_ten_failures_and_counts_the_rest(tmp_path: Path) -> None:
    study = prepare(tmp_path, "sleeps.yaml", **{"values: [1, 2, 3, 4]": f"values: {list(range(1, 26))}"})
    summary = conduct(study, ScriptedExecutor(outcome=lambda task: 3)).summary()
    assert summary[0].endswith("s: 25 failed")
    assert [line.split()[1] for line in summary[1:11]] == [f"s/P.{p}" for p in range(1, 11)]
    assert summary[11] == f"  ... and 15 more: legato status {study} --state failed --state timedout"
    assert len(summary) == 12
