#!/usr/bin/env bash
# Installs every system package the framework needs to build, test and run its
# quickstart on Debian 12. Idempotent: packages already present are skipped by apt.
set -euo pipefail

SUDO=""
if [[ "$(id -u)" != "0" ]]; then SUDO="sudo"; fi

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git clang-format
  libtorch-dev libgloo-dev
  # oneDNN's headers (LibTorch links its library): attention's batched
  # matmuls on oneDNN (common/matmul.h).
  libdnnl-dev
  # An optimized BLAS for LibTorch's linear layers: without one (apt's
  # --no-install-recommends) they run on the netlib reference BLAS, ~20x
  # slower. BLIS rather than OpenBLAS: see the check at the end.
  libblis4-openmp
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev
  libonnx-dev prometheus-cpp-dev nlohmann-json3-dev zlib1g-dev libssl-dev openssl
  # Checks LibTorch's zip archives (checkpoints, weights) before LibTorch
  # reads them: common/zip_check.h.
  libzip-dev
  # Reads a loss plugin's API version from the file before loading it:
  # losses/plugin_loader.cc.
  libelf-dev
  # The fuzz targets (tests/fuzz/): clang with libFuzzer and the sanitizers.
  clang libclang-rt-14-dev
  dataset-fashion-mnist
  # Language models: the King James Bible as the default corpus (its `bible`
  # command dumps it) and SentencePiece's spm_* tools as the tokenizer.
  bible-kjv bible-kjv-text sentencepiece
  python3 python3-torch python3-grpcio python3-grpc-tools python3-numpy
  python3-matplotlib
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# Node.js runs ONNX Runtime (npm's onnxruntime-node) in the QAT export test;
# any existing installation (Debian's or another) will do.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi

if ((${#missing[@]} == 0)); then
  echo "install_deps: all ${#PACKAGES[@]} packages already installed"
else
  echo "install_deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# onnxruntime-node at the version tests/onnx/package-lock.json pins. Its
# npm tarball carries the Linux x64 CPU runtime, so the install script
# (which only fetches GPU builds) is skipped.
ONNX_DIR="$(cd "$(dirname "$0")/.." && pwd)/tests/onnx"
if ! node -e "require('$ONNX_DIR/node_modules/onnxruntime-node')" >/dev/null 2>&1; then
  echo "install_deps: npm ci in tests/onnx (onnxruntime-node)"
  (cd "$ONNX_DIR" && npm ci --ignore-scripts --no-audit --no-fund)
fi

# OpenBLAS keeps 60 KB of static TLS per thread, more than fits in the
# fixed stacks civetweb (under prometheus-cpp) gives its threads, so with
# OpenBLAS as the system BLAS `teacher_server --metrics_port` cannot start
# ("null context when constructing CivetServer"). Say so; the choice of the
# system's BLAS is the machine owner's.
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
if [[ "$blas" == *openblas* ]]; then
  echo "install_deps: warning: the system BLAS is OpenBLAS ($blas); teacher_server's"
  echo "  Prometheus endpoint (--metrics_port) cannot start with it. To use BLIS:"
  echo "  update-alternatives --set libblas.so.3-x86_64-linux-gnu" \
    "/usr/lib/x86_64-linux-gnu/blis-openmp/libblas.so.3"
fi
