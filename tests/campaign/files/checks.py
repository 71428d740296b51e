"""What the campaign tests check again and again: results rows, archives, leftovers, the real CLI."""
from __future__ import annotations

import csv
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Callable

import sqlalchemy as sa

import legato as legato_package
from legato.campaign.archive import list_members, verify_archive

HERE = Path(__file__).resolve().parent
PARAMS = ("PARAM1", "PARAM2", "PARAM3")


def legato(*args: str, cwd: Path, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The ``legato`` command of the code under test, in a subprocess, never on a terminal; ``env`` adds variables."""
    return subprocess.run(python_legato(*args), cwd=cwd, env={**source_env(), **(env or {})}, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=timeout)


def password_env(url: str) -> dict[str, str]:
    """What a user resuming a campaign over this database sets: legato keeps URLs without their password."""
    return {"PGPASSWORD": sa.engine.make_url(url).password or ""}


def python_legato(*args: str) -> list[str]:
    return [sys.executable, "-m", "legato", *args]


def source_env() -> dict[str, str]:
    """The environment with this checkout's ``src`` first, so subprocesses run the code under test."""
    source = str(Path(legato_package.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}


def csv_rows(path: Path) -> dict[str, dict[str, str]]:
    """The sample's rows by their ``param_combo`` index."""
    with open(path, newline="") as handle:
        return {row["param_combo"]: row for row in csv.DictReader(handle)}


def sqlite_from_csv(csv_path: Path, db_path: Path, table: str = "params") -> None:
    rows = list(csv_rows(csv_path).values())
    with sqlite3.connect(db_path) as db:
        db.execute(f"CREATE TABLE {table} (param_combo INTEGER PRIMARY KEY, param1 TEXT, param2 TEXT, param3 TEXT)")
        db.executemany(f"INSERT INTO {table} VALUES (:param_combo, :param1, :param2, :param3)", rows)


def results(folder: Path, url: str | None = None) -> list[dict]:
    """Every results row of the campaign in ``folder`` (its own results.db unless ``url``)."""
    engine = sa.create_engine((url or f"sqlite:///{folder / 'results.db'}").replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            table = sa.Table("results", sa.MetaData(), autoload_with=conn)
            query = sa.select(table).where(table.c.campaign == folder.name)
            return [dict(row._mapping) for row in conn.execute(query)]
    finally:
        engine.dispose()


def index_of(row: dict) -> str:
    """A results row's index as text: the index column keeps its own name (``param_combo``, ``id``), else ``row_index``."""
    return str(next(row[name] for name in ("param_combo", "id", "row_index") if row.get(name) is not None))


def assert_each_row_once(rows: list[dict], expected: dict[str, dict[str, str]], step: str = "echo-params",
                         parsed: bool = True) -> None:
    """One finished results row per source row, with its parameters and (``parsed``) its params.txt values."""
    mine = [row for row in rows if row["step"] == step]
    indexes = sorted(index_of(row) for row in mine)
    assert indexes == sorted(expected), f"row indexes harvested: {indexes}"
    for row in mine:
        source = expected[index_of(row)]
        assert row["state"] == "finished", row
        assert row["returncode"] == 0, row
        for name in PARAMS:
            assert str(row[name]) == source[name.lower()], (name, row)
            if parsed:
                assert row[f"{step}_{name}"] == int(source[name.lower()]), (name, row)


def ledger_batches(folder: Path) -> list[dict]:
    with sqlite3.connect(folder / "campaign.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM batches ORDER BY number")]


def archived_names(archive: Path) -> list[str]:
    """Every file an archive holds: its members, or (an archive folder) its copies and its archives' members."""
    if archive.is_file():
        return [name for name, _ in list_members(str(archive))]
    names = []
    for path in sorted(archive.rglob("*")):
        if path.name.endswith((".tar.gz", ".tar.zst")):
            names += [f"{path}/{name}" for name, _ in list_members(str(path))]
        elif path.is_file():
            names.append(str(path))
    return names


def assert_archives_verify(folder: Path, batches: int) -> list[dict]:
    """Every batch cleaned, with an archive that matches the ledger's SHA-256 and holds its params.txt files."""
    recorded = ledger_batches(folder)
    assert len(recorded) == batches, recorded
    for batch in recorded:
        assert batch["phase"] == "cleaned", batch
        assert batch["archive"] and Path(batch["archive"]).exists(), batch
        verify_archive(batch["archive"], batch["sha256"])
        if Path(batch["archive"]).is_file():
            assert batch["archive_bytes"] == Path(batch["archive"]).stat().st_size
        outputs = [name for name in archived_names(Path(batch["archive"])) if name.endswith("/params.txt")]
        assert len(outputs) == batch["finished"], (batch, outputs)
    leftovers = list(Path(folder).glob("**/*.partial"))
    assert not leftovers, leftovers
    return recorded


def assert_no_workspace(folder: Path) -> None:
    work = folder / "work"
    assert not work.exists() or not any(work.iterdir()), list(work.iterdir())


def status_answers(folder: Path) -> None:
    """``legato status`` after a kill: an answer or a one-line error, never a traceback."""
    shown = legato("status", folder.name, cwd=folder.parent)
    assert "Traceback" not in shown.stdout + shown.stderr, shown.stderr
    assert shown.returncode == 0 or shown.stderr.startswith("legato: error: "), shown.stderr


def check_campaign(camp: Path, expected: dict, batches: int) -> None:
    """The end state every fault must lead to: each row once, each archive verified and read by plain tar, no workspace."""
    assert_each_row_once(results(camp), expected)
    for batch in assert_archives_verify(camp, batches):
        listed = subprocess.run(["tar", "-tf", batch["archive"]], capture_output=True, text=True)
        assert listed.returncode == 0 and "params.txt" in listed.stdout, listed.stderr
    assert_no_workspace(camp)


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it, whatever its session (worker shells have their own)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def kill_tree(root: int) -> None:
    for pid in process_tree(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_with_kills(sample_dir: Path, camp: Path, first: list[str], rng: random.Random, most: int,
                   kill: Callable[[int], None], pause: tuple[float, float] = (0.2, 1.2)) -> int:
    """Run a campaign to its end, ``kill``-ing it (given the driver's pid) at random instants at most ``most``
    times; the kills made. After each, ``legato status`` must answer without a traceback."""
    kills, args = 0, first
    log = sample_dir / f"{camp.name}.log"
    while True:
        with open(log, "a") as output:
            process = subprocess.Popen(python_legato(*args), cwd=sample_dir, env=source_env(), stdout=output,
                                       stderr=output, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            process.wait(timeout=rng.uniform(*pause) if kills < most else 120)
        except subprocess.TimeoutExpired:
            kill(process.pid)
            process.wait()
            kills += 1
            if (camp / "campaign.db").is_file():
                status_answers(camp)
                args = ["batch", "--resume", camp.name]
            else:
                args = first  # killed while it started: the same command starts it again
            continue
        assert process.returncode == 0, log.read_text()
        assert "Traceback" not in log.read_text()
        return kills


def kill_group(pid: int) -> None:
    """SIGKILL to the driver's process group (the driver and its finisher child; worker shells have their own)."""
    os.killpg(pid, signal.SIGKILL)
