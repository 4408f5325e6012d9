#!/usr/bin/env bash
# Run THERE (the GPU machine) from the repo root, with .device carried (scripts/gpu/fetch_deps.sh
# puts the fla-core wheel in .device/wheels). Installs the wheels into build-gpu/pyenv (no network,
# no dependencies: torch, triton and einops are already there), builds our attention benches if
# build-gpu is configured, and runs bench/gpu/anchor_compare.py: ours and PyTorch SDPA / fla in one
# run. Writes anchor_compare.md, anchor_compare.log and anchor_bench_logs.tgz to $OUT when set.
#
#   bash scripts/gpu/anchor.sh [anchor_compare.py options, e.g. --quick, --skip-ours]
#   env: PYTHON (default python3), TANDEM_BUILD_DIR (default build-gpu)
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2

root=$PWD
build=${TANDEM_BUILD_DIR:-$root/build-gpu}
pyenv=$build/pyenv
python=${PYTHON:-python3}
out=${OUT:-$build/logs/anchor}
logs=$build/logs/anchor_bench
mkdir -p "$out" "$logs"
rm -f "$logs"/*.log

export PIP_ROOT_USER_ACTION=ignore
# Pure-Python wheels only. pip installs them with --target; where pip is missing, unpacking the
# wheel does the same for a pure-Python package (its files go under purelib as they are).
shopt -s nullglob
wheels=("$root"/.device/wheels/*.whl)
if [ ${#wheels[@]} -eq 0 ]; then
  echo "anchor: no wheels in .device/wheels (run scripts/gpu/fetch_deps.sh here and carry" \
    ".device); the fla anchors will be skipped" >&2
else
  rm -rf "$pyenv"
  if ! "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$pyenv" "${wheels[@]}"; then
    echo "anchor: pip install failed; unpacking the wheels into $pyenv instead" >&2
    mkdir -p "$pyenv"
    for whl in "${wheels[@]}"; do "$python" -m zipfile -e "$whl" "$pyenv"; done
  fi
fi
export PYTHONPATH=$pyenv${PYTHONPATH:+:$PYTHONPATH}
# Triton's compiled kernels survive between calls on a warm machine.
export TRITON_CACHE_DIR=$build/triton-cache
# Our benches load the carried Abseil/fmt/spdlog shared libraries.
export LD_LIBRARY_PATH=$root/.device/deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PYTHONUNBUFFERED=1

# Build only the benches the comparison runs; one that does not exist or fails is reported by
# anchor_compare.py as missing.
if [ -f "$build/CMakeCache.txt" ]; then
  for target in softmax_attention_cuda_bench softmax_attention_bwd_cuda_bench \
      linear_attention_cuda_bench linear_attention_bwd_cuda_bench gemm_cuda_bench; do
    cmake --build "$build" --target "$target" >>"$logs/build.log" 2>&1 ||
      echo "anchor: $target did not build (see build.log in anchor_bench_logs.tgz)"
  done
else
  echo "anchor: $build is not configured; run scripts/gpu/build_and_test.sh first" \
    "(our benches will show as missing)" >&2
fi

"$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
# Parser/table checks and fla's signatures read from the installed source.
"$python" bench/gpu/anchor_compare.py --self-test | grep "^self-test"
"$python" bench/gpu/anchor_compare.py --build-dir "$build/bench/gpu" --out "$out/anchor_compare.md" \
  --log-dir "$logs" "$@" 2>&1 | tee "$out/anchor_compare.log"
status=${PIPESTATUS[0]}
tar czf "$out/anchor_bench_logs.tgz" -C "$logs" . 2>/dev/null || true
echo "anchor: table in $out/anchor_compare.md; status $status"
exit "$status"
