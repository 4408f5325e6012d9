#!/usr/bin/env bash
# The main job, end to end on CPU with the embedded default: installs dependencies, builds
# `tandem`, then runs GRPO on the tiny Ring-linear hybrid model —
#   tandem train --config configs/runs/grpo-demo-tiny.yaml
# a short SFT warm start on 1–2 digit addition, then RL on 2-digit addition with two rollout
# worker processes (`tandem rollout serve`) on loopback gRPC and the trainer in this process.
# Progress is one line per step on stderr; the run's metrics, TensorBoard events and checkpoints
# go to runs/grpo-demo-tiny/. Extra arguments are run-config overrides (key.path=value).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"${TANDEM_JOBS:-2}" --target tandem
bin=build/cli/tandem

out=runs/grpo-demo-tiny
rm -rf "$out"
mkdir -p runs
echo "== GRPO on the tiny hybrid model: SFT warm start, then RL (held-out accuracy every 25 steps)"
start=$(date +%s)
$bin train --config configs/runs/grpo-demo-tiny.yaml trainer.output_dir="$out" "$@" |
  tee "$out.summary.json"
echo "== done in $(( $(date +%s) - start )) s; metrics: $out/metrics.jsonl," \
     "TensorBoard: tensorboard --logdir $out/tensorboard"
