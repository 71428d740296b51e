"""Where the tests find maestrowf, the tool legato is compared with (never a legato dependency).

scripts/test.sh installs it with benchmarks/setup.sh into ``$BENCH_VENV`` (default
``.bench-venv`` in the repository) and exports that variable. When the variable is set and
maestrowf is missing, a comparison test fails instead of skipping: in CI a skip would hide it.
"""
from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("BENCH_VENV") or REPO / ".bench-venv")
BIN = VENV / "bin"
PYTHON = BIN / "python"
MAESTRO = BIN / "maestro"


@lru_cache(maxsize=1)
def available() -> bool:
    if not MAESTRO.exists():
        return False
    return subprocess.run([str(PYTHON), "-c", "import maestrowf"], capture_output=True, timeout=60).returncode == 0


def require() -> None:
    """Skip a comparison test on a machine without maestrowf; fail it where the test script promised one."""
    if available():
        return
    message = f"maestrowf is not installed in {VENV} (bash benchmarks/setup.sh installs it)"
    if os.environ.get("BENCH_VENV"):
        pytest.fail(message)
    pytest.skip(message)


def env() -> dict[str, str]:
    """The environment maestro runs in: its venv first on PATH, and a USER (Maestro reads it)."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "USER": os.environ.get("USER", "root")}
