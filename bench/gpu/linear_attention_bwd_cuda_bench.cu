// GPU linear attention training step benchmark: the chunked forward saving its chunk states
// (cuda::LinearAttentionFwd) followed by the chunked backward (cuda::LinearAttentionBwd), one
// sequence of T tokens, H=16, D=128, bf16 q/k/v/do/o/grads, fp32 state. CUDA-event timing,
// warm-up first, median of the runs. Reference: fla's chunk_simple_gla takes 4.71 ms fwd+bwd at
// T=64K on the H200 (docs/gpu.md). The backward's two launches are also timed alone.
//   linear_attention_bwd_cuda_bench [--quick] [--csv]
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/gpu/bench_util.cuh"
#include "kernels/core/context.h"
#include "kernels/core/contract.h"
#include "kernels/core/cuda_util.h"
#include "kernels/linear_attention/linear_attention_bwd_cuda.h"
#include "kernels/linear_attention/linear_attention_cuda.h"

namespace {

using tandem::Context;
using tandem::Device;
using tandem::DType;
using tandem::Tensor;
using tandem::bench::HostI32;
using tandem::bench::MedianMs;
using tandem::bench::RandomBf16;
namespace bench = tandem::bench;

constexpr int64_t kH = 16, kD = 128;

void Run(const Context& ctx, bool quick, bool csv) {
  namespace cuda = tandem::kernels::cuda;
  const tandem::kernels::LinearAttentionParams p{kH, kD, 1.0f / std::sqrt(128.0f)};
  std::vector<float> x(kH);
  for (int64_t i = 0; i < kH; ++i) x[i] = std::exp2(-8.0f * (i + 1) / kH);
  const Tensor decay = Tensor::FromVector(x, {kH});
  const bench::Timing timing{/*warmups=*/2, /*runs=*/quick ? 10 : 30};
  std::printf(
      "linear attention fwd (saving chunk states) + bwd, one sequence, H=%ld D=%ld, bf16 "
      "q/k/v/do/o/grads, fp32 state, chunk states saved in bf16 (as the model does; f32 column: "
      "saved in f32)\n%8s | %9s %9s %11s %9s | %9s %9s | %11s\n",
      (long)kH, (long)kD, "T", "fwd ms", "bwd ms", "fwd+bwd ms", "Mtok/s", "bwd scan", "bwd grads",
      "f32 fwd+bwd");
  Tensor none;
  for (int64_t t : {4096, 8192, 16384, 32768, 65536}) {
    const int64_t nc = (t + tandem::kLinearAttentionChunk - 1) / tandem::kLinearAttentionChunk;
    Tensor q = RandomBf16({t, kH, kD}, 1), k = RandomBf16({t, kH, kD}, 2);
    Tensor v = RandomBf16({t, kH, kD}, 3), d_o = RandomBf16({t, kH, kD}, 4);
    Tensor o = Tensor::Empty({t, kH, kD}, DType::kBF16, Device::kCUDA);
    Tensor states = Tensor::Empty({nc, kH, kD, kD}, DType::kBF16, Device::kCUDA);
    Tensor states_f32 = Tensor::Empty({nc, kH, kD, kD}, DType::kF32, Device::kCUDA);
    Tensor dq = Tensor::Empty({t, kH, kD}, DType::kBF16, Device::kCUDA);
    Tensor dk = Tensor::Empty({t, kH, kD}, DType::kBF16, Device::kCUDA);
    Tensor dv = Tensor::Empty({t, kH, kD}, DType::kBF16, Device::kCUDA);
    const Tensor cu = HostI32({0, static_cast<int32_t>(t)});
    auto fwd = [&] {
      CHECK_OK(cuda::LinearAttentionFwd(ctx, p, q, k, v, decay, cu, none, o, states, none));
    };
    auto bwd = [&] {
      CHECK_OK(cuda::LinearAttentionBwd(ctx, p, q, k, v, decay, cu, states, d_o, dq, dk, dv, none));
    };
    // The backward's two launches alone: the fused state-gradient scan, then the chunk grads.
    auto bwd_phase = [&](int phases) {
      CHECK_OK(cuda::LinearAttentionBwdPhases(ctx, p, q, k, v, decay, cu, states, d_o, dq, dk, dv,
                                              none, phases));
    };
    const double fwd_ms = MedianMs(fwd, timing), bwd_ms = MedianMs(bwd, timing);
    const double scan_ms = MedianMs([&] { bwd_phase(cuda::kLinearAttentionBwdScan); }, timing);
    const double grads_ms =
        MedianMs([&] { bwd_phase(cuda::kLinearAttentionBwdChunkGrads); }, timing);
    const double both_ms = MedianMs(
        [&] {
          fwd();
          bwd();
        },
        timing);
    const double f32_ms = MedianMs(
        [&] {
          CHECK_OK(cuda::LinearAttentionFwd(ctx, p, q, k, v, decay, cu, none, o, states_f32, none));
          CHECK_OK(cuda::LinearAttentionBwd(ctx, p, q, k, v, decay, cu, states_f32, d_o, dq, dk, dv,
                                            none));
        },
        timing);
    const double mtok = t / both_ms * 1e-3;
    std::printf("%8ld | %9.3f %9.3f %11.3f %9.2f | %9.3f %9.3f | %11.3f\n", (long)t, fwd_ms, bwd_ms,
                both_ms, mtok, scan_ms, grads_ms, f32_ms);
    if (csv) std::printf("csv,linear_fwd_bwd,%ld,1,%.4f,%.2f,Mtok/s\n", (long)t, both_ms, mtok);
  }
  std::printf("target at T=65536: fwd+bwd <= %.2f ms (fla chunk_simple_gla 4.71 ms / 1.2)\n",
              4.71 / 1.2);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = bench::HasFlag(argc, argv, "--quick");
  const bool csv = bench::HasFlag(argc, argv, "--csv");
  bench::PrintDevice();
  const Context ctx = Context::Cuda(0, nullptr);
  Run(ctx, quick, csv);
  return 0;
}
