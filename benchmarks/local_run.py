"""Benchmark 2: running studies on this machine, legato vs maestrowf vs this machine's floor.

Workloads (each repetition runs them all in turn, tool after tool, so noise hits all alike):
  echo   the batched sample study over a --rows CSV (a trivial echo per instance):
             legato run SPEC --pgen PGEN --pargs ... -o OUT
             maestro run -fg -s 1 -y SPEC --pgen PGEN --pargs ... -o OUT
             floor: nproc long-lived bash shells, each forking one subshell per instance that runs
             the echo in the instance's folder with stdout/stderr redirected to files there
  sleep  --sleeps instances of `sleep --sleep-seconds` (a spec with global.parameters), legato
         with -j --sleep-jobs (sleeping instances hold no core) vs maestrowf
  big    legato alone over a --big-rows CSV, after all repetitions: the conductor's peak memory
Files per instance are counted after each tool's first echo run. The median is reported.

    python3 benchmarks/local_run.py
    python3 benchmarks/local_run.py --tools maestro,floor --big-rows 0   # without legato
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import harness as h

TOOLS = ("legato", "maestro", "floor")
SHOWN = {"legato": "legato", "maestro": "maestrowf", "floor": "floor (shells)"}
TARGET_ECHO_VS_MAESTRO = 5.0
TARGET_SLEEP_VS_MAESTRO = 40.0
TARGET_VS_FLOOR_RATE = 0.70

SLEEP_SPEC = """description:
  name: sleeps
  description: {count} instances that each sleep {seconds} s.

global.parameters:
  N:
    values: [{values}]
    label: N.%%

study:
  - name: nap
    description: Sleep, then say which instance this was.
    run:
      cmd: sleep {seconds}; echo $(N) > n.txt
"""


@dataclass
class Workload:
    """One workload's series per tool, and the file each instance must leave when it ran."""

    name: str
    step: str
    product: str
    series: dict[str, h.Series] = field(default_factory=dict)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=10000, help="echo instances (CSV rows; default 10000)")
    parser.add_argument("--columns", type=int, default=3, help="CSV parameter columns (default 3)")
    parser.add_argument("--sleeps", type=int, default=200, help="sleep instances (default 200; 0 skips)")
    parser.add_argument("--sleep-seconds", type=float, default=0.5, help="seconds each sleeps (default 0.5)")
    parser.add_argument("--sleep-jobs", type=int, default=None,
                        help="legato -j for the sleeps (default: --sleeps, every sleep in flight)")
    parser.add_argument("--big-rows", type=int, default=100000, help="rows of legato's memory run (default 100000; 0 skips)")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of legato,maestro,floor")
    h.common_arguments(parser)
    args = parser.parse_args(argv)
    args.tools = [tool.strip() for tool in args.tools.split(",") if tool.strip()]
    unknown = sorted(set(args.tools) - set(TOOLS))
    if unknown:
        parser.error(f"--tools: unknown {', '.join(unknown)} (expected {', '.join(TOOLS)})")
    return args


def pgen_arguments(csv: Path) -> list[str]:
    return [str(h.SAMPLE_SPEC), "--pgen", str(h.SAMPLE_PGEN), "--pargs", f"CSV:{csv}", "--pargs", "INDEX:param_combo"]


def legato(spec_arguments: list[str], out: Path, jobs: int | None = None, dry: bool = False) -> list[str]:
    return [*h.legato_argv(), "run", *(["--dry"] if dry else []), *spec_arguments,
            *(["-j", str(jobs)] if jobs else []), "-o", str(out)]


def maestro(args: argparse.Namespace, spec_arguments: list[str], out: Path, dry: bool = False) -> list[str]:
    return [*h.maestro_argv(args.bench_venv), "run", *(["--dry"] if dry else []), "-fg", "-s", "1", "-y",
            *spec_arguments, "-o", str(out)]


def count_named(folder: Path, name: str) -> int:
    """How many instances left their product file: a tool that exits 0 must have run them all."""
    found, stack = 0, [os.fspath(folder)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.name == name:
                    found += 1
    return found


def observe(workload: Workload, tool: str, out: Path) -> None:
    """After a tool's first run: entries made, instances counted, every instance's product there."""
    series = workload.series[tool]
    series.files, series.folders = h.count_entries(out)
    series.instances = len(h.leaf_folders(h.folders_preorder(out / workload.step)))
    produced = count_named(out, workload.product)
    if produced != series.instances:
        raise h.BenchError(f"{tool}: {produced} of {series.instances} instances wrote {workload.product} in {out}")


def run_tool(workload: Workload, tool: str, argv: list[str], out: Path, work: Path) -> None:
    series = workload.series.setdefault(tool, h.Series(SHOWN[tool]))
    series.runs.append(h.measure(argv, work, work / f"{tool}.log", h.tool_env()))
    if len(series.runs) == 1:
        observe(workload, tool, out)


def floor_listings(csv: Path, work: Path) -> tuple[Path, Path]:
    """legato's own layout for the echo study (an untimed dry run), as folder and instance lists."""
    layout = work / "studies" / "layout"
    h.measure(legato(pgen_arguments(csv), layout, dry=True), work, work / "layout.log", h.tool_env())
    folders = h.folders_preorder(layout)
    instances = h.leaf_folders(h.folders_preorder(layout / "echo-params"))
    folders_file, instances_file = work / "floor-folders.txt", work / "floor-instances.txt"
    folders_file.write_text("".join(f"{folder}\n" for folder in folders))
    instances_file.write_text("".join(f"echo-params/{folder}\n" for folder in instances))
    return folders_file, instances_file


def warm_up(args: argparse.Namespace, csv: Path, work: Path) -> None:
    """Unreported: brings maestrowf's code into the page cache (legato's came with the layout run)."""
    if "maestro" in args.tools:
        h.measure(maestro(args, pgen_arguments(csv), work / "studies" / "warm-up", dry=True), work,
                  work / "warm-up.log", h.tool_env())


def sleep_spec(args: argparse.Namespace, work: Path) -> Path:
    spec = work / "sleeps.yaml"
    spec.write_text(SLEEP_SPEC.format(count=args.sleeps, seconds=args.sleep_seconds,
                                      values=", ".join(str(value) for value in range(args.sleeps))))
    return spec


def repetition(number: int, args: argparse.Namespace, work: Path, inputs: dict, workloads: dict) -> None:
    studies = work / "studies"
    echo, sleep, big = workloads["echo"], workloads.get("sleep"), workloads.get("big")
    if "legato" in args.tools:
        out = studies / f"legato-echo-{number}"
        run_tool(echo, "legato", legato(pgen_arguments(inputs["csv"]), out), out, work)
    if "maestro" in args.tools:
        out = studies / f"maestro-echo-{number}"
        run_tool(echo, "maestro", maestro(args, pgen_arguments(inputs["csv"]), out), out, work)
    if "floor" in args.tools:
        out = studies / f"floor-echo-{number}"
        run_tool(echo, "floor", [sys.executable, str(h.FLOORS), "shells", str(out), str(inputs["folders"]),
                                 str(inputs["instances"]), str(os.cpu_count())], out, work)
    if sleep and "legato" in args.tools:
        out = studies / f"legato-sleep-{number}"
        run_tool(sleep, "legato", legato([str(inputs["sleep_spec"])], out, jobs=args.sleep_jobs or args.sleeps),
                 out, work)
    if sleep and "maestro" in args.tools:
        out = studies / f"maestro-sleep-{number}"
        run_tool(sleep, "maestro", maestro(args, [str(inputs["sleep_spec"])], out), out, work)
    done = [f"{w.name} {s.tool} {s.runs[-1].seconds:.2f} s" for w in workloads.values() for tool, s in w.series.items()
            if w is not big]
    print(f"  repetition {number}/{args.repeat}: " + ", ".join(done), flush=True)


def big_runs(args: argparse.Namespace, work: Path, inputs: dict, big: Workload) -> None:
    """After all repetitions: writing back a big run's folders would slow whichever tool ran next."""
    for number in range(1, args.repeat + 1):
        out = work / "studies" / f"legato-big-{number}"
        run_tool(big, "legato", legato(pgen_arguments(inputs["big_csv"]), out), out, work)
        print(f"  {big.name}, legato {number}/{args.repeat}: {big.series['legato'].runs[-1].seconds:.2f} s", flush=True)


def prepare_inputs(args: argparse.Namespace, work: Path) -> dict:
    csv = h.make_csv(args.rows, args.columns, work / f"params-{args.rows}x{args.columns}.csv")
    inputs: dict = {"csv": csv}
    if "floor" in args.tools or "legato" in args.tools:
        inputs["folders"], inputs["instances"] = floor_listings(csv, work)
    if args.sleeps:
        inputs["sleep_spec"] = sleep_spec(args, work)
    if args.big_rows and "legato" in args.tools:
        inputs["big_csv"] = h.make_csv(args.big_rows, args.columns, work / f"params-{args.big_rows}x{args.columns}.csv")
    warm_up(args, csv, work)
    return inputs


def new_workloads(args: argparse.Namespace) -> dict[str, Workload]:
    workloads = {"echo": Workload(f"echo {args.rows:,} rows", "echo-params", "params.txt")}
    if args.sleeps:
        workloads["sleep"] = Workload(f"sleep {args.sleeps} x {args.sleep_seconds:g} s", "nap", "n.txt")
    if args.big_rows and "legato" in args.tools:
        workloads["big"] = Workload(f"echo {args.big_rows:,} rows", "echo-params", "params.txt")
    return workloads


def summary(args: argparse.Namespace, workloads: dict[str, Workload]) -> list[str]:
    """Rates, files per instance, ratios and the targets that the measured tools allow to judge."""
    echo, sleep = workloads["echo"].series, workloads.get("sleep")
    lines = []
    for series in echo.values():
        lines.append(f"- {series.tool}: {series.instances / series.seconds:,.0f} instances/s on echo; "
                     f"{series.entries / max(series.instances, 1):.2f} files+folders per instance")
    if "legato" in echo and "maestro" in echo:
        value = h.paired_ratio(echo["maestro"], echo["legato"])
        lines.append(f"- {h.verdict(value >= TARGET_ECHO_VS_MAESTRO)}: maestrowf/legato time on echo "
                     f">= {TARGET_ECHO_VS_MAESTRO:g}x: {value:.1f}x")
    if "legato" in echo and "floor" in echo:
        value = h.paired_ratio(echo["floor"], echo["legato"])
        lines.append(f"- {h.verdict(value >= TARGET_VS_FLOOR_RATE)}: legato rate / floor rate "
                     f">= {TARGET_VS_FLOOR_RATE:.0%}: {value:.0%}")
    if sleep and "legato" in sleep.series and "maestro" in sleep.series:
        value = h.paired_ratio(sleep.series["maestro"], sleep.series["legato"])
        lines.append(f"- {h.verdict(value >= TARGET_SLEEP_VS_MAESTRO)}: maestrowf/legato time on sleeps "
                     f">= {TARGET_SLEEP_VS_MAESTRO:g}x: {value:.1f}x")
    if "big" in workloads:
        big = workloads["big"].series["legato"]
        lines.append(f"- legato conductor peak at {big.instances:,} instances: {big.peak_mib:.0f} MiB "
                     f"({big.instances / big.seconds:,.0f} instances/s)")
    return lines


def report(args: argparse.Namespace, workloads: dict[str, Workload]) -> str:
    rows = [row for workload in workloads.values() for row in h.series_rows(workload.name, workload.series.values())]
    notes = [
        f"Median of {args.repeat} repetitions; tools in turn within each repetition; tools measured: {', '.join(args.tools)}.",
        "Ratios: the median of the per-repetition ratios (this machine's speed drifts during a run).",
        f"legato runs the sleeps with -j {args.sleep_jobs or args.sleeps}; maestrowf runs with -fg -s 1 -y.",
        (f"floor: {os.cpu_count()} long-lived bash shells (one per core), one subshell per instance, "
         "stdout/stderr to files in the instance folder, legato's folder layout."),
        ("Peak MiB: ru_maxrss from os.wait4 (largest single process among the tool and the children it waited "
         "for; instances are small shells, so this is the conductor's peak)."),
        "Every tool's first run is checked: each instance wrote its product file.",
    ]
    return "\n".join([h.table(h.SERIES_HEADERS, rows), "", "Results and targets:", *summary(args, workloads), "",
                      *[f"- {note}" for note in notes]])


def main(argv: list[str]) -> None:
    args = parse(argv)
    work = h.workdir(args)
    print(f"work folder: {work}")
    try:
        inputs = prepare_inputs(args, work)
        workloads = new_workloads(args)
        for number in range(1, args.repeat + 1):
            repetition(number, args, work, inputs, workloads)
        if "big" in workloads:
            big_runs(args, work, inputs, workloads["big"])
    finally:
        h.cleanup(args, work)
    text = report(args, workloads)
    h.publish(args, "local_run", "Local run: executing instances on this machine", text)


if __name__ == "__main__":
    h.main_guard(lambda: main(sys.argv[1:]))
