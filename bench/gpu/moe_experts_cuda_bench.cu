// GPU routed-experts benchmark at Ring-mini shapes (E = 256, K = 8, Dm = 2048, I = 512, bf16
// weights): cuda::MoeExpertsFwd at a decode batch (T = 64) and a prefill (T = 4096), and forward +
// backward at T = 4096. Uniform random routing (K distinct experts per token). Figures are expert
// GEMM TFLOP/s (2·T·K·3·Dm·I forward, 3× that for forward + backward). CUDA-event timing, warm-up
// first, median of >= 10 runs.
//   moe_experts_cuda_bench [--csv]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "bench/gpu/bench_util.cuh"
#include "kernels/core/bf16.h"
#include "kernels/core/context.h"
#include "kernels/core/cuda_util.h"
#include "kernels/moe_experts/moe_experts_cuda.h"

namespace {

using tandem::Context;
using tandem::DType;
using tandem::Shape;
using tandem::Tensor;
using tandem::kernels::MoeExpertsActivations;
using tandem::kernels::MoeExpertsWeights;
namespace cuda = tandem::kernels::cuda;

constexpr int64_t kE = 256, kK = 8, kDm = 2048, kI = 512;

void Check(const absl::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
    std::exit(1);
  }
}

Tensor Upload(const Context& ctx, const Tensor& host) {
  auto t = cuda::CopyToDevice(ctx, host);
  Check(t.status(), "upload");
  return *t;
}

Tensor RandomBf16(const Context& ctx, Shape shape, float scale, uint64_t seed) {
  Tensor h = Tensor::Empty(shape, DType::kBF16);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  for (int64_t i = 0; i < h.numel(); ++i) h.data<uint16_t>()[i] = tandem::FloatToBf16(u(rng));
  return Upload(ctx, h);
}

// Median of 10 timed runs after one warm-up.
template <typename Fn>
double MedianMs(Fn&& fn) {
  return tandem::bench::MedianMs(fn, tandem::bench::Timing{/*warmups=*/1, /*runs=*/10,
                                                           /*sync_after_warmup=*/false,
                                                           /*check_last_error=*/false});
}

void Report(const char* name, int64_t t, double ms, double flops, bool csv) {
  const double tflops = flops / (ms * 1e-3) / 1e12;
  std::printf("%-16s T=%-6lld %9.3f ms %8.2f TFLOP/s\n", name, static_cast<long long>(t), ms,
              tflops);
  if (csv)
    std::printf("csv,%s,%lld,1,%.4f,%.3f,TFLOP/s\n", name, static_cast<long long>(t), ms, tflops);
}

void Run(const Context& ctx, const MoeExpertsWeights& w, int64_t t, bool backward, bool csv) {
  std::mt19937_64 rng(t);
  std::vector<int32_t> idx(t * kK);
  for (int64_t r = 0; r < t; ++r) {
    for (int64_t k = 0; k < kK; ++k) {
      int32_t e;
      do e = static_cast<int32_t>(rng() % kE);
      while (std::find(&idx[r * kK], &idx[r * kK + k], e) != &idx[r * kK + k]);
      idx[r * kK + k] = e;
    }
  }
  const Tensor x = RandomBf16(ctx, {t, kDm}, 1.0f, 1), dout = RandomBf16(ctx, {t, kDm}, 1.0f, 2);
  const Tensor topk_idx = Upload(ctx, Tensor::FromVector(idx, {t, kK}));
  const Tensor topk_w =
      Upload(ctx, Tensor::FromVector(std::vector<float>(t * kK, 0.125f), {t, kK}));
  Tensor out = Tensor::Empty({t, kDm}, DType::kBF16, tandem::Device::kCUDA);
  const double fwd_flops = 2.0 * t * kK * 3 * kDm * kI;
  if (!backward) {
    const double ms = MedianMs(
        [&] { Check(cuda::MoeExpertsFwd(ctx, x, topk_idx, topk_w, w, out, nullptr), "fwd"); });
    Report("moe_fwd", t, ms, fwd_flops, csv);
    return;
  }
  const auto gpu = tandem::Device::kCUDA;
  MoeExpertsWeights grads{Tensor::Zeros({kE, kI, kDm}, DType::kF32, gpu),
                          Tensor::Zeros({kE, kI, kDm}, DType::kF32, gpu),
                          Tensor::Zeros({kE, kDm, kI}, DType::kF32, gpu)};
  Tensor dx = Tensor::Empty({t, kDm}, DType::kBF16, gpu);
  Tensor dtw = Tensor::Empty({t, kK}, DType::kF32, gpu);
  const double ms = MedianMs([&] {
    MoeExpertsActivations acts;
    Check(cuda::MoeExpertsFwd(ctx, x, topk_idx, topk_w, w, out, &acts), "fwd");
    Check(cuda::MoeExpertsBwd(ctx, x, topk_idx, topk_w, w, acts, dout, dx, dtw, grads), "bwd");
  });
  Report("moe_fwd_bwd", t, ms, 3 * fwd_flops, csv);
}

}  // namespace

int main(int argc, char** argv) {
  const bool csv = tandem::bench::HasFlag(argc, argv, "--csv");
  if (!cuda::CudaAvailable()) {
    std::printf("no CUDA device\n");
    return 0;
  }
  const Context ctx = Context::Cuda(0);
  const MoeExpertsWeights w{RandomBf16(ctx, {kE, kI, kDm}, 0.04f, 3),
                            RandomBf16(ctx, {kE, kI, kDm}, 0.04f, 4),
                            RandomBf16(ctx, {kE, kDm, kI}, 0.04f, 5)};
  std::printf("Ring-mini routed experts: E=%lld K=%lld Dm=%lld I=%lld\n", (long long)kE,
              (long long)kK, (long long)kDm, (long long)kI);
  Run(ctx, w, 64, false, csv);
  Run(ctx, w, 4096, false, csv);
  Run(ctx, w, 4096, true, csv);
  return 0;
}
