#!/usr/bin/env bash
# Configures and builds the project into build/ (binaries in build/bin/).
# usage: launch/build.sh [TARGET...]   (default: everything)
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR="${DISTILL_BUILD_DIR:-build}"
JOBS="${DISTILL_JOBS:-2}"

if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  # Release: debug information makes every LibTorch file ~30% slower to
  # compile and its objects ~50x larger; use the `dev` preset to debug.
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
if (($# == 0)); then
  cmake --build "$BUILD_DIR" -j "$JOBS"
else
  for target in "$@"; do cmake --build "$BUILD_DIR" -j "$JOBS" --target "$target"; done
fi
