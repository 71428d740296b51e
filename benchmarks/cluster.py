"""Benchmark 5: a study on a real (private, single-node) SLURM: legato's pilots and packed jobs vs maestrowf.

    python3 benchmarks/cluster.py --rows 1000 --repeat 3 --bench-venv $BENCH_VENV

Both tools run the same spec (the sample's echo step with ``procs: 1``, so that maestrowf
schedules it, and a ``batch: {type: slurm}`` block) over the same CSV rows, in turn, on the
SLURM that tests/servers/slurm.py starts. Scheduler commands are counted through logging
shims for sbatch, squeue, scontrol, sacct and scancel put first on PATH; jobs submitted
(allocations) are the sbatch calls. legato runs ``--repeat`` times with pilots (the default)
and with one packed job per chunk (``--pilots 0``), medians reported; maestrowf, at minutes
a run, once. Then the allocations pilots take (the most over the repeats) for 100 rows in
chunks of 20 and 10,000 rows in chunks of 1,000, as one study and as a campaign of 5 and 10
batches.
"""
from __future__ import annotations

import argparse
import csv
import os
import sqlite3
import sys
from pathlib import Path

import harness

sys.path.insert(0, str(harness.REPO))
from tests.servers.slurm import SlurmUnavailable, private_slurm  # noqa: E402

SPEC = """description: {name: cluster_bench, description: the sample's echo step on SLURM}
batch: {type: slurm, host: local, bank: none, queue: debug}
study:
  - name: echo-params
    description: write the values of one parameter combination
    run:
      cmd: echo "PARAM1=$(PARAM1) PARAM2=$(PARAM2) PARAM3=$(PARAM3)" > params.txt
      procs: 1
"""
PGEN = harness.REPO / "samples" / "batched_parameters" / "batched_demo_pgen.py"
COMMANDS = ("sbatch", "squeue", "scontrol", "sacct", "scancel")


def shims(folder: Path, env: dict[str, str]) -> Path:
    """A bin folder whose scheduler commands log their name, then run the real one."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "calls.log"
    for name in COMMANDS:
        real = next((Path(p) / name for p in env["PATH"].split(":") if (Path(p) / name).exists()), None)
        if real:
            shim = folder / name
            shim.write_text(f'#!/bin/sh\necho {name} >> "{log}"\nexec "{real}" "$@"\n')
            shim.chmod(0o755)
    return log


def calls(log: Path) -> dict[str, int]:
    names = log.read_text().split() if log.exists() else []
    return {name: names.count(name) for name in COMMANDS}


def run_tool(name: str, argv: list[str], work: Path, env: dict[str, str]) -> dict:
    bin_dir = work / f"bin-{name}"
    log = shims(bin_dir, env)
    log.unlink(missing_ok=True)
    tool_env = {**env, "PATH": f"{bin_dir}:{env['PATH']}", "USER": "root"}
    measurement = harness.measure(argv, work, work / f"{name}.log", tool_env)
    counted = calls(log)
    return {"seconds": measurement.seconds, "jobs": counted["sbatch"], "calls": sum(counted.values()), "detail": counted}


def outputs(study: Path) -> int:
    """Instances that wrote their params.txt: the proof that a run did its work."""
    return sum(1 for _ in study.rglob("params.txt"))


def legato_runs(args, work: Path, env: dict[str, str], rows: int, pack: int, *flags: str, batch: int = 0) -> list[dict]:
    """``--repeat`` runs of legato over ``rows`` CSV rows in chunks of ``pack``, each into a new folder:
    ``legato run`` of the sample pgen, or with ``batch`` a campaign (``legato batch -b BATCH``)."""
    params = harness.make_csv(rows, 3, work / f"params-{rows}.csv")
    if batch:
        command = ["batch", str(work / "spec.yaml"), "--rows", str(params), "--index", "param_combo", "-b", str(batch)]
    else:
        command = ["run", str(work / "spec.yaml"), "--pgen", str(PGEN), "--pargs", f"CSV:{params}", "--pargs",
                   "INDEX:param_combo"]
    runs = []
    for _ in range(max(1, args.repeat)):
        out = work / "studies" / f"legato-{len(list((work / 'studies').glob('legato-*')))}"
        runs.append(run_tool("legato", [*harness.legato_argv(), *command, "--pack", str(pack), "-s", "1", *flags,
                                        "-o", str(out)], work, env))
        runs[-1]["done"] = finished_rows(out) if batch else outputs(out)
    return runs


def finished_rows(campaign: Path) -> int:
    """Rows a campaign harvested as finished (its workspaces are gone by then)."""
    with sqlite3.connect(campaign / "results.db") as db:
        return db.execute("SELECT count(DISTINCT row_index) FROM results WHERE state = 'finished'").fetchone()[0]


def distinct(csv_path: Path) -> int:
    """Rows with distinct parameter values (the index column aside): the study's instances."""
    with open(csv_path, newline="") as stream:
        return len({tuple(v for k, v in row.items() if k != "param_combo") for row in csv.DictReader(stream)})


def median(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--pack", type=int, default=100)
    harness.common_arguments(parser)
    args = parser.parse_args()
    work = harness.workdir(args)
    (work / "studies").mkdir(parents=True, exist_ok=True)
    (work / "spec.yaml").write_text(SPEC)
    params = harness.make_csv(args.rows, 3, work / f"params-{args.rows}.csv")
    try:
        with private_slurm() as cluster:
            env = {**harness.tool_env(), **cluster.environ}
            pilots = legato_runs(args, work, env, args.rows, args.pack)
            packed = legato_runs(args, work, env, args.rows, args.pack, "--pilots", "0")
            scenarios = [(f"run, {rows:,} rows", rows, pack, limit, legato_runs(args, work, env, rows, pack))
                         for rows, pack, limit in ((100, 20, 2), (10_000, 1000, 4))]
            scenarios += [(f"batch, {rows:,} rows in batches of {batch:,}", rows, pack, limit,
                           legato_runs(args, work, env, rows, pack, batch=batch))
                          for rows, batch, pack, limit in ((100, 20, 100, 2), (10_000, 1000, 1000, 4))]
            maestro = run_tool("maestrowf", [*harness.maestro_argv(args.bench_venv), "run", "-fg", "-y", "-s", "1",
                                             str(work / "spec.yaml"), "--pgen", str(PGEN), "--pargs", f"CSV:{params}",
                                             "--pargs", "INDEX:param_combo", "-o", str(work / "studies" / "maestro")],
                               work, env)
            maestro["done"] = outputs(work / "studies" / "maestro")
    except SlurmUnavailable as reason:
        raise harness.BenchError(str(reason)) from None
    compared = (("legato, pilots", pilots), ("legato, --pilots 0", packed), ("maestrowf", [maestro]))
    rows = [[name, f"{median(runs)['seconds']:.1f}", str(median(runs)["jobs"]), str(median(runs)["calls"]),
             ", ".join(f"{k} {v}" for k, v in median(runs)["detail"].items() if v), f"{median(runs)['done']:,}"]
            for name, runs in compared]
    allocations = [[name, f"{distinct(work / f'params-{rows}.csv'):,}", f"{pack:,}",
                    str(max(run["jobs"] for run in runs)), f"{median(runs)['seconds']:.1f}",
                    f"{min(run['done'] for run in runs):,}"]
                   for name, rows, pack, _, runs in scenarios]
    fewer = maestro["jobs"] / max(median(pilots)["jobs"], 1)
    faster = maestro["seconds"] / median(pilots)["seconds"]
    times = "; ".join(f"{name}: " + ", ".join(f"{run['seconds']:.1f}" for run in runs) for name, runs in compared[:2])
    within = all(max(run["jobs"] for run in runs) <= limit for *_, limit, runs in scenarios)
    body = "\n".join([
        harness.table(["tool", "wall s", "jobs submitted", "scheduler calls", "calls by command", "params.txt written"],
                      rows), "",
        f"- instances: {args.rows:,} rows; legato --pack {args.pack} -s 1 (2 pilots, the default), median of "
        f"{len(pilots)} runs ({times} s); maestrowf -fg -y -s 1 (one run)", "",
        harness.table(["legato", "distinct rows", "--pack", "allocations (most of the runs)", "wall s (median)",
                       "done (fewest)"], allocations), "",
        "- a plain run has one instance per distinct row (rows a step cannot tell apart run once, as in Maestro); "
        "done: params.txt written (run) or rows harvested finished (batch)",
        f"- load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- {harness.verdict(fewer >= 50)}: >= 50x fewer jobs than maestrowf: {fewer:.0f}x",
        f"- {harness.verdict(faster >= 10)}: >= 10x faster to completion: {faster:.1f}x",
        f"- {harness.verdict(within)}: pilots use <= 2 allocations for 100 rows (chunks of 20, or 5 batches), <= 4 "
        "for 10,000 rows in chunks of 1,000 (or 10 batches)",
    ])
    harness.publish(args, "cluster", "Benchmark 5: a study on a real local SLURM", body)
    harness.cleanup(args, work)


if __name__ == "__main__":
    harness.main_guard(main)
