"""A full disk at each phase of a campaign: one ``legato: error:`` line, no lost row, and a resume that finishes.

The campaign folder sits on a small tmpfs mounted by the test (CI runs as root); another
"process" (``files/fill.py``) takes the last bytes of it just before the named call. Once the
filler is gone, ``legato batch --resume --retry-failed`` must end with every row harvested
exactly once and every archive verifying with plain ``tar``.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.campaign.files.checks import csv_rows, legato, source_env
from tests.faults.test_kills import check_campaign, status_answers

pytestmark = pytest.mark.faults

FILL = Path(__file__).resolve().parent / "files" / "fill.py"
PHASES = [("set-up", 2), ("running", 4), ("ledger", 3), ("harvest", 2), ("archive", 2), ("clean", 2)]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 24 MiB tmpfs, unmounted afterwards; skipped, saying why, where this process may not mount."""
    mount = tmp_path / "small"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small file system to fill")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("point, nth", PHASES, ids=[point for point, _ in PHASES])
def test_a_full_disk_at_a_phase_is_one_line_then_resumes(sample_dir, small_disk, point, nth):
    camp = small_disk / "camp"
    filler = small_disk / "filler"
    args = ["batch", "batched_parameters_demo.yaml", "-b", "3", "--rows", "params.csv", "--index", "param_combo",
            "--result", "echo-params:params.txt", "--max-rows", "9", "--min-free", "1M", "--min-inodes", "0",
            "-j", "2", "-o", str(camp)]
    done = subprocess.run([sys.executable, str(FILL), point, str(nth), str(filler), *args], cwd=sample_dir,
                          env=source_env(), capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert filler.is_file(), "the disk was never filled: the phase was not reached"
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert done.returncode != 0, done.stdout
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("legato: error: "), done.stderr
    status_answers(camp)
    filler.unlink()
    resumed = legato("batch", "--resume", str(camp), "--retry-failed", cwd=sample_dir)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    expected = {key: row for key, row in csv_rows(sample_dir / "params.csv").items() if int(key) < 9}
    batches = len(list((camp / "archives").glob("*.tar.gz")))
    check_campaign(camp, expected, batches)
