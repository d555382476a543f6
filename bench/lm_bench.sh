#!/usr/bin/env bash
# The language-model benchmarks (quality over seeds, speed against PyTorch,
# MFU, the chunked loss's memory), written to docs/BENCHMARKS.md.
# usage: bash bench/lm_bench.sh [--seeds N] [--no_docs] [--fresh] [--help]
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install_deps.sh
bash launch/build.sh distill distill_prepare_text
exec /usr/bin/python3 bench/lm_bench.py "$@"
