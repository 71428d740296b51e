"""The pilot executor with the real SLURM adapter whose commands a stand-in answers (``LocalSlurm``),
and with the Flux, LSF and PBS adapters whose commands recorded answers stand in for.

Pilot scripts run here as bash processes, so pilots, chunks and records are all real; only the
scheduler is not (tests/test_pilots_cluster.py has the real one).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from legato.chunks import QUEUE, RECORDS, REGISTRY
from legato.errors import LegatoError
from legato.execute import Queued
from legato.execute.local import Finished, Started, Task, kill_leftovers
from legato.execute.pilots import FORGOTTEN_POLLS, PilotExecutor, end_pilots
from legato.schedulers.flux import Flux
from legato.schedulers.lsf import Lsf
from legato.schedulers.pbs import Pbs
from legato.schedulers.slurm import Slurm
from tests.execute.test_packed import (  # noqa: F401 (fake: a fixture)
    BATCH, LocalSlurm, drain, fake, finished, stops_answering, tasks)
from tests.schedulers.fake import FakeRunner

COUNTED = "echo $KEY >> began.txt; sleep {sleep}; echo $KEY >> ran.txt"


def executor(fake: LocalSlurm, folder: Path, batch: dict = BATCH, **options) -> PilotExecutor:
    scheduler = Slurm(batch)
    scheduler.run = fake
    return PilotExecutor(scheduler, folder / "jobs", interval=options.pop("interval", 0.2),
                         idle=options.pop("idle", 2.0), **options)


def counts(folder: Path, name: str) -> dict[int, int]:
    """Instance -> lines in its ``name`` file (``tasks`` makes folders "i KEY")."""
    return {int(path.parent.name.split()[1]): len(path.read_text().splitlines()) for path in folder.glob(f"i */{name}")}


def pilots_of(fake: LocalSlurm) -> list[str]:
    return list(fake.processes)


def wait_until(check, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_chunks_are_pulled_by_at_most_pilots_allocations(fake, tmp_path):
    run = executor(fake, tmp_path, pack=20, pilots=2)
    for task in tasks(tmp_path, 100):
        run.submit(task)
    events = drain(run, 100)
    assert 1 <= run.calls["submit"] <= 2 and fake.commands.count("sbatch") == run.calls["submit"]
    assert {key: event.returncode for key, event in finished(events).items()} == {key: 0 for key in range(1, 101)}
    queued = {event.key: event.jobid for event in events if isinstance(event, Queued)}
    assert sorted(queued) == list(range(1, 101)) and set(queued.values()) <= set(pilots_of(fake))
    first = [type(event) for event in events if event.key == 1]
    assert first in ([Queued, Started, Finished], [Queued, Finished])  # the job id before the start
    script = next((tmp_path / "jobs" / "logs").glob("*.sh")).read_text()
    for option in ("--partition=debug", "--account=none", "--qos=fast", "--nodes=1", "--time=01:00:00"):
        assert option in script  # at least an hour, though the batch block's instances take 10 minutes
    assert re.search(r"-m legato\.pilot .* --margin 600 ", script)  # the batch block's walltime
    run.close()
    wait_until(lambda: all(fake.state(job) == "COMPLETED" for job in pilots_of(fake)))  # idle pilots leave


def test_one_executor_serves_the_batches_of_a_campaign(fake, tmp_path):
    """Tasks of five batch studies, each with its own folders, keyed batch << 32 | instance."""
    run = executor(fake, tmp_path, pack=20, pilots=2)
    for batch in range(1, 6):
        for task in tasks(tmp_path / f"batch{batch}", 20):
            run.submit(Task(batch << 32 | task.key, task.script, task.cwd, task.stdout, task.stderr))
    ended = finished(drain(run, 100))
    assert sorted(ended) == sorted(batch << 32 | key for batch in range(1, 6) for key in range(1, 21))
    assert run.calls["submit"] <= 2
    assert (tmp_path / "batch5" / "i 20" / "out.txt").read_text() == "20\n"


def test_pilot_short_of_walltime_is_replaced_and_nothing_runs_twice(fake, tmp_path):
    """One pilot at a time, 6 s each, 2 cores, instances of 1 s (2 s at most): 12 of them need a second pilot."""
    run = executor(fake, tmp_path, pack=4, pilots=1, job_cores=2, job_walltime="00:00:06")
    for task in tasks(tmp_path, 12, cmd=COUNTED.format(sleep=1), walltime=2.0):
        run.submit(task)
    assert all(event.returncode == 0 for event in finished(drain(run, 12)).values())
    assert run.calls["submit"] >= 2
    assert counts(tmp_path, "ran.txt") == {key: 1 for key in range(1, 13)}
    assert counts(tmp_path, "began.txt") == {key: 1 for key in range(1, 13)}
    assert "--time=00:00:06" in next((tmp_path / "jobs" / "logs").glob("*.sh")).read_text()


def test_chunks_of_a_dead_pilot_go_back_less_what_it_finished(fake, tmp_path):
    run = executor(fake, tmp_path, pack=3, pilots=1, job_cores=2)
    for task in tasks(tmp_path, 6, cmd=COUNTED.format(sleep=1)):
        run.submit(task)
    events = []
    while sum(isinstance(event, Finished) for event in events) < 2 or \
            sum(isinstance(event, Started) for event in events) < 4:
        events += run.poll(0.2)
    (first,) = pilots_of(fake)
    node_failure(fake, run, first)
    events += drain(run, 6 - sum(isinstance(event, Finished) for event in events))
    assert all(event.returncode == 0 for event in finished(events).values()) and len(finished(events)) == 6
    assert run.calls["submit"] == 2 and fake.state(first) == "NODE_FAIL"
    assert counts(tmp_path, "ran.txt") == {key: 1 for key in range(1, 7)}
    assert 2 in counts(tmp_path, "began.txt").values()  # an interrupted one began again


def node_failure(fake: LocalSlurm, run: PilotExecutor, jobid: str) -> None:
    """The node goes: the pilot and every instance it runs die at once."""
    name = next(pilot.name for pilot in run.live.values() if pilot.jobid == jobid)
    fake.kill(jobid, "NODE_FAIL")
    kill_leftovers(None, f"pilot-{name}")


def test_an_instance_its_pilots_keep_dying_under_is_reported(fake, tmp_path):
    run = executor(fake, tmp_path, pack=1, pilots=1, job_cores=1)
    (task,) = tasks(tmp_path, 1, cmd="sleep 60")
    run.submit(task)
    for _ in range(2):
        events = []
        while not any(isinstance(event, Started) for event in events):
            events += run.poll(0.2)
        node_failure(fake, run, pilots_of(fake)[-1])
    (ended,) = finished(drain(run, 1)).values()
    assert ended.returncode == -9 and ended.pid and not ended.cancelled
    assert run.calls["submit"] == 2 and list((tmp_path / "jobs" / QUEUE).glob("*.json")) == []


def test_a_new_executor_adopts_the_running_pilot(fake, tmp_path):
    """The driver is killed (its executor dropped as is); the next one awaits the pilot's work."""
    made = tasks(tmp_path, 8, cmd=COUNTED.format(sleep=1))
    first = executor(fake, tmp_path, pack=4, pilots=1, job_cores=2)
    for task in made:
        first.submit(task)
    done = finished(drain(first, 3))
    second = executor(fake, tmp_path, pack=4, pilots=1, job_cores=2)
    assert [pilot.jobid for pilot in second.live.values()] == pilots_of(fake)
    for task in made:  # a resumed conductor submits again what its store does not show finished
        second.submit(task)
    events = drain(second, 8)
    assert sorted(finished(events)) == list(range(1, 9)) and second.calls["submit"] == 0
    assert "scancel" not in fake.commands
    assert counts(tmp_path, "ran.txt") == {key: 1 for key in range(1, 9)}
    assert counts(tmp_path, "began.txt") == {key: 1 for key in range(1, 9)}
    replayed = finished(events)
    assert all(replayed[key].ended == done[key].ended for key in done)  # from the records, not run again


def test_cancel_ends_the_pilots_and_empties_the_queue(fake, tmp_path):
    run = executor(fake, tmp_path, pack=2, pilots=1, job_cores=2)
    for task in tasks(tmp_path, 6, cmd="sleep 60"):
        run.submit(task)
    events = []
    while sum(isinstance(event, Started) for event in events) < 2:
        events += run.poll(0.2)
    run.cancel()
    ended = finished(drain(run, 6))
    assert all(event.cancelled for event in ended.values())
    assert sum(1 for event in ended.values() if event.pid) == 2  # the two that ran
    assert "scancel" in fake.commands and run.calls["cancel"] == 1
    assert list((tmp_path / "jobs" / QUEUE).glob("*.json")) == []


def test_a_scheduler_that_stops_answering(fake, tmp_path, monkeypatch):
    stops_answering(executor(fake, tmp_path, pack=1, pilots=1), fake, tmp_path, monkeypatch)


def test_a_pilot_the_scheduler_forgot_is_gone_only_after_a_few_polls(tmp_path):
    slurm = Slurm(BATCH)
    slurm.run = runner = FakeRunner().answer("41\n")
    for _ in range(FORGOTTEN_POLLS):
        runner.answer("").answer("")  # neither squeue nor scontrol lists it
    runner.answer("42\n")
    run = PilotExecutor(slurm, tmp_path / "jobs", pack=2, pilots=1, interval=0, idle=5)
    run.submit(tasks(tmp_path, 1)[0])
    run.poll(0)
    for _ in range(FORGOTTEN_POLLS - 1):
        run.poll(0)
        assert [pilot.jobid for pilot in run.live.values()] == ["41"]  # a slow controller is no proof
    run.poll(0)
    assert [pilot.jobid for pilot in run.live.values()] == ["42"] and not runner.answers


def test_end_pilots_cancels_every_registered_pilot(tmp_path):
    (tmp_path / REGISTRY).write_text(json.dumps({"p-1": "11", "p-2": "12"}))
    slurm = Slurm(BATCH)
    slurm.run = runner = FakeRunner().answer()
    end_pilots(tmp_path, slurm)
    assert [call.argv for call in runner.calls] == [["scancel", "11", "12"]]
    end_pilots(tmp_path / "none", slurm)  # no registry: nothing to ask
    assert len(runner.calls) == 1


def test_a_job_walltime_shorter_than_an_instance_is_an_error(fake, tmp_path):
    run = executor(fake, tmp_path, pack=2, job_walltime="00:00:30")
    run.submit(tasks(tmp_path, 1, walltime=60.0)[0])
    with pytest.raises(LegatoError, match=r"--job-walltime 00:00:30 leaves no room for instances whose walltime is 00:01:00"):
        run.poll(0)


@pytest.mark.parametrize("adapter, batch, submitted, jobid, directives, states", [
    (Flux, {"type": "flux", "queue": "pbatch", "bank": "guests"}, "ƒM7Zq9AKHno\n", "ƒM7Zq9AKHno",
     ["#flux: -N 1", "#flux: -n 4", "#flux: -t 7200s", "#flux: -q pbatch"],
     ["ƒM7Zq9AKHno RUN\n", "ƒM7Zq9AKHno COMPLETED\n"]),
    (Lsf, {"type": "lsf", "queue": "pbatch", "bank": "guests"}, "Job <22005> is submitted to queue <pbatch>.\n", "22005",
     ["#BSUB -nnodes 1", "#BSUB -W 02:00", "#BSUB -q pbatch"],
     [json.dumps({"RECORDS": [{"JOBID": "22005", "JOBINDEX": "0", "STAT": "RUN", "EXIT_REASON": ""}]}),
      json.dumps({"RECORDS": [{"JOBID": "22005", "JOBINDEX": "0", "STAT": "DONE", "EXIT_REASON": ""}]})]),
    (Pbs, {"type": "pbs", "queue": "workq", "bank": "guests"}, "101.vbox\n", "101.vbox",
     ["#PBS -l walltime=02:00:00", "#PBS -q workq"],
     [json.dumps({"Jobs": {"101.vbox": {"job_state": "R"}}}),
      json.dumps({"Jobs": {"101.vbox": {"job_state": "F", "Exit_status": 0}}})]),
])
def test_pilot_scripts_and_states_on_other_schedulers(tmp_path, adapter, batch, submitted, jobid, directives, states):
    """The pilot's job script in each scheduler's directives, its id read from the submit command, its
    end read from the poll command: the chunk it did not run goes back to the queue, for the next pilot."""
    scheduler = adapter({**batch, "walltime": "00:30:00"})
    scheduler.run = runner = FakeRunner().answer(submitted)
    for answer in [*states, submitted]:
        runner.answer(answer)
    run = PilotExecutor(scheduler, tmp_path / "jobs", pack=2, pilots=1, job_cores=4, interval=0, idle=5)
    for task in tasks(tmp_path, 2):
        run.submit(task)
    run.poll(0)
    (pilot,) = run.live.values()
    assert pilot.jobid == jobid
    script = next((tmp_path / "jobs" / "logs").glob("*.sh")).read_text()
    for directive in directives:
        assert directive in script.splitlines(), script
    assert re.search(r"-m legato\.pilot \S+ \S+ --slots 4 --walltime 7200 --margin 1800 --idle 5\n", script)
    (queued,) = (tmp_path / "jobs" / QUEUE).glob("*.json")
    (tmp_path / "jobs" / "claimed" / pilot.name).mkdir()
    queued.rename(tmp_path / "jobs" / "claimed" / pilot.name / queued.name)  # as the pilot would
    run.poll(0)  # the scheduler says it runs
    assert run.live and not list((tmp_path / "jobs" / QUEUE).glob("*.json"))
    run.poll(0)  # the scheduler says it ended, with no record: its chunk is put back, for a new pilot
    assert [path.name for path in (tmp_path / "jobs" / QUEUE).glob("*.json")] == [queued.name]
    assert run.calls["submit"] == 2 and pilot.name not in run.live and len(run.live) == 1
    assert list(json.loads((tmp_path / "jobs" / REGISTRY).read_text())) == list(run.live)
    assert not (tmp_path / "jobs" / RECORDS / f"{pilot.name}.record").exists()
    assert not runner.answers
