"""Benchmark 4: a batch campaign over many rows: driver memory, inodes in use, throughput.

    python3 benchmarks/campaign.py --rows 1000000 --batch-size 10000
    python3 benchmarks/campaign.py --rows 50000 --batch-size 5000 --profile   # a py-spy profile of the driver

Runs once, in a fresh process (as a user would):

    legato batch SPEC --batch-size B --rows params.csv --index param_combo --result run:out.txt -o CAMPAIGN

over a CSV from the sample's generator (--columns random columns, so rows are distinct and each
row is its own instance), with one trivial step that writes every parameter to a key=value file,
results harvested into the campaign's SQLite file and one tar.gz per batch. While it runs, the
inodes in use on the campaign's file system are sampled every 0.5 s (statvfs) and the driver's
own RSS (/proc/PID/status VmRSS) and the load average every second. The driver's peak is also
taken from os.wait4 (it includes the children it waited for: its folder-making fork, its shells).
The file system is shared with whatever else runs on the machine, so the inode figure is
checked against the campaign's own: the largest batch workspace (its archive's member count)
plus the archives.
"""
from __future__ import annotations

import argparse
import collections
import csv
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import harness

STEP, PRODUCT = "run", "out.txt"
ENTRIES_PER_INSTANCE = 4  # its folder, stdout, stderr and out.txt
PEAK_TARGET_MIB = 200


def spec_text(columns: int) -> str:
    """A one-step spec that uses every column, so rows that differ anywhere are different instances."""
    formats = "\\n".join(f"x{i}=%s" for i in range(1, columns + 1))
    values = " ".join(f'"$(PARAM{i})"' for i in range(1, columns + 1))
    return (f"description: {{name: bench_campaign, description: a trivial step over many rows}}\n"
            f"study:\n"
            f"  - name: {STEP}\n"
            f"    description: writes its parameters as key=value lines\n"
            f"    run:\n"
            f"      cmd: |\n"
            f"        printf '{formats}\\n' {values} > {PRODUCT}\n")


@dataclass
class Samples:
    """What the sampler saw: (seconds since start, value)."""

    inodes: list[tuple[float, int]] = field(default_factory=list)
    rss_kib: list[tuple[float, int]] = field(default_factory=list)
    load: list[float] = field(default_factory=list)


class Sampler(threading.Thread):
    """Inodes in use every ``interval`` s; the driver's RSS and the 1-minute load every second."""

    def __init__(self, pid: int, folder: Path, started: float, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.folder, self.started, self.interval = pid, folder, started, interval
        self.samples = Samples()
        self.stop = threading.Event()

    def run(self) -> None:
        tick = 0
        while not self.stop.is_set():
            now = time.perf_counter() - self.started
            stats = os.statvfs(self.folder)
            self.samples.inodes.append((now, stats.f_files - stats.f_ffree))
            if tick % round(1 / self.interval) == 0:
                self._every_second(now)
            tick += 1
            self.stop.wait(self.interval)

    def _every_second(self, now: float) -> None:
        self.samples.load.append(os.getloadavg()[0])
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.samples.rss_kib.append((now, int(line.split()[1])))
        except OSError:  # the driver has just exited
            pass


@dataclass
class Outcome:
    seconds: float
    peak_kib: int
    samples: Samples
    start_inodes: int
    load_start: tuple[float, float, float]
    load_end: tuple[float, float, float]
    exit_code: int
    last_line: str
    profile: str | None = None


def run_driver(argv: list[str], work: Path, campaign: Path, profile: bool) -> Outcome:
    """One run of the driver, sampled; wall time from just before the fork to the reaping wait4."""
    os.sync()
    load_start = os.getloadavg()
    stats = os.statvfs(work)
    start_inodes = stats.f_files - stats.f_ffree
    log = work / "campaign.out"
    with open(log, "wb") as sink:
        started = time.perf_counter()
        process = subprocess.Popen(argv, cwd=work, env=harness.tool_env(), stdin=subprocess.DEVNULL, stdout=sink,
                                   stderr=sink)
        sampler = Sampler(process.pid, work, started)
        sampler.start()
        spy = start_profiler(process.pid, work) if profile else None
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        sampler.stop.set()
        sampler.join()
    lines = log.read_text(errors="replace").strip().splitlines() or [""]
    if not (campaign / "campaign.db").is_file():
        raise harness.BenchError(f"legato batch exited {os.waitstatus_to_exitcode(status)} before it began:\n  "
                                 + "\n  ".join(lines[-5:]))
    return Outcome(seconds, usage.ru_maxrss, sampler.samples, start_inodes, load_start, os.getloadavg(),
                   os.waitstatus_to_exitcode(status), lines[-1], stop_profiler(spy, work) if spy else None)


def start_profiler(pid: int, work: Path) -> subprocess.Popen:
    """py-spy, non-blocking (it reads the driver's memory without pausing it), in collapsed-stack form."""
    spy = shutil.which("py-spy")
    if spy is None:
        raise harness.BenchError("--profile needs py-spy (pip install py-spy)")
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--nonblocking", "--rate", "20", "--format", "raw",
                             "--output", str(work / "profile.txt")], stdout=subprocess.DEVNULL,
                            stderr=open(work / "py-spy.log", "wb"))


def stop_profiler(spy: subprocess.Popen, work: Path) -> str:
    """The driver's top costs: legato's functions by inclusive share of samples, then any function by self share."""
    spy.wait(timeout=120)  # it writes its file when the driver exits
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in (work / "profile.txt").read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        total += int(count)
        own[short_frame(frames[-1])] += int(count)
        for frame in {short_frame(frame) for frame in frames if "(legato/" in frame}:
            inclusive[frame] += int(count)
    share = lambda n: f"{100 * n / total:.1f}%"  # noqa: E731
    ours = harness.table(["legato function (file)", "inclusive"],
                         [[name, share(n)] for name, n in inclusive.most_common(20)])
    hot = harness.table(["function (file)", "self"], [[name, share(n)] for name, n in own.most_common(12)])
    return f"{ours}\n\n{hot}\n\n{total:,} samples at 20 Hz."


def short_frame(frame: str) -> str:
    """``function (/long/path/file.py:12)`` -> ``function (file.py)``: one row per function, tables stay readable."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].rsplit(':', 1)[0]})" if where else frame


def ledger_figures(campaign: Path) -> dict[str, float]:
    """Rows done, per-batch seconds (first vs last 10% of batches), the largest batch workspace: from the ledger.

    Only batches taken through to the end count, so a run cut short reports what it completed.
    """
    with sqlite3.connect(f"file:{campaign / 'campaign.db'}?mode=ro", uri=True) as db:
        batches = db.execute("SELECT ended - started, members, nrows FROM batches WHERE phase = 'cleaned' "
                             "ORDER BY number").fetchall()
    tenth = max(1, len(batches) // 10)
    seconds = [row[0] for row in batches] or [0.0]
    return {"batches": len(batches), "rows": sum(row[2] for row in batches), "first": sum(seconds[:tenth]) / tenth,
            "last": sum(seconds[-tenth:]) / tenth, "slowest": max(seconds),
            "members": max((row[1] or 0 for row in batches), default=0)}


def results_figures(campaign: Path, columns: int) -> tuple[int, int, int]:
    """(result rows, distinct row indexes, rows whose harvested x1..xN equal their parameters)."""
    checks = " AND ".join(f"CAST(x{i} AS TEXT) = CAST(param{i} AS TEXT)" for i in range(1, columns + 1))
    with sqlite3.connect(f"file:{campaign / 'results.db'}?mode=ro", uri=True) as db:
        counts = db.execute(f"SELECT count(*), count(DISTINCT row_index), sum({checks}) FROM results").fetchone()
    return counts[0], counts[1], counts[2] or 0


def repeats_within_batches(csv_path: Path, batch_size: int) -> int:
    """Rows whose parameters equal an earlier row's of the same batch: legato makes them one instance (one result)."""
    repeats, seen = 0, set()
    with open(csv_path, newline="") as stream:
        records = csv.reader(stream)
        next(records)
        for number, record in enumerate(records):
            if number % batch_size == 0:
                seen.clear()
            key = tuple(record[1:])
            repeats += key in seen
            seen.add(key)
    return repeats


def peak_of(samples: list[tuple[float, int]], since: float, until: float) -> int:
    return max((value for at, value in samples if since <= at <= until), default=0)


def report(args: argparse.Namespace, argv: list[str], outcome: Outcome, campaign: Path, csv_path: Path) -> str:
    ledger = ledger_figures(campaign)
    results, distinct, matching = results_figures(campaign, args.columns)
    archives = sorted((campaign / "archives").glob("*.tar.gz"))
    archive_mib = sum(path.stat().st_size for path in archives) / 2**20
    seconds, samples, done = outcome.seconds, outcome.samples, int(ledger["rows"])
    early = peak_of(samples.rss_kib, 0, 0.1 * seconds) / 1024
    late = peak_of(samples.rss_kib, 0.9 * seconds, seconds) / 1024
    peak_inodes = max(value for _, value in samples.inodes) - outcome.start_inodes
    own_inodes = ledger["members"] + len(archives)
    inode_target = ENTRIES_PER_INSTANCE * args.batch_size * 1.05 + len(archives)
    load = lambda triple: " ".join(f"{value:.2f}" for value in triple)  # noqa: E731
    rows = [
        ["rows done (of the CSV's), batch size, batches", f"{done:,} ({args.rows:,}), {args.batch_size:,}, "
                                                          f"{ledger['batches']}"],
        ["wall time", f"{seconds:,.1f} s ({seconds / 60:.1f} min)"],
        ["throughput", f"{done / seconds:,.0f} rows/s"],
        ["seconds per batch: first 10% / last 10% / slowest", f"{ledger['first']:.1f} / {ledger['last']:.1f} / "
                                                              f"{ledger['slowest']:.1f}"],
        ["driver peak memory (wait4 ru_maxrss)", f"{outcome.peak_kib / 1024:.0f} MiB"],
        ["driver VmRSS max, first 10% / last 10% of the run", f"{early:.0f} / {late:.0f} MiB "
                                                              f"({len(samples.rss_kib)} samples)"],
        ["peak inodes in use above the start (statvfs, whole fs)", f"{peak_inodes:,}"],
        ["the campaign's own at most (largest batch workspace + archives)", f"{own_inodes:,}"],
        ["archives (count, total size)", f"{len(archives)}, {archive_mib:,.1f} MiB"],
        ["result rows / distinct row indexes / x1..xN = parameters", f"{results:,} / {distinct:,} / {matching:,}"],
        ["load average (1, 5, 15 min): start / end", f"{load(outcome.load_start)} / {load(outcome.load_end)}"],
        ["load average, 1 min: mean / max during the run",
         f"{sum(samples.load) / len(samples.load):.2f} / {max(samples.load):.2f}"],
    ]
    verdicts = [
        f"- {harness.verdict(outcome.exit_code == 0 and done == args.rows)}: the campaign completed "
        f"(legato batch exited {outcome.exit_code}: {outcome.last_line.strip()})",
        f"- {harness.verdict(outcome.peak_kib / 1024 <= PEAK_TARGET_MIB)}: driver peak memory <= {PEAK_TARGET_MIB} MiB",
        f"- {harness.verdict(late <= early * 1.1 + 5)}: driver memory flat (last 10% within 10% + 5 MiB of the first 10%)",
        f"- {harness.verdict(peak_inodes <= inode_target)}: peak inodes within one batch's worth "
        f"({ENTRIES_PER_INSTANCE} x {args.batch_size:,} instances + 5% + {len(archives)} archives = {inode_target:,.0f})",
        f"- {harness.verdict(results == distinct == matching == done)}: every row done harvested exactly once, "
        f"with its own values",
    ]
    notes = [
        f"- CSV: samples/batched_parameters/csv_generator.py, {args.rows:,} rows, {args.columns} columns (0-99), "
        f"seed 0; index column param_combo; rows repeating an earlier row of their batch: "
        f"{repeats_within_batches(csv_path, args.batch_size)}.",
        f"- driver: `{' '.join(['legato', *argv[len(harness.legato_argv()):]])}` (paths in a temporary folder); "
        f"spec: one step `{STEP}` writing x1..x{args.columns} to {PRODUCT}, harvested as key=value.",
        "- one run; the inode figure is for the whole file system, shared with any other work on the machine.",
    ]
    if outcome.profile:
        notes.append("- profiled with py-spy (--nonblocking, 20 Hz): the times above include its overhead.")
    body = harness.table(["measure", "value"], rows) + "\n\n" + "\n".join(verdicts) + "\n\n" + "\n".join(notes)
    if outcome.profile:
        body += "\n\nDriver profile (py-spy):\n\n" + outcome.profile
    return body


def run(args: argparse.Namespace, work: Path) -> str:
    csv_path = harness.make_csv(args.rows, args.columns, work / f"params-{args.rows}x{args.columns}.csv")
    spec = work / "spec.yaml"
    spec.write_text(spec_text(args.columns))
    campaign = work / "studies" / "campaign"
    argv = [*harness.legato_argv(), "batch", str(spec), "--batch-size", str(args.batch_size), "--rows", str(csv_path),
            "--index", "param_combo", "--result", f"{STEP}:{PRODUCT}", "-o", str(campaign)]
    outcome = run_driver(argv, work, campaign, args.profile)
    return report(args, argv, outcome, campaign, csv_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="CSV rows (default 1,000,000)")
    parser.add_argument("--batch-size", type=int, default=10_000, help="rows per batch (default 10,000)")
    parser.add_argument("--columns", type=int, default=6,
                        help="random parameter columns (default 6: 10^12 combinations, so rows are distinct)")
    parser.add_argument("--profile", action="store_true", help="profile the driver with py-spy (adds overhead)")
    parser.add_argument("--workdir", type=Path, help="where the campaign is written (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the campaign afterwards")
    parser.add_argument("--no-record", action="store_true", help=f"do not write {harness.RESULTS.name}")
    args = parser.parse_args()
    work = harness.workdir(args)
    try:
        body = run(args, work)
        harness.publish(args, "campaign", "Benchmark 4: batch campaign", body)
    finally:
        harness.cleanup(args, work)


if __name__ == "__main__":
    harness.main_guard(main)
