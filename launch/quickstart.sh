#!/usr/bin/env bash
# The main job, from a fresh clone: installs the dependencies, builds
# `distill`, trains a ~1M-parameter teacher on Fashion-MNIST, distills an
# 80K-parameter student from it, and prints what came out.
set -euo pipefail
cd "$(dirname "$0")/.."

bash launch/install_deps.sh
bash launch/build.sh distill

DISTILL=build/bin/distill
start=$(date +%s)
echo "== 1/2: training the teacher (launch/configs/quickstart_teacher.pbtxt)"
"$DISTILL" --config launch/configs/quickstart_teacher.pbtxt
teacher_done=$(date +%s)
echo "== 2/2: distilling the student (launch/configs/quickstart_student.pbtxt)"
"$DISTILL" --config launch/configs/quickstart_student.pbtxt
end=$(date +%s)

/usr/bin/python3 - "$start" "$teacher_done" "$end" <<'PY'
import json, sys
start, teacher_done, end = map(int, sys.argv[1:])
t = json.load(open("runs/quickstart/teacher/summary.json"))
s = json.load(open("runs/quickstart/student/summary.json"))
rows = [("teacher (" + t["model"] + ")", t, teacher_done - start),
        ("distilled student (" + s["model"] + ")", s, end - teacher_done)]
print()
print(f"{'model':34} {'test acc':>9} {'params':>10} {'epochs':>7} {'wall':>7}")
for name, r, wall in rows:
    print(f"{name:34} {100 * r['test_accuracy']:8.2f}% {r['params']:>10,} "
          f"{r['epochs']:>7} {wall:>6}s")
print(f"\ntotal wall time {end - start}s; run folders: runs/quickstart/{{teacher,student}}")
worst = min(range(10), key=lambda c: s["per_class_accuracy"][c])
print(f"student's weakest class: {worst} at "
      f"{100 * s['per_class_accuracy'][worst]:.1f}% (per-class accuracy in summary.json)")
PY
