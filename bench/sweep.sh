#!/usr/bin/env bash
# Temperature and alpha of the distilled student, as a grid with the same
# budget and teacher as bench/compare.sh; writes its section of
# docs/BENCHMARKS.md. usage: bash bench/sweep.sh [--quick] [--help for more]
set -euo pipefail
cd "$(dirname "$0")/.."
exec /usr/bin/python3 bench/sweep.py "$@"
