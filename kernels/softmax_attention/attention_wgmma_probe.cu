// SoftmaxAttentionUsesWgmma and the wgmma-vs-mma.sync tile probe (attention_wgmma_probe.h). The
// probe calls the very routines the forward (ScoreTileWg, AccumulatePvWg) and decode (ScoreTile,
// AccumulatePv) call, on operands staged in their two smem layouts.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/softmax_attention/attention_wgmma.cuh"
#include "kernels/softmax_attention/attention_wgmma_probe.h"

namespace tandem::kernels::cuda {
namespace {

using attention_mma::bf16;
using attention_mma::kLd;
using attention_mma::kTile;

constexpr int kRows = 64, kThreads = 128;

template <int kD>
struct ProbeSmem {
  static constexpr int kPad = kRows * kLd<kD> * 2;  // one padded [64, kD] bf16 tile, bytes
  static constexpr int kSw = attention_mma::kSwTileBytes<kD>;
  // k, v swizzled (1024-aligned first), then q, k, v padded, then p padded ([64, 64]).
  static constexpr size_t kBytes = 1024 + 2 * kSw + 3 * kPad + kRows * kLd<64> * 2;
};

// Writes an m16n8 fragment array (this warp's 16 rows of a warpgroup tile) to out [64, n8 * 8].
template <int kN8>
__device__ void StoreFragments(const float (&f)[kN8][4], float* out) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int n = 0; n < kN8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = warp * 16 + lane / 4 + 8 * (e >> 1), col = n * 8 + 2 * (lane % 4) + (e & 1);
      out[r * kN8 * 8 + col] = f[n][e];
    }
  }
}

template <int kD>
__global__ void __launch_bounds__(kThreads)
    ProbeKernel(const bf16* q, const bf16* k, const bf16* p, const bf16* v, const float* c,
                float* s_wg, float* s_mma, float* o_wg, float* o_mma) {
#if TANDEM_WGMMA_DEVICE  // sm_90a code only; the host never launches it elsewhere
  using namespace attention_mma;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* sm = smem_raw + ((1024u - (SmemAddr(smem_raw) & 1023u)) & 1023u);
  unsigned char *ksw = sm, *vsw = sm + ProbeSmem<kD>::kSw;
  bf16* qp = reinterpret_cast<bf16*>(sm + 2 * ProbeSmem<kD>::kSw);
  bf16* kp = qp + kRows * kLd<kD>;
  bf16* vp = kp + kRows * kLd<kD>;
  bf16* pp = vp + kRows * kLd<kD>;
  for (int idx = threadIdx.x; idx < kRows * kD / 8; idx += kThreads) {
    const int r = idx / (kD / 8), cc = idx % (kD / 8);
    CpAsync16(qp + r * kLd<kD> + cc * 8, q + r * kD + cc * 8, true);
    CpAsync16(kp + r * kLd<kD> + cc * 8, k + r * kD + cc * 8, true);
    CpAsync16(vp + r * kLd<kD> + cc * 8, v + r * kD + cc * 8, true);
  }
  for (int idx = threadIdx.x; idx < kRows * 8; idx += kThreads) {
    CpAsync16(pp + (idx / 8) * kLd<64> + (idx % 8) * 8, p + idx * 8, true);
  }
  LoadTileSwizzledAsync<kD>(
      k, kTile, [](int j) { return j * kD; }, ksw, kThreads);
  LoadTileSwizzledAsync<kD>(
      v, kTile, [](int j) { return j * kD; }, vsw, kThreads);
  CpAsyncCommit();
  CpAsyncWait<0>();
  FenceProxyAsync();
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  uint32_t qf[kD / 16][4], pf[4][4];
  LoadQFragments<kD>(qp + warp * 16 * kLd<kD>, qf);
  LoadQFragments<64>(pp + warp * 16 * kLd<64>, pf);
  float s[8][4], acc[kD / 8][4];
  ScoreTile<kD>(qf, kp, s);
  StoreFragments(s, s_mma);
  ScoreTileWg<kD>(qf, ksw, s);
  StoreFragments(s, s_wg);
  const auto init = [&] {
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = warp * 16 + lane / 4 + 8 * (e >> 1), col = n * 8 + 2 * (lane % 4) + (e & 1);
        acc[n][e] = c[r * kD + col];
      }
    }
  };
  init();
  AccumulatePv<kD>(pf, vp, acc);
  StoreFragments(acc, o_mma);
  init();
  AccumulatePvWg<kD>(pf, vsw, acc);
  StoreFragments(acc, o_wg);
#else
  __trap();
#endif
}

template <int kD>
cudaError_t LaunchProbe(cudaStream_t stream, const bf16* q, const bf16* k, const bf16* p,
                        const bf16* v, const float* c, float* s_wg, float* s_mma, float* o_wg,
                        float* o_mma) {
  const cudaError_t e =
      cudaFuncSetAttribute(&ProbeKernel<kD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(ProbeSmem<kD>::kBytes));
  if (e != cudaSuccess) return e;
  ProbeKernel<kD>
      <<<1, kThreads, ProbeSmem<kD>::kBytes, stream>>>(q, k, p, v, c, s_wg, s_mma, o_wg, o_mma);
  return cudaGetLastError();
}

bool DeviceIsSm90() {
  static const bool sm90 = [] {
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return false;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
      return false;
    }
    const char* env = std::getenv("TANDEM_ATTENTION_WGMMA");
    const bool off = env != nullptr && std::strcmp(env, "0") == 0;
    return major == 9 && minor == 0 && !off;
  }();
  return sm90;
}

}  // namespace

bool SoftmaxAttentionUsesWgmma(int64_t head_dim) {
#if defined(TANDEM_ATTENTION_WGMMA)
  return (head_dim == 64 || head_dim == 128) && DeviceIsSm90();
#else
  return false;
#endif
}

absl::Status SoftmaxAttentionWgmmaProbe(const Context& ctx, int64_t head_dim, const Tensor& q,
                                        const Tensor& k, const Tensor& p, const Tensor& v,
                                        const Tensor& c, Tensor& s_wgmma, Tensor& s_mma,
                                        Tensor& o_wgmma, Tensor& o_mma) {
  if (!SoftmaxAttentionUsesWgmma(head_dim)) {
    return absl::UnimplementedError("the wgmma path is not available here");
  }
  const int64_t d = head_dim;
  const auto dev = Device::kCUDA;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(q, "q", DType::kBF16, {kRows, d}, dev));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(k, "k", DType::kBF16, {kRows, d}, dev));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(p, "p", DType::kBF16, {kRows, kTile}, dev));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(v, "v", DType::kBF16, {kRows, d}, dev));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(c, "c", DType::kF32, {kRows, d}, dev));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(s_wgmma, "s_wgmma", DType::kF32, {kRows, kTile}, dev));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(s_mma, "s_mma", DType::kF32, {kRows, kTile}, dev));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(o_wgmma, "o_wgmma", DType::kF32, {kRows, d}, dev));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(o_mma, "o_mma", DType::kF32, {kRows, d}, dev));
  const auto launch = [&](auto kd) {
    constexpr int kD = decltype(kd)::value;
    return LaunchProbe<kD>(StreamOf(ctx), q.data<bf16>(), k.data<bf16>(), p.data<bf16>(),
                           v.data<bf16>(), c.data<float>(), s_wgmma.data<float>(),
                           s_mma.data<float>(), o_wgmma.data<float>(), o_mma.data<float>());
  };
  TANDEM_CUDA_RETURN_IF_ERROR(d == 128 ? launch(std::integral_constant<int, 128>())
                                       : launch(std::integral_constant<int, 64>()));
  return Synchronize(ctx);
}

}  // namespace tandem::kernels::cuda
