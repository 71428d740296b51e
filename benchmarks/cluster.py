"""Benchmark 5: a study on a real (private, single-node) SLURM: legato packed vs maestrowf.

    python3 benchmarks/cluster.py --rows 1000 --repeat 3 --bench-venv /work/bench-venv

Both tools run the same spec (the sample's echo step with ``procs: 1``, so that maestrowf
schedules it, and a ``batch: {type: slurm}`` block) over the same CSV rows, in turn, on the
SLURM that tests/servers/slurm.py starts. Scheduler commands are counted through logging
shims for sbatch, squeue, scontrol, sacct and scancel put first on PATH; jobs submitted are
the sbatch calls. legato runs ``--repeat`` times (median reported); maestrowf, at minutes a
run, once.
"""
from __future__ import annotations

import argparse
import os
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--pack", type=int, default=100)
    harness.common_arguments(parser)
    args = parser.parse_args()
    work = harness.workdir(args)
    csv = harness.make_csv(args.rows, 3, work / "params.csv")
    spec = work / "spec.yaml"
    spec.write_text(SPEC)
    pgen = harness.REPO / "samples" / "batched_parameters" / "batched_demo_pgen.py"
    pargs = ["--pargs", f"CSV:{csv}", "--pargs", "INDEX:param_combo"]
    try:
        with private_slurm() as cluster:
            env = {**harness.tool_env(), **cluster.environ}
            legato_runs = [run_tool("legato", [*harness.legato_argv(), "run", str(spec), "--pgen", str(pgen), *pargs,
                                               "--pack", str(args.pack), "-s", "1", "-o",
                                               str(work / "studies" / f"legato-{n}")], work, env)
                           for n in range(max(1, args.repeat))]
            maestro = run_tool("maestrowf", [*harness.maestro_argv(args.bench_venv), "run", "-fg", "-y", "-s", "1",
                                             str(spec), "--pgen", str(pgen), *pargs, "-o",
                                             str(work / "studies" / "maestro")], work, env)
    except SlurmUnavailable as reason:
        raise harness.BenchError(str(reason)) from None
    legato = sorted(legato_runs, key=lambda run: run["seconds"])[len(legato_runs) // 2]  # the median run
    done = {"legato": outputs(work / "studies" / "legato-0"), "maestrowf": outputs(work / "studies" / "maestro")}
    rows = [[name, f"{r['seconds']:.1f}", str(r["jobs"]), str(r["calls"]),
             ", ".join(f"{k} {v}" for k, v in r["detail"].items() if v), f"{done[name]:,}"]
            for name, r in (("legato", legato), ("maestrowf", maestro))]
    fewer = maestro["jobs"] / max(legato["jobs"], 1)
    faster = maestro["seconds"] / legato["seconds"]
    times = ", ".join(f"{run['seconds']:.1f}" for run in legato_runs)
    body = "\n".join([
        harness.table(["tool", "wall s", "jobs submitted", "scheduler calls", "calls by command", "params.txt written"],
                      rows), "",
        f"- instances: {args.rows:,} rows; legato --pack {args.pack} -s 1, median of {len(legato_runs)} runs "
        f"({times} s); "
        "maestrowf -fg -y -s 1 (one run)",
        f"- load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- {harness.verdict(fewer >= 50)}: >= 50x fewer jobs: {fewer:.0f}x",
        f"- {harness.verdict(faster >= 10)}: >= 10x faster to completion: {faster:.1f}x",
    ])
    harness.publish(args, "cluster", "Benchmark 5: a study on a real local SLURM", body)
    harness.cleanup(args, work)


if __name__ == "__main__":
    harness.main_guard(main)
