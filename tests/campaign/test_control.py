"""Starting and resuming campaign folders: no password kept, and folders left by a start killed early."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sqlalchemy.engine import make_url

from legato.campaign.ledger import PARTIAL
from tests.campaign.files.checks import csv_rows, python_legato, results, source_env

ARGS = ["batch", "batched_parameters_demo.yaml", "-b", "3", "--rows", "params.csv", "--index", "param_combo",
        "--result", "echo-params:params.txt", "--max-rows", "6", "--min-free", "1M", "--min-inodes", "0", "-o", "camp"]


def run(sample_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in source_env().items() if not key.startswith("PG")}
    environment.update(env)
    return subprocess.run(python_legato(*args), cwd=sample_dir, env=environment, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)


def test_the_results_password_is_never_stored(sample_dir, postgres_url, tmp_path):
    password = make_url(postgres_url).password
    nowhere = str(tmp_path / "no-pgpass")
    done = run(sample_dir, *ARGS, "--results", postgres_url, PGPASSFILE=nowhere)
    assert done.returncode == 0, done.stderr
    assert len(results(sample_dir / "camp", postgres_url)) == 6
    for path in (sample_dir / "camp").rglob("*"):
        assert not path.is_file() or password.encode() not in path.read_bytes(), path

    bare = make_url(postgres_url)._replace(password=None).render_as_string(hide_password=False)
    args = [*ARGS[:-2], "--results", bare, "-o"]
    refused = run(sample_dir, *args, "camp2", PGPASSFILE=nowhere)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert "legato keeps no passwords: set PGPASSWORD or add the server to ~/.pgpass" in refused.stderr
    resumed = run(sample_dir, "batch", "--resume", "camp2", PGPASSWORD=password, PGPASSFILE=nowhere)
    assert resumed.returncode == 0, resumed.stderr
    assert len(results(sample_dir / "camp2", postgres_url)) == 6

    url = make_url(postgres_url)
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"{url.host}:{url.port}:{url.database}:{url.username}:{password}\n")
    pgpass.chmod(0o600)
    done = run(sample_dir, *args, "camp3", PGPASSFILE=str(pgpass))
    assert done.returncode == 0, done.stderr
    assert len(results(sample_dir / "camp3", postgres_url)) == 6


def test_a_folder_left_by_a_start_killed_before_its_ledger_is_replaced(sample_dir):
    (sample_dir / "camp").mkdir()
    (sample_dir / "camp" / PARTIAL).write_bytes(b"")
    done = run(sample_dir, *ARGS)
    assert done.returncode == 0, done.stderr
    assert len(results(sample_dir / "camp")) == 6 and not (sample_dir / "camp" / PARTIAL).exists()


def test_a_campaign_folder_with_other_files_is_not_replaced(sample_dir):
    (sample_dir / "camp").mkdir()
    (sample_dir / "camp" / PARTIAL).write_bytes(b"")
    (sample_dir / "camp" / "notes.txt").write_text("mine")
    done = run(sample_dir, *ARGS)
    assert done.returncode == 2 and "the campaign folder exists and is not empty" in done.stderr
    assert (sample_dir / "camp" / "notes.txt").read_text() == "mine"
    assert csv_rows(sample_dir / "params.csv")  # the sample is untouched
    assert os.path.exists(sample_dir / "camp" / PARTIAL)
