"""Benchmark: do batches cost throughput? A campaign against a plain run of the same rows, in one run.

    python3 benchmarks/streaming.py --workdir /mnt/tmpfs/streaming --repeat 3
    python3 benchmarks/streaming.py --only sleepy --repeat 5

Three workloads, each repetition running both sides back to back, in turn plain run first and
campaign first (the reported ratio is the median of the per-repetition ratios, so a machine that
slows down shifts both sides alike):

- ``sleepy``: 2,400 rows, each instance sleeping 0.05-0.35 s (mean 0.2 s) and writing one JSON
  result, ``-j 24``. Plain ``legato run`` of the rows (the sample CSV pgen) against
  ``legato batch -b 200`` with the result harvested and every batch archived. While the campaign
  runs, its batch workspaces on disk are counted every 20 ms (target: at most 3).
- ``trivial``: 100,000 rows whose instance writes one small JSON result; batches of 10,000,
  archives on (tar.zst). Put ``--workdir`` on a fresh tmpfs: on a disk file system the run
  measures the disk.
- ``startup``: 40 instances of ``sleep 0.25`` with ``-j 40``, and one with ``-j 1``: the fixed
  cost of a run must not grow with ``-j``.

Rows per second of each side are rows / wall seconds of the whole command (start-up included).
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import threading
import time
from pathlib import Path

import harness

SLEEPY_SPEC = """description: {name: sleepy, description: instances that sleep and write one JSON result}
study:
  - name: work
    description: sleeps, then writes its parameters
    run:
      cmd: |
        sleep $(DUR)
        echo '{"x": $(X), "dur": $(DUR)}' > out.json
"""
TRIVIAL_SPEC = """description: {name: trivial, description: instances that only write one JSON result}
study:
  - name: work
    description: writes its parameters
    run:
      cmd: |
        echo '{"x": $(X), "y": $(Y)}' > out.json
"""
STARTUP_SPEC = """description: {name: startup, description: instances that sleep a quarter second}
study:
  - name: nap
    description: sleeps
    run:
      cmd: sleep 0.25 && echo $(X) > out.txt
"""


def write_rows(path: Path, rows: int, columns: dict[str, callable]) -> Path:
    rng = random.Random(0)
    with open(path, "w") as out:
        out.write("idx," + ",".join(columns) + "\n")
        for index in range(rows):
            out.write(f"{index}," + ",".join(str(make(rng, index)) for make in columns.values()) + "\n")
    return path


def plain(work: Path, spec: Path, rows: Path, jobs: int, name: str) -> list[str]:
    return [*harness.legato_argv(), "run", str(spec), "--pgen", str(harness.SAMPLE_PGEN), "--pargs", f"CSV:{rows}",
            "--pargs", "INDEX:idx", "-j", str(jobs), "-o", str(work / "studies" / name), "-y", "-fg"]


def campaign(work: Path, spec: Path, rows: Path, jobs: int, batch: int, name: str) -> list[str]:
    return [*harness.legato_argv(), "batch", str(spec), "--rows", str(rows), "--index", "idx", "-b", str(batch),
            "--result", "work:out.json", "--archive-format", "tar.zst", "-j", str(jobs), "--min-inodes", "0",
            "--min-free", "1M", "-o", str(work / "studies" / name)]


class WorkspaceCounter(threading.Thread):
    """The most batch workspaces seen on disk at once in ``<campaign>/work``."""

    def __init__(self, folder: Path) -> None:
        super().__init__(daemon=True)
        self.folder = folder / "work"
        self.most = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            try:
                self.most = max(self.most, sum(1 for entry in os.scandir(self.folder) if entry.name.startswith("batch-")))
            except FileNotFoundError:
                pass


def compare(args: argparse.Namespace, work: Path, label: str, spec_text: str, rows: Path, count: int, jobs: int,
            batch: int) -> list[str]:
    spec = work / f"{label}.yaml"
    spec.write_text(spec_text)
    sides = {"plain run": harness.Series("plain run"), "campaign": harness.Series("campaign")}
    most = []
    for repetition in range(args.repeat):
        name = f"{label}-{repetition}"
        order = ["plain run", "campaign"] if repetition % 2 == 0 else ["campaign", "plain run"]
        for side in order:  # alternated: whichever runs second of a pair would otherwise always pay for the first
            if side == "plain run":
                sides[side].runs.append(harness.measure(plain(work, spec, rows, jobs, f"{name}-plain"), work,
                                                        work / f"{name}-plain.log"))
                continue
            counter = WorkspaceCounter(work / "studies" / f"{name}-camp")
            counter.start()
            sides[side].runs.append(harness.measure(campaign(work, spec, rows, jobs, batch, f"{name}-camp"), work,
                                                    work / f"{name}-camp.log"))
            counter.done.set()
            counter.join()
            most.append(counter.most)
        harness.remove(work / "studies" / f"{name}-plain")
        harness.remove(work / "studies" / f"{name}-camp")
    for series in sides.values():
        series.instances = count
    share = harness.paired_ratio(sides["plain run"], sides["campaign"])
    rates = {tool: count / series.seconds for tool, series in sides.items()}
    return [
        f"### {label}: {count:,} rows, batches of {batch:,}, -j {jobs}",
        "",
        harness.table(harness.SERIES_HEADERS[:6], [row[:6] for row in harness.series_rows(label, sides.values())]),
        "",
        f"- rows/s: plain run {rates['plain run']:,.0f}, campaign {rates['campaign']:,.0f}",
        f"- **campaign rate / plain-run rate: {share:.0%}** (median of per-repetition ratios)",
        f"- batch workspaces on disk at once (most seen, per repetition): {', '.join(map(str, most))}",
        "",
    ]


def startup(args: argparse.Namespace, work: Path) -> list[str]:
    spec = work / "startup.yaml"
    spec.write_text(STARTUP_SPEC)
    forty = write_rows(work / "forty.csv", 40, {"x": lambda rng, i: i})
    one = write_rows(work / "one.csv", 1, {"x": lambda rng, i: i})
    wide, single, narrow = [], [], []
    for repetition in range(args.repeat):
        for series, rows, jobs in ((wide, forty, 40), (single, one, 40), (narrow, one, 1)):
            name = f"startup-{repetition}-{jobs}-{rows.stem}"
            series.append(harness.measure(plain(work, spec, rows, jobs, name), work, work / f"{name}.log").seconds)
            harness.remove(work / "studies" / name)
    return [
        "### startup: a run's fixed cost against -j",
        "",
        harness.table(["workload", "median s", "runs s"], [
            [label, f"{statistics.median(runs):.3f}", ", ".join(f"{s:.2f}" for s in runs)]
            for label, runs in (("40 x sleep 0.25, -j 40", wide), ("1 x sleep 0.25, -j 40", single),
                                ("1 x sleep 0.25, -j 1", narrow))]),
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.common_arguments(parser)
    parser.add_argument("--only", choices=["sleepy", "trivial", "startup"], action="append",
                        help="run only these workloads (repeatable; default: all)")
    parser.add_argument("--trivial-rows", type=int, default=100_000)
    args = parser.parse_args()
    work = harness.workdir(args)
    chosen = args.only or ["sleepy", "trivial", "startup"]
    body = [f"Workloads: {', '.join(chosen)}; {args.repeat} repetitions; work folder file system: "
            f"{os.statvfs(work).f_bsize} B blocks at {work}", ""]
    if "sleepy" in chosen:
        rows = write_rows(work / "sleepy.csv", 2400, {"x": lambda rng, i: i,
                                                      "dur": lambda rng, i: f"{rng.uniform(0.05, 0.35):.3f}"})
        body += compare(args, work, "sleepy", SLEEPY_SPEC, rows, 2400, 24, 200)
    if "trivial" in chosen:
        count = args.trivial_rows
        rows = write_rows(work / "trivial.csv", count, {"x": lambda rng, i: i, "y": lambda rng, i: rng.random()})
        body += compare(args, work, "trivial", TRIVIAL_SPEC, rows, count, os.cpu_count() or 1, count // 10)
    if "startup" in chosen:
        body += startup(args, work)
    harness.publish(args, "streaming", "Streaming campaigns: batches against a plain run", "\n".join(body))
    harness.cleanup(args, work)


if __name__ == "__main__":
    harness.main_guard(main)
