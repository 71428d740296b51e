"""The local executor with real worker shells and real processes (no timing thresholds)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from legato.errors import LegatoError
from legato.execute import local
from legato.execute.local import Finished, LocalExecutor, Started, Task, kill_leftovers, read_journal


def task(tmp_path: Path, key: int, script: str, **extra) -> Task:
    folder = tmp_path / f"i{key}"
    folder.mkdir(exist_ok=True)
    return Task(key, script, str(folder), str(folder / "out"), str(folder / "err"), **extra)


def run_all(executor: LocalExecutor, tasks: list[Task]) -> dict[int, Finished]:
    pending, done, started = list(tasks), {}, {}
    while len(done) < len(tasks):
        while pending and pending[0].slots <= executor.free_slots:
            executor.submit(pending.pop(0))
        for event in executor.poll(5):
            if isinstance(event, Started):
                started[event.key] = event
            else:
                done[event.key] = event
    return done


def finished(executor: LocalExecutor, count: int) -> dict[int, Finished]:
    done: dict[int, Finished] = {}
    while len(done) < count:
        done.update({e.key: e for e in executor.poll(5) if isinstance(e, Finished)})
    return done


def test_return_codes_files_and_cwd(tmp_path: Path) -> None:
    scripts = {1: "echo out; echo err >&2; pwd > here", 2: "exit 3", 3: "kill -TERM $BASHPID",
               4: "cat <<'EOF'\nquote ' \" $(not run) üñí\nEOF", 5: "read line; echo \"[$line]\""}
    with LocalExecutor(2) as executor:
        done = run_all(executor, [task(tmp_path, k, s) for k, s in scripts.items()])
    assert done[1].returncode == 0 and (tmp_path / "i1" / "out").read_text() == "out\n"
    assert (tmp_path / "i1" / "err").read_text() == "err\n" and (tmp_path / "i1" / "here").read_text().strip() == str(tmp_path / "i1")
    assert done[2].returncode == 3
    assert done[3].returncode == -signal.SIGTERM
    assert (tmp_path / "i4" / "out").read_text() == "quote ' \" $(not run) üñí\n"
    assert done[5].returncode == 0 and (tmp_path / "i5" / "out").read_text() == "[]\n"  # stdin is empty


def test_tasks_overlap_on_two_slots(tmp_path: Path) -> None:
    with LocalExecutor(2) as executor:
        done = run_all(executor, [task(tmp_path, k, "sleep 0.3") for k in (1, 2)])
    assert max(d.started for d in done.values()) < min(d.ended for d in done.values())


def test_a_two_slot_task_runs_alone(tmp_path: Path) -> None:
    tasks = [task(tmp_path, 1, "sleep 0.2"), task(tmp_path, 2, "sleep 0.2", slots=2), task(tmp_path, 3, "sleep 0.2")]
    with LocalExecutor(2) as executor:
        done = run_all(executor, tasks)
    wide = done[2]
    assert all(d.ended <= wide.started + 0.02 or d.started >= wide.ended - 0.02 for k, d in done.items() if k != 2)
    with LocalExecutor(2) as executor, pytest.raises(LegatoError):
        executor.submit(task(tmp_path, 4, "true", slots=3))


def test_walltime_kills_the_whole_group(tmp_path: Path) -> None:
    with LocalExecutor(1) as executor:
        done = run_all(executor, [task(tmp_path, 1, "sleep 30 & echo $! > child; wait", walltime=0.5)])
    assert done[1].timed_out
    child = int((tmp_path / "i1" / "child").read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and "Z" not in Path(f"/proc/{child}/stat").read_text().split(")")[1][:3]:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_cancel_running_and_queued(tmp_path: Path) -> None:
    with LocalExecutor(1) as executor:
        for key in (1, 2):
            executor.submit(task(tmp_path, key, "sleep 30"))
        while not any(isinstance(e, Started) for e in executor.poll(5)):
            pass
        executor.cancel()
        done = finished(executor, 2)
    assert done[1].cancelled and done[1].pid and done[2].cancelled and not done[2].pid


def test_many_trivial_tasks_each_finish_once(tmp_path: Path) -> None:
    tasks = [task(tmp_path, k, f"echo {k} > v") for k in range(1, 2001)]
    with LocalExecutor(2) as executor:
        done = run_all(executor, tasks)
    assert sorted(done) == list(range(1, 2001)) and all(d.returncode == 0 for d in done.values())
    assert (tmp_path / "i1234" / "v").read_text() == "1234\n"


def test_workers_queue_more_of_short_tasks_than_of_long_ones(tmp_path: Path) -> None:
    """Trivial instances deepen each worker's queue (the conductor may wait for a core); long ones make it shallow again."""
    most_queued = []

    def queued(executor: LocalExecutor, tasks: list[Task]) -> int:
        pending, done = list(tasks), 0
        while done < len(tasks):
            while pending and executor.free_slots:
                executor.submit(pending.pop(0))
            most_queued.append(max(len(worker.jobs) for worker in executor._workers))
            done += sum(isinstance(event, Finished) for event in executor.poll(5))
        return max(most_queued[-len(tasks):])

    with LocalExecutor(2) as executor:
        assert queued(executor, [task(tmp_path, k, "true") for k in range(1, 400)]) > local.QUEUE_DEPTH
        queued(executor, [task(tmp_path, k, "sleep 0.02") for k in range(400, 480)])  # learns they are long
        assert queued(executor, [task(tmp_path, k, "sleep 0.02") for k in range(480, 500)]) <= local.QUEUE_DEPTH


def test_tag_env_and_journal(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    with LocalExecutor(2, env={"EXTRA": "x"}, tag="study", journal=str(journal)) as executor:
        run_all(executor, [task(tmp_path, 7, 'echo "$LEGATO_TAG $EXTRA $OWN"', env={"OWN": "y"}),
                           task(tmp_path, 8, "exit 4")])
    assert (tmp_path / "i7" / "out").read_text() == "study:7 x y\n"
    assert read_journal(str(journal)) == {7: 0, 8: 4}


def test_kill_leftovers_only_touches_tagged_groups(tmp_path: Path) -> None:
    env = {**os.environ, "LEGATO_TAG": "mine:1"}
    tagged = subprocess.Popen(["sleep", "30"], env=env, start_new_session=True)
    other = subprocess.Popen(["sleep", "30"], env={**os.environ, "LEGATO_TAG": "theirs:1"}, start_new_session=True)
    try:
        assert kill_leftovers([tagged.pid, other.pid], "mine") == 1
        assert tagged.wait(timeout=10) == -signal.SIGTERM
        assert other.poll() is None
        assert kill_leftovers(None, "theirs") == 1
        assert other.wait(timeout=10) == -signal.SIGTERM
    finally:
        for process in (tagged, other):
            process.kill()
            process.wait()


def test_workers_go_when_closed(tmp_path: Path) -> None:
    executor = LocalExecutor(2)
    shells = [worker.proc for worker in executor._workers]
    executor.close()
    assert all(shell.wait(timeout=10) is not None for shell in shells)


def test_workers_die_with_the_conductor(tmp_path: Path) -> None:
    code = ("import sys, time; from legato.execute.local import LocalExecutor; e = LocalExecutor(2); "
            "print(' '.join(str(w.proc.pid) for w in e._workers), flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pids = [int(pid) for pid in parent.stdout.readline().split()]
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
              for pid in pids):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_other_shells_and_scripts_using_dollar_dollar(tmp_path: Path) -> None:
    tasks = [task(tmp_path, 1, 'echo "${BASH_VERSION:-no bash}"', shell="/bin/sh"),
             task(tmp_path, 2, "kill -TERM $$"),  # $$ must name the instance, never its worker shell
             task(tmp_path, 3, "echo after")]
    with LocalExecutor(1) as executor:
        done = run_all(executor, tasks)
        workers = [worker.proc.pid for worker in executor._workers]
        assert all(Path(f"/proc/{pid}").exists() for pid in workers)
    assert (tmp_path / "i1" / "out").read_text() == "no bash\n"
    assert done[2].returncode == -signal.SIGTERM
    assert done[3].returncode == 0 and (tmp_path / "i3" / "out").read_text() == "after\n"


@pytest.mark.parametrize("first", ["sleep 0.5; echo a", "true", "true", "true"])
def test_cancel_only_a_queued_task(tmp_path: Path, first: str) -> None:
    """With "true" the cancel may reach a worker started just now, before it has set its traps:
    it waits for them rather than killing the worker."""
    with LocalExecutor(1) as executor:
        executor.submit(task(tmp_path, 1, first))
        executor.submit(task(tmp_path, 2, "echo b > b"))
        executor.cancel([2])
        done = finished(executor, 2)
    assert done[1].returncode == 0 and not done[1].cancelled
    assert done[2].cancelled and not done[2].pid and not (tmp_path / "i2" / "b").exists()


def test_a_task_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    with LocalExecutor(1, grace=0.3) as executor:
        done = run_all(executor, [task(tmp_path, 1, "trap '' TERM; sleep 30", walltime=0.2)])
    assert done[1].timed_out and done[1].returncode == -signal.SIGKILL


def test_a_lost_worker_is_replaced(tmp_path: Path) -> None:
    killer = "read -r _ _ _ worker _ < /proc/$BASHPID/stat; kill -KILL $worker; sleep 0.2"
    with LocalExecutor(1) as executor:
        done = run_all(executor, [task(tmp_path, 1, killer), task(tmp_path, 2, "echo fine")])
    assert done[1].returncode == -signal.SIGKILL
    assert done[2].returncode == 0 and (tmp_path / "i2" / "out").read_text() == "fine\n"


def test_bad_input_is_a_legato_error(tmp_path: Path) -> None:
    with LocalExecutor(1) as executor:
        with pytest.raises(LegatoError):
            executor.submit(task(tmp_path, 1, "echo a\0b"))
        with pytest.raises(LegatoError):
            executor.submit(task(tmp_path, 2, "true", env={"NOT A NAME": "x"}))
        assert executor.free_slots == 1
    with pytest.raises(LegatoError):
        LocalExecutor(0)


def killed_conductor(setup: str, report: str, marker: Path) -> int:
    """Run ``setup`` (making executor ``e``) in a child conductor, wait for the first start and for
    its instance to make ``marker`` (a Started comes as soon as the command is sent), print ``report``
    (``started`` is that event), then kill -9 the conductor; returns what it printed."""
    code = ("import os, time; from legato.execute.local import LocalExecutor, Started, Task; " + setup +
            "started = next(ev for ev in iter(lambda: e.poll(5), None) for ev in ev if isinstance(ev, Started))\n"
            f"while not os.path.exists({str(marker)!r}): time.sleep(0.01)\n"
            f"print({report}, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    value = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    return value


def test_a_killed_conductor_leaves_its_instances_to_kill_leftovers(tmp_path: Path) -> None:
    folder = tmp_path / "i1"
    folder.mkdir()
    marker = folder / "running"
    pid = killed_conductor("e = LocalExecutor(1, tag='study'); "
                           f"e.submit(Task(1, 'touch running; sleep 30', {str(folder)!r}, {str(folder / 'out')!r}, "
                           f"{str(folder / 'err')!r})); ",
                           "started.pid", marker)
    try:
        assert Path(f"/proc/{pid}").exists()
        assert kill_leftovers([pid], "someone-else") == 0 and Path(f"/proc/{pid}").exists()
        assert kill_leftovers([pid], "study") == 1
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_killed_conductors_worker_journals_its_instance_then_goes_and_starts_nothing(tmp_path: Path) -> None:
    """The instance running when its conductor is killed -9 ends on its own later: it is journaled, nothing else runs."""
    journal = tmp_path / "journal"
    first, second = tmp_path / "i1", tmp_path / "i2"
    first.mkdir(), second.mkdir()
    gate, marker = tmp_path / "go", first / "running"
    worker = killed_conductor(
        f"e = LocalExecutor(1, tag='study', journal={str(journal)!r}); "
        f"e.submit(Task(1, 'touch running; until [ -e {gate} ]; do sleep 0.05; done', {str(first)!r}, "
        f"{str(first / 'out')!r}, {str(first / 'err')!r})); "
        f"e.submit(Task(2, 'touch ran', {str(second)!r}, {str(second / 'out')!r}, {str(second / 'err')!r})); ",
        "e._workers[0].proc.pid", marker)
    time.sleep(0.5)
    assert _running(worker)  # it waits for its instance
    assert read_journal(str(journal)) == {}
    gate.touch()
    deadline = time.monotonic() + 10
    while _running(worker):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert read_journal(str(journal)) == {1: 0}  # finished while no conductor watched
    assert not (second / "ran").exists()  # the queued instance never started
    assert kill_leftovers(None, "study") == 0


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    except FileNotFoundError:
        return False


def test_a_signal_meant_for_an_ended_task_does_not_fail_the_next(tmp_path: Path) -> None:
    """Tasks share their worker's process group: a signal sent for a task that has just ended
    reaches the next one, which then runs again instead of failing."""
    with LocalExecutor(1) as executor:
        executor.submit(task(tmp_path, 1, "true"))
        executor.submit(task(tmp_path, 2, "touch started; sleep 1; touch finished"))
        executor._send_outbox()  # what poll() does first, without reading any report
        deadline = time.monotonic() + 10
        while not (tmp_path / "i2" / "started").exists():  # the worker runs 2; the executor still thinks 1 runs
            assert time.monotonic() < deadline
            time.sleep(0.01)
        executor.cancel([1])
        done = finished(executor, 2)
    assert done[1].returncode == 0
    assert done[2].returncode == 0 and not done[2].cancelled and (tmp_path / "i2" / "finished").exists()



def test_a_start_is_folded_into_its_end_within_one_batch() -> None:
    start, end, again = Started(1, 10, 1.0), Finished(1, 0, 1.0, 2.0, 10), Started(1, 11, 3.0)
    other = Started(2, 10, 2.0)
    assert local._elide_starts([start, other, end, again]) == [other, end, again]
    assert local._elide_starts([other]) == [other]
