#!/usr/bin/env bash
# The main job, end to end on CPU: installs dependencies, builds, creates a tiny random Ring-linear
# hybrid checkpoint, and scores a token sequence with it (per-token log-probs, fp32, exact).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j"${TANDEM_JOBS:-2}" --target tandem
bin=build/cli/tandem

echo "== Ring-mini-linear-2.0 parameter counts"
$bin init-model --config configs/models/ring-mini-linear-2.0.json --dry-run
out=runs/demo-tiny
rm -rf "$out"
echo "== a tiny random hybrid checkpoint in $out"
$bin init-model --config configs/models/tiny-hybrid.json --out "$out" --seed 7
echo "== log p(token[t+1] | tokens[0..t]) for 1,2,3,...,12"
$bin logprobs --model "$out" --tokens 1,2,3,4,5,6,7,8,9,10,11,12
