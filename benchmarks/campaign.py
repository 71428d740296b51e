"""Benchmark 4: a batch campaign over many rows: driver memory, inodes in use, throughput.

    python3 benchmarks/campaign.py --rows 1000000 --batch-size 10000

Runs ``legato batch`` (CSV source, a trivial step writing a key=value file, results
harvested into SQLite, one tar.gz per batch) while sampling, every 0.5 s, the driver's RSS
(/proc/PID/status VmRSS; its forked folder-making child is not counted there but is in the
wait4 peak) and the inodes in use on the campaign's file system.
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import harness

SPEC = """description: {name: bench_campaign, description: a trivial step over many rows}
study:
  - name: run
    description: writes its parameters as key=value pairs
    run: {cmd: echo "A=$(PARAM1) B=$(PARAM2) C=$(PARAM3) D=$(PARAM4) E=$(PARAM5)" > out.txt}
"""


class Sampler(threading.Thread):
    """RSS of one process and inodes in use on one file system, every ``interval`` seconds."""

    def __init__(self, pid: int, folder: Path, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.folder, self.interval = pid, folder, interval
        self.rss: list[int] = []
        self.inodes: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            stats = os.statvfs(self.folder)
            self.inodes.append(stats.f_files - stats.f_ffree)
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.rss.append(int(line.split()[1]))
            except OSError:
                pass
            self.stop.wait(self.interval)


def run(args: argparse.Namespace, work: Path) -> str:
    csv = harness.make_csv(args.rows, 5, work / "params.csv")
    spec = work / "spec.yaml"
    spec.write_text(SPEC)
    campaign = work / "campaign"
    argv = [*harness.legato_argv(), "batch", str(spec), "--batch-size", str(args.batch_size), "--rows", str(csv),
            "--index", "param_combo", "--result", "run:out.txt", "-o", str(campaign)]
    os.sync()
    start_inodes = os.statvfs(work).f_files - os.statvfs(work).f_ffree
    with open(work / "campaign.out", "wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(argv, cwd=work, env=harness.tool_env(), stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=log)
        sampler = Sampler(process.pid, work)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        sampler.stop.set()
        sampler.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise harness.BenchError(f"legato batch failed: {(work / 'campaign.out').read_text()[-2000:]}")
    with sqlite3.connect(campaign / "results.db") as db:
        results = db.execute("SELECT count(*), count(DISTINCT row_index) FROM results").fetchone()
    archives = sorted((campaign / "archives").rglob("*.tar.gz"))
    tenth = max(1, len(sampler.rss) // 10)
    early, late = max(sampler.rss[:tenth], default=0), max(sampler.rss[-tenth:], default=0)
    peak_inodes = max(sampler.inodes, default=start_inodes) - start_inodes
    load = os.getloadavg()
    rows = [
        ["rows", f"{args.rows:,}"], ["batch size", f"{args.batch_size:,}"],
        ["wall time", f"{seconds:.1f} s"], ["throughput", f"{args.rows / seconds:,.0f} rows/s"],
        ["driver peak memory (wait4)", f"{usage.ru_maxrss / 1024:.0f} MiB"],
        ["driver RSS, max of first / last 10% of samples", f"{early / 1024:.0f} / {late / 1024:.0f} MiB"],
        ["peak inodes in use above the start", f"{peak_inodes:,} (one batch: {args.batch_size:,} instance folders)"],
        ["archives", f"{len(archives)}, {sum(a.stat().st_size for a in archives) / 2**20:.1f} MiB"],
        ["result rows (distinct row indexes)", f"{results[0]:,} ({results[1]:,})"],
        ["load average at the end", f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"],
    ]
    verdicts = [
        f"- {harness.verdict(usage.ru_maxrss / 1024 <= 200)}: driver peak memory <= 200 MB",
        f"- {harness.verdict(peak_inodes <= 4 * args.batch_size + 1000)}: peak inodes within one batch's worth "
        f"(per instance: its folder, stdout, stderr, one output)",
        f"- {harness.verdict(results[0] == results[1] == args.rows)}: every row harvested exactly once",
    ]
    return harness.table(["measure", "value"], rows) + "\n\n" + "\n".join(verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    harness.common_arguments(parser)
    args = parser.parse_args()
    work = harness.workdir(args)
    try:
        body = run(args, work)
        harness.publish(args, "campaign", "Benchmark 4: batch campaign", body)
    finally:
        harness.cleanup(args, work)


if __name__ == "__main__":
    harness.main_guard(main)
