// GPU benchmark of causal GQA softmax attention training: Tandem's CUDA forward followed by its
// backward (one sequence of T tokens, H=16, Hkv=4, D=128, bf16 q/k/v/o/dO and gradients, f32 lse).
// The backward is timed on every kernel (mma.sync, and the split wgmma kernel where the device has
// it); the total and the csv line use the default one (TANDEM_ATTENTION_BWD_WGMMA).
// CUDA-event timing, warm-up first, median of >= 10 runs. Flops: 4·T²/2·H·D forward, 2.5x that
// backward (the convention PyTorch SDPA figures use).
//   softmax_attention_bwd_cuda_bench [--csv]
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
#include "kernels/core/cuda_util.h"
#include "kernels/softmax_attention/softmax_attention_bwd_cuda.h"
#include "kernels/softmax_attention/softmax_attention_cuda.h"

namespace {

using tandem::Context;
using tandem::Device;
using tandem::DType;
using tandem::Tensor;
using tandem::bench::HostI32;
using tandem::bench::MedianMs;
using tandem::bench::RandomBf16;
namespace bench = tandem::bench;

constexpr int64_t kH = 16, kHkv = 4, kD = 128;

}  // namespace

int main(int argc, char** argv) {
  const bool csv = bench::HasFlag(argc, argv, "--csv");
  const cudaDeviceProp prop = bench::DeviceOrExit();
  namespace cuda = tandem::kernels::cuda;
  const bool wg_available = cuda::SoftmaxAttentionBwdWgmmaAvailable(kD);
  const cuda::SoftmaxAttentionBwdKernel def = cuda::SoftmaxAttentionBwdDefaultKernel(kD);
  std::printf("%s (default backward: %s)\n", prop.name,
              def == cuda::SoftmaxAttentionBwdKernel::kWgmmaSplit ? "wgmma split" : "mma.sync");
  const Context ctx = Context::Cpu(1);
  const tandem::kernels::SoftmaxAttentionParams p{kH, kHkv, kD, 1.0f / std::sqrt(128.0f)};
  std::printf(
      "\nsoftmax attention forward + backward, causal, one sequence, H=%ld Hkv=%ld D=%ld, bf16\n"
      "%8s | %9s %9s %9s %9s | %9s %9s %9s %9s\n",
      (long)kH, (long)kHkv, (long)kD, "T", "fwd ms", "bwd mma", "bwd split", "total ms", "fwd TF/s",
      "bwd mma", "bwd split", "total");
  std::vector<std::string> lines;
  for (int64_t t : {4096, 16384, 32768}) {
    Tensor q = RandomBf16({t, kH, kD}, 1), k = RandomBf16({t, kHkv, kD}, 2);
    Tensor v = RandomBf16({t, kHkv, kD}, 3), d_o = RandomBf16({t, kH, kD}, 4);
    Tensor o = Tensor::Empty({t, kH, kD}, DType::kBF16, Device::kCUDA);
    Tensor lse = Tensor::Empty({t, kH}, DType::kF32, Device::kCUDA);
    Tensor dq = Tensor::Empty({t, kH, kD}, DType::kBF16, Device::kCUDA);
    Tensor dk = Tensor::Empty({t, kHkv, kD}, DType::kBF16, Device::kCUDA);
    Tensor dv = Tensor::Empty({t, kHkv, kD}, DType::kBF16, Device::kCUDA);
    const Tensor cu = HostI32({0, static_cast<int32_t>(t)});
    const auto fwd = [&] { CHECK_OK(cuda::SoftmaxAttentionFwd(ctx, p, q, k, v, cu, o, lse)); };
    const auto bwd_with = [&](cuda::SoftmaxAttentionBwdKernel kernel) {
      CHECK_OK(cuda::SoftmaxAttentionBwdWithKernel(kernel, ctx, p, q, k, v, cu, o, lse, d_o, dq, dk,
                                                   dv));
    };
    const auto bwd = [&] { bwd_with(cuda::SoftmaxAttentionBwdKernel::kDefault); };
    const double fwd_ms = MedianMs(fwd);
    const double mma_ms = MedianMs([&] { bwd_with(cuda::SoftmaxAttentionBwdKernel::kMmaSync); });
    const double split_ms =
        wg_available ? MedianMs([&] { bwd_with(cuda::SoftmaxAttentionBwdKernel::kWgmmaSplit); })
                     : NAN;
    const double total_ms = MedianMs([&] { fwd(), bwd(); });
    const double fwd_flop = 4.0 * kD * kH * (t * static_cast<double>(t) / 2.0);
    const double tf = 1e-9;  // flop/ms to TFLOP/s
    std::printf("%8ld | %9.3f %9.3f %9.3f %9.3f | %9.1f %9.1f %9.1f %9.1f\n", (long)t, fwd_ms,
                mma_ms, split_ms, total_ms, fwd_flop / fwd_ms * tf, 2.5 * fwd_flop / mma_ms * tf,
                2.5 * fwd_flop / split_ms * tf, 3.5 * fwd_flop / total_ms * tf);
    char line[160];
    std::snprintf(line, sizeof(line), "csv,softmax_fwd_bwd,%ld,1,%.4f,%.1f,TFLOP/s", (long)t,
                  total_ms, 3.5 * fwd_flop / total_ms * tf);
    lines.push_back(line);
  }
  if (csv) {
    for (const std::string& l : lines) std::printf("%s\n", l.c_str());
  }
  return 0;
}
