#!/usr/bin/env bash
# Installs the dependencies, builds everything and runs the whole test suite
# through ctest. Exits non-zero when any test fails or none ran.
set -euo pipefail
cd "$(dirname "$0")/.."

bash launch/install_deps.sh
bash launch/build.sh
cd "${DISTILL_BUILD_DIR:-build}"
ctest --output-on-failure --no-tests=error -j 2 --timeout 600
