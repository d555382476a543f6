#!/usr/bin/env bash
# Trainer step time with the teacher in process, behind a teacher_server and
# read from an offline target store (docs/TARGET_STORE.md).
# usage: bash bench/target_store.sh [--windows N] [--quality_windows N]
#                                    [--teacher_epochs N] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install_deps.sh
bash launch/build.sh distill distill_prepare_text teacher_server
exec /usr/bin/python3 bench/target_store.py "$@"
