"""How a study's cluster options choose its executor and travel to a detached conductor."""
from __future__ import annotations

import pytest

from legato.cli import run
from legato.launch import ClusterOptions


@pytest.mark.parametrize("options, pilots", [
    (ClusterOptions(), True),
    (ClusterOptions(pilots=0), False),  # one job per chunk
    (ClusterOptions(array=True), False),
    (ClusterOptions(pack=1), False),  # Maestro's one job per instance
])
def test_pilots_unless_jobs_of_their_own_are_asked_for(options, pilots):
    assert options.uses_pilots is pilots


def test_a_detached_conductor_gets_the_same_options():
    options = ClusterOptions(pack=50, pilots=3, job_walltime="12:00:00", job_cores=36, interval=2.0)
    argv = options.argv()
    assert argv == ["--pack", "50", "-s", "2.0", "--pilots", "3", "--job-cores", "36", "--job-walltime", "12:00:00"]
    parsed = run.make_context("run", ["--resume", "x", *argv]).params
    assert (parsed["pilots"], parsed["job_walltime"], parsed["job_cores"], parsed["pack"]) == (3, "12:00:00", 36, 50)
