"""This machine's floors: the least work that produces the same folders (and runs the same instances).

A benchmark runs these in a fresh interpreter, like legato, so start-up is part of the floor too.

    python3 floors.py mkdir ROOT FOLDERS
        ROOT, then every folder listed in FOLDERS (relative, parents first), one os.mkdir each.
    python3 floors.py shells ROOT FOLDERS INSTANCES JOBS
        the same folders, then JOBS long-lived bash shells; each forks one subshell per
        instance folder (INSTANCES, relative) that runs a trivial echo there with stdout and
        stderr redirected to files in that folder.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys


def make_folders(root: str, listing: str) -> None:
    os.mkdir(root)
    with open(listing) as lines:
        for line in lines:
            os.mkdir(os.path.join(root, line.rstrip("\n")))


def run_shells(root: str, listing: str, jobs: int) -> None:
    """Deal instances round-robin to ``jobs`` shell scripts, then run those shells at once."""
    names = [os.path.join(root, f"worker-{index}.sh") for index in range(jobs)]
    with contextlib.ExitStack() as stack, open(listing) as lines:
        scripts = [stack.enter_context(open(name, "w")) for name in names]
        for number, line in enumerate(lines):
            folder = shlex.quote(os.path.join(root, line.rstrip("\n")))
            label = shlex.quote(os.path.basename(line.rstrip("\n")))
            scripts[number % jobs].write(
                f"(cd {folder} && echo {label} > params.txt) > {folder}/stdout 2> {folder}/stderr\n"
            )
    shells = [subprocess.Popen(["bash", name]) for name in names]
    failed = [shell.args[1] for shell in shells if shell.wait() != 0]
    if failed:
        sys.exit(f"floor shells failed: {', '.join(failed)}")


def main(argv: list[str]) -> None:
    if len(argv) == 4 and argv[1] == "mkdir":
        make_folders(argv[2], argv[3])
    elif len(argv) == 6 and argv[1] == "shells":
        make_folders(argv[2], argv[3])
        run_shells(argv[2], argv[4], int(argv[5]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
