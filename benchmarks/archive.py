"""Archive time and inodes per instance for each archive mode, against GNU tar on the same files.

A batch workspace of N instances (default 10,000) is made by ``legato run --dry`` of a
two-parameter spec, then each instance folder gets what a small simulation leaves: an output
file, a results file and a log. Measured, median of --repeat runs, in this one process:

- the floor: ``tar --zstd -cf`` of the workspace plus ``tar -tf`` of the archive;
- ``archive_batch`` in each mode (batch tar.zst and tar.gz, step, instance, copy without tar),
  which includes legato's verification (every archive read back before it counts).

Inodes per instance: files and folders each mode leaves, divided by N (the workspace itself first).
Run it on a fresh tmpfs so the disk does not dominate: see benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from legato import api
from legato.campaign.archive import archive_batch

SPEC = """
description: {name: archive-bench, description: small outputs per instance}
study:
  - name: sim
    description: writes three small files
    run: {cmd: "echo $(A) $(B)"}
global.parameters:
  A: {values: [%s], label: A.%%%%}
  B: {values: [%s], label: B.%%%%}
"""
MODES = [("batch", "tar.zst"), ("batch", "tar.gz"), ("step", "tar.zst"), ("instance", "tar.zst"), ("batch", "none")]


def make_workspace(root: Path, count: int) -> Path:
    spec = root / "spec.yaml"
    values = ", ".join(str(i) for i in range(count))
    spec.write_text(SPEC % (values, values))
    study = Path(api.prepare(str(spec), out=str(root / "batch-000001")).root)
    for folder in (study / "sim").rglob("A.*"):
        (folder / "out.dat").write_bytes(os.urandom(256) + bytes(3840))
        (folder / "result.json").write_text('{"energy": 1.5, "steps": 100}\n')
        (folder / "sim.log").write_text("started\nconverged\n" * 20)
    return study


def inodes(path: Path) -> int:
    return sum(1 for _ in path.rglob("*")) + 1


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def gnu_tar(study: Path, target: Path) -> None:
    archive = target / "floor.tar.zst"
    subprocess.run(["tar", "--zstd", "-cf", str(archive), "-C", str(study), "."], check=True)
    subprocess.run(["tar", "-tf", str(archive)], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", help="Where to build (default: a temporary folder; use a fresh tmpfs)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="legato-archive-bench-", dir=args.workdir))
    try:
        study = make_workspace(root, args.instances)
        count = args.instances
        print(f"workspace: {count} instances, {inodes(study) / count:.2f} inodes per instance")
        rows = [("GNU tar --zstd -cf + tar -tf", "tar.zst", [], None)]
        for mode, fmt in MODES:
            rows.append((f"legato {mode} {fmt}", fmt, [], (mode, fmt)))
        for repeat in range(args.repeat):
            for name, fmt, times, mode in rows:  # interleaved, so machine noise hits every row alike
                target = root / f"out-{repeat}-{name.replace(' ', '_')}"
                target.mkdir()
                if mode is None:
                    times.append(timed(lambda: gnu_tar(study, target)))
                else:
                    times.append(timed(lambda: archive_batch(study, target, mode[0], mode[1])))
                if repeat < args.repeat - 1:
                    shutil.rmtree(target)
                else:
                    left = [p for p in target.iterdir()]
                    used = sum(inodes(p) for p in left)
                    print(f"| {name} | {statistics.median(times):.2f} | {statistics.median(times) * 10_000 / count:.2f} "
                          f"| {used / count:.4f} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
