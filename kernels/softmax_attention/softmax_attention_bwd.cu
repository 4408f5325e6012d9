// CUDA backward of causal GQA softmax attention (FlashAttention-2 style, mma.sync bf16 tensor
// cores, fp32 accumulation). Two launches: δ = rowsum(dO ∘ O) per row (a fixed warp reduction),
// then one kernel whose blocks are dK/dV items and dQ items (attention_bwd_tiles.cuh), longest
// first, so the few long dK/dV items of a causal pass overlap the many dQ items. Every gradient
// element is accumulated by one warp in a fixed order and stored once: no atomics, and the bits do
// not depend on the grid, on the order blocks run, or on the other sequences of the pack.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_device.cuh"
#include "kernels/core/cuda_util.h"
#include "kernels/core/kernel_smem.h"
#include "kernels/core/status_macros.h"
#include "kernels/softmax_attention/attention_bwd_tiles.cuh"
#include "kernels/softmax_attention/attention_bwd_wgmma_split.cuh"
#include "kernels/softmax_attention/attention_internal.h"
#include "kernels/softmax_attention/attention_wgmma_probe.h"
#include "kernels/softmax_attention/softmax_attention_bwd_cuda.h"

namespace tandem::kernels::cuda {
namespace {

using namespace attention_bwd;  // NOLINT: the internal tile vocabulary

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kDeltaThreads = 256;

// One warp per (position, head) row: δ as a lane-strided FMA chain, then a butterfly (every lane
// ends with the same bits). Also stores lse·log2(e) head-major for the tile loads.
__global__ void DeltaKernel(FloatPtr o, FloatPtr d_o, const float* lse, float* lse2, float* delta,
                            int t, int h, int d) {
  const int64_t row = int64_t{blockIdx.x} * (kDeltaThreads / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= int64_t{t} * h) return;
  float acc = 0.0f;
  for (int e = lane; e < d; e += 32)
    acc = __fmaf_rn(d_o.Load(row * d + e), o.Load(row * d + e), acc);
#pragma unroll
  for (int off = 16; off > 0; off /= 2)
    acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, off));
  if (lane == 0) {
    const int64_t pos = row / h, head = row % h, out = head * t + pos;
    delta[out] = acc;
    lse2[out] = __fmul_rn(lse[row], kLog2e);
  }
}

// dK/dV of 64 keys: the group's heads, then the query tiles from the diagonal on.
template <int kD>
__device__ void DkDvItem(const BwdArgs& a, const WorkItem& it, const Smem<kD>& sm) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
  const int len = it.seq_len, j0 = it.tile * kRows, kvh = it.head;
  const int q_tiles = (len + kRows - 1) / kRows - it.tile, steps = a.group * q_tiles;
  const int64_t kv_stride = int64_t{a.hkv} * kD, q_stride = int64_t{a.h} * kD;
  const int64_t kv_base = (int64_t{it.seq_start + j0} * a.hkv + kvh) * kD;
  LoadRows<kD>(sm.Fixed(0), a.k + kv_base, kv_stride, len - j0);
  LoadRows<kD>(sm.Fixed(1), a.v + kv_base, kv_stride, len - j0);
  const auto issue = [&](int step) {
    const int head = kvh * a.group + step / q_tiles, i0 = (it.tile + step % q_tiles) * kRows;
    const int s = step % 2;
    const int64_t q_base = (int64_t{it.seq_start + i0} * a.h + head) * kD;
    LoadRows<kD>(sm.Stream(s, 0), a.q + q_base, q_stride, len - i0);
    LoadRows<kD>(sm.Stream(s, 1), a.d_o + q_base, q_stride, len - i0);
    LoadVecs(sm.Vec(s, 0), sm.Vec(s, 1), a, int64_t{head} * a.t + it.seq_start + i0, len - i0);
  };
  issue(0);
  CpAsyncCommit();
  float dk[kD / 8][4] = {}, dv[kD / 8][4] = {};
  const int jw = j0 + 16 * warp;  // the warp's first key
  for (int step = 0; step < steps; ++step) {
    if (step + 1 < steps) issue(step + 1);
    CpAsyncCommit();
    CpAsyncWait<1>();  // this step's tiles (and K, V) have landed for this thread ...
    __syncthreads();   // ... and for every thread
    const int s = step % 2, i0 = (it.tile + step % q_tiles) * kRows;
    const __nv_bfloat16 *sq = sm.Stream(s, 0), *sdo = sm.Stream(s, 1);
    const float *slse = sm.Vec(s, 0), *sdelta = sm.Vec(s, 1);
#pragma unroll 1
    for (int c = 0; c < kRows; c += kChunk) {
      // Warp-uniform skips that depend on sequence positions only: rows past the end, or every
      // query of the chunk before the warp's first key (all of P is zero).
      if (i0 + c >= len || i0 + c + kChunk - 1 < jw) continue;
      float st[4][4] = {}, dpt[4][4] = {};  // Sᵀ, dPᵀ: 16 keys × 32 queries
      TwoScoreTiles<kD>(sm.Fixed(0), sq, sm.Fixed(1), sdo, 16 * warp, c, st, dpt);
#pragma unroll
      for (int n = 0; n < 4; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = jw + g + 8 * (e / 2), qi = c + 8 * n + 2 * t4 + e % 2;
          const bool live = i0 + qi >= key && i0 + qi < len;
          ProbsAndDs(st[n][e], dpt[n][e], live, slse[qi], sdelta[qi], a.scale_log2);
        }
      }
      AccumulateXB<kD>(st, sdo, c, dv);
      AccumulateXB<kD>(dpt, sq, c, dk);
    }
    __syncthreads();  // the next issue overwrites this stage
  }
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = jw + g + 8 * (e / 2);
      if (key >= len) continue;
      const int64_t off = (int64_t{it.seq_start + key} * a.hkv + kvh) * kD + 8 * n + 2 * t4 + e % 2;
      a.dk.Store(off, __fmul_rn(dk[n][e], a.scale));
      a.dv.Store(off, dv[n][e]);
    }
  }
}

// dQ of 64 query rows of one head: KV tiles 0..diagonal ascending.
template <int kD>
__device__ void DqItem(const BwdArgs& a, const WorkItem& it, const Smem<kD>& sm) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
  const int len = it.seq_len, i0 = it.tile * kRows, head = it.head, kvh = head / a.group;
  const int64_t kv_stride = int64_t{a.hkv} * kD, q_stride = int64_t{a.h} * kD;
  const int64_t q_base = (int64_t{it.seq_start + i0} * a.h + head) * kD;
  LoadRows<kD>(sm.Fixed(0), a.q + q_base, q_stride, len - i0);
  LoadRows<kD>(sm.Fixed(1), a.d_o + q_base, q_stride, len - i0);
  LoadVecs(sm.Vec(0, 0), sm.Vec(0, 1), a, int64_t{head} * a.t + it.seq_start + i0, len - i0);
  const auto issue = [&](int kt) {
    const int64_t kv_base = (int64_t{it.seq_start + kt * kRows} * a.hkv + kvh) * kD;
    LoadRows<kD>(sm.Stream(kt % 2, 0), a.k + kv_base, kv_stride, len - kt * kRows);
    LoadRows<kD>(sm.Stream(kt % 2, 1), a.v + kv_base, kv_stride, len - kt * kRows);
  };
  issue(0);
  CpAsyncCommit();
  float dq[kD / 8][4] = {};
  const int iw = i0 + 16 * warp, last = min(iw + 15, len - 1);  // the warp's live query rows
  const int r0 = 16 * warp + g, r1 = r0 + 8;                    // this thread's rows in the tile
  for (int kt = 0; kt <= it.tile; ++kt) {
    if (kt + 1 <= it.tile) issue(kt + 1);
    CpAsyncCommit();
    CpAsyncWait<1>();
    __syncthreads();
    const __nv_bfloat16 *sk = sm.Stream(kt % 2, 0), *sv = sm.Stream(kt % 2, 1);
    const float lse_r[2] = {sm.Vec(0, 0)[r0], sm.Vec(0, 0)[r1]};
    const float delta_r[2] = {sm.Vec(0, 1)[r0], sm.Vec(0, 1)[r1]};
    const int j0 = kt * kRows;
#pragma unroll 1
    for (int c = 0; c < kRows; c += kChunk) {
      if (j0 + c > last) continue;        // every key of the chunk after the warp's last live row
      float s[4][4] = {}, dp[4][4] = {};  // S, dP: 16 queries × 32 keys
      TwoScoreTiles<kD>(sm.Fixed(0), sk, sm.Fixed(1), sv, 16 * warp, c, s, dp);
#pragma unroll
      for (int n = 0; n < 4; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int qi = iw + g + 8 * (e / 2), key = j0 + c + 8 * n + 2 * t4 + e % 2;
          const bool live = key <= qi && qi < len;
          ProbsAndDs(s[n][e], dp[n][e], live, lse_r[e / 2], delta_r[e / 2], a.scale_log2);
        }
      }
      AccumulateXB<kD>(dp, sk, c, dq);
    }
    __syncthreads();
  }
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int qi = iw + g + 8 * (e / 2);
      if (qi >= len) continue;
      const int64_t off = (int64_t{it.seq_start + qi} * a.h + head) * kD + 8 * n + 2 * t4 + e % 2;
      a.dq.Store(off, __fmul_rn(dq[n][e], a.scale));
    }
  }
}

template <int kD>
__global__ void __launch_bounds__(kThreads, 2) BwdKernel(BwdArgs a, const WorkItem* items) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const Smem<kD> sm{reinterpret_cast<__nv_bfloat16*>(smem_raw)};
  const WorkItem it = items[blockIdx.x];
  if (it.kind == kDkDv) {
    DkDvItem<kD>(a, it, sm);
  } else {
    DqItem<kD>(a, it, sm);
  }
}

// All items of the pass, the most expensive first (cost in 64×64×D mma tiles). The order only
// schedules: each item's result is the same wherever it runs.
std::vector<WorkItem> MakeItems(const std::vector<int32_t>& cu, int h, int hkv) {
  std::vector<std::pair<int64_t, WorkItem>> all;
  const int group = h / hkv;
  for (size_t b = 0; b + 1 < cu.size(); ++b) {
    const int len = cu[b + 1] - cu[b], tiles = (len + kRows - 1) / kRows;
    for (int tile = 0; tile < tiles; ++tile) {
      for (int g = 0; g < hkv; ++g) {
        all.push_back({int64_t{4} * group * (tiles - tile), {kDkDv, cu[b], len, tile, g}});
      }
      for (int head = 0; head < h; ++head) {
        all.push_back({int64_t{3} * (tile + 1), {kDq, cu[b], len, tile, head}});
      }
    }
  }
  return internal::CostliestFirst(std::move(all));
}

template <int kD>
cudaError_t LaunchBwd(cudaStream_t stream, const BwdArgs& a, const WorkItem* items, int n) {
  const cudaError_t attr = AllowSmem<&BwdKernel<kD>>(static_cast<int>(Smem<kD>::kBytes));
  if (attr != cudaSuccess) return attr;
  BwdKernel<kD><<<n, kThreads, Smem<kD>::kBytes, stream>>>(a, items);
  return cudaGetLastError();
}

// The split wgmma items: per sequence and 128-row tile, the kv heads' dK/dV items and the query
// heads' dQ items, the most expensive first (cost in 128×64×128 wgmma products: four per dK/dV
// step, three per dQ step). The order only schedules.
std::vector<WorkItem> MakeSplitItems(const std::vector<int32_t>& cu, int h, int hkv) {
  std::vector<std::pair<int64_t, WorkItem>> all;
  const int group = h / hkv;
  for (size_t b = 0; b + 1 < cu.size(); ++b) {
    const int len = cu[b + 1] - cu[b], tiles = (len + 127) / 128, q64 = (len + 63) / 64;
    for (int tile = 0; tile < tiles; ++tile) {
      for (int g = 0; g < hkv; ++g) {
        all.push_back({int64_t{4} * group * (q64 - 2 * tile), {kDkDv, cu[b], len, tile, g}});
      }
      for (int head = 0; head < h; ++head) {
        all.push_back({int64_t{3} * std::min(2 * tile + 2, q64), {kDq, cu[b], len, tile, head}});
      }
    }
  }
  return internal::CostliestFirst(std::move(all));
}

cudaError_t LaunchSplit(cudaStream_t stream, const BwdArgs& a, const WorkItem* items, int n) {
  const cudaError_t attr = AllowSmem<&BwdWgmmaSplitKernel>(static_cast<int>(SplitSmem::kBytes));
  if (attr != cudaSuccess) return attr;
  BwdWgmmaSplitKernel<<<n, kSplitThreads, SplitSmem::kBytes, stream>>>(a, items);
  return cudaGetLastError();
}

absl::Status ExpectFloat(const Tensor& t, const char* name, std::initializer_list<int64_t> shape) {
  const bool is_float = t.dtype() == DType::kF32 || t.dtype() == DType::kBF16;
  return ExpectTensor(t, name, is_float ? t.dtype() : DType::kF32, shape, Device::kCUDA);
}

// The tensor itself when it is bf16 with 16-byte aligned storage (the tile loads' cp.async needs
// both), else a bf16 copy (f32 operands are rounded to nearest even, as the mmas would).
absl::StatusOr<Tensor> MmaOperand(const Context& ctx, const Tensor& t) {
  if (t.dtype() == DType::kBF16 && reinterpret_cast<uintptr_t>(t.raw_data()) % 16 == 0) return t;
  return ToBf16(ctx, t);
}

}  // namespace

bool SoftmaxAttentionBwdWgmmaAvailable(int64_t head_dim) {
  return head_dim == 128 && SoftmaxAttentionUsesWgmma(head_dim);
}

SoftmaxAttentionBwdKernel SoftmaxAttentionBwdDefaultKernel(int64_t head_dim) {
  // The split wgmma kernel measured 1.5–1.6x the mma.sync one on the H200 (docs/benchmarks.md);
  // TANDEM_ATTENTION_BWD_WGMMA=0 picks mma.sync.
  static const bool env_mma = [] {
    const char* env = std::getenv("TANDEM_ATTENTION_BWD_WGMMA");
    return env != nullptr && std::strcmp(env, "0") == 0;
  }();
  return !env_mma && SoftmaxAttentionBwdWgmmaAvailable(head_dim)
             ? SoftmaxAttentionBwdKernel::kWgmmaSplit
             : SoftmaxAttentionBwdKernel::kMmaSync;
}

bool SoftmaxAttentionBwdUsesWgmma(int64_t head_dim) {
  return SoftmaxAttentionBwdDefaultKernel(head_dim) != SoftmaxAttentionBwdKernel::kMmaSync;
}

absl::Status SoftmaxAttentionBwd(const Context& ctx, const SoftmaxAttentionParams& p,
                                 const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& cu_seqlens, const Tensor& o, const Tensor& lse,
                                 const Tensor& d_o, Tensor& dq, Tensor& dk, Tensor& dv) {
  return SoftmaxAttentionBwdWithKernel(SoftmaxAttentionBwdKernel::kDefault, ctx, p, q, k, v,
                                       cu_seqlens, o, lse, d_o, dq, dk, dv);
}

absl::Status SoftmaxAttentionBwdWithKernel(SoftmaxAttentionBwdKernel kernel, const Context& ctx,
                                           const SoftmaxAttentionParams& p, const Tensor& q,
                                           const Tensor& k, const Tensor& v,
                                           const Tensor& cu_seqlens, const Tensor& o,
                                           const Tensor& lse, const Tensor& d_o, Tensor& dq,
                                           Tensor& dk, Tensor& dv) {
  TANDEM_RETURN_IF_ERROR(internal::CheckParams(p));
  const int64_t H = p.num_heads, Hkv = p.num_kv_heads, D = p.head_dim;
  TANDEM_CHECK_ARG(SoftmaxAttentionBwdHeadDimSupported(D),
                   "p.head_dim: the CUDA backward takes 32, 64 or 128, got ", D);
  TANDEM_CHECK_ARG(
      kernel != SoftmaxAttentionBwdKernel::kWgmmaSplit || SoftmaxAttentionBwdWgmmaAvailable(D),
      "kernel: the wgmma backward needs head_dim 128 on an sm_90a build and device, got ", D);
  TANDEM_RETURN_IF_ERROR(ExpectFloat(q, "q", {-1, H, D}));
  const int64_t T = q.dim(0);
  TANDEM_RETURN_IF_ERROR(ExpectFloat(k, "k", {T, Hkv, D}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(v, "v", {T, Hkv, D}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(o, "o", {T, H, D}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(lse, "lse", DType::kF32, {T, H}, Device::kCUDA));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(d_o, "d_o", {T, H, D}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(dq, "dq", {T, H, D}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(dk, "dk", {T, Hkv, D}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(dv, "dv", {T, Hkv, D}));
  TANDEM_CHECK_ARG(T * std::max(H, Hkv) * D < (int64_t{1} << 31) && T * H < (int64_t{1} << 31),
                   "q: too many rows for 32-bit tile indices, T = ", T);
  TANDEM_ASSIGN_OR_RETURN(std::vector<int32_t> cu,
                          kernels::internal::HostSeqlens(ctx, cu_seqlens, T));
  if (T == 0) return absl::OkStatus();
  TANDEM_ASSIGN_OR_RETURN(Tensor q16, MmaOperand(ctx, q));
  TANDEM_ASSIGN_OR_RETURN(Tensor k16, MmaOperand(ctx, k));
  TANDEM_ASSIGN_OR_RETURN(Tensor v16, MmaOperand(ctx, v));
  TANDEM_ASSIGN_OR_RETURN(Tensor do16, MmaOperand(ctx, d_o));
  if (kernel == SoftmaxAttentionBwdKernel::kDefault) kernel = SoftmaxAttentionBwdDefaultKernel(D);
  const bool split = kernel == SoftmaxAttentionBwdKernel::kWgmmaSplit;
  const std::vector<WorkItem> items =
      split ? MakeSplitItems(cu, static_cast<int>(H), static_cast<int>(Hkv))
            : MakeItems(cu, static_cast<int>(H), static_cast<int>(Hkv));
  const cudaStream_t stream = StreamOf(ctx);
  // Scratch: lse2 and delta [H, T] each, then the work list.
  const size_t vec_bytes = sizeof(float) * T * H, item_bytes = items.size() * sizeof(WorkItem);
  char* scratch = nullptr;
  TANDEM_CUDA_RETURN_IF_ERROR(
      cudaMallocAsync(reinterpret_cast<void**>(&scratch), 2 * vec_bytes + item_bytes, stream));
  BwdArgs a;
  a.q = static_cast<const __nv_bfloat16*>(q16.raw_data());
  a.k = static_cast<const __nv_bfloat16*>(k16.raw_data());
  a.v = static_cast<const __nv_bfloat16*>(v16.raw_data());
  a.d_o = static_cast<const __nv_bfloat16*>(do16.raw_data());
  a.lse2 = reinterpret_cast<float*>(scratch);
  a.delta = reinterpret_cast<float*>(scratch + vec_bytes);
  a.dq = ToFloatPtr(dq), a.dk = ToFloatPtr(dk), a.dv = ToFloatPtr(dv);
  a.t = static_cast<int>(T), a.h = static_cast<int>(H), a.hkv = static_cast<int>(Hkv);
  a.group = static_cast<int>(H / Hkv);
  a.scale = p.scale, a.scale_log2 = p.scale * kLog2e;
  auto* dev_items = reinterpret_cast<WorkItem*>(scratch + 2 * vec_bytes);
  const absl::Status uploaded = UploadAsync(dev_items, items.data(), item_bytes, stream);
  cudaError_t e = cudaSuccess;
  if (uploaded.ok()) {
    const int64_t rows = T * H, per_block = kDeltaThreads / 32;
    DeltaKernel<<<static_cast<unsigned>((rows + per_block - 1) / per_block), kDeltaThreads, 0,
                  stream>>>(ToFloatPtr(o), ToFloatPtr(d_o), lse.data<float>(),
                            const_cast<float*>(a.lse2), const_cast<float*>(a.delta), a.t, a.h,
                            static_cast<int>(D));
    e = cudaGetLastError();
  }
  if (uploaded.ok() && e == cudaSuccess && !items.empty()) {
    const int n = static_cast<int>(items.size());
    e = split     ? LaunchSplit(stream, a, dev_items, n)
        : D == 32 ? LaunchBwd<32>(stream, a, dev_items, n)
        : D == 64 ? LaunchBwd<64>(stream, a, dev_items, n)
                  : LaunchBwd<128>(stream, a, dev_items, n);
  }
  TANDEM_CUDA_RETURN_IF_ERROR(cudaFreeAsync(scratch, stream));
  TANDEM_RETURN_IF_ERROR(uploaded);
  TANDEM_CUDA_RETURN_IF_ERROR(e);
  // The bf16 copies (if any) are freed when this returns; keep them alive until the kernels ran.
  if (q16.raw_data() != q.raw_data() || k16.raw_data() != k.raw_data() ||
      v16.raw_data() != v.raw_data() || do16.raw_data() != d_o.raw_data()) {
    TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  }
  return absl::OkStatus();
}

}  // namespace tandem::kernels::cuda
