// CUDA MoE router: one thread per token runs the CPU's scans (group scores from the top-2 biased
// scores, topk_group groups kept, top-k experts among them, weights from the unbiased scores).
// Biased scores are recomputed from the stored scores (one fp32 add, the same bits each time);
// kept groups and chosen experts are bit masks in registers / local memory.
#include <cuda_runtime.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/moe_route/moe_route_cuda.h"

namespace tandem::kernels::cuda {
namespace {

constexpr int kThreads = 128;
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

__global__ void __launch_bounds__(kThreads) FwdKernel(const FwdArgs a) {
  const int64_t t = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (t >= a.t) return;
  const float* lg = a.logits + t * a.e;
  float* sc = a.scores + t * a.e;
  for (int e = 0; e < a.e; ++e) sc[e] = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-lg[e])));
  const auto b = [&](int e) { return __fadd_rn(sc[e], a.bias[e]); };
  float group_score[kMoeRouteMaxGroups];
  for (int g = 0; g < a.n_group; ++g) {
    group_score[g] = GroupScore([&](int i) { return b(g * a.group_size + i); }, a.group_size);
  }
  uint64_t kept = 0;  // bit g: group g kept
  for (int r = 0; r < a.topk_group; ++r) {
    int best = -1;
    for (int g = 0; g < a.n_group; ++g) {
      if (!(kept >> g & 1) && (best < 0 || group_score[g] > group_score[best])) best = g;
    }
    kept |= uint64_t{1} << best;
  }
  uint32_t taken[kMoeRouteMaxExperts / 32] = {};
  int32_t* idx = a.idx + t * a.k;
  for (int k = 0; k < a.k; ++k) {
    int best = -1;
    float best_b = 0.0f;
    for (int e = 0; e < a.e; ++e) {
      if (!(kept >> (e / a.group_size) & 1) || (taken[e / 32] >> (e % 32) & 1)) continue;
      const float v = b(e);
      if (best < 0 || v > best_b) best = e, best_b = v;
    }
    taken[best / 32] |= 1u << (best % 32);
    idx[k] = best;
  }
  float sum = 0.0f;  // Σ over k ascending
  for (int k = 0; k < a.k; ++k) sum = __fadd_rn(sum, sc[idx[k]]);
  const float denom = __fadd_rn(sum, kNormEpsilon);
  for (int k = 0; k < a.k; ++k) {
    const float s = sc[idx[k]];
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

unsigned Blocks(int64_t t) { return static_cast<unsigned>((t + kThreads - 1) / kThreads); }

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
  FwdKernel<<<Blocks(t), kThreads, 0, StreamOf(ctx)>>>(a);
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
  BwdKernel<<<Blocks(t), kThreads, 0, StreamOf(ctx)>>>(a);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace tandem::kernels::cuda
