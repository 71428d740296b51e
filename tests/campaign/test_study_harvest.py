"""legato harvest on legato and Maestro study folders, success rules, and a campaign's --success/--keep-failed."""
from __future__ import annotations

import os
import sqlite3
import sys
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from legato import api
from legato.campaign.study_harvest import parse_rules
from legato.errors import LegatoError
from tests import maestro
from tests.campaign.files.checks import legato, python_legato, source_env

SPEC = """
description: {name: hv, description: harvest me}
study:
  - name: make
    description: writes a result; P=3 fails
    run:
      cmd: |
        echo "x=$(P) tag=p$(P)" > result.kv
        if [ $(P) = 2 ]; then : > empty.txt; else echo data > empty.txt; fi
        [ $(P) != 3 ]
  - name: sum
    description: a funnel
    run:
      cmd: echo total=6 > total.kv
      depends: [make_*]
global.parameters:
  P: {values: [1, 2, 3, 4], label: P.%%}
"""


def rows(db: Path) -> dict[tuple[str, str], dict]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return {(r["step"], r["label"]): dict(r) for r in conn.execute("SELECT * FROM results")}


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    return path


def test_harvest_a_legato_study_twice_adds_nothing(spec, tmp_path):
    study = api.prepare(str(spec), out=str(tmp_path / "study")).root
    api.execute(study, jobs=2, progress=False)
    out = legato("harvest", str(study), "--result", "make:result.kv", "--results", f"sqlite:///{tmp_path}/r.db",
                 "--success", "make:exists:empty.txt", "--success", "make:x<4", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "5 rows harvested (4 failed)" in out.stdout  # P.3 exit 1, P.2 empty file, P.4 x<4, sum skipped
    legato("harvest", str(study), "--result", "make:result.kv", "--results", f"sqlite:///{tmp_path}/r.db",
           "--success", "make:exists:empty.txt", "--success", "make:x<4", cwd=tmp_path)
    found = rows(tmp_path / "r.db")
    assert len(found) == 5
    assert found[("make", "P.1")]["state"] == "finished" and found[("make", "P.1")]["x"] == 1
    assert "success rule make:exists:empty.txt not met" in found[("make", "P.2")]["reason"]
    assert found[("make", "P.4")]["reason"] == "success rule make:x<4 not met: x = 4"
    assert found[("make", "P.3")]["state"] == "failed"


def test_harvest_a_maestro_study(spec, tmp_path):
    maestro.require()
    subprocess.run([str(maestro.MAESTRO), "run", "-fg", "-y", "-o", str(tmp_path / "mstudy"), str(spec)],
                   env=maestro.env(), cwd=tmp_path, capture_output=True, timeout=300)
    assert (tmp_path / "mstudy" / "status.csv").is_file()
    for _ in range(2):
        out = legato("harvest", str(tmp_path / "mstudy"), "--result", "make:result.kv", "--success",
                     "make:has:tag", "--success", "make:tag!=p2", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
    found = rows(tmp_path / "mstudy" / "results.db")
    assert {key for key in found if key[0] == "make"} == {("make", f"P.{p}") for p in (1, 2, 3, 4)}
    assert found[("make", "P.1")]["x"] == 1 and found[("make", "P.1")]["P"] == 1 and found[("make", "P.1")]["campaign"] == "mstudy"
    assert found[("make", "P.3")]["state"] == "failed"
    assert found[("make", "P.2")]["reason"] == "success rule make:tag!=p2 not met: tag = 'p2'"
    assert found[("make", "P.4")]["state"] == "finished" and datetime.fromisoformat(found[("make", "P.1")]["started"]).year > 2000


def test_harvest_mistakes_are_one_line(spec, tmp_path):
    (tmp_path / "empty").mkdir()
    out = legato("harvest", str(tmp_path / "empty"), cwd=tmp_path)
    assert out.returncode == 2 and "not a study folder" in out.stderr and "Traceback" not in out.stderr
    study = api.prepare(str(spec), out=str(tmp_path / "study")).root
    out = legato("harvest", str(study), "--success", "make:x~4", cwd=tmp_path)
    assert out.returncode == 2 and "--success 'make:x~4': expected" in out.stderr
    out = legato("harvest", str(study), "--results", "mysql://db/x", cwd=tmp_path)
    assert out.returncode == 2 and "unsupported scheme 'mysql'" in out.stderr
    assert not (Path(study) / "results.db").exists()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "status.csv").write_text("a,b\n1,2\n")
    out = legato("harvest", str(tmp_path / "bad"), cwd=tmp_path)
    assert out.returncode == 2 and "not Maestro's status file" in out.stderr


def test_rules_are_checked():
    with pytest.raises(LegatoError, match="no step 'nope'"):
        parse_rules(["nope:has:x"], {"make"})
    with pytest.raises(LegatoError, match="expected STEP:RULE"):
        parse_rules(["make"], {"make"})
    rule, = parse_rules(["make:energy >= 1.5"], {"make"})
    assert (rule.subject, rule.op, rule.value) == ("energy", ">=", 1.5)
    assert rule.broken(Path("."), {"energy": 2}) is None and rule.broken(Path("."), {"energy": 1})


@pytest.mark.parametrize("mode", [["--archive-mode", "step"], ["--archive-format", "none"]])
def test_archive_ls_and_get_in_step_and_copy_modes(spec, tmp_path, mode):
    (tmp_path / "rows.csv").write_text("P\n1\n2\n")
    out = legato("batch", str(spec), "-b", "2", "--rows", "rows.csv", "-o", "camp", *mode, "--min-free", "1M",
                 "--min-inodes", "0", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    listing = legato("archive", "ls", str(tmp_path / "camp"), "make/P.2", cwd=tmp_path)
    assert listing.returncode == 0 and "result.kv" in listing.stdout and "P.1" not in listing.stdout, listing
    got = legato("archive", "get", str(tmp_path / "camp"), "make/P.2", "-d", "back", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert next((tmp_path / "back").rglob("result.kv")).read_text().startswith("x=2")
    missing = legato("archive", "get", str(tmp_path / "camp"), "make/P.2", "nope.txt", cwd=tmp_path)
    assert missing.returncode == 2 and "nothing under" in missing.stderr and "Traceback" not in missing.stderr


def test_campaign_success_rules_keep_failed_and_instance_archives(spec, tmp_path):
    (tmp_path / "rows.csv").write_text("P\n1\n2\n3\n4\n")
    out = legato("batch", str(spec), "-b", "2", "--rows", "rows.csv", "-o", "camp", "--result", "make:result.kv",
                 "--success", "make:exists:empty.txt", "--keep-failed", "--archive-mode", "instance",
                 "--archive-format", "tar.zst", "--min-free", "1M", "--min-inodes", "0", cwd=tmp_path)
    assert out.returncode == 1, out.stderr  # failed rows
    camp = tmp_path / "camp"
    kept = sorted(p.name for p in (camp / "failed").glob("*/make/*"))
    assert kept == ["P.2", "P.3"]
    listing = legato("archive", "ls", str(camp), "make/P.1", cwd=tmp_path)
    assert listing.returncode == 0 and "result.kv" in listing.stdout, listing.stderr
    got = legato("archive", "get", str(camp), "make/P.4", "result.kv", "-d", "back", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert next((tmp_path / "back").rglob("result.kv")).read_text().startswith("x=4")
    assert not any((camp / "work").glob("batch-*"))
    assert len(list((camp / "archives").glob("batch-*/make/*.tar.zst"))) == 4


def test_bad_archive_options_leave_no_campaign_folder(spec, tmp_path):
    (tmp_path / "rows.csv").write_text("P\n1\n")
    for extra, problem in ((["--archive-mode", "step", "--archive-format", "none"], "it has no --archive-mode step"),
                           (["--success", "make:energy"], "--success 'make:energy': expected")):
        out = legato("batch", str(spec), "-b", "2", "--rows", "rows.csv", "-o", "camp", *extra, cwd=tmp_path)
        assert out.returncode == 2 and problem in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert not (tmp_path / "camp").exists()


def test_harvest_as_the_last_step_of_a_study(tmp_path):
    """The sample whose funnel step is ``legato harvest`` of its own study folder."""
    sample = Path(__file__).resolve().parents[2] / "samples" / "harvest_step" / "harvest_step.yaml"
    env = {**source_env(), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # legato as a command
    out = subprocess.run(python_legato("run", str(sample), "-o", "study"), cwd=tmp_path, env=env, capture_output=True,
                         text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    found = rows(tmp_path / "study" / "results.db")
    assert sorted(label for step, label in found if step == "sim") == ["P.1", "P.2", "P.3", "P.4"]
    assert found[("sim", "P.4")]["energy"] == 4.5 and found[("sim", "P.4")]["campaign"] == "study"
    assert found[("sim", "P.3")]["reason"] == "success rule sim:converged==1 not met: converged = 0"


def test_a_row_failing_its_rule_is_retried(tmp_path):
    """The rule's failure is a failed row like an exit code's: --retry-failed runs it again, and its new result counts."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace('echo "x=$(P) tag=p$(P)" > result.kv', 'if [ -e $(SPECROOT)/seen.$(P) ]; then echo ok=1 > '
                                 'result.kv; else touch $(SPECROOT)/seen.$(P); echo ok=$(( $(P) != 2 )) > result.kv; fi')
                    .replace("[ $(P) != 3 ]", "true"))
    (tmp_path / "rows.csv").write_text("P\n1\n2\n3\n")
    args = ["--min-free", "1M", "--min-inodes", "0"]
    out = legato("batch", str(spec), "-b", "3", "--rows", "rows.csv", "-o", "camp", "--result", "make:result.kv",
                 "--success", "make:ok==1", *args, cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    first = rows(tmp_path / "camp" / "results.db")
    assert first[("make", "P.2")]["reason"] == "success rule make:ok==1 not met: ok = 0"
    out = legato("batch", "--resume", "camp", "--retry-failed", *args, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    again = [row for row in rows_list(tmp_path / "camp" / "results.db") if row["label"] == "P.2" and row["step"] == "make"]
    assert [(row["state"], row["ok"]) for row in again] == [("finished", 1)]


def rows_list(db: Path) -> list[dict]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM results")]
