#!/usr/bin/env python3
"""Plots a `tandem train` run's learning curve from its metrics.jsonl.

    scripts/plot_curve.py runs/grpo-demo-tiny/metrics.jsonl docs/rl_curve.png [--table]

Left axis: held-out greedy accuracy (every eval.every_steps) and the training reward (mean over
each step's samples, smoothed over 5 steps). --table also prints the evaluated steps as a
Markdown table (step, held-out accuracy, reward, mismatch). Needs matplotlib for the image.
"""
import json
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def table(rows):
    print("| step | held-out accuracy | train reward (mean) | mismatch max abs (tokens compared) |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        if "eval_accuracy" not in r:
            continue
        reward = f"{r['reward_mean']:.3f}" if r["step"] > 0 else "—"
        mismatch = (f"{r['mismatch_max_abs']:g} ({r['mismatch_tokens']})" if r["step"] > 0
                    else "—")
        print(f"| {r['step']} | {100 * r['eval_accuracy']:.1f}% | {reward} | {mismatch} |")


def plot(rows, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = [(r["step"], 100 * r["eval_accuracy"]) for r in rows if "eval_accuracy" in r]
    steps = [r["step"] for r in rows if r["step"] > 0]
    rewards = [100 * r["reward_mean"] for r in rows if r["step"] > 0]
    smooth = [sum(rewards[max(0, i - 4):i + 1]) / len(rewards[max(0, i - 4):i + 1])
              for i in range(len(rewards))]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, smooth, color="tab:gray", label="train reward × 100 (5-step mean)")
    ax.plot([s for s, _ in evals], [a for _, a in evals], "o-", color="tab:blue",
            label="held-out greedy accuracy (%)")
    ax.set_xlabel("GRPO step (0 = after the SFT warm start)")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("tandem train --config configs/runs/grpo-demo-tiny.yaml (CPU)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    rows = load(argv[1])
    if "--table" in argv:
        table(rows)
    if len(argv) > 2 and not argv[2].startswith("--"):
        plot(rows, argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
