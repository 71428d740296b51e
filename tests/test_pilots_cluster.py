"""Pilot jobs end to end through the CLI on the real private SLURM of the `slurm` fixture.

Allocations are counted by asking SLURM itself (tests/test_cluster.py's ``slurm_jobs``).
Every instance of pilots.yaml appends to began.txt when it starts and to ran.txt when it
ends, so "nothing lost, nothing run twice" is read off the instance folders.
"""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
from pathlib import Path

from tests.test_cluster import FILES, legato, settled, slurm_jobs, start_legato, study_rows, wait_for


def pilot_study(folder: Path, count: int, sleep: float, spec: str = "pilots.yaml") -> list[str]:
    """The spec and pgen in ``folder``; the arguments of ``legato run`` for ``count`` instances."""
    shutil.copy(FILES / spec, folder / "spec.yaml")
    shutil.copy(FILES / "count_pgen.py", folder / "count_pgen.py")
    return ["spec.yaml", "--pgen", "count_pgen.py", "--pargs", f"N:{count}", "--pargs", f"SLEEP:{sleep}", "-o", "out",
            "-s", "0.5"]


def lines(study: Path, name: str) -> dict[str, int]:
    """Instance folder -> lines in its ``name`` file."""
    return {path.parent.name: len(path.read_text().splitlines()) for path in study.glob(f"work/**/{name}")}


def assert_each_ran_once(study: Path, count: int) -> None:
    ran = lines(study, "ran.txt")
    assert len(ran) == count and set(ran.values()) == {1}, ran
    assert study_rows(study, "SELECT state, count(*) FROM instances GROUP BY state") == [("finished", count)]


def test_100_instances_in_chunks_of_20_use_two_allocations(slurm, tmp_path: Path) -> None:
    done = legato(slurm, "run", *pilot_study(tmp_path, 100, 0.1), "--pack", "20", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    study = tmp_path / "out"
    jobs = settled(slurm, study)
    assert len(jobs) <= 2 and set(jobs.values()) - {"CANCELLED"} == {"COMPLETED"}  # cancelled: never needed
    assert_each_ran_once(study, 100)
    ran = {jobid for jobid, state in jobs.items() if state == "COMPLETED"}
    used = {jobid for (jobid,) in study_rows(study, "SELECT DISTINCT jobid FROM instances")}
    assert used and used <= ran  # a pilot that started after the other took every chunk found none


def test_10000_trivial_instances_in_chunks_of_1000_use_at_most_four(slurm, tmp_path: Path) -> None:
    done = legato(slurm, "run", *pilot_study(tmp_path, 10_000, 0, "trivial.yaml"), "--pack", "1000", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    study = tmp_path / "out"
    jobs = settled(slurm, study)
    assert len(jobs) <= 4 and set(jobs.values()) - {"CANCELLED"} == {"COMPLETED"}
    assert study_rows(study, "SELECT state, count(*) FROM instances GROUP BY state") == [("finished", 10_000)]
    assert len(list(study.glob("work/**/out.txt"))) == 10_000


def test_pilot_out_of_walltime_hands_over_to_the_next(slurm, tmp_path: Path) -> None:
    """15 s pilots, 5 s instance walltimes, 15 s of work on 2 cores: the first pilot returns the rest and leaves."""
    done = legato(slurm, "run", *pilot_study(tmp_path, 30, 1), "--pack", "10", "--pilots", "1", "--job-cores", "2",
                  "--job-walltime", "00:00:15", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    study = tmp_path / "out"
    jobs = settled(slurm, study)
    assert len(jobs) >= 2 and set(jobs.values()) == {"COMPLETED"}
    assert_each_ran_once(study, 30)
    assert set(lines(study, "began.txt").values()) == {1}  # it stopped starting instances in time
    records = "".join(path.read_text() for path in (study / "jobs" / "records").glob("*.record"))
    assert '"reason": "walltime"' in records  # the first left for lack of time (returning what it held, if any)


def test_pilot_killed_at_its_time_limit_is_replaced(slurm, tmp_path: Path) -> None:
    """SLURM ends the pilot mid-run (its end moved to now): what ran stays done, what it held runs in the next."""
    conductor = start_legato(slurm, "run", *pilot_study(tmp_path, 40, 1), "--pack", "5", "--pilots", "1",
                             "--job-cores", "1", cwd=tmp_path)
    study = tmp_path / "out"
    wait_for(lambda: len(lines(study, "ran.txt")) >= 2, 60, "two instances done")
    (first,) = slurm_jobs(slurm, study)
    assert slurm.run("scontrol", "update", f"JobId={first}", "EndTime=now").returncode == 0
    output, _ = conductor.communicate(timeout=180)
    assert conductor.returncode == 0, output
    jobs = settled(slurm, study)
    assert jobs[first] == "TIMEOUT" and len(jobs) == 2 and list(jobs.values()).count("COMPLETED") == 1
    assert_each_ran_once(study, 40)
    # the one running when SLURM's signal came began again, unless it ended within the grace that followed
    assert set(lines(study, "began.txt").values()) <= {1, 2}


def test_killed_driver_resumes_and_adopts_the_running_pilot(slurm, tmp_path: Path) -> None:
    conductor = start_legato(slurm, "run", *pilot_study(tmp_path, 16, 1), "--pack", "4", "--pilots", "1",
                             "--job-cores", "2", cwd=tmp_path)
    study = tmp_path / "out"
    wait_for(lambda: len(lines(study, "ran.txt")) >= 3, 60, "three instances done")
    os.kill(conductor.pid, signal.SIGKILL)
    conductor.communicate(timeout=30)
    (pilot,) = slurm_jobs(slurm, study)
    resumed = legato(slurm, "run", "--resume", "out", "-s", "0.5", "--pack", "4", "--pilots", "1", "--job-cores", "2",
                     cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert settled(slurm, study) == {pilot: "COMPLETED"}  # adopted: neither cancelled nor replaced
    assert_each_ran_once(study, 16)
    assert set(lines(study, "began.txt").values()) == {1}


def campaign(folder: Path, rows: int, sleep: float, spec: str = "pilots.yaml") -> list[str]:
    """pilots.yaml over ``rows`` CSV rows (I, SLEEP); the arguments of ``legato batch`` before the batch options."""
    shutil.copy(FILES / spec, folder / "spec.yaml")
    (folder / "rows.csv").write_text("I,SLEEP\n" + "".join(f"{i},{sleep}\n" for i in range(1, rows + 1)))
    return ["batch", "spec.yaml", "--rows", "rows.csv", "-o", "camp", "-s", "0.5"]


def campaign_rows(folder: Path) -> tuple[int, int]:
    """(distinct rows finished, result rows) of the campaign in ``folder``/camp."""
    with sqlite3.connect(folder / "camp" / "results.db") as db:
        return db.execute("SELECT count(DISTINCT row_index), count(*) FROM results WHERE state = 'finished'").fetchone()


def test_campaign_of_100_rows_in_5_batches_uses_two_allocations(slurm, tmp_path: Path) -> None:
    done = legato(slurm, *campaign(tmp_path, 100, 0.1), "-b", "20", "--pack", "100", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert campaign_rows(tmp_path) == (100, 100)
    jobs = settled(slurm, tmp_path / "camp")
    assert len(jobs) <= 2 and set(jobs.values()) - {"CANCELLED"} == {"COMPLETED"}


def test_campaign_of_10000_rows_in_10_batches_uses_at_most_four(slurm, tmp_path: Path) -> None:
    done = legato(slurm, *campaign(tmp_path, 10_000, 0, "trivial.yaml"), "-b", "1000", "--pack", "1000", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert campaign_rows(tmp_path) == (10_000, 10_000)
    jobs = settled(slurm, tmp_path / "camp")
    assert len(jobs) <= 4 and set(jobs.values()) - {"CANCELLED"} == {"COMPLETED"}


def test_campaign_pilot_out_of_walltime_is_replaced(slurm, tmp_path: Path) -> None:
    """12 s pilots, one at a time, 40 one-second rows on 2 cores in 4 batches: several pilots, each row once."""
    done = legato(slurm, *campaign(tmp_path, 40, 1), "-b", "10", "--pack", "5", "--pilots", "1", "--job-cores", "2",
                  "--job-walltime", "00:00:12", "--keep-workspace", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert campaign_rows(tmp_path) == (40, 40)
    jobs = settled(slurm, tmp_path / "camp")
    assert len(jobs) >= 2 and set(jobs.values()) == {"COMPLETED"}
    ran = [len(path.read_text().splitlines()) for path in (tmp_path / "camp").glob("**/ran.txt")]
    began = [len(path.read_text().splitlines()) for path in (tmp_path / "camp").glob("**/began.txt")]
    assert len(ran) == 40 and set(ran) == {1} and set(began) == {1}


def start_campaign(cluster, folder: Path) -> None:
    """24 one-second rows in 3 batches on one 2-core pilot; the driver is killed -9 once 3 rows ran."""
    driver = start_legato(cluster, *campaign(folder, 24, 1), "-b", "8", "--pack", "4", "--pilots", "1", "--job-cores",
                          "2", "--keep-workspace", cwd=folder)
    wait_for(lambda: len(list((folder / "camp").glob("**/ran.txt"))) >= 3, 60, "three rows done")
    os.kill(driver.pid, signal.SIGKILL)
    driver.communicate(timeout=30)


def test_killed_campaign_driver_resumes_with_its_pilot(slurm, tmp_path: Path) -> None:
    start_campaign(slurm, tmp_path)
    (pilot,) = slurm_jobs(slurm, tmp_path / "camp")
    resumed = legato(slurm, "batch", "--resume", "camp", "-s", "0.5", "--pack", "4", "--pilots", "1", "--job-cores", "2",
                     cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert campaign_rows(tmp_path) == (24, 24)
    assert settled(slurm, tmp_path / "camp") == {pilot: "COMPLETED"}  # adopted: neither cancelled nor replaced
    for name in ("ran.txt", "began.txt"):
        counted = [len(path.read_text().splitlines()) for path in (tmp_path / "camp").glob(f"**/{name}")]
        assert len(counted) == 24 and set(counted) == {1}, name


def test_cancel_of_a_campaign_without_its_driver_ends_its_pilots(slurm, tmp_path: Path) -> None:
    start_campaign(slurm, tmp_path)
    (pilot,) = slurm_jobs(slurm, tmp_path / "camp")
    cancelled = legato(slurm, "cancel", "camp", cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert settled(slurm, tmp_path / "camp") == {pilot: "CANCELLED"}
