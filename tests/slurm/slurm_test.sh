#!/usr/bin/env bash
# The Slurm batch script on a real one-node Slurm cluster: installs slurm-wlm
# and munge when missing, starts munged, slurmctld and slurmd from a
# temporary directory, then
#   1. runs a short job (2 rank tasks + 1 teacher task when teacher_server is
#      built, else 2 rank tasks and the config's in-process teacher) and
#      checks its summary.json;
#   2. preempts a longer job with `scancel --signal=USR1 --batch` once it has
#      a checkpoint, and checks that it requeued itself (Restarts=1), resumed
#      from the checkpoint and finished with the step count of an unbroken run.
# Every daemon it started is stopped by pid on exit.
#
# usage: slurm_test.sh SOURCE_DIR BIN_DIR     (exit 77: cannot run here)
set -euo pipefail

src=$(cd "$1" && pwd)
bin=$(cd "$2" && pwd)
started=$SECONDS

say() { echo "slurm_test: [$((SECONDS - started))s] $*"; }
# On failure, what the cluster knew: job states, the jobs' output and
# events, and the daemons' last log lines (the temp folder is kept too).
diagnose() {
  [[ -n "${SLURM_CONF:-}" && -d "${tmp:-}" ]] || return 0
  echo "--- squeue / scontrol show job" >&2
  squeue -a 2>&1 | head -20 >&2 || true
  for j in ${short:-} ${long:-}; do scontrol show job "$j" 2>&1 | head -8 >&2 || true; done
  local f
  for f in "$tmp"/jobs/*.out "$tmp"/jobs/*-work/events.log; do
    [[ -f "$f" ]] || continue
    echo "--- $f (last 40 lines)" >&2
    tail -n 40 "$f" >&2
  done
  for f in "$tmp"/log/slurmctld.log "$tmp"/log/slurmd.log; do
    [[ -f "$f" ]] || continue
    echo "--- $f (last 15 lines)" >&2
    tail -n 15 "$f" >&2
  done
}
fail() {
  echo "slurm_test: FAIL: $*" >&2
  diagnose
  exit 1
}

# --- Packages -------------------------------------------------------------
need=()
for p in slurm-wlm munge; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    need+=("$p")
done
if ((${#need[@]} > 0)); then
  if [[ "$(id -u)" != 0 ]]; then
    echo "slurm_test: ${need[*]} missing and not root; skipping"
    exit 77
  fi
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
if [[ "$(id -u)" != 0 ]]; then
  echo "slurm_test: the daemons run as root here; skipping as $(id -un)"
  exit 77
fi

# --- Cluster --------------------------------------------------------------
tmp=$(mktemp -d /tmp/distill_slurm_test.XXXXXX)
chmod 755 "$tmp"
pids=()
cleanup() {
  local rc=$?
  if [[ -n "${SLURM_CONF:-}" ]] && ((${#pids[@]} > 0)); then
    scancel --full --quiet --user=root 2>/dev/null || true
  fi
  if [[ -n "${teacher_job:-}" ]]; then
    kill -KILL "$teacher_job" 2>/dev/null || true
    wait "$teacher_job" 2>/dev/null || true
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    # Bounded: SIGKILL whatever is still there after 10 s.
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if ((rc == 0)); then rm -rf "$tmp"; else echo "slurm_test: files kept in $tmp" >&2; fi
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits until "$@" succeeds; fails after $timeout seconds.
wait_for() {
  local timeout=$1 what=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    ((SECONDS < deadline)) || fail "timed out after ${timeout}s waiting for $what"
    sleep 0.2
  done
}

mkdir -p "$tmp"/{munge,state,spool,log,jobs}
# The teacher, an MLP trained for one step, trains while the cluster starts.
cat >"$tmp/jobs/teacher.pbtxt" <<'PB'
mode: TRAIN
student { arch: "mlp" }
data { train_limit: 64 test_limit: 64 }
batch_size: 64 epochs: 1 threads: 1
PB
"$bin/distill" --quiet --config "$tmp/jobs/teacher.pbtxt" --run_dir "$tmp/jobs/teacher" \
  >"$tmp/jobs/teacher.log" 2>&1 &
teacher_job=$!
chmod 755 "$tmp/munge"
dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$tmp/munge/munge.key"
munged -F -f --socket="$tmp/munge/munge.sock" --key-file="$tmp/munge/munge.key" \
  --pid-file="$tmp/munge/munged.pid" --log-file="$tmp/log/munged.log" \
  --seed-file="$tmp/munge/seed" >"$tmp/log/munged.out" 2>&1 &
pids+=($!)
wait_for 20 "munged's socket" test -S "$tmp/munge/munge.sock"

node=$(hostname -s)
cpus=$(nproc)
# Room for the two jobs' tasks even on a 2-core machine (config_overrides
# lets slurmd accept more CPUs than it finds).
((cpus >= 4)) || cpus=4
cat >"$tmp/slurm.conf" <<CONF
ClusterName=distilltest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$tmp/munge/munge.sock
CredType=cred/munge
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
KillWait=10
MinJobAge=600
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$tmp/slurm.conf"
slurmctld -D -i >"$tmp/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D >"$tmp/log/slurmd.out" 2>&1 &
pids+=($!)
node_idle() { [[ "$(sinfo -h -n "$node" -o %T 2>/dev/null)" == idle ]]; }
wait_for 60 "node $node to be idle" node_idle
say "cluster up: $(sinfo -h -o '%P %D %T %c cpus')"

# --- Jobs -----------------------------------------------------------------
job_field() { scontrol show job "$1" | grep -o "$2=[^ ]*" | head -n1 | cut -d= -f2; }
job_state() { job_field "$1" JobState; }
job_done() {
  local s
  s=$(job_state "$1")
  case "$s" in
    COMPLETED) return 0 ;;
    FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE)
      fail "job $1 ended $s" ;;
  esac
  return 1
}

cd "$tmp/jobs"
wait "$teacher_job" || fail "training the teacher failed: $(cat teacher.log)"
teacher_job=""
teacher_weights="$tmp/jobs/teacher/model.pt"

write_config() {  # $1: file, $2: training samples, $3: epochs
  cat >"$1" <<PB
mode: DISTILL
student { arch: "mlp" }
teacher { model { arch: "mlp" weights: "$teacher_weights" } }
data { train_limit: $2 test_limit: 64 }
loss { name: "kd_kl" weight: 0.9 }
loss { name: "hard_ce" weight: 0.1 }
temperature: 4
batch_size: 32 epochs: $3 threads: 1
checkpoint_every_steps: 5
distributed { collective_timeout_seconds: 60 }
PB
}
write_config short.pbtxt 256 2
# The long job must still be running when the notice arrives: on an idle
# machine its ranks train ~40 steps/s, so it gets 600 steps (~15 s) of runway.
long_epochs=6
write_config long.pbtxt 3200 $long_epochs

teachers=0
if [[ -x "$bin/teacher_server" ]]; then teachers=1; fi
say "jobs use $teachers teacher servers"
export DISTILL_BIN_DIR="$bin" DISTILL_TEACHERS=$teachers
export DISTILL_TEACHER_ARGS="--arch mlp --weights $teacher_weights --threads 1"
sbatch_script="$src/launch/slurm/distill.sbatch"

# 1. A short job to the end.
short=$(DISTILL_CONFIG=short.pbtxt DISTILL_RUN_DIR="$tmp/jobs/short" \
  DISTILL_WORK_DIR="$tmp/jobs/short-work" \
  sbatch --parsable --ntasks=$((2 + teachers)) --output=short-%j.out "$sbatch_script")
say "submitted job $short (short)"
wait_for 180 "job $short" job_done "$short"
python3 - "$tmp/jobs/short/summary.json" <<'PY' || fail "short job: $(cat "$tmp"/jobs/short-*.out)"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["steps"] == 2 * 256 // 32, s["steps"]
assert s["ranks"] == 2, s["ranks"]
PY
if ((teachers > 0)); then
  grep -q "teachers serving at 127.0.0.1:" short-work/events.log ||
    fail "short job: no teacher endpoint in events.log"
fi
say "job $short completed: 16 steps on 2 ranks"

# 2. A longer job, preempted once it has its first checkpoint.
long=$(DISTILL_CONFIG=long.pbtxt DISTILL_RUN_DIR="$tmp/jobs/long" \
  DISTILL_WORK_DIR="$tmp/jobs/long-work" \
  sbatch --parsable --ntasks=$((2 + teachers)) --output=long-%j.out "$sbatch_script")
say "submitted job $long (to be preempted)"
# Any checkpoint: with keep_checkpoints 2 the first one (step 5) is deleted
# at step 15, a fraction of a second later on a fast machine.
checkpointed_or_ended() {
  compgen -G "$tmp/jobs/long/checkpoints/ckpt-*.pt" >/dev/null && return 0
  case "$(job_state "$long")" in
    COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE)
      fail "job $long ended $(job_state "$long") before it had a checkpoint" ;;
  esac
  return 1
}
wait_for 180 "job $long's first checkpoint" checkpointed_or_ended
scancel --signal=USR1 --batch "$long"
say "sent SIGUSR1 to job $long's batch shell"
requeued() { [[ "$(job_field "$long" Restarts)" == 1 ]]; }
requeued_or_ended() {
  requeued && return 0
  [[ "$(job_state "$long")" == COMPLETED ]] &&
    fail "job $long finished before the preemption notice reached its ranks"
  return 1
}
wait_for 120 "job $long to requeue" requeued_or_ended
# A requeued job may start 120 s later (Slurm holds it that long); the
# cluster's operator, this test, lets it start now, but not within the
# second of the requeue: slurmd refuses a job whose credential is not newer,
# to the second, than the revocation the requeue made ("Job credential
# revoked").
requeue_second=$(date +%s)
next_second() { (( $(date +%s) > requeue_second )); }
wait_for 5 "the second after the requeue" next_second
scontrol update JobId="$long" StartTime=now 2>/dev/null || true
wait_for 240 "job $long to finish" job_done "$long"

out=$(cat long-"$long".out)
grep -q "run 0: preemption notice (SIGUSR1)" long-work/events.log || fail "no notice: $out"
grep -q "run 0: requeueing job $long" long-work/events.log || fail "no requeue: $out"
grep -q "run 1: finished" long-work/events.log || fail "run 1 did not finish: $out"
grep -q "stopped after a checkpoint at" <<<"$out" || fail "no checkpoint at the stop: $out"
resumed=$(grep -o "resuming from [^ ]* (epoch [0-9]*, step [0-9]*)" <<<"$out") ||
  fail "the requeued run did not resume: $out"
python3 - "$tmp/jobs/long/summary.json" "$long_epochs" <<'PY' || fail "long job: $out"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["steps"] == int(sys.argv[2]) * 3200 // 32, s["steps"]
assert s["ranks"] == 2, s["ranks"]
PY
[[ "$(job_field "$long" Restarts)" == 1 ]] || fail "job $long restarted $(job_field "$long" Restarts) times"
say "job $long: preempted, requeued, $resumed, finished with $((long_epochs * 100)) steps"
say "PASS"
