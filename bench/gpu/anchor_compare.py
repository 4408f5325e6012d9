#!/usr/bin/env python3
"""Times Tandem's CUDA attention benches and their public anchors in ONE run and prints the ratio.

Anchors (PyTorch on the same GPU, CUDA events, warm-up then the median of --reps runs):
  softmax_fwd / softmax_fwd_bwd: F.scaled_dot_product_attention, causal, bf16, B=1, H=16, Hkv=4,
    D=128; every backend of FLASH / CUDNN / EFFICIENT, GQA as enable_gqa=True, or k/v
    repeat_interleave'd inside the timed call where a backend refuses enable_gqa; fastest kept.
  linear_fwd / linear_fwd_bwd: fla chunk_simple_gla, q/k/v [1, T, 16, 128] bf16, decay
    -x_h (Ring-linear layer 0 of 20: x_h = 2^(-(h+1)/2) * (1 + 1e-5)) given as g_gamma [H] and as
    g [1, T, H] broadcast over T; output_final_state=True; faster of the two kept.
  linear_decode: fla fused_recurrent_simple_gla, one token, fp32 state [B, 16, 128, 128].
  softmax_decode: SDPA, one query per sequence against a bf16 KV cache (enable_gqa, or the 4 query
    heads of a group as 4 queries of one kv head), fastest backend kept.
Ours: each <bench> in --build-dir runs with --csv; lines `csv,<name>,<T>,<batch>,<ms>,<fig>,<unit>`.
Table: ratio = anchor ms / ours ms (> 1: ours faster). Targets: softmax >= 0.9, linear fwd >= 1.5,
linear fwd+bwd >= 1.2, decode: ours >= 0.8 * --peak-tbs TB/s. Figures use this file's formulas.

    python3 bench/gpu/anchor_compare.py [--build-dir DIR] [--out FILE.md] [--quick] [--self-test]
"""
import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

H, HKV, D = 16, 4, 128
NUM_LAYERS = 20
BENCHES = ["softmax_attention_cuda_bench", "softmax_attention_bwd_cuda_bench",
           "linear_attention_cuda_bench", "linear_attention_bwd_cuda_bench", "gemm_cuda_bench"]
OPS = ["softmax_fwd", "softmax_fwd_bwd", "softmax_decode", "linear_fwd", "linear_fwd_bwd",
       "linear_decode"]
RATIO_TARGETS = {"softmax_fwd": 0.9, "softmax_fwd_bwd": 0.9, "linear_fwd": 1.5,
                 "linear_fwd_bwd": 1.2}


@dataclass
class Row:  # one measurement; for linear_decode T is meaningless (state size is fixed)
    name: str
    t: int
    batch: int
    ms: float
    figure: float = float("nan")
    unit: str = ""
    kernel: str = ""
    notes: list = field(default_factory=list)


# ---------------------------------------------------------------- formulas and table (no torch)
def ring_linear_decay(num_heads=H, layer=0, num_layers=NUM_LAYERS):
    """x_h > 0, lambda = exp(-x_h): ALiBi slope times f_l = 1 - l/(L-1) + 1e-5 (MODEL.md 2.2)."""
    start = 2.0 ** (-(2.0 ** -(math.log2(num_heads) - 3)))
    f = 1.0 - layer / (num_layers - 1) + 1e-5 if num_layers > 1 else 1.0 + 1e-5
    return [start ** (h + 1) * f for h in range(num_heads)]


def figure_of(name, t, batch, ms):
    """(figure, unit) by one formula for ours and the anchor alike."""
    if ms <= 0 or not math.isfinite(ms):
        return float("nan"), ""
    causal_flop = 2.0 * t * t * H * D * batch  # 4 * T^2 / 2 * H * D
    if name == "softmax_fwd":
        return causal_flop / ms * 1e-9, "TFLOP/s"
    if name == "softmax_fwd_bwd":
        return 3.5 * causal_flop / ms * 1e-9, "TFLOP/s"
    if name == "softmax_decode":  # K and V, bf16
        return batch * t * HKV * D * 2 * 2 / ms * 1e-9, "TB/s"
    if name == "linear_decode":  # fp32 state read once
        return batch * H * D * D * 4 / ms * 1e-9, "TB/s"
    return batch * t / ms * 1e-3, "Mtok/s"


def parse_csv_lines(text):
    """Returns (rows, problems) from a bench's stdout; other lines are ignored."""
    rows, problems = [], []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("csv,"):
            continue
        parts = line.split(",")
        if len(parts) != 7:
            problems.append(f"expected 7 fields: {line!r}")
            continue
        try:
            rows.append(Row(parts[1], int(parts[2]), int(parts[3]), float(parts[4]),
                            float(parts[5]), parts[6]))
        except ValueError:
            problems.append(f"unparsable numbers: {line!r}")
    return rows, problems


def join_key(row):
    return (row.name, 0 if row.name == "linear_decode" else row.t, row.batch)


def judge(name, ours, anchor, ours_fig, peak_tbs):
    """(ratio, target text, verdict) for one table row."""
    ratio = anchor.ms / ours.ms if ours and anchor else float("nan")
    if name in RATIO_TARGETS:
        target = RATIO_TARGETS[name]
        verdict = ("met" if ratio >= target else "missed") if ours and anchor else (
            "no ours" if anchor else "no anchor")
        return ratio, f"ratio >= {target:g}", verdict
    if name.endswith("_decode"):
        target = 0.8 * peak_tbs
        verdict = ("met" if ours_fig >= target else "missed") if ours else "no ours"
        return ratio, f"ours >= {target:.2f} TB/s", verdict
    return ratio, "", "—"


def build_table(ours, anchors, peak_tbs):
    """Markdown lines: one row per (op, T, batch) seen in ours or the anchors."""
    ours_by = {join_key(r): r for r in ours}
    anchors_by = {join_key(r): r for r in anchors}
    keys = sorted(set(ours_by) | set(anchors_by),
                  key=lambda k: (OPS.index(k[0]) if k[0] in OPS else 99, k[0], k[2], k[1]))
    lines = ["| op | T | batch | ours ms | anchor ms | ratio | ours fig | anchor fig | target "
             "| result | anchor kernel |", "|" + " --- |" * 11]
    for key in keys:
        name, o, a = key[0], ours_by.get(key), anchors_by.get(key)
        row = o or a
        o_fig, unit = figure_of(name, row.t, row.batch, o.ms) if o else (float("nan"), "")
        a_fig, a_unit = figure_of(name, row.t, row.batch, a.ms) if a else (float("nan"), "")
        ratio, target, verdict = judge(name, o, a, o_fig, peak_tbs)
        lines.append("| " + " | ".join([
            name, "—" if name == "linear_decode" else str(row.t), str(row.batch),
            fmt(o.ms if o else None, 4), fmt(a.ms if a else None, 4), fmt(ratio, 2),
            fmt(o_fig, 2, unit), fmt(a_fig, 2, a_unit), target, verdict,
            a.kernel if a else ""]) + " |")
    return lines


def fmt(value, digits, unit=""):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}" + (f" {unit}" if unit else "")


# ---------------------------------------------------------------- our bench binaries
def run_ours(build_dir, benches, timeout_s, log_dir):
    """Runs every bench with --csv; returns (rows, status lines). Never raises."""
    rows, status = [], []
    for bench in benches:
        path = os.path.join(build_dir, bench)
        if not os.access(path, os.X_OK):
            status.append(f"{bench}: missing ({path})")
            continue
        print(f"[ours] {bench} --csv", flush=True)
        start = time.time()
        try:
            proc = subprocess.run([path, "--csv"], capture_output=True, text=True,
                                  timeout=timeout_s)
            out, rc = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as e:  # its partial output is bytes even with text=True
            partial = e.stdout or b""
            out = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
            rc = f"timeout after {timeout_s} s"
        except OSError as e:
            out, rc = "", f"could not start: {e}"
        if log_dir:
            with open(os.path.join(log_dir, bench + ".log"), "w") as f:
                f.write(out)
        got, problems = parse_csv_lines(out)
        rows += got
        rc_text = f"exit {rc}" if isinstance(rc, int) else rc
        text = f"{bench}: {rc_text}, {len(got)} csv rows, {time.time() - start:.0f} s"
        if rc != 0:
            text += " (FAILED; last output: " + " / ".join(out.strip().splitlines()[-3:]) + ")"
        elif not got:
            text += " (no csv lines: does it support --csv?)"
        status.append(text + "".join(f"; {p}" for p in problems[:3]))
    return rows, status


# ---------------------------------------------------------------- anchors (torch, on the GPU)
class Timer:
    def __init__(self, torch, warmup, reps, flush_l2):
        self.torch, self.warmup, self.reps = torch, warmup, reps
        self.flush = torch.empty(512 << 20, dtype=torch.uint8, device="cuda") if flush_l2 else None

    def median_ms(self, fn):
        torch = self.torch
        for _ in range(self.warmup):
            fn()
        torch.cuda.synchronize()
        events = []
        for _ in range(self.reps):
            if self.flush is not None:
                self.flush.zero_()  # evicts L2 between runs (outside the timed events)
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            events.append((start, stop))
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) for s, e in events)


def fastest(timer, name, t, batch, candidates, notes):
    """Times each (label, fn) that runs; returns the fastest Row or None. Failures go to notes."""
    best = None
    for label, fn in candidates:
        try:
            ms = timer.median_ms(fn)
        except Exception as e:  # a backend refusing the shape is expected
            first = (str(e).strip().splitlines() or [""])[0][:160]
            notes.append(f"{name} T={t} B={batch} {label}: {type(e).__name__}: {first}")
            continue
        notes.append(f"{name} T={t} B={batch} {label}: {ms:.4f} ms")
        if best is None or ms < best.ms:
            best = Row(name, t, batch, ms, kernel=label)
    timer.torch.cuda.empty_cache()
    return best


def sdpa_candidates(torch, q, k, v, causal, backward, group_as_queries=False):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    sdpa = torch.nn.functional.scaled_dot_product_attention
    grad_out = torch.randn_like(q) if backward else None
    rep = q.shape[1] // k.shape[1]

    def make(backend, mode):
        def fn():
            with sdpa_kernel(backend):
                if mode == "enable_gqa":
                    o = sdpa(q, k, v, is_causal=causal, enable_gqa=True)
                elif mode == "repeat_kv":  # the copy is part of the timed call, as in a model
                    o = sdpa(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1),
                             is_causal=causal)
                else:  # decode: [B, Hkv, group, D] queries, one kv head each (same math)
                    b, _, _, d = q.shape
                    o = sdpa(q.view(b, k.shape[1], rep, d), k, v, is_causal=False)
                if backward:
                    torch.autograd.grad(o, (q, k, v), grad_out)
        return fn

    modes = ["enable_gqa", "grouped_q" if group_as_queries else "repeat_kv"]
    return [(f"sdpa {b.name.lower()} {m}", make(b, m)) for b in
            (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION,
             SDPBackend.EFFICIENT_ATTENTION) for m in modes]


def softmax_anchors(torch, timer, ts, decode_ctx, decode_batches, notes):
    rows = []
    for t in ts:
        for name, backward in (("softmax_fwd", False), ("softmax_fwd_bwd", True)):
            q = torch.randn(1, H, t, D, device="cuda", dtype=torch.bfloat16, requires_grad=backward)
            k, v = (torch.randn(1, HKV, t, D, device="cuda", dtype=torch.bfloat16,
                                requires_grad=backward) for _ in range(2))
            cands = sdpa_candidates(torch, q, k, v, True, backward)
            best = fastest(timer, name, t, 1, cands, notes)
            rows += [best] if best else []
            del q, k, v
    with torch.inference_mode():
        for ctx in decode_ctx:
            for b in decode_batches:
                q = torch.randn(b, H, 1, D, device="cuda", dtype=torch.bfloat16)
                k, v = (torch.randn(b, HKV, ctx, D, device="cuda", dtype=torch.bfloat16)
                        for _ in range(2))
                cands = sdpa_candidates(torch, q, k, v, False, False, group_as_queries=True)
                cands += flash_attn_decode_candidate(q, k, v)
                best = fastest(timer, "softmax_decode", ctx, b, cands, notes)
                rows += [best] if best else []
                del q, k, v
    return rows


def flash_attn_decode_candidate(q, k, v):
    try:
        from flash_attn import flash_attn_with_kvcache
    except ImportError:
        return []
    qb, kb, vb = q.transpose(1, 2), k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()
    return [("flash_attn_with_kvcache", lambda: flash_attn_with_kvcache(qb, kb, vb, causal=True))]


def linear_anchors(torch, timer, ts, decode_batches, notes):
    from fla.ops.simple_gla import chunk_simple_gla, fused_recurrent_simple_gla
    gamma = -torch.tensor(ring_linear_decay(), device="cuda", dtype=torch.float32)  # [H]
    rows = []
    for t in ts:
        for name, backward in (("linear_fwd", False), ("linear_fwd_bwd", True)):
            q, k, v = (torch.randn(1, t, H, D, device="cuda", dtype=torch.bfloat16,
                                   requires_grad=backward) for _ in range(3))
            g = gamma.view(1, 1, H).expand(1, t, H).contiguous()  # [1, T, H]
            grad_out = torch.randn_like(v) if backward else None

            def make(decay_kw):
                def fn():
                    o, _ = chunk_simple_gla(q, k, v, scale=D ** -0.5, output_final_state=True,
                                            **decay_kw)
                    if backward:
                        torch.autograd.grad(o, (q, k, v), grad_out)
                return fn

            cands = [("fla chunk_simple_gla g_gamma", make({"g_gamma": gamma})),
                     ("fla chunk_simple_gla g", make({"g": g}))]
            best = fastest(timer, name, t, 1, cands, notes)
            rows += [best] if best else []
            del q, k, v, g
    with torch.inference_mode():
        for b in decode_batches:
            q, k, v = (torch.randn(b, 1, H, D, device="cuda", dtype=torch.bfloat16)
                       for _ in range(3))
            state = torch.randn(b, H, D, D, device="cuda", dtype=torch.float32)  # [B, H, Dk, Dv]
            fn = lambda: fused_recurrent_simple_gla(  # noqa: E731
                q, k, v, g_gamma=gamma, scale=D ** -0.5, initial_state=state,
                output_final_state=True)
            best = fastest(timer, "linear_decode", 1, b,
                           [("fla fused_recurrent_simple_gla (writes a new state)", fn)], notes)
            rows += [best] if best else []
            del q, k, v, state
    return rows


def run_anchors(args, notes, header):
    """Returns anchor rows; explains in notes instead of raising when torch/CUDA/fla is absent."""
    try:
        import torch
    except ImportError as e:
        notes.append(f"anchors skipped: cannot import torch ({e})")
        return []
    header.append(f"torch {torch.__version__}")
    if not torch.cuda.is_available():
        notes.append("anchors skipped: torch.cuda is not available (no GPU or CPU-only torch)")
        return []
    header.append(f"GPU {torch.cuda.get_device_name(0)}")
    timer = Timer(torch, args.warmup, args.reps, args.flush_l2)
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    copy_ms = timer.median_ms(lambda: dst.copy_(src))
    header.append(f"device copy 1 GiB: {2 * src.numel() / copy_ms * 1e-9:.2f} TB/s (r+w)")
    del src, dst
    rows = []
    quick = args.quick
    print("[anchor] softmax (SDPA)", flush=True)
    softmax_t = args.softmax_t or ([4096] if quick else [4096, 8192, 16384, 32768])
    linear_t = args.linear_t or ([4096] if quick else [4096, 8192, 16384, 32768, 65536])
    if args.anchors != "linear":
        rows += softmax_anchors(torch, timer, softmax_t,
                                [4096] if quick else [4096, 32768], [64] if quick else [64, 256],
                                notes)
    if args.anchors == "softmax":
        return rows
    try:
        import triton
        import fla
        header.append(f"triton {triton.__version__}, fla {getattr(fla, '__version__', '?')}")
    except ImportError as e:
        notes.append(f"linear anchors skipped: {e} (install the fla-core wheel: "
                     "scripts/gpu/anchor.sh)")
        return rows
    print("[anchor] linear (fla)", flush=True)
    rows += linear_anchors(torch, timer, linear_t,
                           [64] if quick else [64, 256], notes)
    return rows


def figure_mismatches(ours):
    """Lines for rows whose bench figure differs from this file's formula by more than 5%."""
    lines = []
    for r in ours:
        fig, unit = figure_of(r.name, r.t, r.batch, r.ms)
        if r.name in OPS and unit == r.unit and not abs(r.figure - fig) <= 0.05 * abs(fig):
            lines.append(f"- {r.name} T={r.t} B={r.batch}: the bench says {r.figure:g} {r.unit}, "
                         f"the formula here {fig:.3g} {unit} (the table uses the formula)")
    return (["Figure differences (check what the bench counts):"] + lines + [""]) if lines else []


# ---------------------------------------------------------------- self-test and main
def self_test():
    text = ("device: x\ncsv,softmax_fwd,4096,1,1.0,100,TFLOP/s\ncsv,bad,1\n"
            "csv,linear_decode,0,64,0.05,1.3,TB/s\ncsv,linear_fwd,x,1,1,1,u\n")
    rows, problems = parse_csv_lines(text)
    assert [(r.name, r.t, r.batch, r.ms) for r in rows] == [
        ("softmax_fwd", 4096, 1, 1.0), ("linear_decode", 0, 64, 0.05)], rows
    assert len(problems) == 2, problems
    x = ring_linear_decay()
    assert abs(x[0] - 2 ** -0.5 * 1.00001) < 1e-12 and abs(x[15] - 2 ** -8 * 1.00001) < 1e-12
    assert abs(math.exp(-x[0]) - 0.493) < 1e-3  # MODEL.md's worked value
    fig, unit = figure_of("softmax_fwd", 8192, 1, 1.0)
    assert unit == "TFLOP/s" and abs(fig - 2 * 8192 ** 2 * 16 * 128 * 1e-9) < 1e-9
    anchors = [Row("softmax_fwd", 4096, 1, 0.9, kernel="k"), Row("linear_decode", 1, 64, 0.2),
               Row("linear_fwd", 4096, 1, 0.3)]
    table = "\n".join(build_table(rows, anchors, 4.25))
    assert "| softmax_fwd | 4096 | 1 | 1.0000 | 0.9000 | 0.90 |" in table and "| met |" in table
    # linear_decode joins across T: 64*16*128*128*4 B / 0.05 ms = 1.34 TB/s < 3.40: missed.
    assert "| linear_decode | — | 64 | 0.0500 | 0.2000 | 4.00 | 1.34 TB/s" in table, table
    assert "missed" in table and "no ours" in table
    check_fla_source()
    print("\n".join(table.splitlines()))
    print("self-test: ok")


def check_fla_source():
    """If the fla sources are findable (no import: needs no torch), checks the keywords used."""
    import ast
    import importlib.util
    spec = importlib.util.find_spec("fla")
    if spec is None or not spec.submodule_search_locations:
        print("self-test: fla not on the path; API check skipped (PYTHONPATH=build-gpu/pyenv)")
        return
    base = os.path.join(list(spec.submodule_search_locations)[0], "ops", "simple_gla")
    used = {"chunk.py": ("chunk_simple_gla", {"g", "g_gamma", "scale", "output_final_state"}),
            "fused_recurrent.py": ("fused_recurrent_simple_gla",
                                   {"g_gamma", "scale", "initial_state", "output_final_state"})}
    for file, (func, kws) in used.items():
        tree = ast.parse(open(os.path.join(base, file)).read())
        defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == func]
        assert defs, f"{func} not in {file}"
        params = [a.arg for a in defs[0].args.args]
        assert params[:3] == ["q", "k", "v"] and kws <= set(params), (func, params)
    print(f"self-test: fla API matches {base}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--build-dir", default="build-gpu/bench/gpu", help="our bench binaries")
    p.add_argument("--bench", action="append", help=f"bench names (default: {BENCHES})")
    p.add_argument("--out", help="also write the markdown table here")
    p.add_argument("--log-dir", help="save each bench's full output here")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--reps", type=int, default=20, help="timed runs, median taken (>= 10)")
    p.add_argument("--peak-tbs", type=float, default=4.25, help="copy bandwidth for decode targets")
    p.add_argument("--flush-l2", action="store_true", help="evict L2 before each anchor run")
    p.add_argument("--bench-timeout", type=int, default=300)
    p.add_argument("--quick", action="store_true", help="one shape per anchor")
    p.add_argument("--softmax-t", type=int, nargs="+", help="softmax fwd/fwd+bwd lengths")
    p.add_argument("--linear-t", type=int, nargs="+", help="linear fwd/fwd+bwd lengths")
    p.add_argument("--skip-ours", action="store_true")
    p.add_argument("--skip-anchors", action="store_true")
    p.add_argument("--anchors", choices=["all", "softmax", "linear"], default="all",
                   help="which anchors to run (SDPA for softmax, fla for linear)")
    p.add_argument("--self-test", action="store_true", help="check parsing/table logic, exit")
    args = p.parse_args()
    if args.self_test:
        return self_test()
    if args.reps < 10:
        p.error("--reps must be >= 10")
    if args.log_dir:
        os.makedirs(args.log_dir, exist_ok=True)
    header = [time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), f"reps {args.reps} (median), "
              f"warm-up {args.warmup}, L2 flush {'on' if args.flush_l2 else 'off'}"]
    notes, status, ours, anchors = [], [], [], []
    if not args.skip_ours:
        ours, status = run_ours(args.build_dir, args.bench or BENCHES, args.bench_timeout,
                                args.log_dir)
    if not args.skip_anchors:
        anchors = run_anchors(args, notes, header)
    table = build_table([r for r in ours if r.name in OPS], anchors, args.peak_tbs)
    others = [r for r in ours if r.name not in OPS]
    doc = ["## Anchor comparison", "", "; ".join(header), ""] + table + [""]
    doc += ["Ours: " + s for s in status] + [""] if status else []
    if others:
        doc += ["Other rows from our benches (no anchor): " + ", ".join(
            f"{r.name} T={r.t} B={r.batch} {r.ms:.4f} ms {r.figure:g} {r.unit}"
            for r in others), ""]
    doc += figure_mismatches(ours)
    doc += ["Anchor runs (all candidates; the fastest is in the table):"] + [
        "- " + n for n in notes]
    text = "\n".join(doc)
    print(text, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0 if (ours or anchors) else 1


if __name__ == "__main__":
    sys.exit(main())
