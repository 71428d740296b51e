"""Fixtures shared by the test modules."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytest_plugins = ["tests.servers.postgres", "tests.servers.slurm"]

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def sample_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of samples/batched_parameters (without earlier studies), made the working folder.

    The sample's pgen reads ``params.csv`` relative to the working folder, as Maestro's does.
    """
    folder = tmp_path / "batched_parameters"
    shutil.copytree(REPO / "samples" / "batched_parameters", folder, ignore=shutil.ignore_patterns("studies"))
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def write_spec(tmp_path: Path):
    """Write a spec (YAML text) into the test's folder and return its path."""

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def small_fs(tmp_path: Path):
    """A 2 MiB tmpfs; the test is skipped where one cannot be mounted (not root)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)
