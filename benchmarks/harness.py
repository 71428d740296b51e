"""Shared machinery of legato's benchmarks: run, measure, count, summarise, record.

Every measured command runs in a fresh process so that interpreter start-up and imports are
part of what a user waits for. Peak memory comes from ``os.wait4``: Linux reports the largest
resident set of the direct child *or of any descendant it waited for* (a maximum over single
processes, never a sum). For a conductor that is the conductor's own peak; processes that are
never waited for by the child (detached daemons) are not seen, and for commands that fork many
instances the instances' memory is not part of the conductor figure.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SAMPLE = REPO / "samples" / "batched_parameters"
SAMPLE_SPEC = SAMPLE / "batched_parameters_demo.yaml"
SAMPLE_PGEN = SAMPLE / "batched_demo_pgen.py"
CSV_GENERATOR = SAMPLE / "csv_generator.py"
RESULTS = BENCH_DIR / "RESULTS.md"
FLOORS = BENCH_DIR / "floors.py"


class BenchError(Exception):
    """A benchmark that cannot go on (a tool missing, a command failing): printed as one line."""


@dataclass(frozen=True)
class Measurement:
    """One run of one command."""

    seconds: float
    peak_kib: int


@dataclass
class Series:
    """Repeated measurements of one tool on one workload; the median is what gets reported."""

    tool: str
    runs: list[Measurement] = field(default_factory=list)
    files: int = 0
    folders: int = 0
    instances: int = 0

    @property
    def seconds(self) -> float:
        return statistics.median(run.seconds for run in self.runs)

    @property
    def peak_mib(self) -> float:
        return statistics.median(run.peak_kib for run in self.runs) / 1024

    @property
    def entries(self) -> int:
        return self.files + self.folders


def measure(argv: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> Measurement:
    """Run ``argv`` to completion; wall time from just before the fork to the reaping wait4.

    The disk is synced first (untimed): on a VM the write-back of the previous run's thousands
    of folders otherwise lands on whichever run comes next and doubles its time.
    """
    os.sync()
    with open(log, "wb") as sink:
        start = time.perf_counter()
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise BenchError(f"{shlex.join(argv)} exited {process.returncode} in {cwd}:\n  " + "\n  ".join(tail))
    return Measurement(seconds, usage.ru_maxrss)


def count_entries(folder: Path) -> tuple[int, int]:
    """(files, folders) below ``folder``, not counting it; symlinks count as files."""
    files = folders = 0
    stack = [os.fspath(folder)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders += 1
                    stack.append(entry.path)
                else:
                    files += 1
    return files, folders


def folders_preorder(folder: Path) -> list[str]:
    """Every folder below ``folder`` as a relative path, parents before children."""
    found: list[str] = []
    stack = [""]
    while stack:
        relative = stack.pop()
        with os.scandir(folder / relative if relative else folder) as entries:
            children = sorted(entry.name for entry in entries if entry.is_dir(follow_symlinks=False))
        for name in reversed(children):
            path = f"{relative}/{name}" if relative else name
            found.append(path)
            stack.append(path)
    found.sort(key=lambda path: path.count("/"))
    return found


def leaf_folders(folders: list[str]) -> list[str]:
    """The folders with no sub-folder: the instance folders of a one-step study."""
    parents = {path.rsplit("/", 1)[0] for path in folders if "/" in path}
    return [path for path in folders if path not in parents]


def remove(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def legato_argv() -> list[str]:
    """The ``legato`` console script beside this interpreter (a pyenv shim would add ~50 ms)."""
    script = Path(sys.executable).parent / "legato"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "legato"]


def maestro_argv(venv: Path) -> list[str]:
    script = venv / "bin" / "maestro"
    if not script.is_file():
        raise BenchError(f"{script}: maestrowf is not installed; run benchmarks/setup.sh (or set BENCH_VENV)")
    return [str(script)]


def tool_env() -> dict[str, str]:
    """Maestro polls with ``$USER`` and asks questions on a terminal: give it a user, no terminal."""
    env = dict(os.environ)
    if not env.get("USER"):
        import pwd

        env["USER"] = pwd.getpwuid(os.getuid()).pw_name
    return env


def make_csv(rows: int, columns: int, path: Path) -> Path:
    """The sample's CSV generator, seeded, cached per size."""
    if not path.exists():
        subprocess.run([sys.executable, str(CSV_GENERATOR), str(rows), str(columns), str(path), "0"], check=True)
    return path


def common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; the median is reported (default 3)")
    parser.add_argument("--workdir", type=Path, help="where studies are written (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder afterwards")
    parser.add_argument("--bench-venv", type=Path,
                        default=Path(os.environ.get("BENCH_VENV", REPO / ".bench-venv")),
                        help="venv holding maestrowf (default $BENCH_VENV or .bench-venv)")
    parser.add_argument("--no-record", action="store_true", help=f"do not write {RESULTS.name}")


def workdir(args: argparse.Namespace) -> Path:
    """The work folder; every run writes its study below ``<work>/studies`` under a new name."""
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        work = args.workdir.resolve()
    else:
        work = Path(tempfile.mkdtemp(prefix="legato-bench-"))
    remove(work / "studies")
    (work / "studies").mkdir()
    return work


def cleanup(args: argparse.Namespace, work: Path) -> None:
    """Delete the studies only at the very end: deleting thousands of folders slows the file
    system for seconds afterwards, which would be billed to whichever run came next. A work
    folder the user named keeps its CSV files; a temporary one goes entirely."""
    if args.keep:
        return
    remove(work / "studies" if args.workdir else work)


def main_guard(body: Callable[[], None]) -> None:
    """One line for a benchmark that cannot go on, instead of a traceback."""
    try:
        body()
    except BenchError as exc:
        print(f"benchmark: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("inf")


def paired_ratio(numerator: Series, denominator: Series) -> float:
    """The median over repetitions of numerator/denominator: each repetition runs both tools back to back,
    so a machine that speeds up or slows down during the run shifts both sides of each ratio alike."""
    return statistics.median(ratio(a.seconds, b.seconds) for a, b in zip(numerator.runs, denominator.runs, strict=True))


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def table(headers: list[str], rows: Iterable[list[str]]) -> str:
    """A Markdown table that reads as well in a terminal as in RESULTS.md."""
    rows = [headers, *rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def series_rows(group: str, series: Iterable[Series]) -> list[list[str]]:
    """Table rows: median time, every repetition, median peak memory, entries created."""
    return [[
        group, item.tool, f"{item.instances:,}", f"{item.seconds:.3f}",
        ", ".join(f"{run.seconds:.2f}" for run in item.runs), f"{item.peak_mib:.0f}",
        f"{item.files:,}", f"{item.folders:,}",
    ] for item in series]


SERIES_HEADERS = ["workload", "tool", "instances", "median s", "runs s", "peak MiB", "files", "folders"]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"nproc {os.cpu_count()}, {cpu}, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def revision() -> str:
    """The legato commit measured, marked when the work tree has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{' + uncommitted changes in src/' if dirty else ''}"


def publish(args: argparse.Namespace, key: str, title: str, body: str) -> None:
    """Print a benchmark's report and, unless --no-record, put it in RESULTS.md."""
    print(body)
    if not args.no_record:
        record(key, title, body)


def portable(argv: list[str]) -> list[str]:
    """The command line without this machine's folders: the maestrowf venv as ``$BENCH_VENV``,
    other absolute paths as ``$SCRATCH/...`` (their first component dropped), repository paths relative."""
    words = []
    for previous, word in zip(["", *argv], argv):
        if previous == "--bench-venv":
            word = "$BENCH_VENV"
        elif os.path.isabs(word):
            inside = Path(word).resolve().is_relative_to(REPO)
            word = os.path.relpath(word, REPO) if inside else "$SCRATCH/" + "/".join(Path(word).parts[2:])
        words.append(word)
    return words


def record(key: str, title: str, body: str) -> None:
    """Replace (or append) this benchmark's section of RESULTS.md, headed by how it was produced."""
    command = shlex.join(["python3", os.path.relpath(sys.argv[0], REPO), *portable(sys.argv[1:])])
    header = "\n".join([
        f"## {title}",
        "",
        f"- command: `{command}`",
        f"- date: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {machine()}",
        f"- legato revision: {revision()}",
    ])
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    section = f"{begin}\n{header}\n\n{body.strip()}\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nWritten by the scripts in this folder; see README.md.\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else f"{text.rstrip()}\n\n{section}\n"
    RESULTS.write_text(text)
    print(f"recorded in {RESULTS}")
