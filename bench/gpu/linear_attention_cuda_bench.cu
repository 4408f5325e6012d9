// GPU linear attention benchmark: the chunked forward (cuda::LinearAttentionFwd, tensor-core path)
// on one sequence of T = 4K..64K tokens, H=16, D=128, bf16 q/k/v/o, the final fp32 state written
// (what fla's chunk_simple_gla with output_final_state does), and one decode step
// (cuda::LinearAttentionDecode) at batch 64 and 256 with its fp32 state read once per step.
// CUDA-event timing, warm-up first, median of the runs. The forward (two launches: state scan,
// then output kernel) is also split into its launches through the library's phase-event hook.
// The scan alone is then timed in each state-tile shape the library offers (LaunchScanVariant),
// after checking every shape's states bit for bit against the library forward's.
// Anchors (H200, fla 0.6.0): chunk_simple_gla with g_gamma 0.90 ms fwd at 64K; fused_recurrent
// decode 0.236 / 0.295 ms per step at B = 64 / 256.
//   linear_attention_cuda_bench [--quick] [--csv]
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
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
#include "kernels/linear_attention/linear_attention.h"
#include "kernels/linear_attention/linear_attention_cuda.h"
#include "kernels/linear_attention/linear_fwd_scan.cuh"
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
  std::printf(
      "linear attention chunked forward, one sequence, H=%ld D=%ld, bf16 q/k/v\n"
      "two launches: state scan + output kernel; +states also writes every fp32 chunk-start state\n"
      "%8s | %10s %8s %9s %9s | %11s %9s %9s | %10s\n",
      (long)kH, (long)kD, "T", "fwd ms", "Mtok/s", "scan ms", "out ms", "+states ms", "scan ms",
      "out ms", "f32 o ms");
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
    const std::pair<double, double> phases = PhaseMs(fwd, timing.runs);
    const double ms_states = MedianMs(fwd_states, timing);
    const std::pair<double, double> phases_states = PhaseMs(fwd_states, timing.runs);
    const double ms_f32 = MedianMs(
        [&] {
          CHECK_OK(
              cuda::LinearAttentionFwd(ctx, p, q, k, v, decay, cu, none, of, none, final_state));
        },
        timing);
    std::printf("%8ld | %10.4f %8.1f %9.4f %9.4f | %11.4f %9.4f %9.4f | %10.4f\n", (long)t, ms,
                t / ms * 1e-3, phases.first, phases.second, ms_states, phases_states.first,
                phases_states.second, ms_f32);
    if (csv) std::printf("csv,linear_fwd,%ld,1,%.4f,%.2f,Mtok/s\n", (long)t, ms, t / ms * 1e-3);
  }
  std::printf("target at T=65536: fwd <= %.3f ms (fla chunk_simple_gla 0.90 ms / 1.5)\n",
              0.90 / 1.5);
}

namespace linear = tandem::kernels::cuda::linear;

template <typename T>
T* DeviceAlloc(int64_t n) {
  T* p = nullptr;
  CHECK_CUDA(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(T)));
  return p;
}

template <typename T>
std::vector<T> ToHost(const T* p, int64_t n) {
  std::vector<T> x(n);
  CHECK_CUDA(cudaMemcpy(x.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
  return x;
}

template <typename T>
T* ToDevice(const std::vector<T>& x) {
  T* p = DeviceAlloc<T>(static_cast<int64_t>(x.size()));
  CHECK_CUDA(cudaMemcpy(p, x.data(), x.size() * sizeof(T), cudaMemcpyHostToDevice));
  return p;
}

uint16_t Bf16Bits(float x) {  // round to nearest even (finite x)
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// The scan's inputs for packed sequences cu (device copies; freed by Free).
struct ScanInputs {
  linear::TcFwdArgs a{};
  int batch = 0;
  int64_t nc = 0;
  ScanInputs(const std::vector<int32_t>& cu, const Tensor& k, const Tensor& v,
             const Tensor& decay) {
    std::vector<linear::ChunkItem> items;
    std::vector<int> seq_chunk{0};
    for (size_t b = 0; b + 1 < cu.size(); ++b) {
      for (int32_t r = cu[b]; r < cu[b + 1]; r += kC) {
        items.push_back({r, std::min<int>(kC, cu[b + 1] - r), static_cast<int>(items.size())});
      }
      seq_chunk.push_back(static_cast<int>(items.size()));
    }
    std::vector<float> pow(kH * (kC + 1));
    for (int64_t h = 0; h < kH; ++h) {
      tandem::kernels::LinearAttentionDecayPowers(decay.data<float>()[h],
                                                  pow.data() + h * (kC + 1));
    }
    batch = static_cast<int>(cu.size()) - 1, nc = static_cast<int64_t>(items.size());
    a.h = static_cast<int>(kH);
    a.k = static_cast<const __nv_bfloat16*>(k.raw_data());
    a.v = static_cast<const __nv_bfloat16*>(v.raw_data());
    a.pow = ToDevice(pow);
    a.items = ToDevice(items);
    a.seq_chunk = ToDevice(seq_chunk);
    a.sb = DeviceAlloc<__nv_bfloat16>(nc * kH * kD * kD);
    a.boundary = DeviceAlloc<float>(batch * kH * kD * kD);
  }
  void Free() {
    for (const void* p : {static_cast<const void*>(a.pow), static_cast<const void*>(a.items),
                          static_cast<const void*>(a.seq_chunk), static_cast<const void*>(a.sb),
                          static_cast<const void*>(a.boundary)}) {
      CHECK_CUDA(cudaFree(const_cast<void*>(p)));
    }
  }
};

// Every scan variant against the library forward (two sequences with partial last chunks and an
// initial state): fp32 chunk-start and boundary states bitwise, bf16 states = bf16(fp32 states).
bool CheckScanVariants(const Context& ctx) {
  const std::vector<int32_t> cu{0, 3000, 5037};
  const int64_t t = cu.back();
  const tandem::kernels::LinearAttentionParams p{kH, kD, 1.0f / std::sqrt(128.0f)};
  const Tensor decay = RingDecay();
  Tensor q = RandomBf16({t, kH, kD}, 17), k = RandomBf16({t, kH, kD}, 18);
  Tensor v = RandomBf16({t, kH, kD}, 19);
  ScanInputs in(cu, k, v, decay);
  const int64_t dd = kD * kD, nstate = in.nc * kH * dd, nbound = in.batch * kH * dd;
  std::vector<float> init_host(nbound);
  uint32_t x = 12345;
  for (float& f : init_host) x = x * 1664525u + 1013904223u, f = (x >> 8) * 0x1p-23f - 1.0f;
  Tensor init = Tensor::Empty({in.batch, kH, kD, kD}, DType::kF32, Device::kCUDA);
  CHECK_CUDA(cudaMemcpy(init.raw_data(), init_host.data(), nbound * 4, cudaMemcpyHostToDevice));
  Tensor o = Tensor::Empty({t, kH, kD}, DType::kBF16, Device::kCUDA);
  Tensor states = Tensor::Empty({in.nc, kH, kD, kD}, DType::kF32, Device::kCUDA);
  Tensor bound = Tensor::Empty({in.batch, kH, kD, kD}, DType::kF32, Device::kCUDA);
  CHECK_OK(cuda::LinearAttentionFwd(ctx, p, q, k, v, decay, HostI32(cu), init, o, states, bound));
  const std::vector<float> want = ToHost(states.data<float>(), nstate);
  const std::vector<float> want_bound = ToHost(bound.data<float>(), nbound);
  in.a.init = init.data<float>();
  in.a.states = DeviceAlloc<float>(nstate);
  bool all_ok = true;
  for (int var = 0; var < linear::kScanVariants; ++var) {
    CHECK_CUDA(cudaMemset(in.a.sb, 0xff, nstate * 2));  // NaN patterns: unwritten shows
    CHECK_CUDA(cudaMemset(in.a.states, 0xff, nstate * 4));
    CHECK_CUDA(cudaMemset(in.a.boundary, 0xff, nbound * 4));
    CHECK_CUDA(linear::LaunchScanVariant(nullptr, in.a, in.batch, var));
    CHECK_CUDA(cudaDeviceSynchronize());
    const std::vector<float> got = ToHost(in.a.states, nstate);
    const std::vector<float> got_bound = ToHost(in.a.boundary, nbound);
    const std::vector<__nv_bfloat16> got_sb = ToHost(in.a.sb, nstate);
    int64_t bad = 0;
    for (int64_t i = 0; i < nstate; ++i) {
      uint16_t sb;
      std::memcpy(&sb, &got_sb[i], 2);
      bad += std::memcmp(&got[i], &want[i], 4) != 0 || sb != Bf16Bits(want[i]);
    }
    bad += std::memcmp(got_bound.data(), want_bound.data(), nbound * 4) != 0;
    std::printf("  scan variant %d bitwise vs forward: %s\n", var, bad == 0 ? "ok" : "MISMATCH");
    all_ok = all_ok && bad == 0;
  }
  CHECK_CUDA(cudaFree(in.a.states));
  in.Free();
  return all_ok;
}

// The scan alone at T = 64K, one sequence, per variant: without and with the fp32 chunk states
// (the boundary state always written). TB/s counts the bytes every shape must move: k and v read
// once, the bf16 states written (and the fp32 ones).
void ScanVariants(const Context& ctx, const bench::Timing& timing) {
  std::printf("\nstate scan alone by tile shape (D=%ld, H=%ld)\n", (long)kD, (long)kH);
  const bool ok = CheckScanVariants(ctx);
  const int64_t t = 65536;
  Tensor k = RandomBf16({t, kH, kD}, 8), v = RandomBf16({t, kH, kD}, 9);
  ScanInputs in({0, static_cast<int32_t>(t)}, k, v, RingDecay());
  float* states = DeviceAlloc<float>(in.nc * kH * kD * kD);
  const double kv = 2.0 * t * kH * kD * 2, sb = 2.0 * in.nc * kH * kD * kD;
  std::printf("%8s | %9s %8s | %11s %8s | %s\n", "T", "scan ms", "TB/s", "+states ms", "TB/s",
              "shape");
  for (int var = 0; var < linear::kScanVariants; ++var) {
    in.a.states = nullptr;
    const double ms = MedianMs(
        [&] { CHECK_CUDA(linear::LaunchScanVariant(nullptr, in.a, in.batch, var)); }, timing);
    in.a.states = states;
    const double ms_states = MedianMs(
        [&] { CHECK_CUDA(linear::LaunchScanVariant(nullptr, in.a, in.batch, var)); }, timing);
    std::printf("%8ld | %9.4f %8.2f | %11.4f %8.2f | %d: %s\n", (long)t, ms, (kv + sb) / ms * 1e-9,
                ms_states, (kv + 3 * sb) / ms_states * 1e-9, var, linear::ScanVariantName(var));
  }
  CHECK_CUDA(cudaFree(states));
  in.Free();
  if (!ok) {
    std::fprintf(stderr, "scan variants differ from the forward's states\n");
    std::exit(1);
  }
}

// One decode step per call; a run of C steps (one chunk: C − 1 plain steps and one that advances
// the state) is timed and divided by C, so the figure is the mean step.
void Decode(const Context& ctx, const bench::Timing& timing, bool csv) {
  const tandem::kernels::LinearAttentionParams p{kH, kD, 1.0f / std::sqrt(128.0f)};
  const Tensor decay = RingDecay();
  std::printf(
      "\nlinear attention decode, H=%ld D=%ld, bf16 q/k/v/o, fp32 state\n%6s | %10s %9s %13s\n",
      (long)kH, (long)kD, "B", "ms/step", "TB/s", "all bytes TB/s");
  for (int64_t b : {64, 256}) {
    Tensor state = Tensor::Zeros({b, kH, kD, kD}, DType::kF32, Device::kCUDA);
    Tensor ok = Tensor::Zeros({b, kC, kH, kD}, DType::kF32, Device::kCUDA);
    Tensor ov = Tensor::Zeros({b, kC, kH, kD}, DType::kF32, Device::kCUDA);
    Tensor open_len = Tensor::Zeros({b}, DType::kI32, Device::kCUDA);
    Tensor q = RandomBf16({b, kH, kD}, 10), k = RandomBf16({b, kH, kD}, 11);
    Tensor v = RandomBf16({b, kH, kD}, 12);
    Tensor o = Tensor::Empty({b, kH, kD}, DType::kBF16, Device::kCUDA);
    const double ms = MedianMs(
                          [&] {
                            for (int64_t s = 0; s < kC; ++s) {
                              CHECK_OK(cuda::LinearAttentionDecode(ctx, p, q, k, v, decay, state,
                                                                   ok, ov, open_len, o));
                            }
                          },
                          timing) /
                      kC;
    const double tbs = 4.0 * b * kH * kD * kD / ms * 1e-9;  // the state, read once per step
    // Also what a step moves on average: the state, the open chunk's fp32 k, v rows before the
    // new one ((C − 1) / 2 of each), and the state written back once per chunk.
    const double all_bytes = 4.0 * b * kH * (kD * kD + kD * (kC - 1) + kD * kD / kC);
    std::printf("%6ld | %10.4f %9.2f %13.2f\n", (long)b, ms, tbs, all_bytes / ms * 1e-9);
    if (csv) std::printf("csv,linear_decode,1,%ld,%.5f,%.3f,TB/s\n", (long)b, ms, tbs);
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
  Decode(ctx, timing, csv);
  ScanVariants(ctx, timing);
  return 0;
}
