#!/usr/bin/env bash
# The teacher server's figures in one run: bytes and samples/s per encoding
# and dynamic batching (teacher_bench), then distillation epoch time through
# a server vs the in-process teacher vs cached targets on the quickstart's
# job. usage: bash bench/teacher_service.sh [--help]
set -euo pipefail
cd "$(dirname "$0")/.."
exec /usr/bin/python3 bench/teacher_service.py "$@"
