"""Benchmark 3: ``legato status`` of a study of 1,000,000 instances.

The study is built once with ``legato run --dry`` from a CSV made by the sample's generator
(6 columns, all used by the generated spec, so the 1,000,000 rows give as many distinct
instances), then ``legato status FOLDER`` is timed --repeat times in fresh processes.

    python3 benchmarks/status.py
    python3 benchmarks/status.py --keep --workdir /tmp/st   # then reuse: --study /tmp/st/studies/status-1000000
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import harness as h

TARGET_SECONDS = 1.0
COLUMNS = 6

SPEC = """description:
  name: status_bench
  description: One instance per CSV row; the command uses every column so that no two rows merge.

study:
  - name: echo-params
    description: Write the values of one parameter combination.
    run:
      cmd: echo "{tokens}" > params.txt
"""


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="instances of the study (default 1000000)")
    parser.add_argument("--study", type=Path, help="time this existing study folder instead of building one")
    h.common_arguments(parser)
    return parser.parse_args(argv)


def build(rows: int, work: Path) -> tuple[Path, h.Measurement]:
    """The study folder, made by legato's own dry run (its time and peak are reported too)."""
    csv = h.make_csv(rows, COLUMNS, work / f"params-{rows}x{COLUMNS}.csv")
    spec = work / "status_bench.yaml"
    spec.write_text(SPEC.format(tokens=" ".join(f"$(PARAM{column + 1})" for column in range(COLUMNS))))
    out = work / "studies" / f"status-{rows}"
    argv = [*h.legato_argv(), "run", "--dry", str(spec), "--pgen", str(h.SAMPLE_PGEN),
            "--pargs", f"CSV:{csv}", "--pargs", "INDEX:param_combo", "-o", str(out)]
    print(f"building {rows:,} instances in {out} ...", flush=True)
    return out, h.measure(argv, work, work / "build.log", h.tool_env())


def main(argv: list[str]) -> None:
    args = parse(argv)
    work = h.workdir(args)
    print(f"work folder: {work}")
    lines = []
    try:
        if args.study:
            study = args.study.resolve()
            lines.append(f"- study folder given: {study}")
        else:
            study, made = build(args.rows, work)
            lines.append(f"- built by `legato run --dry` in {made.seconds:.1f} s, peak {made.peak_kib / 1024:.0f} MiB")
        instances = len(h.leaf_folders(h.folders_preorder(study / "echo-params")))
        series = h.Series("legato status", instances=instances)
        for number in range(1, args.repeat + 1):
            series.runs.append(h.measure([*h.legato_argv(), "status", str(study)], work, work / "status.log",
                                         h.tool_env()))
            print(f"  repetition {number}/{args.repeat}: {series.runs[-1].seconds:.3f} s", flush=True)
        print((work / "status.log").read_text())
    finally:
        h.cleanup(args, work)
    text = "\n".join([
        h.table(["workload", "tool", "instances", "median s", "runs s", "peak MiB"],
                [row[:6] for row in h.series_rows("status", [series])]), "",
        (f"- {h.verdict(series.seconds < TARGET_SECONDS)}: `legato status` under {TARGET_SECONDS:g} s at "
         f"{instances:,} instances: {series.seconds:.3f} s"),
        *lines,
        f"- median of {args.repeat} runs, each a fresh process; the page cache is warm after the build.",
    ])
    h.publish(args, "status", "Status of a study of 1,000,000 instances", text)


if __name__ == "__main__":
    h.main_guard(lambda: main(sys.argv[1:]))
