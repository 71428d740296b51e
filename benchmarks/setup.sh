#!/usr/bin/env bash
# Install maestrowf, the tool legato is compared with, into its own venv.
# maestrowf is only ever a benchmark opponent: it is never a dependency of legato.
#   BENCH_VENV  where the venv goes (default: .bench-venv in the repository)
#   MAESTROWF   the version to install (default: 1.2.1, the one RESULTS.md was measured with)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${BENCH_VENV:-$repo/.bench-venv}"
version="${MAESTROWF:-1.2.1}"
python="${PYTHON:-python3}"

if [[ -x "$venv/bin/maestro" ]] && "$venv/bin/python" -m pip show maestrowf 2>/dev/null | grep -qx "Version: $version"; then
    echo "maestrowf $version already in $venv"
else
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "maestrowf==$version"
    echo "installed maestrowf $version in $venv"
fi
"$venv/bin/maestro" --version
echo "run the benchmarks with: BENCH_VENV=$venv python3 benchmarks/dry_run.py (see benchmarks/README.md)"
