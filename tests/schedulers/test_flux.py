"""Flux scripts (#flux: directives) and the parsing of flux batch / flux jobs output."""
from __future__ import annotations

from pathlib import Path

import pytest

from legato.errors import LegatoError
from legato.schedulers import JobState
from legato.schedulers.flux import Flux
from tests.schedulers.fake import FakeRunner
from tests.schedulers.samples import ARRAY, FULL, MINIMAL, expected

OUTPUTS = Path(__file__).resolve().parent / "outputs"
BATCH = {"type": "flux", "queue": "pbatch", "bank": "guests", "allocation_args": {"setattr": {"system.gpumode": "CPX"}}}
IDS = ["ƒM7Zq9AKHno", "ƒ3ETxsR9H", "ƒ38rBqEWT", "ƒ2fxp5q3T", "ƒ2gxqDfoh", "ƒ2hs4r9kd"]


@pytest.mark.parametrize("job, name", [(FULL, "flux_full.sh"), (MINIMAL, "flux_minimal.sh")])
def test_job_scripts(job, name):
    assert Flux(BATCH).job_script(job) == expected(name)


def test_flux_has_no_arrays():
    with pytest.raises(LegatoError, match="Flux has no job arrays"):
        Flux(BATCH).job_script(ARRAY)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "job.flux.sh"
    path.write_text("#!/bin/bash\ntrue\n")
    return path


def test_submit_reads_the_job_id(script, tmp_path):
    flux = Flux(BATCH)
    flux.run = runner = FakeRunner().answer("ƒM7Zq9AKHno\n")
    assert flux.submit(str(script), str(tmp_path)) == "ƒM7Zq9AKHno"
    assert runner.calls[0].argv == ["flux", "batch", str(script)]
    assert runner.calls[0].cwd == str(tmp_path)
    flux.run = FakeRunner().answer(stderr="flux-batch: ERROR: No such file or directory\n", returncode=1)
    with pytest.raises(LegatoError, match="flux failed: flux-batch: ERROR"):
        flux.submit(str(script), str(tmp_path))


def test_commands_go_through_the_instance_uri(script, tmp_path):
    flux = Flux({"uri": "ssh://node12/var/tmp/flux-abc/local-0"})
    flux.run = runner = FakeRunner().answer("fM7Zq9AKHno\n").answer()
    assert flux.submit(str(script), str(tmp_path)) == "fM7Zq9AKHno"
    flux.cancel(["fM7Zq9AKHno"])
    assert [call.argv[:5] for call in runner.calls] == [
        ["flux", "proxy", "ssh://node12/var/tmp/flux-abc/local-0", "flux", "batch"],
        ["flux", "proxy", "ssh://node12/var/tmp/flux-abc/local-0", "flux", "cancel"]]


def test_poll_is_one_flux_jobs():
    flux = Flux(BATCH)
    flux.run = runner = FakeRunner().answer((OUTPUTS / "flux_jobs.txt").read_text())
    states = flux.poll(IDS + ["ƒgone"])
    assert states == dict(zip(IDS, [JobState.COMPLETED, JobState.RUNNING, JobState.PENDING, JobState.FAILED,
                                    JobState.TIMEOUT, JobState.CANCELLED]))
    assert runner.calls[0].argv == ["flux", "jobs", "-n", "--format={id.f58} {status}", *IDS, "ƒgone"]


def test_poll_matches_ids_whatever_the_locale():
    """In a C locale Flux prints the F58 prefix as an ASCII f."""
    flux = Flux(BATCH)
    flux.run = FakeRunner().answer("fM7Zq9AKHno RUN\n", "flux-jobs: ERROR: ƒgone: No such job\n", 1)
    assert flux.poll(["ƒM7Zq9AKHno", "ƒgone"]) == {"ƒM7Zq9AKHno": JobState.RUNNING}


def test_cancel_is_one_command():
    flux = Flux(BATCH)
    flux.run = runner = FakeRunner().answer()
    flux.cancel(IDS[:3])
    assert [call.argv for call in runner.calls] == [["flux", "cancel", *IDS[:3]]]
