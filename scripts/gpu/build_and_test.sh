#!/usr/bin/env bash
# Run THERE (the GPU machine: Ubuntu 24.04, g++ 13, CMake 4, nvcc 13, no network) from the repo
# root, with .device/deps carried from the development machine (scripts/gpu/fetch_deps.sh). Builds
# the core with CUDA and without services/MPI, runs the `gpu` tests, then the `unit` tests, then
# the GEMM and attention benchmarks. Logs go to build-gpu/logs and, as gpu_logs.tgz, to $OUT
# (the device tool's return folder) when it is set.
#
#   bash scripts/gpu/build_and_test.sh [all|test|bench|check]      (default: all)
#   bench runs every build-gpu/bench/gpu/*_cuda_bench; scripts/gpu/anchor.sh compares with PyTorch/fla.
#   check: the gpu tests, then only the softmax attention and whole-model (4K context, decode with
#   and without sampling) benchmarks: a short run to validate kernel changes.
#   build: configure and build only.
#   env: TANDEM_CUDA_ARCH (default 90a), TANDEM_JOBS (default: all cores),
#        TANDEM_BUILD_DIR (default build-gpu), TANDEM_TARGETS (space-separated targets to build
#        instead of all of them)
# Exit status: 0 when the build of the test targets and every gpu test passed.
set -uo pipefail
cd "$(dirname "$0")/../.."

what=${1:-all}
root=$PWD
deps=$root/.device/deps/usr
build=${TANDEM_BUILD_DIR:-$root/build-gpu}
logs=$build/logs
rm -rf "$logs"
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
# MPI (the GPU machine's Open MPI, when its compiler wrapper is there): the trainer's data-parallel
# ranks, and with NCCL the 2-GPU tests. Without it the core still builds, one GPU per process.
mpi=OFF
if command -v mpicxx >/dev/null; then mpi=ON; fi
configure() {
  cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$deps" -DTANDEM_CUDA=ON -DTANDEM_SERVICES=OFF -DTANDEM_MPI="$1" \
    -DCMAKE_CUDA_ARCHITECTURES="${TANDEM_CUDA_ARCH:-90a}" -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
    -DCMAKE_CXX_FLAGS="-include cstdint" -DCMAKE_CUDA_FLAGS="-include cstdint" \
    >>"$logs/build.log" 2>&1
}
if ! configure "$mpi"; then
  if [ "$mpi" = OFF ] || ! { echo "build_and_test: configure with MPI failed; without it" &&
    configure OFF; }; then
    tail -40 "$logs/build.log"
    exit 3
  fi
fi

# Keep going past targets that fail so every test that does build still runs; a target that failed
# shows up below as a "Not Run" test, and its compiler errors are printed here.
targets=()
for t in ${TANDEM_TARGETS:-}; do targets+=(--target "$t"); done
if ! cmake --build "$build" "${targets[@]}" -j"$jobs" -- "${keep_going[@]}" >>"$logs/build.log" 2>&1; then
  echo "build_and_test: some targets failed to build:"
  grep -E "error" "$logs/build.log" | grep -v "^ninja: build stopped" | head -30
  status=1
fi

if [ "$what" = all ] || [ "$what" = test ] || [ "$what" = check ]; then
  ctest --test-dir "$build" -L gpu --output-on-failure --timeout 300 2>&1 |
    tee "$logs/ctest_gpu.log" | grep -E "tests passed|Test +#|Failed|SKIPPED|\*\*\*" || true
  grep -q "100% tests passed" "$logs/ctest_gpu.log" || status=1
fi
if [ "$what" = check ]; then
  "$build/bench/gpu/softmax_attention_cuda_bench" --csv 2>&1 |
    tee "$logs/softmax_attention_cuda_bench.log" || status=1
  "$build/bench/gpu/model_throughput_cuda_bench" --csv --contexts 4096 --variants hybrid 2>&1 |
    tee "$logs/model_throughput_cuda_bench.log" || status=1
fi
if [ "$what" = all ] || [ "$what" = test ]; then
  ctest --test-dir "$build" -L unit -j"$jobs" --output-on-failure --timeout 300 \
    >"$logs/ctest_unit.log" 2>&1
  grep -E "tests passed|tests failed" "$logs/ctest_unit.log" | sed 's/^/unit: /'
  grep -E "^\s+[0-9]+ - " "$logs/ctest_unit.log" | sed 's/^/unit failed: /'
fi

if [ "$what" = all ] || [ "$what" = bench ]; then
  for bench in "$build"/bench/gpu/*_cuda_bench; do
    [ -x "$bench" ] || continue
    name=$(basename "$bench")
    "$bench" 2>&1 | tee "$logs/$name.log" || status=1
  done
fi

# The device tool returns at most 8 files from $OUT: the logs travel as one archive.
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/gpu_logs.tgz" -C "$logs" . && echo "build_and_test: logs in \$OUT/gpu_logs.tgz"
fi
echo "build_and_test: logs in $logs; status $status"
exit $status
