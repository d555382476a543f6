#!/usr/bin/env bash
# On-policy reverse KL through a teacher_server by what it sends: the whole
# distribution (HIDDEN_FP16), its own top k, or its log-probabilities at the
# student's own top k (on_policy.student_top_k; docs/ON_POLICY.md).
# usage: bash bench/on_policy_served.sh [--windows N] [--seeds 1,2,3]
#                                       [--top_k K] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install_deps.sh
bash launch/build.sh distill distill_prepare_text teacher_server
exec /usr/bin/python3 bench/on_policy_served.py "$@"
