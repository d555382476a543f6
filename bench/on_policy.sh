#!/usr/bin/env bash
# Off-policy KD against on-policy distillation (docs/ON_POLICY.md) at an
# equal wall-clock budget: test perplexity and the teacher's NLL of the
# student's own continuations, over seeds.
# usage: bash bench/on_policy.sh [--windows N] [--seeds 1,2,3]
#                                [--teacher_epochs N] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install_deps.sh
bash launch/build.sh distill distill_prepare_text
exec /usr/bin/python3 bench/on_policy.py "$@"
