#!/usr/bin/env bash
# Install everything the tests need (PostgreSQL and SLURM servers, maestrowf, Python packages) and run them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-postgres.sh
bash scripts/install-slurm.sh
bash scripts/install-chromium.sh
# maestrowf, the tool the differential tests compare with, in its own venv (never a legato dependency)
export BENCH_VENV="${BENCH_VENV:-$PWD/.bench-venv}"
bash benchmarks/setup.sh >/dev/null
. scripts/venv.sh
pip install -q -e ".[test]"
status=0
python -m pytest -q -rs "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests" >&2
fi
exit "$status"
