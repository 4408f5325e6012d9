// GPU attention benchmark: Tandem's CUDA softmax attention (causal GQA forward, paged decode) and
// chunked linear attention (forward, decode) at Ring-mini head shapes. Plain program, CUDA-event
// timing; prints times, TFLOP/s for the forwards and bytes/s for decode. Comparisons with PyTorch
// SDPA / FlashAttention and fla's chunk kernels are run separately (docs/gpu.md).
//   attention_cuda_bench [--quick]
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/core/context.h"
#include "kernels/core/cuda_util.h"
#include "kernels/linear_attention/linear_attention_cuda.h"
#include "kernels/softmax_attention/softmax_attention_cuda.h"

namespace {

using tandem::Context;
using tandem::Device;
using tandem::DType;
using tandem::Tensor;

#define CHECK_OK(expr)                                                                            \
  do {                                                                                            \
    const absl::Status s_ = (expr);                                                               \
    if (!s_.ok()) {                                                                               \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, std::string(s_.message()).c_str()); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

// Deterministic bf16 values in [-1, 1) from a hash of the index.
__global__ void FillKernel(__nv_bfloat16* p, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
    p[i] = __float2bfloat16_rn(static_cast<float>(h >> 8) * (2.0f / 16777216.0f) - 1.0f);
  }
}

Tensor RandomBf16(tandem::Shape shape, uint32_t seed) {
  Tensor t = Tensor::Empty(std::move(shape), DType::kBF16, Device::kCUDA);
  FillKernel<<<1024, 256>>>(static_cast<__nv_bfloat16*>(t.raw_data()), t.numel(), seed);
  return t;
}

Tensor DeviceI32(const std::vector<int32_t>& v, tandem::Shape shape) {
  Tensor host = Tensor::Empty(shape, DType::kI32);
  std::memcpy(host.raw_data(), v.data(), v.size() * sizeof(int32_t));
  auto dev = tandem::kernels::cuda::CopyToDevice(Context::Cpu(1), host);
  CHECK_OK(dev.status());
  return *dev;
}

Tensor HostI32(const std::vector<int32_t>& v) {
  Tensor t = Tensor::Empty({static_cast<int64_t>(v.size())}, DType::kI32);
  std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(int32_t));
  return t;
}

// Mean milliseconds of fn over enough calls to fill the time budget (one warm-up call first).
template <typename Fn>
double TimeMs(Fn&& fn, bool quick) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  fn();
  cudaEventRecord(start);
  fn();
  cudaEventRecord(stop);
  cudaEventSynchronize(stop);
  float once = 0.0f;
  cudaEventElapsedTime(&once, start, stop);
  const int iters =
      std::clamp(static_cast<int>((quick ? 20.0 : 200.0) / std::max(once, 1e-3f)), 2, 200);
  cudaEventRecord(start);
  for (int i = 0; i < iters; ++i) fn();
  cudaEventRecord(stop);
  cudaEventSynchronize(stop);
  float total = 0.0f;
  cudaEventElapsedTime(&total, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA error: %s\n", cudaGetErrorString(e));
    std::exit(1);
  }
  return total / iters;
}

constexpr int64_t kH = 16, kHkv = 4, kD = 128;

void SoftmaxForward(const Context& ctx, bool quick) {
  const tandem::kernels::SoftmaxAttentionParams p{kH, kHkv, kD, 1.0f / std::sqrt(128.0f)};
  std::printf(
      "\nsoftmax attention forward, causal, one sequence, H=%ld Hkv=%ld D=%ld, bf16 in, "
      "f32 o + lse\n%8s | %10s %9s\n",
      (long)kH, (long)kHkv, (long)kD, "T", "ms", "TFLOP/s");
  for (int64_t t : {4096, 16384, 32768}) {
    Tensor q = RandomBf16({t, kH, kD}, 1), k = RandomBf16({t, kHkv, kD}, 2);
    Tensor v = RandomBf16({t, kHkv, kD}, 3);
    Tensor o = Tensor::Empty({t, kH, kD}, DType::kF32, Device::kCUDA);
    Tensor lse = Tensor::Empty({t, kH}, DType::kF32, Device::kCUDA);
    const Tensor cu = HostI32({0, static_cast<int32_t>(t)});
    const double ms = TimeMs(
        [&] { CHECK_OK(tandem::kernels::cuda::SoftmaxAttentionFwd(ctx, p, q, k, v, cu, o, lse)); },
        quick);
    const double flop = 4.0 * kD * kH * (t * (t + 1) / 2.0);  // QKᵀ and PV over causal pairs
    std::printf("%8ld | %10.3f %9.1f\n", (long)t, ms, flop / ms * 1e-9);
  }
}

void SoftmaxDecode(const Context& ctx, bool quick) {
  const tandem::kernels::SoftmaxAttentionParams p{kH, kHkv, kD, 1.0f / std::sqrt(128.0f)};
  std::printf(
      "\nsoftmax attention paged decode, bf16 cache, H=%ld Hkv=%ld D=%ld\n%6s %8s | %10s %9s\n",
      (long)kH, (long)kHkv, (long)kD, "B", "context", "ms", "KV GB/s");
  const int64_t tile = tandem::kAttentionKvTile;
  for (const auto& [b, ctx_len] :
       std::vector<std::pair<int64_t, int64_t>>{{64, 8192}, {16, 32768}}) {
    const int64_t max_blocks = ctx_len / tile, num_blocks = b * max_blocks;
    Tensor kc = RandomBf16({num_blocks, tile, kHkv, kD}, 4),
           vc = RandomBf16({num_blocks, tile, kHkv, kD}, 5);
    std::vector<int32_t> table(num_blocks), lens(b, static_cast<int32_t>(ctx_len));
    for (int64_t i = 0; i < num_blocks; ++i)
      table[i] = static_cast<int32_t>((i * 7919) % num_blocks);
    Tensor tables = DeviceI32(table, {b, max_blocks}), seq_lens = DeviceI32(lens, {b});
    Tensor q = RandomBf16({b, kH, kD}, 6);
    Tensor o = Tensor::Empty({b, kH, kD}, DType::kF32, Device::kCUDA);
    const double ms = TimeMs(
        [&] {
          CHECK_OK(tandem::kernels::cuda::SoftmaxAttentionDecode(ctx, p, q, kc, vc, tables,
                                                                 seq_lens, o));
        },
        quick);
    const double bytes = 2.0 * b * ctx_len * kHkv * kD * 2;
    std::printf("%6ld %8ld | %10.4f %9.1f\n", (long)b, (long)ctx_len, ms, bytes / ms * 1e-6);
  }
}

void LinearForwardAndDecode(const Context& ctx, bool quick) {
  const tandem::kernels::LinearAttentionParams p{kH, kD, 1.0f / std::sqrt(128.0f)};
  std::vector<float> x(kH);
  for (int64_t i = 0; i < kH; ++i) x[i] = std::exp2(-8.0f * (i + 1) / kH);
  const Tensor decay = Tensor::FromVector(x, {kH});
  std::printf(
      "\nlinear attention chunked forward, one sequence, H=%ld D=%ld, bf16 in, f32 o\n"
      "%8s | %10s %12s\n",
      (long)kH, (long)kD, "T", "ms", "Mtokens/s");
  Tensor none;
  for (int64_t t : {4096, 8192, 16384, 32768, 65536}) {
    Tensor q = RandomBf16({t, kH, kD}, 7), k = RandomBf16({t, kH, kD}, 8),
           v = RandomBf16({t, kH, kD}, 9);
    Tensor o = Tensor::Empty({t, kH, kD}, DType::kF32, Device::kCUDA);
    const Tensor cu = HostI32({0, static_cast<int32_t>(t)});
    const double ms = TimeMs(
        [&] {
          CHECK_OK(tandem::kernels::cuda::LinearAttentionFwd(ctx, p, q, k, v, decay, cu, none, o,
                                                             none, none));
        },
        quick);
    std::printf("%8ld | %10.3f %12.2f\n", (long)t, ms, t / ms * 1e-3);
  }
  const int64_t b = 64, c = tandem::kLinearAttentionChunk;
  Tensor state = Tensor::Zeros({b, kH, kD, kD}, DType::kF32, Device::kCUDA);
  Tensor ok = Tensor::Zeros({b, c, kH, kD}, DType::kF32, Device::kCUDA);
  Tensor ov = Tensor::Zeros({b, c, kH, kD}, DType::kF32, Device::kCUDA);
  Tensor open_len = DeviceI32(std::vector<int32_t>(b, 0), {b});
  Tensor q = RandomBf16({b, kH, kD}, 10), k = RandomBf16({b, kH, kD}, 11),
         v = RandomBf16({b, kH, kD}, 12);
  Tensor o = Tensor::Empty({b, kH, kD}, DType::kF32, Device::kCUDA);
  // Mixed steps: open_len cycles through the chunk, one step in C also advances the state.
  const double ms = TimeMs(
      [&] {
        CHECK_OK(tandem::kernels::cuda::LinearAttentionDecode(ctx, p, q, k, v, decay, state, ok, ov,
                                                              open_len, o));
      },
      quick);
  const double bytes = 4.0 * b * kH * kD * kD;  // the state, read once per step
  std::printf(
      "\nlinear attention decode, B=%ld H=%ld D=%ld fp32 state: %.4f ms/step, %.1f GB/s of "
      "state read\n",
      (long)b, (long)kH, (long)kD, ms, bytes / ms * 1e-6);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    std::fprintf(stderr, "no CUDA device\n");
    return 1;
  }
  std::printf("device: %s, %d SMs (CUDA-core fp32 attention kernels)\n", prop.name,
              prop.multiProcessorCount);
  const Context ctx = Context::Cuda(0, nullptr);
  SoftmaxForward(ctx, quick);
  SoftmaxDecode(ctx, quick);
  LinearForwardAndDecode(ctx, quick);
  return 0;
}
