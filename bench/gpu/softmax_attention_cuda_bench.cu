// GPU benchmark of Tandem's CUDA softmax attention at Ring-mini head shapes (H=16, Hkv=4, D=128,
// bf16 operands: the tensor-core path): the causal forward of one sequence (TFLOP/s, flops
// 4·T²/2·H·D) and paged decode, one query per sequence (TB/s of K and V read). CUDA-event timing,
// warm-up first, median of >= 10 runs. bench/gpu/anchor_compare.py compares against PyTorch SDPA.
//   softmax_attention_cuda_bench [--csv]
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "bench/gpu/bench_util.cuh"
#include "kernels/core/context.h"
#include "kernels/core/cuda_util.h"
#include "kernels/softmax_attention/attention_wgmma_probe.h"
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

Tensor DeviceI32(const std::vector<int32_t>& v, tandem::Shape shape) {
  Tensor host = Tensor::Empty(shape, DType::kI32);
  std::memcpy(host.raw_data(), v.data(), v.size() * sizeof(int32_t));
  auto dev = tandem::kernels::cuda::CopyToDevice(Context::Cpu(1), host);
  CHECK_OK(dev.status());
  return *dev;
}

constexpr int64_t kH = 16, kHkv = 4, kD = 128;

std::string CsvLine(const char* name, int64_t t, int64_t batch, double ms, double fig,
                    const char* unit) {
  char line[160];
  std::snprintf(line, sizeof(line), "csv,%s,%ld,%ld,%.4f,%.3f,%s", name, (long)t, (long)batch, ms,
                fig, unit);
  return line;
}

void SoftmaxForward(const Context& ctx, std::vector<std::string>& csv) {
  namespace cu_ns = tandem::kernels::cuda;
  using Kernel = cu_ns::SoftmaxAttentionFwdKernel;
  const tandem::kernels::SoftmaxAttentionParams p{kH, kHkv, kD, 1.0f / std::sqrt(128.0f)};
  // Every forward kernel that runs here; the csv line is the default's.
  const std::pair<Kernel, const char*> all[] = {
      {Kernel::kDefault, "default"}, {Kernel::kMmaSync, "mma.sync"}, {Kernel::kWgmma, "wgmma"}};
  std::vector<std::pair<Kernel, const char*>> kernels;
  for (const auto& kn : all) {
    if (cu_ns::SoftmaxAttentionFwdKernelAvailable(kn.first, kD)) kernels.push_back(kn);
  }
  std::printf(
      "\nsoftmax attention forward, causal, one sequence, H=%ld Hkv=%ld D=%ld, bf16 q/k/v/o, "
      "f32 lse (default: %s; TANDEM_ATTENTION_WGMMA=0 selects mma.sync)\n%8s | %10s %10s %9s\n",
      (long)kH, (long)kHkv, (long)kD, cu_ns::SoftmaxAttentionUsesWgmma(kD) ? "wgmma" : "mma.sync",
      "T", "kernel", "ms", "TFLOP/s");
  for (int64_t t : {4096, 8192, 16384, 32768}) {
    Tensor q = RandomBf16({t, kH, kD}, 1), k = RandomBf16({t, kHkv, kD}, 2);
    Tensor v = RandomBf16({t, kHkv, kD}, 3);
    Tensor o = Tensor::Empty({t, kH, kD}, DType::kBF16, Device::kCUDA);
    Tensor lse = Tensor::Empty({t, kH}, DType::kF32, Device::kCUDA);
    const Tensor cu = HostI32({0, static_cast<int32_t>(t)});
    for (const auto& [kernel, name] : kernels) {
      const double ms = MedianMs([&] {
        CHECK_OK(cu_ns::SoftmaxAttentionFwdWithKernel(kernel, ctx, p, q, k, v, cu, o, lse));
      });
      const double flop = 4.0 * kD * kH * (t * static_cast<double>(t) / 2.0);  // as anchor_compare
      const double tflops = flop / ms * 1e-9;
      std::printf("%8ld | %10s %10.3f %9.1f\n", (long)t, name, ms, tflops);
      if (kernel == Kernel::kDefault && t != 8192) {
        csv.push_back(CsvLine("softmax_fwd", t, 1, ms, tflops, "TFLOP/s"));
      }
    }
    // The call's host time (checks, work items, their upload, tensor maps, launch): the queued
    // calls above hide it behind the previous call's GPU work; a call made alone waits for it.
    std::vector<double> host_us;
    for (int i = 0; i < 15; ++i) {
      CHECK_CUDA(cudaDeviceSynchronize());
      const auto t0 = std::chrono::steady_clock::now();
      CHECK_OK(cu_ns::SoftmaxAttentionFwdWithKernel(Kernel::kDefault, ctx, p, q, k, v, cu, o, lse));
      host_us.push_back(
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(host_us.begin(), host_us.end());
    std::printf("%8ld | host time of one call: %.1f us\n", (long)t, host_us[host_us.size() / 2]);
  }
}

void SoftmaxDecode(const Context& ctx, std::vector<std::string>& csv) {
  const tandem::kernels::SoftmaxAttentionParams p{kH, kHkv, kD, 1.0f / std::sqrt(128.0f)};
  std::printf(
      "\nsoftmax attention paged decode, bf16 q/cache/o, H=%ld Hkv=%ld D=%ld\n%6s %8s | %10s "
      "%9s\n",
      (long)kH, (long)kHkv, (long)kD, "B", "context", "ms", "KV TB/s");
  const int64_t tile = tandem::kAttentionKvTile;
  for (int64_t ctx_len : {4096, 32768}) {
    for (int64_t b : {64, 256}) {
      const int64_t max_blocks = ctx_len / tile, num_blocks = b * max_blocks;
      Tensor kc = RandomBf16({num_blocks, tile, kHkv, kD}, 4),
             vc = RandomBf16({num_blocks, tile, kHkv, kD}, 5);
      std::vector<int32_t> table(num_blocks), lens(b, static_cast<int32_t>(ctx_len));
      for (int64_t i = 0; i < num_blocks; ++i) {  // 7919 is prime: a permutation of the blocks
        table[i] = static_cast<int32_t>((i * 7919) % num_blocks);
      }
      Tensor tables = DeviceI32(table, {b, max_blocks}), seq_lens = DeviceI32(lens, {b});
      Tensor q = RandomBf16({b, kH, kD}, 6);
      Tensor o = Tensor::Empty({b, kH, kD}, DType::kBF16, Device::kCUDA);
      const double ms = MedianMs([&] {
        CHECK_OK(
            tandem::kernels::cuda::SoftmaxAttentionDecode(ctx, p, q, kc, vc, tables, seq_lens, o));
      });
      const double bytes = 2.0 * b * ctx_len * kHkv * kD * 2;  // K and V, bf16
      const double tbs = bytes / ms * 1e-9;
      std::printf("%6ld %8ld | %10.4f %9.2f\n", (long)b, (long)ctx_len, ms, tbs);
      csv.push_back(CsvLine("softmax_decode", ctx_len, b, ms, tbs, "TB/s"));
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const bool csv = bench::HasFlag(argc, argv, "--csv");
  bench::PrintDevice(" (tensor-core bf16 attention kernels)");
  const Context ctx = Context::Cuda(0, nullptr);
  std::vector<std::string> lines;
  SoftmaxForward(ctx, lines);
  SoftmaxDecode(ctx, lines);
  if (csv) {
    for (const std::string& l : lines) std::printf("%s\n", l.c_str());
  }
  return 0;
}
