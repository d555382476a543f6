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
# shellcheck source=cluster_lib.sh
source "$src/tests/slurm/cluster_lib.sh"
slurm() { "$@"; }

say() { echo "slurm_test: [$((SECONDS - started))s] $*"; }
# On failure, what the cluster knew: job states, the jobs' output and
# events, and the daemons' last log lines (the temp folder is kept too).
diagnose() {
  [[ -n "${SLURM_CONF:-}" && -d "${tmp:-}" ]] || return 0
  echo "--- squeue / scontrol show job" >&2
  squeue -a 2>&1 | head -20 >&2 || true
  for j in ${short:-} ${long:-}; do scontrol show job "$j" 2>&1 | head -8 >&2 || true; done
  tail_files 40 "$tmp"/jobs/*.out "$tmp"/jobs/*-work/events.log
  tail_files 15 "$tmp"/log/slurmctld.log "$tmp"/log/slurmd-*.log
}
fail() {
  echo "slurm_test: FAIL: $*" >&2
  diagnose
  exit 1
}

# --- Packages -------------------------------------------------------------
if [[ "$(id -u)" != 0 ]]; then
  echo "slurm_test: the daemons run as root here; skipping as $(id -un)"
  exit 77
fi
install_missing slurm-wlm munge

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

node=$(hostname -s)
mkdir -p "$tmp"/{state,spool/"$node",log,jobs}
# The teacher trains while the cluster starts.
start_teacher_training "$bin" "$tmp/jobs"
start_munged "$tmp"

cpus=$(nproc)
# Room for the two jobs' tasks even on a 2-core machine.
((cpus >= 4)) || cpus=4
{
  echo "ClusterName=distilltest"
  echo "SlurmctldHost=$node(127.0.0.1)"
  echo "SlurmctldPort=$(free_port)"
  echo "SlurmdPort=$(free_port)"
  slurm_conf_common "$tmp"
  echo "NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=1000 State=UNKNOWN"
  echo "PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP"
} >"$tmp/slurm.conf"
export SLURM_CONF="$tmp/slurm.conf"
slurmctld -D -i >"$tmp/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D >"$tmp/log/slurmd.out" 2>&1 &
pids+=($!)
node_idle() { [[ "$(sinfo -h -n "$node" -o %T 2>/dev/null)" == idle ]]; }
wait_for 60 "node $node to be idle" node_idle
say "cluster up: $(sinfo -h -o '%P %D %T %c cpus')"

# --- Jobs -----------------------------------------------------------------
cd "$tmp/jobs"
wait "$teacher_job" || fail "training the teacher failed: $(cat teacher.log)"
teacher_job=""
teacher_weights="$tmp/jobs/teacher/model.pt"

write_config short.pbtxt 256 2 "$teacher_weights"
# The long job must still be running when the notice arrives: on an idle
# machine its ranks train ~40 steps/s, so it gets 600 steps (~15 s) of runway.
long_epochs=6
write_config long.pbtxt 3200 $long_epochs "$teacher_weights"

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
check_summary "$tmp/jobs/short" $((2 * 256 / 32)) 2 ||
  fail "short job: $(cat "$tmp"/jobs/short-*.out)"
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
wait_for_checkpoint "$long" "$tmp/jobs/long"
preempt_and_restart "$long"
say "sent SIGUSR1 to job $long's batch shell; it requeued"
wait_for 240 "job $long to finish" job_done "$long"
check_resumed "$long" long-"$long".out long-work/events.log
resumed=$(grep -o "resuming from [^ ]* (epoch [0-9]*, step [0-9]*)" long-"$long".out)
check_summary "$tmp/jobs/long" $((long_epochs * 3200 / 32)) 2 ||
  fail "long job: $(cat long-"$long".out)"
say "job $long: preempted, requeued, $resumed, finished with $((long_epochs * 100)) steps"
say "PASS"
