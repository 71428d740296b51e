"""The pilot process on its own (``python -m legato.pilot``), fed through a shared folder, no scheduler."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from legato import chunks
from legato.chunks import CLAIMED, QUEUE, RECORDS, STOP
from legato.execute.local import Task
from legato.execute.packed import task_fields


def shared(tmp_path: Path) -> Path:
    place = tmp_path / "jobs"
    for sub in (QUEUE, CLAIMED, RECORDS):
        (place / sub).mkdir(parents=True)
    return place


def enqueue(place: Path, name: str, keys: range, cmd: str, walltime: float | None = None) -> None:
    tasks = []
    for key in keys:
        work = place.parent / f"i{key}"
        work.mkdir()
        tasks.append(task_fields(Task(key, cmd, str(work), str(work / "o.out"), str(work / "o.err"), walltime=walltime)))
    chunks.enqueue(place, name, {"tasks": tasks, "interrupted": {}})


def start(place: Path, *options: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "legato.pilot", str(place), "p1", *options],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def record(place: Path) -> list[dict]:
    return chunks.read_lines(place / RECORDS / "p1.record")[0]


def events(place: Path, kind: str) -> list[dict]:
    return [line for line in record(place) if line["event"] == kind]


def test_pilot_runs_every_queued_chunk_then_leaves_idle(tmp_path):
    place = shared(tmp_path)
    enqueue(place, "c-1", range(1, 6), "echo one > out.txt")
    enqueue(place, "c-2", range(6, 11), "exit 3")
    pilot = start(place, "--slots", "2", "--idle", "0.5")
    assert pilot.wait(timeout=60) == 0, pilot.stdout.read()
    ends = {line["key"]: line["returncode"] for line in events(place, "finished")}
    assert ends == {**{key: 0 for key in range(1, 6)}, **{key: 3 for key in range(6, 11)}}
    assert [line["chunk"] for line in events(place, "claimed")] == ["c-1", "c-2"]
    assert events(place, "exit")[0]["reason"] == "idle"
    assert chunks.queued(place) == [] and list(chunks.claimed(place, "p1")) == []  # done chunks are dropped
    assert (tmp_path / "i5" / "out.txt").read_text() == "one\n"


def test_pilot_leaves_at_once_when_the_driver_is_done(tmp_path):
    place = shared(tmp_path)
    (place / STOP).touch()
    pilot = start(place, "--idle", "600")
    assert pilot.wait(timeout=30) == 0
    assert events(place, "exit")[0]["reason"] == "stopped"


def test_pilot_short_of_time_returns_what_it_did_not_start(tmp_path):
    """4 s, instances of 0.5 s that may take 2 s, one core: about four run, the rest goes back to the queue."""
    place = shared(tmp_path)
    enqueue(place, "c-1", range(1, 11), "sleep 0.5; echo ran >> ran.txt", walltime=2.0)
    pilot = start(place, "--slots", "1", "--walltime", "4", "--margin", "2", "--idle", "600")
    assert pilot.wait(timeout=60) == 0, pilot.stdout.read()
    ran = {line["key"] for line in events(place, "finished") if line["returncode"] == 0}
    assert 1 <= len(ran) <= 5 and len(events(place, "finished")) == len(ran)
    assert events(place, "exit")[0]["reason"] == "walltime"
    (returned,) = events(place, "returned")
    assert returned["chunk"] == "c-1" and set(returned["keys"]) == set(range(1, 11)) - ran
    back = chunks.read_json(place / QUEUE / "c-1.json")["tasks"]
    assert {task["key"] for task in back} == set(range(1, 11)) - ran
    assert {key for key in range(1, 11) if (tmp_path / f"i{key}" / "ran.txt").exists()} == ran


def test_signalled_pilot_stops_its_instances_and_records_no_end_for_them(tmp_path):
    place = shared(tmp_path)
    enqueue(place, "c-1", range(1, 4), "echo $$ > pid; sleep 60")
    pilot = start(place, "--slots", "2", "--idle", "600")
    deadline = time.monotonic() + 30
    while len(events(place, "started")) < 2:
        assert time.monotonic() < deadline, record(place)
        time.sleep(0.1)
    pilot.send_signal(signal.SIGTERM)
    assert pilot.wait(timeout=30) == 143
    assert events(place, "finished") == [] and events(place, "exit")[0]["reason"] == "signalled"
    assert [name for name, _ in chunks.claimed(place, "p1")] == ["c-1"]  # kept whole, for the driver to requeue
    for key in (1, 2):
        pid = int((tmp_path / f"i{key}" / "pid").read_text())
        assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0  # the instance is gone
