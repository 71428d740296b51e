"""SLURM scripts and the parsing of sbatch/squeue/scontrol output (recorded from SLURM 22.05)."""
from __future__ import annotations

from pathlib import Path

import pytest

from legato.errors import LegatoError
from legato.schedulers import JobState
from legato.schedulers.slurm import Slurm, parse_scontrol, parse_squeue, slurm_time
from tests.schedulers.fake import FakeRunner
from tests.schedulers.samples import ARRAY, FULL, MINIMAL, expected

OUTPUTS = Path(__file__).resolve().parent / "outputs"
BATCH = {"type": "slurm", "queue": "pbatch", "bank": "guests", "args": {"mem": "4G", "requeue": True, "C": "haswell"}}


@pytest.mark.parametrize("job, name", [(FULL, "slurm_full.sh"), (ARRAY, "slurm_array.sh"), (MINIMAL, "slurm_minimal.sh")])
def test_job_scripts(job, name):
    assert Slurm(BATCH).job_script(job) == expected(name)


@pytest.mark.parametrize("seconds, text", [(0, "UNLIMITED"), (59, "00:00:59"), (86399, "23:59:59"), (86400, "1-00:00:00")])
def test_slurm_time(seconds, text):
    assert slurm_time(seconds) == text


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "job.slurm.sh"
    path.write_text("#!/bin/bash\ntrue\n")
    return path


@pytest.mark.parametrize("printed", ["4242\n", "4242;cluster2\n"])
def test_submit_reads_the_parsable_id(script, tmp_path, printed):
    slurm = Slurm(BATCH)
    slurm.run = runner = FakeRunner().answer(printed)
    assert slurm.submit(str(script), str(tmp_path)) == "4242"
    assert runner.calls[0].argv == ["sbatch", "--parsable", str(script)]
    assert runner.calls[0].cwd == str(tmp_path)


def test_submit_errors(script, tmp_path):
    slurm = Slurm(BATCH)
    slurm.run = FakeRunner().answer(stderr="sbatch: error: Invalid --time specification\n", returncode=255)
    with pytest.raises(LegatoError, match="sbatch failed: sbatch: error: Invalid --time specification"):
        slurm.submit(str(script), str(tmp_path))
    slurm.run = FakeRunner().answer("Submitted batch job\n")
    with pytest.raises(LegatoError, match="sbatch printed no job id"):
        slurm.submit(str(script), str(tmp_path))
    slurm.run = runner = FakeRunner()
    with pytest.raises(LegatoError, match="job script .*nope.sh does not exist"):
        slurm.submit(str(tmp_path / "nope.sh"), str(tmp_path))
    assert runner.calls == []


def test_poll_is_one_squeue_for_all_jobs():
    slurm = Slurm(BATCH)
    slurm.run = runner = FakeRunner().answer((OUTPUTS / "squeue.txt").read_text())
    states = slurm.poll(["1", "2", "3", "4"])
    assert states == {"1": JobState.COMPLETED, "2": JobState.RUNNING, "4": JobState.FAILED,
                      "3_0": JobState.COMPLETED, "3_1": JobState.COMPLETED, "3_2": JobState.RUNNING,
                      "3_3": JobState.RUNNING, "3_4": JobState.PENDING, "3_5": JobState.PENDING}
    assert runner.commands == ["squeue"]
    assert runner.calls[0].argv == ["squeue", "--noheader", "--array", "--all", "--states=all", "--jobs=1,2,3,4",
                                    "--format=%i %T"]


def test_poll_asks_scontrol_once_for_jobs_squeue_dropped():
    slurm = Slurm(BATCH)
    squeue = "1 COMPLETED\n"
    slurm.run = runner = FakeRunner().answer(squeue).answer((OUTPUTS / "scontrol.txt").read_text())
    states = slurm.poll(["1", "2", "3", "4", "77"])
    assert states == {"1": JobState.COMPLETED, "2": JobState.COMPLETED, "3": JobState.FAILED,
                      "4_0": JobState.RUNNING, "4_1": JobState.PENDING, "4_2": JobState.PENDING, "4_3": JobState.PENDING}
    assert runner.commands == ["squeue", "scontrol"]
    assert runner.calls[1].argv == ["scontrol", "--oneliner", "show", "job"]


def test_poll_of_jobs_slurm_forgot():
    slurm = Slurm(BATCH)
    gone = "slurm_load_jobs error: Invalid job id specified\n"
    slurm.run = runner = FakeRunner().answer(stderr=gone, returncode=1).answer(stderr=gone, returncode=1)
    assert slurm.poll(["77"]) == {}
    assert runner.commands == ["squeue", "scontrol"]
    slurm.run = runner = FakeRunner()
    assert slurm.poll([]) == {}
    assert runner.calls == []


def test_poll_fails_loudly_when_the_controller_is_down():
    slurm = Slurm(BATCH)
    slurm.run = FakeRunner().answer(stderr="slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n",
                                    returncode=1)
    with pytest.raises(LegatoError, match="squeue failed: .*Unable to contact slurm controller"):
        slurm.poll(["1"])


def test_parsers_keep_only_the_jobs_asked_about():
    assert parse_squeue("5 RUNNING\n6 WEIRD_NEW_STATE\nnot a line at all\n", {"6"}) == {"6": JobState.UNKNOWN}
    scontrol = (OUTPUTS / "scontrol.txt").read_text()
    assert parse_scontrol(scontrol, {"3"}) == {"3": JobState.FAILED}


def test_cancel_is_one_scancel():
    slurm = Slurm(BATCH)
    slurm.run = runner = FakeRunner().answer()
    slurm.cancel(["11", "12_3", "13"])
    assert [call.argv for call in runner.calls] == [["scancel", "11", "12_3", "13"]]
    slurm.run = FakeRunner().answer(stderr="scancel: error: Invalid job id abc\n", returncode=1)
    with pytest.raises(LegatoError, match="scancel failed: scancel: error: Invalid job id abc"):
        slurm.cancel(["abc"])
