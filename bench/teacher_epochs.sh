#!/usr/bin/env bash
# Distillation epoch time through a teacher server vs the in-process teacher
# vs cached targets, on the quickstart's job. usage: bash bench/teacher_epochs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exec /usr/bin/python3 bench/teacher_epochs.py "$@"
