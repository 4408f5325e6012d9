// CUDA MoE router, one warp per token: the lanes compute the scores side by side into shared
// memory, lane g scores group g with the CPU's scan (top-2 of the biased scores), every lane keeps
// the same topk_group groups, and each of the k rounds picks the best remaining expert by a warp
// argmax (larger biased score, then the lower index: the CPU scan's choice for scores that are not
// NaN). Weights come from the unbiased scores, summed over k ascending by one lane. Biased scores
// are recomputed nowhere: each is one fp32 add, stored once.
#include <cuda_runtime.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/moe_route/moe_route_cuda.h"

namespace tandem::kernels::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kFwdWarps = 4;  // tokens per forward block
constexpr float kNormEpsilon = 1e-20f;

struct FwdArgs {
  int64_t t;
  int e, k, n_group, topk_group, group_size;
  float scale;
  bool norm;
  const float* logits;  // [T, E]
  const float* bias;    // [E]
  int32_t* idx;         // [T, K]
  float* weight;        // [T, K]
  float* scores;        // [T, E]
};

// Sum of the two largest of b(0..n), with the CPU's comparisons; a group of one scores b(0).
template <typename B>
__device__ float GroupScore(B b, int n) {
  if (n == 1) return b(0);
  const float b0 = b(0), b1 = b(1);
  float first = b0 >= b1 ? b0 : b1, second = b0 >= b1 ? b1 : b0;
  for (int i = 2; i < n; ++i) {
    const float v = b(i);
    if (v > first) {
      second = first;
      first = v;
    } else if (v > second) {
      second = v;
    }
  }
  return __fadd_rn(first, second);
}

// Whether candidate (v, e) beats (best_v, best) for the top-k: a larger score, or the same score
// and a lower index; best < 0 is no candidate.
__device__ __forceinline__ bool Beats(float v, int e, float best_v, int best) {
  return e >= 0 && (best < 0 || v > best_v || (v == best_v && e < best));
}

// Per warp: the token's scores and biased scores, its group scores and its chosen experts.
struct RouteSmem {
  float s[kMoeRouteMaxExperts], b[kMoeRouteMaxExperts], group[kMoeRouteMaxGroups];
  int32_t chosen[kMoeRouteMaxTopK];
};

__global__ void __launch_bounds__(32 * kFwdWarps) FwdKernel(const FwdArgs a) {
  __shared__ RouteSmem smem[kFwdWarps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t t = int64_t{blockIdx.x} * kFwdWarps + warp;
  if (t >= a.t) return;  // whole warps leave: no barrier below spans warps
  RouteSmem& w = smem[warp];
  const float* lg = a.logits + t * a.e;
  float* sc = a.scores + t * a.e;
  for (int e = lane; e < a.e; e += 32) {
    const float s = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-lg[e])));
    sc[e] = s;
    w.s[e] = s;
    w.b[e] = __fadd_rn(s, a.bias[e]);
  }
  __syncwarp();
  for (int g = lane; g < a.n_group; g += 32) {
    w.group[g] = GroupScore([&](int i) { return w.b[g * a.group_size + i]; }, a.group_size);
  }
  __syncwarp();
  uint64_t kept = 0;  // bit g: group g kept (every lane the same)
  for (int r = 0; r < a.topk_group; ++r) {
    int best = -1;
    for (int g = 0; g < a.n_group; ++g) {
      if (!(kept >> g & 1) && (best < 0 || w.group[g] > w.group[best])) best = g;
    }
    kept |= uint64_t{1} << best;
  }
  uint32_t taken = 0;  // bit j: expert lane + 32·j already chosen
  for (int k = 0; k < a.k; ++k) {
    float best_v = 0.0f;
    int best = -1;
    for (int j = 0, e = lane; e < a.e; ++j, e += 32) {
      if (!(kept >> (e / a.group_size) & 1) || (taken >> j & 1)) continue;
      if (Beats(w.b[e], e, best_v, best)) best_v = w.b[e], best = e;
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      const float v = __shfl_xor_sync(0xffffffffu, best_v, offset);
      const int e = __shfl_xor_sync(0xffffffffu, best, offset);
      if (Beats(v, e, best_v, best)) best_v = v, best = e;
    }
    if (best % 32 == lane) taken |= 1u << (best / 32);
    if (lane == 0) w.chosen[k] = best;
  }
  __syncwarp();
  float sum = 0.0f;  // Σ over k ascending (every lane the same)
  for (int k = 0; k < a.k; ++k) sum = __fadd_rn(sum, w.s[w.chosen[k]]);
  const float denom = __fadd_rn(sum, kNormEpsilon);
  for (int k = lane; k < a.k; k += 32) {
    const float s = w.s[w.chosen[k]];
    a.idx[t * a.k + k] = w.chosen[k];
    a.weight[t * a.k + k] = __fmul_rn(a.norm ? __fdiv_rn(s, denom) : s, a.scale);
  }
}

struct BwdArgs {
  int64_t t;
  int e, k;
  float scale;
  bool norm;
  const float* scores;
  const int32_t* idx;
  const float* dw;
  float* dlogits;
};

__global__ void __launch_bounds__(kThreads) BwdKernel(const BwdArgs a) {
  const int64_t t = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (t >= a.t) return;
  const float* s = a.scores + t * a.e;
  const int32_t* idx = a.idx + t * a.k;
  const float* dw = a.dw + t * a.k;
  float* dl = a.dlogits + t * a.e;
  for (int e = 0; e < a.e; ++e) dl[e] = 0.0f;
  float sum = 0.0f, dot = 0.0f;  // k ascending
  for (int k = 0; k < a.k; ++k) {
    if (idx[k] < 0 || idx[k] >= a.e) continue;
    sum = __fadd_rn(sum, s[idx[k]]);
    dot = __fadd_rn(dot, __fmul_rn(dw[k], s[idx[k]]));
  }
  const float denom = __fadd_rn(sum, kNormEpsilon);
  for (int k = 0; k < a.k; ++k) {
    if (idx[k] < 0 || idx[k] >= a.e) continue;
    const float pj = s[idx[k]];
    const float dp =
        a.norm ? __fdiv_rn(__fmul_rn(a.scale, __fsub_rn(dw[k], __fdiv_rn(dot, denom))), denom)
               : __fmul_rn(a.scale, dw[k]);
    dl[idx[k]] = __fadd_rn(dl[idx[k]], __fmul_rn(dp, __fmul_rn(pj, __fsub_rn(1.0f, pj))));
  }
}

absl::Status CheckParams(const MoeRouteParams& p) {
  TANDEM_CHECK_ARG(p.num_experts > 0 && p.num_experts <= kMoeRouteMaxExperts,
                   "num_experts: must be in [1, ", kMoeRouteMaxExperts, "], got ", p.num_experts);
  TANDEM_CHECK_ARG(p.top_k > 0 && p.top_k <= kMoeRouteMaxTopK, "top_k: must be in [1, ",
                   kMoeRouteMaxTopK, "], got ", p.top_k);
  TANDEM_CHECK_ARG(
      p.n_group > 0 && p.n_group <= kMoeRouteMaxGroups && p.num_experts % p.n_group == 0,
      "n_group: must divide num_experts (", p.num_experts, ") and be at most ", kMoeRouteMaxGroups,
      ", got ", p.n_group);
  TANDEM_CHECK_ARG(p.topk_group > 0 && p.topk_group <= p.n_group,
                   "topk_group: must be in [1, n_group = ", p.n_group, "], got ", p.topk_group);
  const int64_t kept = p.topk_group * (p.num_experts / p.n_group);
  TANDEM_CHECK_ARG(p.top_k <= kept, "top_k: must be <= the experts in the kept groups (", kept,
                   "), got ", p.top_k);
  return absl::OkStatus();
}

unsigned Blocks(int64_t t, int per_block) {
  return static_cast<unsigned>((t + per_block - 1) / per_block);
}

}  // namespace

absl::Status MoeRouteFwd(const Context& ctx, const MoeRouteParams& p, const Tensor& logits,
                         const Tensor& expert_bias, Tensor& topk_idx, Tensor& topk_weight,
                         Tensor& scores) {
  TANDEM_RETURN_IF_ERROR(CheckParams(p));
  const int64_t e = p.num_experts, k = p.top_k;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(logits, "logits", DType::kF32, {-1, e}, Device::kCUDA));
  const int64_t t = logits.dim(0);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(expert_bias, "expert_bias", DType::kF32, {e}, Device::kCUDA));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(topk_idx, "topk_idx", DType::kI32, {t, k}, Device::kCUDA));
  TANDEM_RETURN_IF_ERROR(
      ExpectTensor(topk_weight, "topk_weight", DType::kF32, {t, k}, Device::kCUDA));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(scores, "scores", DType::kF32, {t, e}, Device::kCUDA));
  if (t == 0) return absl::OkStatus();
  const FwdArgs a{t,
                  static_cast<int>(e),
                  static_cast<int>(k),
                  static_cast<int>(p.n_group),
                  static_cast<int>(p.topk_group),
                  static_cast<int>(e / p.n_group),
                  p.routed_scaling_factor,
                  p.norm_topk_prob,
                  logits.data<float>(),
                  expert_bias.data<float>(),
                  topk_idx.data<int32_t>(),
                  topk_weight.data<float>(),
                  scores.data<float>()};
  FwdKernel<<<Blocks(t, kFwdWarps), 32 * kFwdWarps, 0, StreamOf(ctx)>>>(a);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status MoeRouteBwd(const Context& ctx, const MoeRouteParams& p, const Tensor& scores,
                         const Tensor& topk_idx, const Tensor& dtopk_weight, Tensor& dlogits) {
  TANDEM_RETURN_IF_ERROR(CheckParams(p));
  const int64_t e = p.num_experts, k = p.top_k;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(scores, "scores", DType::kF32, {-1, e}, Device::kCUDA));
  const int64_t t = scores.dim(0);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(topk_idx, "topk_idx", DType::kI32, {t, k}, Device::kCUDA));
  TANDEM_RETURN_IF_ERROR(
      ExpectTensor(dtopk_weight, "dtopk_weight", DType::kF32, {t, k}, Device::kCUDA));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dlogits, "dlogits", DType::kF32, {t, e}, Device::kCUDA));
  if (t == 0) return absl::OkStatus();
  const BwdArgs a{t,
                  static_cast<int>(e),
                  static_cast<int>(k),
                  p.routed_scaling_factor,
                  p.norm_topk_prob,
                  scores.data<float>(),
                  topk_idx.data<int32_t>(),
                  dtopk_weight.data<float>(),
                  dlogits.data<float>()};
  BwdKernel<<<Blocks(t, kThreads), kThreads, 0, StreamOf(ctx)>>>(a);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace tandem::kernels::cuda
