#!/usr/bin/env bash
# Data-parallel benchmarks on this machine, printed side by side:
#   1. all-reduce algorithm and bus bandwidth, 1 KiB - 64 MiB, Gloo, 2 ranks
#   2. step time with bucket all-reduce overlapping backward vs after it
#   3. distillation throughput with 1 and 2 ranks (same global batch)
# usage: bench/ddp_bench.sh [--quick]      (run from anywhere; builds first)
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0; [[ "${1:-}" == "--quick" ]] && QUICK=1
bash launch/build.sh distill allreduce_bench >/dev/null
BIN=build/bin
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Runs N ranks of a command with the torchrun variables; waits for all.
ranks() {
  local n=$1; shift
  local port; port=$(free_port)
  local pids=()
  for ((r = 0; r < n; r++)); do
    RANK=$r WORLD_SIZE=$n LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      "$@" > "$OUT/rank$r.log" 2>&1 &
    pids+=($!)
  done
  local rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  if ((rc != 0)); then cat "$OUT"/rank*.log >&2; return $rc; fi
}

echo "## 1. all-reduce bandwidth (Gloo over loopback, 2 ranks)"
if ((QUICK)); then max=$((1 << 20)); secs=0.1; else max=$((64 << 20)); secs=0.5; fi
ranks 2 "$BIN/allreduce_bench" --max_bytes=$max --seconds_per_size=$secs
cat "$OUT/rank0.log"

limit=6400; [[ $QUICK == 1 ]] && limit=1280
config() {  # $1 = overlap true|false, $2 = threads
  cat > "$OUT/job_$1_$2.pbtxt" <<PB
mode: TRAIN
student { arch: "cnn_teacher" }
data { train_limit: $limit test_limit: 100 }
batch_size: 64 epochs: 1 threads: $2 log_every_steps: 1000000
distributed { overlap: $1 first_bucket_mb: 1 bucket_cap_mb: 1 }
PB
  echo "$OUT/job_$1_$2.pbtxt"
}
rate() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["samples_per_sec"])' "$1/summary.json"; }

echo
echo "## 2. overlap: 2 ranks x 1 thread, cnn_teacher (1.03M params, 1 MiB buckets), alternating"
declare -A sum=([true]=0 [false]=0)
rounds=3; ((QUICK)) && rounds=1
for ((i = 0; i < rounds; i++)); do
  for ov in true false; do
    ranks 2 "$BIN/distill" --quiet --config "$(config $ov 1)" --run_dir "$OUT/run_${ov}_$i"
    sum[$ov]=$(/usr/bin/python3 -c "print(${sum[$ov]} + $(rate "$OUT/run_${ov}_$i"))")
  done
done
/usr/bin/python3 - "${sum[true]}" "${sum[false]}" "$rounds" <<'PY'
import sys
on, off, n = float(sys.argv[1]) / int(sys.argv[3]), float(sys.argv[2]) / int(sys.argv[3]), int(sys.argv[3])
print(f"{'mode':28} {'samples/s':>10} {'ms/step (64)':>13}")
print(f"{'overlap (hooks)':28} {on:10.1f} {64000 / on:13.1f}")
print(f"{'all-reduce after backward':28} {off:10.1f} {64000 / off:13.1f}")
print(f"step time ratio overlap / after-backward: {off / on:.3f} (mean of {n} alternating runs)")
PY

echo
echo "## 3. distillation throughput: 1 rank x 2 threads vs 2 ranks x 1 thread (global batch 64)"
# A briefly trained teacher is enough to measure speed.
cat > "$OUT/teacher.pbtxt" <<PB
mode: TRAIN
student { arch: "cnn_teacher" }
data { train_limit: 640 test_limit: 100 }
batch_size: 64 epochs: 1 log_every_steps: 1000000
PB
"$BIN/distill" --quiet --config "$OUT/teacher.pbtxt" --run_dir "$OUT/teacher" >/dev/null
cat > "$OUT/distill_1.pbtxt" <<PB
mode: DISTILL
student { arch: "cnn_student" }
teacher { model { arch: "cnn_teacher" weights: "$OUT/teacher/model.pt" } }
data { train_limit: $limit test_limit: 100 }
batch_size: 64 epochs: 1 threads: 2 log_every_steps: 1000000
PB
sed 's/threads: 2/threads: 1/' "$OUT/distill_1.pbtxt" > "$OUT/distill_2.pbtxt"
ranks 1 "$BIN/distill" --quiet --config "$OUT/distill_1.pbtxt" --run_dir "$OUT/one"
ranks 2 "$BIN/distill" --quiet --config "$OUT/distill_2.pbtxt" --run_dir "$OUT/two"
/usr/bin/python3 - "$(rate "$OUT/one")" "$(rate "$OUT/two")" <<'PY'
import sys
one, two = map(float, sys.argv[1:])
print(f"1 rank: {one:.1f} samples/s   2 ranks: {two:.1f} samples/s   ratio 2/1: {two / one:.3f}")
PY
