"""Benchmark: ``legato report`` of a campaign of 100,000 and 1,000,000 results rows (size and time of the page).

The campaign is synthetic: a ledger of batches of 10,000 rows and a results table written
through legato's own ``ResultSink`` (an index column, two parameters, two numeric results, 1%
failed rows with a few reasons), then ``legato report FOLDER`` is timed --repeat times in fresh
processes. Targets: a page under 5 MB made in under 15 s at 1,000,000 rows.

    .venv/bin/python benchmarks/report.py                      # 100,000 and 1,000,000 rows
    .venv/bin/python benchmarks/report.py --sizes 100000 --no-record
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import harness as h

TARGET_SECONDS = 15.0
TARGET_BYTES = 5_000_000
BATCH = 10_000
REASONS = ("exit code 3", "exit code 137", "timed out after 600 s", "no results file params.txt")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="rows of each campaign")
    h.common_arguments(parser)
    return parser.parse_args(argv)


def build(rows: int, folder: Path) -> None:
    """A finished campaign folder of ``rows`` results rows, as the pipeline would leave it."""
    from legato.campaign.harvest import ResultSink
    from legato.campaign.ledger import Ledger, save_options
    from legato.campaign.options import CampaignOptions

    folder.mkdir(parents=True)
    ledger = Ledger(folder, create=True)
    save_options(ledger, CampaignOptions(spec=str(h.SAMPLE_SPEC), batch_size=BATCH, rows="rows.csv", index="id"))
    ledger.set(name=folder.name, state="finished", total_rows=rows, high_water={"bytes": 7 << 30, "inodes": 123_456})
    sink = ResultSink(f"sqlite:///{folder / 'results.db'}", index="id")
    generator = random.Random(0)
    clock = 1_800_000_000.0
    for number, start in enumerate(range(0, rows, BATCH), 1):
        batch, began = [], clock
        for row in range(start, min(start + BATCH, rows)):
            x, y = generator.uniform(0, 10), generator.randint(1, 50)
            seconds = generator.lognormvariate(0, 0.5)
            failed = generator.random() < 0.01
            batch.append({"step": "sim", "label": f"X.{x:.4f}.Y.{y}", "index": str(row),
                          "state": "failed" if failed else "finished", "returncode": 3 if failed else 0,
                          "started": clock, "ended": clock + seconds, "reason": generator.choice(REASONS) if failed else None,
                          "params": {"X": f"{x:.4f}", "Y": str(y)},
                          "results": {} if failed else {"energy": x * y + generator.gauss(0, 1), "steps": int(seconds * 100)}})
            clock += 0.002
        sink.write(folder.name, number, batch)
        ledger.db.execute("INSERT INTO batches (number, start, nrows, phase, study, started, ended, archive_bytes, "
                          "failed_rows) VALUES (?, ?, ?, 'cleaned', ?, ?, ?, ?, ?)",
                          (number, start, len(batch), str(folder / "work" / f"batch-{number:06d}"), began, clock,
                           3 << 20, sum(row["state"] == "failed" for row in batch)))
    sink.close()
    ledger.close()


def main(argv: list[str]) -> None:
    args = parse(argv)
    work = h.workdir(args)
    print(f"work folder: {work}")
    rows_out, notes = [], []
    try:
        for rows in args.sizes:
            folder = work / "studies" / f"report-{rows}"
            began = time.monotonic()
            build(rows, folder)
            notes.append(f"- {rows:,} rows built through ResultSink in {time.monotonic() - began:.0f} s")
            series = h.Series("legato report", instances=rows)
            page = work / f"report-{rows}.html"
            for number in range(1, args.repeat + 1):
                series.runs.append(h.measure([*h.legato_argv(), "report", str(folder), "-o", str(page)], work,
                                             work / "report.log", h.tool_env()))
                print(f"  {rows:,} rows, repetition {number}/{args.repeat}: {series.runs[-1].seconds:.2f} s", flush=True)
            size = page.stat().st_size
            ok = size < TARGET_BYTES and series.seconds < TARGET_SECONDS
            rows_out.append([f"{rows:,}", f"{size / 1e6:.2f}", f"{series.seconds:.2f}",
                             " ".join(f"{run.seconds:.2f}" for run in series.runs), f"{series.peak_mib:.0f}",
                             h.verdict(ok) if rows >= 1_000_000 else ""])
    finally:
        h.cleanup(args, work)
    text = "\n".join([
        h.table(["rows", "page MB", "median s", "runs s", "peak MiB", f"< {TARGET_BYTES / 1e6:g} MB and < {TARGET_SECONDS:g} s"],
                rows_out), "",
        *notes,
        f"- median of {args.repeat} runs of `legato report FOLDER -o FILE`, each a fresh process (imports included).",
    ])
    h.publish(args, "report", "HTML report of a campaign of 100,000 and 1,000,000 rows", text)


if __name__ == "__main__":
    h.main_guard(lambda: main(sys.argv[1:]))
