"""A spec's ``env.dependencies``: paths that must exist, git repositories cloned before any step runs.

Maestro checks every ``paths`` entry when a study is set up ("The specified path 'INPUTS' does
not exist.") and clones every ``git`` entry into ``<path>/<name>``, checking out its ``hash``,
``tag`` or ``branch``; ``$(NAME)`` then names that folder. Paths are checked before the study
folder is made; clones are made once it exists (a failed clone removes it again).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Mapping

from legato.errors import LegatoError
from legato.spec import Spec
from legato.study import substitute


def check_paths(spec: Spec, env: Mapping[str, str]) -> None:
    """Every ``paths`` dependency must exist (``env`` holds them with their tokens resolved)."""
    for index, dep in enumerate(spec.dependencies.get("paths") or ()):
        if not Path(env[dep["name"]]).exists():
            raise LegatoError(
                f"{spec.path.name}: env.dependencies.paths[{index}]: the path {env[dep['name']]!r} of {dep['name']!r} does not exist"
            )


def check_remotes(spec: Spec, env: Mapping[str, str]) -> None:
    """Maestro's connectivity check of each git dependency (``git ls-remote``): read-only, nothing cloned."""
    for index, dep in enumerate(spec.dependencies.get("git") or ()):
        _git(f"{spec.path.name}: env.dependencies.git[{index}] ({dep['name']})",
             ["ls-remote", "--heads", substitute(dep["url"], env)])


def acquire_git(spec: Spec, env: Mapping[str, str]) -> None:
    """Clone each ``git`` dependency to ``$(NAME)`` and check out the revision it names."""
    for index, dep in enumerate(spec.dependencies.get("git") or ()):
        where = f"{spec.path.name}: env.dependencies.git[{index}] ({dep['name']})"
        destination = env[dep["name"]]
        _git(where, ["clone", "--quiet", substitute(dep["url"], env), destination])
        for key in ("hash", "tag", "branch"):
            if dep.get(key):
                revision = f"tags/{dep[key]}" if key == "tag" else str(dep[key])
                _git(where, ["checkout", "--quiet", revision], cwd=destination)


def _git(where: str, args: list[str], cwd: str | None = None) -> None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except FileNotFoundError:
        raise LegatoError(f"{where}: git is not installed") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise LegatoError(f"{where}: git {args[0]} failed: {lines[-1] if lines else f'exit status {done.returncode}'}")

