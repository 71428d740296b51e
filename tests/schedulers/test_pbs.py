"""PBS scripts (#PBS, select statements) and the parsing of qsub / qstat -f -F json output."""
from __future__ import annotations

from pathlib import Path

import pytest

from legato.errors import LegatoError
from legato.schedulers import JobState
from legato.schedulers.base import Resources
from legato.schedulers.pbs import Pbs, parse_qstat, select
from tests.schedulers.fake import FakeRunner
from tests.schedulers.samples import ARRAY, FULL, MINIMAL, expected

OUTPUTS = Path(__file__).resolve().parent / "outputs"
BATCH = {"type": "pbs", "queue": "workq", "bank": "guests", "shell": "/bin/sh", "args": {"m": "ae", "l": ["mem=4gb"]}}


@pytest.mark.parametrize("job, name", [(FULL, "pbs_full.sh"), (ARRAY, "pbs_array.sh"), (MINIMAL, "pbs_minimal.sh")])
def test_job_scripts(job, name):
    assert Pbs(BATCH).job_script(job) == expected(name)


@pytest.mark.parametrize("res, chunks", [
    (Resources(), None),
    (Resources(nodes=3), "3:ncpus=1:mpiprocs=1"),
    (Resources(nodes=2, procs=5, cores_per_task=4), "2:ncpus=12:mpiprocs=3"),
    (Resources(procs=6, cores_per_task=2), "6:ncpus=2:mpiprocs=1"),
    (Resources(procs=2, gpus=2), "1:ncpus=2:mpiprocs=2:ngpus=2"),
])
def test_select_statements(res, chunks):
    assert select(res) == chunks


def test_submit(tmp_path):
    script = tmp_path / "job.pbs.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    pbs = Pbs(BATCH)
    pbs.run = runner = FakeRunner().answer("106[].vbox\n")
    assert pbs.submit(str(script), str(tmp_path)) == "106[].vbox"
    assert runner.calls[0].argv == ["qsub", str(script)]
    pbs.run = FakeRunner().answer(stderr="qsub: Unknown queue\n", returncode=170)
    with pytest.raises(LegatoError, match="qsub failed: qsub: Unknown queue"):
        pbs.submit(str(script), str(tmp_path))


def test_poll_is_one_qstat():
    pbs = Pbs(BATCH)
    unknown = "qstat: Unknown Job Id 999.vbox\n"
    pbs.run = runner = FakeRunner().answer((OUTPUTS / "qstat.json").read_text(), unknown, 153)
    ids = ["101.vbox", "102.vbox", "103.vbox", "104.vbox", "105.vbox", "106[].vbox", "999.vbox"]
    assert pbs.poll(ids) == {
        "101.vbox": JobState.COMPLETED, "102.vbox": JobState.TIMEOUT, "103.vbox": JobState.FAILED,
        "104.vbox": JobState.CANCELLED, "105.vbox": JobState.PENDING, "106[].vbox_1": JobState.COMPLETED,
        "106[].vbox_2": JobState.RUNNING, "106[].vbox_3": JobState.PENDING}
    assert runner.calls[0].argv == ["qstat", "-f", "-F", "json", "-x", "-t", *ids]


def test_poll_matches_ids_with_a_longer_server_name():
    text = (OUTPUTS / "qstat.json").read_text()
    assert parse_qstat(text, ["101.vbox.example.org"]) == {"101.vbox.example.org": JobState.COMPLETED}


def test_qstat_garbage_is_an_error():
    with pytest.raises(LegatoError, match="qstat printed no JSON"):
        parse_qstat("qstat: cannot connect to server vbox", ["1.vbox"])


def test_cancel_is_one_qdel():
    pbs = Pbs(BATCH)
    pbs.run = runner = FakeRunner().answer(stderr="qdel: Job has finished 101.vbox\n", returncode=35)
    pbs.cancel(["101.vbox", "105.vbox"])
    assert [call.argv for call in runner.calls] == [["qdel", "101.vbox", "105.vbox"]]
    pbs.run = FakeRunner().answer(stderr="qdel: Unauthorized Request  105.vbox\n", returncode=159)
    with pytest.raises(LegatoError, match="qdel failed: qdel: Unauthorized Request"):
        pbs.cancel(["105.vbox"])
