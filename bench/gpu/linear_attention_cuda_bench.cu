// GPU linear attention benchmark: the chunked forward (cuda::LinearAttentionFwd, tensor-core path)
// on one sequence of T = 4K..64K tokens, H=16, D=128, bf16 q/k/v/o, the final fp32 state written
// (what fla's chunk_simple_gla with output_final_state does), and one decode step
// (cuda::LinearAttentionDecode) at batch 64 and 256 with its fp32 state read once per step, the
// open chunk's rows kept in fp32 and in bf16 (--csv reports the bf16 rows).
// CUDA-event timing, warm-up first, median of the runs. The forward runs the fused kernel where
// the build and the GPU have it (sm_90a); the two-launch forward (state scan, then output kernel)
// is timed beside it through the library's hook that turns the fused kernel off, and split into
// its launches through the phase-event hook.
// Anchors (H200, fla 0.6.0): chunk_simple_gla with g_gamma 0.90 ms fwd at 64K; fused_recurrent
// decode 0.236 / 0.295 ms per step at B = 64 / 256.
//   linear_attention_cuda_bench [--quick] [--csv]
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "bench/gpu/bench_util.cuh"
#include "kernels/core/context.h"
#include "kernels/core/contract.h"
#include "kernels/core/cuda_util.h"
#include "kernels/linear_attention/linear_attention_cuda.h"
#include "kernels/linear_attention/linear_fwd_timing.cuh"

namespace {

using tandem::Context;
using tandem::Device;
using tandem::DType;
using tandem::Tensor;
using tandem::bench::HostI32;
using tandem::bench::MedianMs;
using tandem::bench::RandomBf16;
namespace bench = tandem::bench;
namespace cuda = tandem::kernels::cuda;

// Median milliseconds of the scan and of the output kernel of fn (one tensor-core forward).
template <typename Fn>
std::pair<double, double> PhaseMs(Fn&& fn, int runs) {
  namespace linear = tandem::kernels::cuda::linear;
  linear::FwdPhaseEvents ev;
  cudaEventCreate(&ev.start);
  cudaEventCreate(&ev.scanned);
  cudaEventCreate(&ev.done);
  linear::SetForwardPhaseEvents(&ev);
  std::vector<float> scan(runs), out(runs);
  for (int r = 0; r < runs; ++r) {
    fn();
    cudaEventSynchronize(ev.done);
    cudaEventElapsedTime(&scan[r], ev.start, ev.scanned);
    cudaEventElapsedTime(&out[r], ev.scanned, ev.done);
  }
  linear::SetForwardPhaseEvents(nullptr);
  cudaEventDestroy(ev.start);
  cudaEventDestroy(ev.scanned);
  cudaEventDestroy(ev.done);
  std::sort(scan.begin(), scan.end());
  std::sort(out.begin(), out.end());
  return {scan[runs / 2], out[runs / 2]};
}

constexpr int64_t kH = 16, kD = 128, kC = tandem::kLinearAttentionChunk;

// Ring-linear layer 0 decays, as the anchor script uses: x_h = 2^(-(h+1)/2) · (1 + 1e-5).
Tensor RingDecay() {
  std::vector<float> x(kH);
  for (int64_t h = 0; h < kH; ++h) x[h] = std::exp2(-0.5f * (h + 1)) * (1.0f + 1e-5f);
  return Tensor::FromVector(x, {kH});
}

void Forward(const Context& ctx, const bench::Timing& timing, bool csv) {
  const tandem::kernels::LinearAttentionParams p{kH, kD, 1.0f / std::sqrt(128.0f)};
  const Tensor decay = RingDecay();
  namespace linear = tandem::kernels::cuda::linear;
  std::printf(
      "linear attention chunked forward, one sequence, H=%ld D=%ld, bf16 q/k/v\n"
      "fwd: %s; two-launch: state scan + output kernel; +states also writes every fp32\n"
      "chunk-start state (two-launch)\n"
      "%8s | %10s %8s | %12s %9s %9s | %11s | %10s\n",
      (long)kH, (long)kD,
      linear::ForwardIsFused(kD) ? "the fused kernel (states on chip)" : "two-launch (no fused)",
      "T", "fwd ms", "Mtok/s", "2-launch ms", "scan ms", "out ms", "+states ms", "f32 o ms");
  Tensor none;
  for (int64_t t : {4096, 8192, 16384, 32768, 65536}) {
    const int64_t nc = (t + kC - 1) / kC;
    Tensor q = RandomBf16({t, kH, kD}, 7), k = RandomBf16({t, kH, kD}, 8);
    Tensor v = RandomBf16({t, kH, kD}, 9);
    Tensor o = Tensor::Empty({t, kH, kD}, DType::kBF16, Device::kCUDA);
    Tensor of = Tensor::Empty({t, kH, kD}, DType::kF32, Device::kCUDA);
    Tensor final_state = Tensor::Empty({1, kH, kD, kD}, DType::kF32, Device::kCUDA);
    Tensor states = Tensor::Empty({nc, kH, kD, kD}, DType::kF32, Device::kCUDA);
    const Tensor cu = HostI32({0, static_cast<int32_t>(t)});
    auto fwd = [&] {
      CHECK_OK(cuda::LinearAttentionFwd(ctx, p, q, k, v, decay, cu, none, o, none, final_state));
    };
    // The training forward also writes every chunk-start state (for the backward).
    auto fwd_states = [&] {
      CHECK_OK(cuda::LinearAttentionFwd(ctx, p, q, k, v, decay, cu, none, o, states, final_state));
    };
    const double ms = MedianMs(fwd, timing);
    linear::SetForwardFusedEnabled(false);
    const double ms_two = MedianMs(fwd, timing);
    const std::pair<double, double> phases = PhaseMs(fwd, timing.runs);
    linear::SetForwardFusedEnabled(true);
    const double ms_states = MedianMs(fwd_states, timing);
    const double ms_f32 = MedianMs(
        [&] {
          CHECK_OK(
              cuda::LinearAttentionFwd(ctx, p, q, k, v, decay, cu, none, of, none, final_state));
        },
        timing);
    std::printf("%8ld | %10.4f %8.1f | %12.4f %9.4f %9.4f | %11.4f | %10.4f\n", (long)t, ms,
                t / ms * 1e-3, ms_two, phases.first, phases.second, ms_states, ms_f32);
    if (csv) std::printf("csv,linear_fwd,%ld,1,%.4f,%.2f,Mtok/s\n", (long)t, ms, t / ms * 1e-3);
  }
  std::printf("target at T=65536: fwd <= %.3f ms (fla chunk_simple_gla 0.90 ms / 1.5)\n",
              0.90 / 1.5);
}

// Median milliseconds per step of `steps` decode steps launched by fn(ctx) one call at a time on
// the default stream, and of the same steps captured once into a CUDA graph and replayed (no host
// work between launches: what a step costs the GPU).
template <typename Fn>
std::pair<double, double> StepMs(Fn&& fn, int steps, const bench::Timing& timing) {
  const Context eager = Context::Cuda(0, nullptr);
  const double one_by_one = MedianMs([&] { fn(eager); }, timing) / steps;
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));  // blocking: ordered with the default stream's events
  const Context captured = Context::Cuda(0, stream);
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
  fn(captured);
  CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  const double replayed =
      MedianMs([&] { CHECK_CUDA(cudaGraphLaunch(exec, stream)); }, timing) / steps;
  CHECK_CUDA(cudaGraphExecDestroy(exec));
  CHECK_CUDA(cudaGraphDestroy(graph));
  CHECK_CUDA(cudaStreamDestroy(stream));
  return {one_by_one, replayed};
}

// One decode step per call; a run of C steps (one chunk: C − 1 plain steps and one that advances
// the state) is timed and divided by C, so the figure is the mean step; the bandwidth columns
// divide the bytes by the step launched call by call, and the last by the graph replay's step.
// The open chunk's rows are kept in fp32 and in bf16 (the same values, half the bytes).
void Decode(const bench::Timing& timing, bool csv) {
  const tandem::kernels::LinearAttentionParams p{kH, kD, 1.0f / std::sqrt(128.0f)};
  const Tensor decay = RingDecay();
  std::printf(
      "\nlinear attention decode, H=%ld D=%ld, bf16 q/k/v/o, fp32 state\n%6s %5s | %10s %9s %13s "
      "| %10s %13s\n",
      (long)kH, (long)kD, "B", "rows", "ms/step", "TB/s", "all bytes TB/s", "graph ms",
      "all bytes TB/s");
  for (const DType rows : {DType::kF32, DType::kBF16}) {
    const double row_bytes = rows == DType::kF32 ? 4.0 : 2.0;
    const char* rows_name = rows == DType::kF32 ? "f32" : "bf16";
    for (int64_t b : {64, 256}) {
      Tensor state = Tensor::Zeros({b, kH, kD, kD}, DType::kF32, Device::kCUDA);
      Tensor ok = Tensor::Zeros({b, kC, kH, kD}, rows, Device::kCUDA);
      Tensor ov = Tensor::Zeros({b, kC, kH, kD}, rows, Device::kCUDA);
      Tensor open_len = Tensor::Zeros({b}, DType::kI32, Device::kCUDA);
      Tensor q = RandomBf16({b, kH, kD}, 10), k = RandomBf16({b, kH, kD}, 11);
      Tensor v = RandomBf16({b, kH, kD}, 12);
      Tensor o = Tensor::Empty({b, kH, kD}, DType::kBF16, Device::kCUDA);
      const auto [ms, graph_ms] = StepMs(
          [&](const Context& ctx) {
            for (int64_t s = 0; s < kC; ++s) {
              CHECK_OK(
                  cuda::LinearAttentionDecode(ctx, p, q, k, v, decay, state, ok, ov, open_len, o));
            }
          },
          kC, timing);
      const double tbs = 4.0 * b * kH * kD * kD / ms * 1e-9;  // the state, read once per step
      // Also what a step moves on average: the state, the open chunk's k, v rows before the new
      // one ((C − 1) / 2 of each), and the state written back once per chunk.
      const double all_bytes =
          b * kH * (4.0 * kD * kD + row_bytes * kD * (kC - 1) + 4.0 * kD * kD / kC);
      std::printf("%6ld %5s | %10.4f %9.2f %13.2f | %10.4f %13.2f\n", (long)b, rows_name, ms, tbs,
                  all_bytes / ms * 1e-9, graph_ms, all_bytes / graph_ms * 1e-9);
      if (csv && rows == DType::kBF16) {  // the bf16 path's own storage: what it is compared by
        std::printf("csv,linear_decode,1,%ld,%.5f,%.3f,TB/s\n", (long)b, ms, tbs);
      }
    }
  }
  std::printf("target: >= %.2f TB/s (80%% of 4.25 TB/s)\n", 0.8 * 4.25);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = bench::HasFlag(argc, argv, "--quick");
  const bool csv = bench::HasFlag(argc, argv, "--csv");
  bench::PrintDevice();
  const Context ctx = Context::Cuda(0, nullptr);
  const bench::Timing timing{/*warmups=*/2, /*runs=*/quick ? 10 : 30};
  Forward(ctx, timing, csv);
  Decode(timing, csv);
  return 0;
}
