"""LSF scripts (#BSUB) and the parsing of bsub / bjobs -json output."""
from __future__ import annotations

from pathlib import Path

import pytest

from legato.errors import LegatoError
from legato.schedulers import JobState
from legato.schedulers.base import JobRequest, Resources
from legato.schedulers.lsf import Lsf, lsf_minutes, parse_bjobs
from tests.schedulers.fake import FakeRunner
from tests.schedulers.samples import ARRAY, FULL, MINIMAL, expected

OUTPUTS = Path(__file__).resolve().parent / "outputs"
BATCH = {"type": "lsf", "queue": "pbatch", "bank": "guests", "args": {"app": "big", "M": "4GB"}}


@pytest.mark.parametrize("job, name", [(FULL, "lsf_full.sh"), (ARRAY, "lsf_array.sh"), (MINIMAL, "lsf_minimal.sh")])
def test_job_scripts(job, name):
    assert Lsf(BATCH).job_script(job) == expected(name)


def test_lsf_arrays_start_at_one():
    job = JobRequest("a", "/tmp", "true", Resources(), "o", "e", array=(0, 3, None))
    with pytest.raises(LegatoError, match="LSF array indices start at 1"):
        Lsf(BATCH).job_script(job)


@pytest.mark.parametrize("seconds, text", [(60, "00:01"), (61, "00:02"), (5400, "01:30"), (93784, "26:04")])
def test_walltime_in_minutes(seconds, text):
    assert lsf_minutes(seconds) == text


def test_submit_feeds_the_script_on_stdin(tmp_path):
    script = tmp_path / "job.lsf.sh"
    script.write_text("#!/bin/bash\n#BSUB -J x\ntrue\n")
    lsf = Lsf(BATCH)
    lsf.run = runner = FakeRunner().answer("Job <22005> is submitted to queue <pbatch>.\n")
    assert lsf.submit(str(script), str(tmp_path)) == "22005"
    assert runner.calls[0].argv == ["bsub"]
    assert runner.calls[0].input == script.read_text()
    lsf.run = FakeRunner().answer(stderr="User not in group guests. Job not submitted.\n", returncode=255)
    with pytest.raises(LegatoError, match="bsub failed: User not in group guests"):
        lsf.submit(str(script), str(tmp_path))


def test_poll_is_one_bjobs():
    lsf = Lsf(BATCH)
    lsf.run = runner = FakeRunner().answer((OUTPUTS / "bjobs.json").read_text(), "Job <99999> is not found\n", 255)
    states = lsf.poll(["22005", "22006", "22007", "22008", "22009", "99999"])
    assert states == {"22005": JobState.COMPLETED, "22006": JobState.TIMEOUT, "22007": JobState.CANCELLED,
                      "22008_1": JobState.RUNNING, "22008_2": JobState.PENDING, "22009": JobState.FAILED}
    assert runner.calls[0].argv == ["bjobs", "-a", "-o", "jobid jobindex stat exit_reason", "-json",
                                    "22005", "22006", "22007", "22008", "22009", "99999"]


def test_bjobs_garbage_is_an_error():
    with pytest.raises(LegatoError, match="bjobs printed no JSON"):
        parse_bjobs("LSF is down", {"1"})


def test_cancel_is_one_bkill():
    lsf = Lsf(BATCH)
    lsf.run = runner = FakeRunner().answer(stderr="Job <22005>: Job has already finished\n", returncode=255)
    lsf.cancel(["22005", "22008"])
    assert [call.argv for call in runner.calls] == [["bkill", "22005", "22008"]]
