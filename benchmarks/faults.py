"""The fault-injection suite's figures: how many faults one run injects, whether any row was lost, how long it takes.

usage: python3 benchmarks/faults.py [--repeat N] [--no-record]

Runs ``pytest -m faults`` (tests/faults/) N times with the interpreter running this script and
reports the median wall time. The counts come from the suite's own parameters: every kill,
full-disk phase and bad input is a test (or a step of one) that asserts, after the fault,
that ``legato status`` shows no traceback and that the resumed campaign holds every row
exactly once with every archive verifying with plain ``tar`` — so "rows lost: 0" stands for
"every such test passed", and a failing run is reported as such.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time

from harness import REPO, main_guard, publish, table

sys.path.insert(0, str(REPO))

from tests.faults import test_bad_inputs, test_disk_full, test_kills  # noqa: E402  (the suite defines the faults)


def figures() -> list[list[str]]:
    """What one run of the suite injects, counted from its parameters."""
    phase_kills = len(test_kills.KILLS) + 2  # + a start killed before its ledger was whole, a set-up left tableless
    tree_kills = test_kills.RANDOM_KILLS
    bad_results = len(test_bad_inputs.MALFORMED)
    bad_sources = len(test_bad_inputs.BAD_SOURCES)
    return [
        ["kill -9 at a named phase (start-up, set-up, running, harvest, archive, clean, finishing)", f"{phase_kills}"],
        ["kill -9 of the whole process tree at random instants", f"{tree_kills}"],
        ["kill -9 of the driver alone while instances run (they end unwatched)", "1"],
        ["kills in all", f"{phase_kills + tree_kills + 1}"],
        ["full-disk phases (tmpfs filled at set-up, running, ledger, harvest, archive, clean)",
         f"{len(test_disk_full.PHASES)}"],
        ["malformed results files (JSON syntax, JSON list, kv spaces, short CSV row, non-UTF-8)", f"{bad_results}"],
        ["bad row sources (header only, duplicate or empty index, short or long row, non-UTF-8, empty)",
         f"{bad_sources}"],
    ]


def run_suite() -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "faults", "-p", "no:cacheprovider", "tests/faults"],
                          cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()
    return seconds, re.sub(r" in [0-9.]+s.*$", "", summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of the suite; the median time is reported")
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()
    runs = [run_suite() for _ in range(args.repeat)]
    outcomes = sorted({outcome for _, outcome in runs})
    lost = "0" if outcomes and all(re.fullmatch(r"\d+ passed(, \d+ deselected)?", o) for o in outcomes) else "see outcomes"
    rows = figures() + [
        ["rows lost or harvested twice, archives failing `tar -tf`, tracebacks", lost],
        [f"suite wall time, median of {args.repeat} (`pytest -m faults`)", f"{statistics.median(s for s, _ in runs):.1f} s"],
        ["outcomes", "; ".join(outcomes)],
    ]
    publish(args, "faults", "Fault-injection suite", table(["fault", "per run"], rows))


if __name__ == "__main__":
    main_guard(main)
