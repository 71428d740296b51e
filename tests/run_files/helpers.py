"""What the run, conductor and status tests share: this folder's specs, the real CLI, the store, processes."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import legato as legato_package

HERE = Path(__file__).resolve().parent


def copy_spec(name: str, folder: Path, **replace: str) -> Path:
    """``run_files/<name>`` copied into ``folder`` (its $(SPECROOT) there), with text replaced."""
    text = (HERE / name).read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = folder / name
    path.write_text(text)
    return path


def source_env(**extra: str) -> dict[str, str]:
    """This checkout's ``src`` first on PYTHONPATH, so a subprocess runs the code under test."""
    source = str(Path(legato_package.__file__).resolve().parents[1])
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])
    return env


def legato(*args: str, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The ``legato`` command, run to its end, never on a terminal."""
    return subprocess.run([sys.executable, "-m", "legato", *args], cwd=cwd, env=env or source_env(),
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)


def start_legato(*args: str, cwd: Path) -> subprocess.Popen:
    """The ``legato`` command in the background; the test waits for it or kills it."""
    return subprocess.Popen([sys.executable, "-m", "legato", *args], cwd=cwd, env=source_env(), text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def rows(study: Path, sql: str, args: tuple = ()) -> list[tuple]:
    db = sqlite3.connect(study / "legato.db", timeout=30)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def states(study: Path) -> dict[str, str]:
    """``{"step/label": state}`` as the store has them now."""
    return {f"{step}/{label}" if label else step: state
            for step, label, state in rows(study, "SELECT step, label, state FROM instances")}


def spans(study: Path, step: str | None = None) -> list[tuple[float, float]]:
    """(started, ended) of each instance, in start order: the conductor's own clock, not the test's."""
    where = " WHERE step = ?" if step else ""
    return sorted(rows(study, "SELECT started, ended FROM instances" + where, (step,) if step else ()))


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll until ``predicate`` holds; the timeout only bounds a hang, it is no measurement."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still runs (zombies do not count: they run nothing)."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def process_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    """A user mistake: non-zero exit, one line on stderr naming it, no traceback."""
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


class Gates:
    """The folders ``gated.yaml`` uses beside the spec: pids/P (one line per start), gates/P, counts/P
    (one line per completed run). They lie outside the study, so no conductor can lose them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        for name in ("pids", "gates", "counts"):
            (folder / name).mkdir(exist_ok=True)

    def open(self, *values: int | str) -> None:
        for value in values:
            (self.folder / "gates" / str(value)).touch()

    def open_all(self) -> None:
        self.open("all")

    def starts(self) -> dict[int, list[int]]:
        """The process group of each start of each instance, by its P."""
        return {int(p.name): [int(line) for line in p.read_text().split()] for p in (self.folder / "pids").iterdir()}

    def completions(self) -> dict[int, int]:
        return {int(p.name): len(p.read_text().split()) for p in (self.folder / "counts").iterdir()}

    def waiting(self) -> list[int]:
        """Process groups of instances started but not completed: running or left behind."""
        done = self.completions()
        return [pids[-1] for p, pids in self.starts().items() if len(pids) > done.get(p, 0)]
