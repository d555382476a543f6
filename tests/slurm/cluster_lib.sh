# Shared by the Slurm tests (sourced, not run): packages, munged, the
# slurm.conf both clusters share, an MLP teacher, job configs and job
# states. The sourcing script defines
#   fail MESSAGE...   print, diagnose, exit 1
#   slurm CMD...      run a Slurm client command where the controller is
#                     reached (the two-node test runs them inside node1)
# and keeps the pids of what it starts in the array `pids`.

# Waits until "$@" succeeds; fails after TIMEOUT seconds.
wait_for() {  # TIMEOUT WHAT COMMAND...
  local timeout=$1 what=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    ((SECONDS < deadline)) || fail "timed out after ${timeout}s waiting for $what"
    sleep 0.2
  done
}

# Prints the last N lines of each FILE that exists to stderr, under a
# "--- FILE" header (a failed test's diagnosis).
tail_files() {  # N FILE...
  local lines=$1 f
  shift
  for f in "$@"; do
    [[ -f "$f" ]] || continue
    echo "--- $f (last $lines lines)" >&2
    tail -n "$lines" "$f" >&2
  done
}

# Installs the Debian packages among "$@" that are missing (root only).
install_missing() {
  local need=() p lock
  # The Slurm tests run side by side under ctest -j: one installs at a time
  # (two apt-gets fail on dpkg's lock), and the one that waited finds the
  # packages there.
  exec {lock}>/tmp/distill-test-apt.lock
  flock -w 900 "$lock"
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
      need+=("$p")
  done
  if ((${#need[@]} > 0)); then
    echo "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
      "${need[@]}" >/dev/null
  fi
  exec {lock}>&-
}

# munged with a fresh key, its socket in DIR/munge; logs in DIR/log.
start_munged() {  # DIR
  local dir=$1
  mkdir -p "$dir/munge" "$dir/log"
  chmod 755 "$dir/munge"
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$dir/munge/munge.key"
  munged -F -f --socket="$dir/munge/munge.sock" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/seed" >"$dir/log/munged.out" 2>&1 &
  pids+=($!)
  wait_for 20 "munged's socket" test -S "$dir/munge/munge.sock"
}

# The slurm.conf lines both clusters share: root daemons, munge, no cgroups
# or accounting, CPUs as the only resource (config_overrides lets slurmd
# declare more CPUs than a 2-core machine has). %n: one spool, pid and log
# file per node.
slurm_conf_common() {  # DIR
  local dir=$1
  cat <<CONF
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.sock
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
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
CONF
}

# Starts training the jobs' teacher, an MLP trained for one step, into
# DIR/teacher (model.pt) in the background; its pid is `teacher_job`.
start_teacher_training() {  # BIN DIR
  cat >"$2/teacher.pbtxt" <<'PB'
mode: TRAIN
student { arch: "mlp" }
data { train_limit: 64 test_limit: 64 }
batch_size: 64 epochs: 1 threads: 1
PB
  "$1/distill" --quiet --config "$2/teacher.pbtxt" --run_dir "$2/teacher" \
    >"$2/teacher.log" 2>&1 &
  teacher_job=$!
}

# A distillation of an MLP from TEACHER_WEIGHTS: SAMPLES training samples,
# global batch 32, a checkpoint every 5 steps. TEACHER_EXTRA goes into the
# teacher section.
write_config() {  # FILE SAMPLES EPOCHS TEACHER_WEIGHTS [TEACHER_EXTRA]
  cat >"$1" <<PB
mode: DISTILL
student { arch: "mlp" }
teacher { model { arch: "mlp" weights: "$4" } ${5:-} }
data { train_limit: $2 test_limit: 64 }
loss { name: "kd_kl" weight: 0.9 }
loss { name: "hard_ce" weight: 0.1 }
temperature: 4
batch_size: 32 epochs: $3 threads: 1
checkpoint_every_steps: 5
distributed { collective_timeout_seconds: 60 }
PB
}

# RUN_DIR/summary.json says STEPS steps on RANKS ranks.
check_summary() {  # RUN_DIR STEPS RANKS
  /usr/bin/python3 - "$@" <<'PY'
import json, sys
s = json.load(open(sys.argv[1] + "/summary.json"))
assert s["steps"] == int(sys.argv[2]), f"steps {s['steps']}, expected {sys.argv[2]}"
assert s["ranks"] == int(sys.argv[3]), f"ranks {s['ranks']}, expected {sys.argv[3]}"
PY
}

job_field() { slurm scontrol show job "$1" | grep -oE "(^| )$2=[^ ]*" | head -n1 | cut -d= -f2; }
job_state() { job_field "$1" JobState; }
final_state() {  # STATE: true for the states a job ends in
  [[ " COMPLETED FAILED CANCELLED TIMEOUT NODE_FAIL OUT_OF_MEMORY BOOT_FAIL DEADLINE " == *" $1 "* ]]
}
job_ended() { final_state "$(job_state "$1")"; }
job_done() {  # true once COMPLETED; fails the test if it ended otherwise
  local state
  state=$(job_state "$1")  # once: it may change between two reads
  [[ "$state" == COMPLETED ]] && return 0
  final_state "$state" && fail "job $1 ended $state"
  return 1
}

# Waits for JOB's first checkpoint in RUN_DIR; fails if the job ends first.
# Any checkpoint: with keep_checkpoints 2 the first one (step 5) is deleted
# at step 15, a fraction of a second later on a fast machine.
wait_for_checkpoint() {  # JOB RUN_DIR
  local job=$1 run=$2
  checkpointed_or_ended() {
    compgen -G "$run/checkpoints/ckpt-*.pt" >/dev/null && return 0
    job_ended "$job" && fail "job $job ended $(job_state "$job") before it had a checkpoint"
    return 1
  }
  wait_for 180 "job $job's first checkpoint" checkpointed_or_ended
}

# Preempts JOB (SIGUSR1 to its batch shell), waits for it to requeue itself
# and lets it start again at once.
preempt_and_restart() {  # JOB
  local job=$1
  slurm scancel --signal=USR1 --batch "$job"
  requeued_or_ended() {
    [[ "$(job_field "$job" Restarts)" == 1 ]] && return 0
    [[ "$(job_state "$job")" == COMPLETED ]] &&
      fail "job $job finished before the preemption notice reached its ranks"
    return 1
  }
  wait_for 120 "job $job to requeue" requeued_or_ended
  # A requeued job may start 120 s later (Slurm holds it that long); the
  # cluster's operator, the test, lets it start now, but not within the
  # second of the requeue: slurmd refuses a job whose credential is not
  # newer, to the second, than the revocation the requeue made ("Job
  # credential revoked").
  local requeue_second
  requeue_second=$(date +%s)
  next_second() { (($(date +%s) > requeue_second)); }
  wait_for 5 "the second after the requeue" next_second
  slurm scontrol update JobId="$job" StartTime=now 2>/dev/null || true
}

# The preempted job's output shows the notice, the requeue, a checkpoint at
# the stop and the resume ("resuming from ... (epoch E, step S)").
check_resumed() {  # JOB OUTPUT_FILE EVENTS_LOG
  local out
  out=$(cat "$2")
  grep -q "run 0: preemption notice (SIGUSR1)" "$3" || fail "no notice: $out"
  grep -q "run 0: requeueing job $1" "$3" || fail "no requeue: $out"
  grep -q "run 1: finished" "$3" || fail "run 1 did not finish: $out"
  grep -q "stopped after a checkpoint at" <<<"$out" || fail "no checkpoint at the stop: $out"
  grep -q "resuming from [^ ]* (epoch [0-9]*, step [0-9]*)" <<<"$out" ||
    fail "the requeued run did not resume: $out"
  [[ "$(job_field "$1" Restarts)" == 1 ]] || fail "job $1 restarted $(job_field "$1" Restarts) times"
}
