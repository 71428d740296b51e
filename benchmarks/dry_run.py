"""Benchmark 1: building a study's workspace (``run --dry``), legato vs maestrowf vs this machine's floor.

All three build the sample batched study (samples/batched_parameters) from the same CSV:
    legato run --dry SPEC --pgen PGEN --pargs CSV:... --pargs INDEX:param_combo -o OUT
    maestro run --dry -y -fg -s 1 SPEC --pgen PGEN --pargs ... -o OUT
    floor: a fresh python that makes legato's folders (same names and depth), one os.mkdir each
Within each repetition the three run in turn (legato, maestro, floor), so that a noisy machine
disturbs them alike; the median of the repetitions is reported. A warm-up repetition on 1,000
rows (not reported) first brings every tool's files into the page cache. Every run writes a new
folder and nothing is deleted before the end (see harness.cleanup).

    python3 benchmarks/dry_run.py --rows 10000 100000
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import harness as h

TARGET_VS_MAESTRO = 10.0  # legato at least this many times faster than maestrowf at 10,000 rows
TARGET_VS_FLOOR = 1.5  # legato at most this many times the floor
TARGET_MEMORY_MIB = 200.0  # legato's peak at 100,000 rows


@dataclass
class Outcome:
    rows: int
    legato: h.Series
    maestro: h.Series | None
    floor: h.Series


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10000, 100000], help="CSV sizes (default 10000 100000)")
    parser.add_argument("--columns", type=int, default=3,
                        help="parameter columns of the CSV; the sample spec uses PARAM1..PARAM3 (default 3)")
    parser.add_argument("--skip-maestro-above", type=int, default=20000, metavar="N",
                        help="do not run maestrowf for more than N rows: it takes minutes (default 20000)")
    h.common_arguments(parser)
    return parser.parse_args(argv)


def pgen_arguments(csv: Path) -> list[str]:
    return [str(h.SAMPLE_SPEC), "--pgen", str(h.SAMPLE_PGEN), "--pargs", f"CSV:{csv}", "--pargs", "INDEX:param_combo"]


def observe(series: h.Series, out: Path) -> list[str]:
    """Count what a tool left behind (first repetition only) and return its folders."""
    folders = h.folders_preorder(out)
    series.files, series.folders = h.count_entries(out)
    series.instances = len(h.leaf_folders(h.folders_preorder(out / "echo-params")))
    return folders


def repetition(tag: str, csv: Path, outcome: Outcome, args: argparse.Namespace, work: Path,
               listing: Path) -> None:
    """legato, then maestrowf, then the floor; the first repetition also counts what each left."""
    env, studies, first = h.tool_env(), work / "studies", not outcome.legato.runs
    out = studies / f"legato-{tag}"
    outcome.legato.runs.append(h.measure(
        [*h.legato_argv(), "run", "--dry", *pgen_arguments(csv), "-o", str(out)], work, work / "legato.log", env))
    if first:
        listing.write_text("".join(f"{folder}\n" for folder in observe(outcome.legato, out)))
    if outcome.maestro:
        out = studies / f"maestro-{tag}"
        outcome.maestro.runs.append(h.measure(
            [*h.maestro_argv(args.bench_venv), "run", "--dry", "-y", "-fg", "-s", "1", *pgen_arguments(csv),
             "-o", str(out)], work, work / "maestro.log", env))
        if first:
            observe(outcome.maestro, out)
    out = studies / f"floor-{tag}"
    outcome.floor.runs.append(h.measure([sys.executable, str(h.FLOORS), "mkdir", str(out), str(listing)],
                                        work, work / "floor.log", env))
    if first:
        outcome.floor.files, outcome.floor.folders = h.count_entries(out)
        outcome.floor.instances = outcome.legato.instances


def new_outcome(rows: int, args: argparse.Namespace) -> Outcome:
    maestro = h.Series("maestrowf") if rows <= args.skip_maestro_above else None
    return Outcome(rows, h.Series("legato"), maestro, h.Series("floor (mkdir)"))


def warm_up(args: argparse.Namespace, work: Path) -> None:
    """One unreported repetition on 1,000 rows: every tool's code is then in the page cache."""
    csv = h.make_csv(1000, args.columns, work / f"params-1000x{args.columns}.csv")
    repetition("warm-up", csv, new_outcome(1000, args), args, work, work / "folders-warm-up.txt")


def bench(rows: int, args: argparse.Namespace, work: Path) -> Outcome:
    csv = h.make_csv(rows, args.columns, work / f"params-{rows}x{args.columns}.csv")
    outcome = new_outcome(rows, args)
    for number in range(1, args.repeat + 1):
        repetition(f"{rows}-{number}", csv, outcome, args, work, work / f"folders-{rows}.txt")
        print(f"  {rows:,} rows, repetition {number}/{args.repeat}: legato {outcome.legato.runs[-1].seconds:.2f} s"
              + (f", maestrowf {outcome.maestro.runs[-1].seconds:.2f} s" if outcome.maestro else "")
              + f", floor {outcome.floor.runs[-1].seconds:.2f} s", flush=True)
    return outcome


def ratios(outcome: Outcome) -> list[str]:
    legato, maestro = outcome.legato, outcome.maestro
    row = [f"{outcome.rows:,}"]
    if maestro:
        row += [f"{h.ratio(maestro.seconds, legato.seconds):.1f}x", f"{h.ratio(maestro.peak_mib, legato.peak_mib):.1f}x",
                f"{h.ratio(maestro.entries, legato.entries):.2f}x"]
    else:
        row += ["skipped"] * 3
    return row + [f"{h.ratio(legato.seconds, outcome.floor.seconds):.2f}x"]


def targets(outcomes: list[Outcome]) -> list[str]:
    lines = []
    for outcome in outcomes:
        legato = outcome.legato
        if outcome.rows == 10000 and outcome.maestro:
            speedup = h.ratio(outcome.maestro.seconds, legato.seconds)
            lines.append(f"- {h.verdict(speedup >= TARGET_VS_MAESTRO)}: >= {TARGET_VS_MAESTRO:g}x faster than "
                         f"maestrowf at 10,000 rows: {speedup:.1f}x")
        over_floor = h.ratio(legato.seconds, outcome.floor.seconds)
        lines.append(f"- {h.verdict(over_floor <= TARGET_VS_FLOOR)}: legato <= {TARGET_VS_FLOOR:g}x the floor at "
                     f"{outcome.rows:,} rows: {over_floor:.2f}x")
        if outcome.rows == 100000:
            lines.append(f"- {h.verdict(legato.peak_mib <= TARGET_MEMORY_MIB)}: legato peak memory <= "
                         f"{TARGET_MEMORY_MIB:g} MiB at 100,000 rows: {legato.peak_mib:.0f} MiB")
    return lines


def report(outcomes: list[Outcome], args: argparse.Namespace) -> str:
    rows = []
    for outcome in outcomes:
        series = [outcome.legato, *([outcome.maestro] if outcome.maestro else []), outcome.floor]
        rows += h.series_rows(f"{outcome.rows:,} rows", series)
    skipped = [f"{o.rows:,}" for o in outcomes if not o.maestro]
    notes = [
        f"Median of {args.repeat} repetitions, run in turn (legato, maestrowf, floor) within each repetition.",
        (f"CSV: samples/batched_parameters/csv_generator.py, {args.columns} columns, seed 0; "
         "instances = instance folders made: rows whose PARAM1..3 repeat share one, in both tools."),
        ("Peak MiB: ru_maxrss from os.wait4 of the process (the largest single process among it and the "
         "children it waited for)."),
        "files/folders: everything created under the study folder.",
    ]
    if skipped:
        notes.append(f"maestrowf skipped at {', '.join(skipped)} rows (--skip-maestro-above {args.skip_maestro_above}).")
    return "\n".join([
        h.table(h.SERIES_HEADERS, rows), "",
        h.table(["rows", "maestro/legato time", "maestro/legato memory", "maestro/legato files+folders",
                 "legato/floor time"], [ratios(o) for o in outcomes]), "",
        "Targets:", *targets(outcomes), "",
        *[f"- {note}" for note in notes],
    ])


def main(argv: list[str]) -> None:
    args = parse(argv)
    work = h.workdir(args)
    print(f"work folder: {work}")
    try:
        warm_up(args, work)
        outcomes = [bench(rows, args, work) for rows in args.rows]
    finally:
        h.cleanup(args, work)
    text = report(outcomes, args)
    h.publish(args, "dry_run", "Dry run: building the workspace of the batched sample study", text)


if __name__ == "__main__":
    h.main_guard(lambda: main(sys.argv[1:]))
