#!/usr/bin/env bash
# Run THERE (the GPU machine: Ubuntu 24.04, g++ 13, CMake 4, nvcc 13, no network) from the repo
# root, with .device/deps carried from the development machine (scripts/gpu/fetch_deps.sh). Builds
# the core with CUDA and without services/MPI, runs the `gpu` tests, then the `unit` tests, then
# the GEMM and attention benchmarks. Logs go to $OUT (the device tool's return folder) or build-gpu/logs.
#
#   bash scripts/gpu/build_and_test.sh [all|test|bench]      (default: all)
#   env: TANDEM_CUDA_ARCH (default 90a), TANDEM_JOBS (default: all cores),
#        TANDEM_BUILD_DIR (default build-gpu)
# Exit status: 0 when the build of the test targets and every gpu test passed.
set -uo pipefail
cd "$(dirname "$0")/../.."

what=${1:-all}
root=$PWD
deps=$root/.device/deps/usr
build=${TANDEM_BUILD_DIR:-$root/build-gpu}
logs=${OUT:-$build/logs}
mkdir -p "$logs"
if [ ! -d "$deps/lib/x86_64-linux-gnu/cmake/absl" ]; then
  echo "build_and_test: $deps is missing: run scripts/gpu/fetch_deps.sh on the development" \
    "machine and carry .device" >&2
  exit 2
fi
# The carried shared libraries (Abseil, spdlog, fmt, benchmark) load from here at link and run time.
export LD_LIBRARY_PATH=$deps/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
jobs=${TANDEM_JOBS:-$(nproc)}
status=0

{
  echo "== $(date -u +%FT%TZ) $(uname -srm)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
  nvcc --version | tail -2
  cmake --version | head -1
  g++ --version | head -1
} >"$logs/env.log" 2>&1

if command -v ninja >/dev/null; then
  generator=(-G Ninja) keep_going=(-k 0)
else
  generator=(-G "Unix Makefiles") keep_going=(-k)
fi
# -include cstdint: Debian's Abseil 20220623 predates GCC 13, whose headers stopped including
# <cstdint> transitively. CMAKE_POLICY_VERSION_MINIMUM lets CMake 4 read the older package configs.
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$deps" -DTANDEM_CUDA=ON -DTANDEM_SERVICES=OFF -DTANDEM_MPI=OFF \
  -DCMAKE_CUDA_ARCHITECTURES="${TANDEM_CUDA_ARCH:-90a}" -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
  -DCMAKE_CXX_FLAGS="-include cstdint" -DCMAKE_CUDA_FLAGS="-include cstdint" \
  >"$logs/build.log" 2>&1 || { tail -40 "$logs/build.log"; exit 3; }

# Keep going past targets that fail (other work in progress) so the GPU tests still get built;
# the GPU targets themselves are then built alone so their errors are the last thing in the log.
gpu_targets=(cuda_util_test gemm_cuda_test gemm_cublaslt_cuda_test rms_norm_cuda_test
  lm_head_logprob_cuda_test qk_norm_rope_cuda_test group_rms_norm_gate_cuda_test
  embedding_cuda_test moe_route_cuda_test adamw_cuda_test sample_cuda_test cross_entropy_cuda_test
  swiglu_cuda_test softmax_attention_cuda_test linear_attention_cuda_test gemm_cuda_bench
  attention_cuda_bench)
cmake --build "$build" -j"$jobs" -- "${keep_going[@]}" >>"$logs/build.log" 2>&1 ||
  echo "build_and_test: some targets failed to build (see build.log)"
if ! cmake --build "$build" -j"$jobs" --target "${gpu_targets[@]}" >>"$logs/build.log" 2>&1; then
  echo "build_and_test: GPU targets failed to build:"
  grep -E "error|Error" "$logs/build.log" | tail -30
  exit 4
fi

if [ "$what" = all ] || [ "$what" = test ]; then
  ctest --test-dir "$build" -L gpu --output-on-failure --timeout 300 2>&1 |
    tee "$logs/ctest_gpu.log" | grep -E "tests passed|Test +#|Failed|SKIPPED|\*\*\*" || true
  grep -q "100% tests passed" "$logs/ctest_gpu.log" || status=1
  ctest --test-dir "$build" -L unit -j"$jobs" --output-on-failure --timeout 300 \
    >"$logs/ctest_unit.log" 2>&1
  grep -E "tests passed|tests failed" "$logs/ctest_unit.log" | sed 's/^/unit: /'
  grep -E "^\s+[0-9]+ - " "$logs/ctest_unit.log" | sed 's/^/unit failed: /'
fi

if [ "$what" = all ] || [ "$what" = bench ]; then
  "$build/bench/gpu/gemm_cuda_bench" 2>&1 | tee "$logs/gemm_cuda_bench.log" || status=1
  "$build/bench/gpu/attention_cuda_bench" 2>&1 | tee "$logs/attention_cuda_bench.log" || status=1
fi

echo "build_and_test: logs in $logs; status $status"
exit $status
