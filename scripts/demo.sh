#!/usr/bin/env bash
# Install legato and run the batched sample study end to end on the embedded defaults
# (local executor, SQLite results): 20 rows in batches of 3, harvested, archived, cleaned.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
pip install -q .
cd samples/batched_parameters
rm -rf campaign
legato batch batched_parameters_demo.yaml --pgen batched_demo_pgen.py \
  --pargs "INDEX:param_combo" --pargs "CSV:params.csv" \
  --batch-size 3 --result echo-params:params.txt -o campaign
legato status campaign
legato results campaign --csv campaign/results.csv
head -n 4 campaign/results.csv
legato archive ls campaign
