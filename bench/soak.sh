#!/usr/bin/env bash
# The soak run: a distillation through 2 teacher servers for ~10 minutes
# while servers are killed, stopped and attacked by slow readers; reports
# lost or doubled samples, RSS over time and accuracy against an undisturbed
# run. usage: bash bench/soak.sh [--help]
set -euo pipefail
cd "$(dirname "$0")/.."
exec /usr/bin/python3 bench/soak.py "$@"
