#!/usr/bin/env bash
# Framework vs PyTorch: the quality table and the speed table, written to
# docs/BENCHMARKS.md. usage: bash bench/compare.sh [--quick] [--help for more]
set -euo pipefail
cd "$(dirname "$0")/.."
exec /usr/bin/python3 bench/compare.py "$@"
