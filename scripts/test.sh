#!/usr/bin/env bash
# Installs dependencies, builds Tandem (Release) and runs the test suite.
#   scripts/test.sh [extra cmake args...]      e.g. scripts/test.sh -DTANDEM_CUDA=OFF
# Test labels: unit (seconds), integration, slow; gpu tests skip themselves without a GPU.
# The `lint` label (clang-tidy over every source, minutes) is left to CI: ctest -L lint.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
jobs=${TANDEM_JOBS:-2}
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs" -LE lint
