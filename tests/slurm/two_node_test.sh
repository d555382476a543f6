#!/usr/bin/env bash
# A real two-node Slurm cluster on one machine: two network namespaces
# ("nodes", each with its own host name in a UTS namespace and a hosts file
# bind-mounted in a mount namespace) joined by a bridge the test creates;
# munged once, slurmctld on node1, one slurmd per node started inside its
# node. Then, through the shipped launch/slurm/distill.sbatch:
#   1. a job of 2 nodes x 1 rank with its teacher server on node2, reached
#      by host name over TLS (a test CA, a certificate per node, a bearer
#      token); its weights equal a one-node two-rank run of the same job;
#   2. the same job with node1's certificate on node2: the ranks refuse the
#      teacher and say why;
#   3. a longer job preempted (scancel --signal=USR1 --batch) once it has a
#      checkpoint: it requeues, resumes on the two nodes and ends with the
#      step count of an unbroken run. While it trains, the ranks' sockets
#      are looked at: rank 0 talks to rank 1 over the bridge, not loopback
#      (the nodes share no loopback, so nothing else could work);
#   4. torchrun started in each node (--nnodes 2, c10d rendezvous on
#      node1) trains a job whose weights equal a one-node two-rank run.
# Every process the test starts is stopped by pid (a node's processes are
# the pids of its network namespace); the namespaces and links are deleted,
# on success and on failure. Only the test's own addresses are contacted.
#
# usage: two_node_test.sh SOURCE_DIR BIN_DIR     (exit 77: not root here)
set -euo pipefail

src=$(cd "$1" && pwd)
bin=$(cd "$2" && pwd)
started=$SECONDS
# shellcheck source=cluster_lib.sh
source "$src/tests/slurm/cluster_lib.sh"
slurm() { on 1 "$@"; }

say() { echo "two_node_test: [$((SECONDS - started))s] $*"; }
diagnose() {
  [[ -d "${tmp:-}" ]] || return 0
  if [[ -n "${holder[1]:-}" ]] && kill -0 "${holder[1]}" 2>/dev/null; then
    echo "--- squeue / sinfo" >&2
    on 1 squeue -a 2>&1 | head -20 >&2 || true
    on 1 sinfo -N 2>&1 | head -5 >&2 || true
  fi
  tail_files 30 "$tmp"/jobs/*.out "$tmp"/jobs/*-work/events.log "$tmp"/jobs/*.log \
    "$tmp"/log/slurmctld.log "$tmp"/log/slurmd-*.log
}
fail() {
  echo "two_node_test: FAIL: $*" >&2
  diagnose
  exit 1
}

# --- Packages and privileges ----------------------------------------------
if [[ "$(id -u)" != 0 ]]; then
  echo "two_node_test: namespaces and Slurm's daemons need root; skipping as $(id -un)"
  exit 77
fi
install_missing slurm-wlm munge iproute2 openssl

# --- Nodes ----------------------------------------------------------------
id=$$
tmp=$(mktemp -d /tmp/distill_two_node_test.XXXXXX)
chmod 755 "$tmp"
bridge="dbr$id"
declare -A holder=()
ns=([1]="distill-node1-$id" [2]="distill-node2-$id")
pids=()
created_links=()
created_ns=()

# Runs "$@" inside node $1 (its network, host name and hosts file), in the
# current directory.
on() {
  local n=$1
  shift
  nsenter -t "${holder[$n]}" -n -u -m -- env -C "$PWD" "$@"
}

stop_pid() {  # SIGTERM, then SIGKILL after 10 s
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  if [[ -n "${holder[1]:-}" ]] && kill -0 "${holder[1]}" 2>/dev/null && [[ -n "${SLURM_CONF:-}" ]]; then
    on 1 scancel --full --quiet --user=root 2>/dev/null || true
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[i]}"; done
  # Whatever still runs in a node (job steps, ranks, the holder itself).
  local n pid
  for n in "${created_ns[@]}"; do
    for pid in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  done
  for pid in "${holder[@]}"; do wait "$pid" 2>/dev/null || true; done
  for n in "${created_ns[@]}"; do ip netns delete "$n" 2>/dev/null || true; done
  for l in "${created_links[@]}"; do ip link delete "$l" 2>/dev/null || true; done
  if ((rc == 0)); then rm -rf "$tmp"; else echo "two_node_test: files kept in $tmp" >&2; fi
}
trap cleanup EXIT

# A /24 of 10.213.x.0 that no interface here uses.
subnet=""
for try in $(seq 0 9); do
  candidate="10.213.$(((id + try * 37) % 200 + 20))"
  if ! ip -4 -o addr show | grep -q " $candidate\."; then subnet=$candidate; break; fi
done
[[ -n "$subnet" ]] || fail "no free 10.213.x.0/24 subnet for the nodes"
addr=([1]="$subnet.11" [2]="$subnet.12")

ip link add "$bridge" type bridge ||
  fail "cannot create bridge $bridge (the kernel or the container refuses it)"
created_links+=("$bridge")
ip link set "$bridge" up
cat >"$tmp/hosts" <<HOSTS
127.0.0.1 localhost
${addr[1]} node1
${addr[2]} node2
HOSTS
for n in 1 2; do
  ip netns add "${ns[$n]}" || fail "cannot create network namespace ${ns[$n]}"
  created_ns+=("${ns[$n]}")
  ip link add "dv$n-$id" type veth peer name eth0 netns "${ns[$n]}" ||
    fail "cannot create a veth pair into ${ns[$n]}"
  created_links+=("dv$n-$id")
  ip link set "dv$n-$id" master "$bridge" up
  ip -n "${ns[$n]}" addr add "${addr[$n]}/24" dev eth0
  ip -n "${ns[$n]}" link set eth0 up
  ip -n "${ns[$n]}" link set lo up
  # The node's holder: its own host name and hosts file, then it waits.
  # (nsenter, not `ip netns exec`, which mounts a /sys without the cgroup
  # file system slurmd needs.)
  nsenter --net="/run/netns/${ns[$n]}" unshare --uts --mount --propagation private \
    bash -c 'hostname "$1" && mount --bind "$2" /etc/hosts && exec sleep infinity' \
    node "node$n" "$tmp/hosts" &
  holder[$n]=$!
done
node_ready() {
  [[ "$(on "$1" hostname)" == "node$1" ]] &&
    [[ "$(on "$1" getent hosts node2 | awk '{print $1}')" == "${addr[2]}" ]]
}
wait_for 10 "node1's namespaces" node_ready 1
wait_for 10 "node2's namespaces" node_ready 2
say "nodes up: node1 ${addr[1]}, node2 ${addr[2]} on bridge $bridge"

# --- Teacher weights, certificates ----------------------------------------
mkdir -p "$tmp"/{state,spool/node1,spool/node2,log,jobs,pki}
start_teacher_training "$bin" "$tmp/jobs"
pids+=("$teacher_job")

pki="$tmp/pki"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=distill-test-ca \
  -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
for n in node1 node2; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$n" -keyout "$pki/$n.key" \
    -out "$pki/$n.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$n.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 1 -extfile <(echo "subjectAltName=DNS:$n") \
    -out "$pki/$n.pem" 2>/dev/null
done
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$pki/token"

# --- Cluster --------------------------------------------------------------
start_munged "$tmp"
# Each node declares 4 CPUs; jobs take whole nodes (--exclusive).
{
  echo "ClusterName=distilltwo"
  echo "SlurmctldHost=node1(${addr[1]})"
  echo "SlurmctldPort=6817"
  echo "SlurmdPort=6818"
  slurm_conf_common "$tmp"
  echo "NodeName=node1 NodeAddr=${addr[1]} CPUs=4 RealMemory=1000 State=UNKNOWN"
  echo "NodeName=node2 NodeAddr=${addr[2]} CPUs=4 RealMemory=1000 State=UNKNOWN"
  echo "PartitionName=debug Nodes=node[1-2] Default=YES MaxTime=INFINITE State=UP"
} >"$tmp/slurm.conf"
export SLURM_CONF="$tmp/slurm.conf"
on 1 slurmctld -D -i >"$tmp/log/slurmctld.out" 2>&1 &
pids+=($!)
on 1 slurmd -D >"$tmp/log/slurmd-node1.out" 2>&1 &
pids+=($!)
on 2 slurmd -D >"$tmp/log/slurmd-node2.out" 2>&1 &
pids+=($!)
nodes_idle() {
  [[ "$(on 1 sinfo -h -N -o '%N %T' 2>/dev/null | sort | paste -sd' ')" == "node1 idle node2 idle" ]]
}
wait_for 60 "node1 and node2 to be idle" nodes_idle
say "cluster up: $(on 1 sinfo -h -N -o '%N %T %c' | paste -sd, -)"

# --- Jobs -----------------------------------------------------------------

cd "$tmp/jobs"
wait "$teacher_job" || fail "training the teacher failed: $(cat teacher.log)"
pids=("${pids[@]:1}")
teacher_weights="$tmp/jobs/teacher/model.pt"

# Short timeouts: the wrong-host job fails in seconds.
timeouts="connect_timeout_seconds: 5 failover_grace_seconds: 10"
write_config short.pbtxt 256 2 "$teacher_weights" "$timeouts"
long_epochs=6
write_config long.pbtxt 3200 $long_epochs "$teacher_weights" "$timeouts"

export DISTILL_BIN_DIR="$bin" DISTILL_TEACHERS=1
teacher_model="--arch mlp --weights $teacher_weights --threads 1"
tls="--tls_key $pki/{host}.key --token_file $pki/token"
export DISTILL_TEACHER_ARGS="$teacher_model --tls_cert $pki/{host}.pem $tls"
export DISTILL_ARGS="--teacher_tls_ca $pki/ca.pem --teacher_token_file $pki/token"
sbatch_script="$src/launch/slurm/distill.sbatch"
submit() {  # NAME CONFIG: 2 nodes, 1 rank on each, the teacher on node2
  DISTILL_CONFIG="$2" DISTILL_RUN_DIR="$tmp/jobs/$1" DISTILL_WORK_DIR="$tmp/jobs/$1-work" \
    on 1 sbatch --parsable --nodes=2 --ntasks=3 --exclusive --output="$1-%j.out" \
    "$sbatch_script"
}
# The largest parameter difference of two model.pt files, below 2e-5 (the
# data-parallel tests' tolerance: float sums in another order).
same_weights() {
  /usr/bin/python3 - "$1" "$2" <<'PY'
import sys, torch
a = dict(torch.jit.load(sys.argv[1]).named_parameters())
b = dict(torch.jit.load(sys.argv[2]).named_parameters())
assert a.keys() == b.keys(), (sorted(a), sorted(b))
d = max((a[k] - b[k]).abs().max().item() for k in a)
print(f"largest parameter difference {d:.3g}")
assert d < 2e-5, d
PY
}

# 1. Two nodes, TLS teacher on node2.
short=$(submit short short.pbtxt)
say "submitted job $short (2 nodes x 1 rank, TLS teacher on node2)"
wait_for 180 "job $short" job_done "$short"
check_summary "$tmp/jobs/short" 16 2 || fail "job $short: $(cat short-"$short".out)"
[[ "$(job_field "$short" NodeList)" == "node[1-2]" ]] ||
  fail "job $short ran on $(job_field "$short" NodeList)"
grep -q "teachers serving at node2:[0-9]*$" short-work/events.log ||
  fail "job $short: the teacher did not serve at node2: $(cat short-work/events.log)"
say "job $short completed: 16 steps on node1 and node2, teacher at $(grep -o 'node2:[0-9]*' short-work/events.log)"

# The same job on one node: 2 ranks and a plaintext teacher on loopback.
"$bin/distill_launch" --nproc 2 --teachers 1 --teacher_args "$teacher_model" \
  -- --quiet --config short.pbtxt --run_dir "$tmp/jobs/one-node" >one-node.log 2>&1 ||
  fail "the one-node run failed: $(cat one-node.log)"
check_summary "$tmp/jobs/one-node" 16 2 || fail "one-node run: $(cat one-node.log)"
diff=$(same_weights "$tmp/jobs/short/model.pt" "$tmp/jobs/one-node/model.pt") ||
  fail "two nodes and one node trained different weights: $diff"
say "two-node weights equal the one-node run's: $diff"

# 2. The teacher on node2 presents node1's certificate.
export DISTILL_TEACHER_ARGS="$teacher_model --tls_cert $pki/node1.pem ${tls//\{host\}/node1}"
wronghost=$(submit wronghost short.pbtxt)
say "submitted job $wronghost (node1's certificate on node2)"
wait_for 180 "job $wronghost to end" job_ended "$wronghost"
[[ "$(job_state "$wronghost")" == FAILED ]] || fail "job $wronghost ended $(job_state "$wronghost")"
out=$(cat wronghost-"$wronghost".out)
grep -q "distill: error: no teacher server answered Info within 5s: node2:[0-9]* (UNAVAILABLE: .*Peer name node2 is not in peer certificate" <<<"$out" ||
  fail "no error naming node2 and its certificate: $out"
[[ ! -e "$tmp/jobs/wronghost/summary.json" ]] || fail "job $wronghost wrote a summary"
say "job $wronghost refused the teacher: $(grep -m1 'distill: error' <<<"$out")"
export DISTILL_TEACHER_ARGS="$teacher_model --tls_cert $pki/{host}.pem $tls"

# 3. Preempted on two nodes, requeued, resumed.
long=$(submit long long.pbtxt)
say "submitted job $long (to be preempted)"
wait_for_checkpoint "$long" "$tmp/jobs/long"
# Rank 0 (node1) and rank 1 (node2) are connected over the bridge; no rank
# socket is on loopback.
distill_sockets() {
  on "$1" ss -Htnp state established 2>/dev/null | grep '"distill"' || true
}
s1=$(distill_sockets 1)
s2=$(distill_sockets 2)
teacher_port=$(grep -o 'node2:[0-9]*' long-work/events.log | head -n1 | cut -d: -f2)
grep -q "${addr[1]}:[0-9]* *${addr[2]}:" <<<"$s1" ||
  fail "no socket of node1's rank to node2: $s1"
awk -v p="${addr[2]}:$teacher_port" '$4 != p' <<<"$s1" | grep -q "${addr[2]}:" ||
  fail "node1's rank reaches node2 only through the teacher: $s1"
grep -q "${addr[2]}:[0-9]* *${addr[1]}:" <<<"$s2" ||
  fail "no socket of node2's rank to node1: $s2"
! grep -q "127\.0\.0\.1" <<<"$s1$s2" || fail "a rank socket on loopback: $s1 $s2"
say "ranks connected over the bridge: $(wc -l <<<"$s1") sockets on node1, $(wc -l <<<"$s2") on node2"

preempt_and_restart "$long"
say "sent SIGUSR1 to job $long's batch shell; it requeued"
wait_for 240 "job $long to finish" job_done "$long"
check_resumed "$long" long-"$long".out long-work/events.log
resumed=$(grep -o "resuming from [^ ]* (epoch [0-9]*, step [0-9]*)" long-"$long".out)
check_summary "$tmp/jobs/long" $((long_epochs * 100)) 2 || fail "job $long: $(cat long-"$long".out)"
[[ "$(job_field "$long" NodeList)" == "node[1-2]" ]] ||
  fail "job $long ended on $(job_field "$long" NodeList)"
say "job $long: preempted, requeued, $resumed, finished with $((long_epochs * 100)) steps on node[1-2]"

# 4. torchrun in each node, rendezvous on node1, the config's in-process teacher.
torchrun_node() {  # NODE
  on "$1" /usr/bin/torchrun --nnodes 2 --nproc_per_node 1 --rdzv_backend c10d \
    --rdzv_endpoint node1:29400 --rdzv_id distill-two-node --max_restarts 0 \
    --redirects 1 --tee 1 --log_dir "$tmp/jobs/torchrun-logs-node$1" --no_python "$bin/distill" --quiet --config short.pbtxt \
    --run_dir "$tmp/jobs/torchrun" >"torchrun-node$1.log" 2>&1
}
torchrun_node 1 &
t1=$!
pids+=("$t1")
torchrun_node 2 &
t2=$!
pids+=("$t2")
wait "$t1" || fail "torchrun on node1 failed: $(cat torchrun-node1.log)"
wait "$t2" || fail "torchrun on node2 failed: $(cat torchrun-node2.log)"
pids=("${pids[@]:0:${#pids[@]}-2}")
check_summary "$tmp/jobs/torchrun" 16 2 || fail "torchrun: $(cat torchrun-node1.log)"
"$bin/distill_launch" --nproc 2 -- --quiet --config short.pbtxt \
  --run_dir "$tmp/jobs/one-node-local" >one-node-local.log 2>&1 ||
  fail "the one-node run failed: $(cat one-node-local.log)"
diff=$(same_weights "$tmp/jobs/torchrun/model.pt" "$tmp/jobs/one-node-local/model.pt") ||
  fail "torchrun on two nodes and one node trained different weights: $diff"
say "torchrun on node1 and node2: 16 steps, weights equal the one-node run's: $diff"
say "PASS"
