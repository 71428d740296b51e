"""A finished sample campaign with failed rows, made once per test module (it takes a few seconds)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.campaign.files.checks import HERE, legato

REPO = Path(__file__).resolve().parents[2]
CAMPAIGN = ["batch", "flaky.yaml", "-b", "6", "--rows", "params.csv", "--index", "param_combo",
            "--result", "echo-params:params.txt", "--min-free", "1M", "--min-inodes", "0", "-j", "2", "-o", "camp"]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> Path:
    """The sample campaign (20 rows, batches of 6) where rows with PARAM1 < 30 fail with exit code 3."""
    folder = tmp_path_factory.mktemp("report") / "batched_parameters"
    shutil.copytree(REPO / "samples" / "batched_parameters", folder, ignore=shutil.ignore_patterns("studies"))
    shutil.copy(HERE / "flaky.yaml", folder)
    (folder / "fail.flag").touch()
    done = legato(*CAMPAIGN, cwd=folder)
    assert done.returncode == 1, done.stdout + done.stderr
    return folder / "camp"


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A plain ``legato run`` study folder of the sample spec, with failures too."""
    folder = tmp_path_factory.mktemp("study") / "batched_parameters"
    shutil.copytree(REPO / "samples" / "batched_parameters", folder, ignore=shutil.ignore_patterns("studies"))
    shutil.copy(HERE / "flaky.yaml", folder)
    (folder / "fail.flag").touch()
    done = legato("run", "flaky.yaml", "--pgen", "batched_demo_pgen.py", "--pargs", "CSV:params.csv", "-o", "study",
                  "-j", "2", cwd=folder)
    assert done.returncode == 1, done.stdout + done.stderr
    return folder / "study"
