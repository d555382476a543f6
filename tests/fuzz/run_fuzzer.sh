#!/usr/bin/env bash
# Runs one fuzz target as a test: first every input that ever crashed it
# (REGRESSIONS, each must now pass), then SECONDS of fuzzing from the seed
# corpus (SEEDS). Fails on any crash, sanitizer report, timeout or
# out-of-memory, naming the input (saved under WORK) and how to rerun it.
# usage: run_fuzzer.sh FUZZER SEEDS REGRESSIONS WORK SECONDS
set -euo pipefail
fuzzer=$1 seeds=$2 regressions=$3 work=$4 seconds=$5

if [[ ! -x "$fuzzer" ]]; then
  echo "run_fuzzer: $fuzzer is not built" >&2
  exit 1
fi
mapfile -t seed_files < <(find "$seeds" -type f 2>/dev/null)
if ((${#seed_files[@]} == 0)); then
  echo "run_fuzzer: no seed inputs in $seeds" >&2
  exit 1
fi
rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
# Leaks are reported too: the code under test must not lose memory per
# input. lsan.supp lists the ones found in libraries this project does not
# build.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$(dirname "$0")/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
flags=(-timeout=20 -rss_limit_mb=3072 -artifact_prefix="$work/artifacts/")

mapfile -t known < <(find "$regressions" -type f 2>/dev/null)
if ((${#known[@]} > 0)); then
  echo "run_fuzzer: ${#known[@]} regression inputs from $regressions"
  "$fuzzer" "${flags[@]}" "${known[@]}"
fi

echo "run_fuzzer: fuzzing for ${seconds} s from ${#seed_files[@]} seeds in $seeds"
status=0
"$fuzzer" "${flags[@]}" -max_total_time="$seconds" -print_final_stats=1 \
  "$work/corpus" "$seeds" 2>&1 | tee "$work/log" || status=$?
if ((status != 0)); then
  echo "run_fuzzer: $(basename "$fuzzer") failed (exit $status); the input is in $work/artifacts/." >&2
  echo "  rerun it with: $fuzzer $work/artifacts/<file>" >&2
  echo "  keep it as a regression: copy it into $regressions/" >&2
  exit 1
fi
# A run that executed nothing proves nothing.
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
if [[ -z "$runs" ]] || ((runs < ${#seed_files[@]})); then
  echo "run_fuzzer: only '${runs:-no}' inputs were run (${#seed_files[@]} seeds)" >&2
  exit 1
fi
echo "run_fuzzer: $runs inputs, no failure"
