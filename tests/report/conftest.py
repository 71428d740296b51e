"""A finished sample campaign with failed rows, made once per test module (it takes a few seconds)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.campaign.files.checks import HERE, legato

REPO = Path(__file__).resolve().parents[2]
CAMPAIGN = ["batch", "flaky.yaml", "-b", "6", "--rows", "params.csv", "--index", "param_combo",
            "--result", "echo-params:params.txt", "--min-free", "1M", "--min-inodes", "0", "-j", "2", "-o", "camp"]


def flaky_sample(tmp_path_factory, name: str) -> Path:
    """A copy of the sample with the flaky spec, its fail flag set: rows with PARAM1 < 30 fail with exit code 3."""
    folder = tmp_path_factory.mktemp(name) / "batched_parameters"
    shutil.copytree(REPO / "samples" / "batched_parameters", folder, ignore=shutil.ignore_patterns("studies"))
    shutil.copy(HERE / "flaky.yaml", folder)
    (folder / "fail.flag").touch()
    return folder


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> Path:
    """The sample campaign over its 20 rows in batches of 6, with failed rows."""
    folder = flaky_sample(tmp_path_factory, "report")
    done = legato(*CAMPAIGN, cwd=folder)
    assert done.returncode == 1, done.stdout + done.stderr
    return folder / "camp"


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A plain ``legato run`` study folder of the same rows, with the same failures."""
    folder = flaky_sample(tmp_path_factory, "study")
    done = legato("run", "flaky.yaml", "--pgen", "batched_demo_pgen.py", "--pargs", "CSV:params.csv", "-o", "study",
                  "-j", "2", cwd=folder)
    assert done.returncode == 1, done.stdout + done.stderr
    return folder / "study"
