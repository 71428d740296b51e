#!/usr/bin/env bash
# Install everything the tests need (PostgreSQL and SLURM servers, Chromium, zstd, maestrowf, Python packages) and run them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-postgres.sh
bash scripts/install-slurm.sh
bash scripts/install-chromium.sh
# zstd: the tests list .tar.zst archives with plain `tar -tf`, which calls it
command -v zstd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zstd >/dev/null; }
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
