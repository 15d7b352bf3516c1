#!/usr/bin/env bash
# The prepared GPU check in one command (benchmarks/gpu_check.py; docs/benchmarks.md "GPU check"):
#
#   bash benchmarks/gpu_check.sh [--wheels DIR] [--out DIR] [--device cuda|cpu] [--quick]
#
# Runs from any folder with the Python that holds torch ($PYTHON, else python3), with this
# checkout's src/ first on PYTHONPATH (no install needed), and stops it after 8 minutes at most
# (the report in --out is rewritten after every section, so a cut-short run keeps what it measured).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout --signal=TERM --kill-after=10 480 "${PYTHON:-python3}" "$root/benchmarks/gpu_check.py" "$@"
