"""``legato status`` of a study: the summary table, listings, JSON, Maestro's status.csv, and a
conductor that died. One study with a failure is run once for the module and only read after."""
from __future__ import annotations

import csv
import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from legato import api, status
from legato.errors import LegatoError
from legato.store import Store
from tests.run_files.helpers import copy_spec, rows


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("status")
    root = api.prepare(copy_spec("three_steps.yaml", folder), out=folder / "out").root
    assert not api.execute(root, jobs=2, progress=False).ok  # a/P.3 fails
    return root


def show(folder: Path, **options) -> str:
    stream = io.StringIO()
    status.show(str(folder), stream=stream, **options)
    return stream.getvalue()


def test_counts_per_step_and_state(study: Path) -> None:
    lines = show(study).splitlines()
    assert lines[0] == f"three: failed  ({study})"
    assert [line.split() for line in lines[1:]] == [
        ["step", "finished", "failed", "skipped"],
        ["a", "5", "1", "0"], ["b", "5", "0", "1"], ["total", "0", "0", "1"], ["total", "10", "1", "2"]]


def test_json_summary(study: Path) -> None:
    found = json.loads(show(study, as_json=True))
    assert found == {"study": "three", "folder": str(study), "state": "failed", "steps": {
        "a": {"finished": 5, "failed": 1}, "b": {"finished": 5, "skipped": 1}, "total": {"skipped": 1}}}


def test_listing_by_state_says_where_to_look(study: Path) -> None:
    assert show(study, states=["failed"]) == "failed    a/P.3 rc=1  a/P.3  (exit code 1)\n"
    skipped = show(study, states=["skipped"]).splitlines()
    assert [line.split()[1] for line in skipped] == ["b/P.3", "total/-"]
    assert all(line.endswith("(a/P.3 failed)") for line in skipped)


def test_listing_by_step_as_json(study: Path) -> None:
    records = json.loads(show(study, steps=["b"], as_json=True))
    assert [(r["label"], r["state"]) for r in records] == [(f"P.{p}", "skipped" if p == 3 else "finished")
                                                           for p in range(1, 7)]
    assert records[0]["params"] == {"P": "1"} and records[0]["workspace"] == "b/P.1"
    assert len(json.loads(show(study, steps=["b"], states=["finished"], as_json=True, limit=2))) == 2


def test_an_unknown_state_is_a_user_error(study: Path) -> None:
    with pytest.raises(LegatoError, match="--state 'bogus': expected one of pending, running"):
        show(study, states=["bogus"])


def test_csv_has_maestros_columns_and_states(study: Path) -> None:
    table = list(csv.DictReader(io.StringIO(show(study, as_csv=True))))
    assert tuple(table[0]) == ("Step Name", "Job ID", "Workspace", "State", "Run Time", "Elapsed Time", "Start Time",
                               "Submit Time", "End Time", "Number Restarts", "Params")
    by_name = {row["Step Name"]: row for row in table}
    assert len(table) == 13
    assert by_name["a_P.3"]["State"] == "FAILED" and by_name["b_P.3"]["State"] == "FAILED"  # Maestro: a failed subtree
    assert by_name["total"]["State"] == "FAILED" and by_name["total"]["Params"] == ""
    finished = by_name["a_P.1"]
    assert finished["State"] == "FINISHED" and finished["Params"] == "P:1" and finished["Number Restarts"] == "0"
    assert finished["Workspace"] == "a/P.1" and finished["Job ID"].isdigit()
    days, hours, minutes, seconds = finished["Run Time"].split(":")
    assert days.endswith("d") and hours.endswith("h") and minutes.endswith("m") and seconds.endswith("s")
    assert by_name["b_P.3"]["Start Time"] == "--"


def test_the_run_wrote_status_csv(study: Path) -> None:
    assert (study / "status.csv").read_text() == show(study, as_csv=True).replace("\r\n", "\n")


def test_a_dead_conductor_shows_as_interrupted(tmp_path: Path) -> None:
    root = api.prepare(copy_spec("three_steps.yaml", tmp_path), out=tmp_path / "out").root
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with Store.of_study(root) as store:  # what a conductor killed with -9 leaves
        store.set_meta(state="running", conductor_pid=int(gone.stdout), conductor_host=socket.gethostname())
    assert show(root).splitlines()[0] == f"three: interrupted; continue with: legato run --resume {root}  ({root})"
    assert json.loads(show(root, as_json=True))["state"] == "interrupted"
    with Store.of_study(root) as store:  # another host's conductor cannot be checked from here
        store.set_meta(conductor_host="elsewhere")
    assert json.loads(show(root, as_json=True))["state"] == "running"


def test_a_folder_without_a_study(tmp_path: Path) -> None:
    with pytest.raises(LegatoError, match="not a legato study folder"):
        show(tmp_path)


def test_status_reads_while_a_conductor_writes(study: Path) -> None:
    """WAL: a reader sees the last committed state, never an error, while a writer holds a transaction."""
    with Store.of_study(study) as writer:
        with writer.transaction():
            writer.db.execute("UPDATE instances SET state = 'running' WHERE id = 1")
            assert json.loads(show(study, as_json=True))["steps"]["a"]["finished"] == 5
    assert rows(study, "SELECT state FROM instances WHERE id = 1") == [("running",)]
    with Store.of_study(study) as store:
        store.update_many([{"id": 1, "state": "finished"}])
