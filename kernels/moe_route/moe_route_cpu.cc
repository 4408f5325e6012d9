// CPU MoE router: sigmoid scores, group-limited top-k on the biased scores, weights from the
// unbiased scores. fp32 throughout (contract rule 4). Every selection is a sequence of explicit
// "strictly greater wins" scans in ascending index order, so ties go to the lower group / expert
// index and the result never depends on a sort's stability or on the thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/dispatch.h"
#include "kernels/core/status_macros.h"
#include "kernels/moe_route/moe_route.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/moe_route/moe_route_cuda.h"
#endif

namespace tandem::kernels {
namespace {

constexpr float kNormEpsilon = 1e-20f;

absl::Status CheckParams(const MoeRouteParams& p) {
  TANDEM_CHECK_ARG(p.num_experts > 0, "num_experts: must be > 0, got ", p.num_experts);
  TANDEM_CHECK_ARG(p.top_k > 0, "top_k: must be > 0, got ", p.top_k);
  TANDEM_CHECK_ARG(p.n_group > 0 && p.num_experts % p.n_group == 0,
                   "n_group: must divide num_experts (", p.num_experts, "), got ", p.n_group);
  TANDEM_CHECK_ARG(p.topk_group > 0 && p.topk_group <= p.n_group,
                   "topk_group: must be in [1, n_group = ", p.n_group, "], got ", p.topk_group);
  int64_t kept = p.topk_group * (p.num_experts / p.n_group);
  TANDEM_CHECK_ARG(p.top_k <= kept, "top_k: must be <= the experts in the kept groups (", kept,
                   "), got ", p.top_k);
  return absl::OkStatus();
}

// Sum of the two largest values of b[0, n); a group of one scores its single value.
float GroupScore(const float* b, int64_t n) {
  if (n == 1) return b[0];
  float first = b[0] >= b[1] ? b[0] : b[1];
  float second = b[0] >= b[1] ? b[1] : b[0];
  for (int64_t i = 2; i < n; ++i) {
    if (b[i] > first) {
      second = first;
      first = b[i];
    } else if (b[i] > second) {
      second = b[i];
    }
  }
  return first + second;
}

// Index of the largest value[i] with allowed[i], ties (and NaNs) to the lowest index; -1 if none.
int64_t ArgMaxAllowed(const float* value, const std::vector<char>& allowed) {
  int64_t best = -1;
  for (int64_t i = 0; i < static_cast<int64_t>(allowed.size()); ++i) {
    if (allowed[i] && (best < 0 || value[i] > value[best])) best = i;
  }
  return best;
}

// Routes one token. b, group_score, kept_group and allowed are per-thread scratch.
void RouteToken(const MoeRouteParams& p, const float* logits, const float* bias, float* scores,
                int32_t* idx, float* weight, std::vector<float>& b, std::vector<float>& group_score,
                std::vector<char>& kept_group, std::vector<char>& allowed) {
  const int64_t e_count = p.num_experts, group_size = e_count / p.n_group;
  for (int64_t e = 0; e < e_count; ++e) {
    scores[e] = 1.0f / (1.0f + std::exp(-logits[e]));
    b[e] = scores[e] + bias[e];
  }
  for (int64_t g = 0; g < p.n_group; ++g) {
    group_score[g] = GroupScore(b.data() + g * group_size, group_size);
    kept_group[g] = 1;  // "not yet taken" during the group scan below
  }
  std::fill(allowed.begin(), allowed.end(), 0);
  for (int64_t r = 0; r < p.topk_group; ++r) {
    int64_t g = ArgMaxAllowed(group_score.data(), kept_group);
    kept_group[g] = 0;
    std::fill(allowed.begin() + g * group_size, allowed.begin() + (g + 1) * group_size, 1);
  }
  for (int64_t k = 0; k < p.top_k; ++k) {
    int64_t e = ArgMaxAllowed(b.data(), allowed);
    allowed[e] = 0;
    idx[k] = static_cast<int32_t>(e);
  }
  float sum = 0.0f;  // Σ over k ascending
  for (int64_t k = 0; k < p.top_k; ++k) sum += scores[idx[k]];
  const float denom = sum + kNormEpsilon;
  for (int64_t k = 0; k < p.top_k; ++k) {
    float s = scores[idx[k]];
    weight[k] = (p.norm_topk_prob ? s / denom : s) * p.routed_scaling_factor;
  }
}

}  // namespace

absl::Status MoeRouteFwd(const Context& ctx, const MoeRouteParams& p, const Tensor& logits,
                         const Tensor& expert_bias, Tensor& topk_idx, Tensor& topk_weight,
                         Tensor& scores) {
  TANDEM_DISPATCH_CUDA(
      ctx, cuda::MoeRouteFwd(ctx, p, logits, expert_bias, topk_idx, topk_weight, scores));
  TANDEM_RETURN_IF_ERROR(CheckParams(p));
  const int64_t e_count = p.num_experts, k_count = p.top_k;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(logits, "logits", DType::kF32, {-1, e_count}));
  const int64_t t_count = logits.dim(0);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(expert_bias, "expert_bias", DType::kF32, {e_count}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(topk_idx, "topk_idx", DType::kI32, {t_count, k_count}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(topk_weight, "topk_weight", DType::kF32, {t_count, k_count}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(scores, "scores", DType::kF32, {t_count, e_count}));
  ctx.ParallelFor(t_count, [&](int64_t t0, int64_t t1) {
    std::vector<float> b(e_count), group_score(p.n_group);
    std::vector<char> kept_group(p.n_group), allowed(e_count);
    for (int64_t t = t0; t < t1; ++t) {
      RouteToken(p, logits.data<float>() + t * e_count, expert_bias.data<float>(),
                 scores.data<float>() + t * e_count, topk_idx.data<int32_t>() + t * k_count,
                 topk_weight.data<float>() + t * k_count, b, group_score, kept_group, allowed);
    }
  });
  return absl::OkStatus();
}

// With S = Σ_k p_k + ε and w_k = p_k / S · s:  ∂L/∂p_j = s · (dw_j − Σ_k dw_k p_k / S) / S for a
// selected j (without normalisation simply s · dw_j), and ∂L/∂logit_j = ∂L/∂p_j · p_j (1 − p_j).
absl::Status MoeRouteBwd(const Context& ctx, const MoeRouteParams& p, const Tensor& scores,
                         const Tensor& topk_idx, const Tensor& dtopk_weight, Tensor& dlogits) {
  TANDEM_DISPATCH_CUDA(ctx, cuda::MoeRouteBwd(ctx, p, scores, topk_idx, dtopk_weight, dlogits));
  TANDEM_RETURN_IF_ERROR(CheckParams(p));
  const int64_t e_count = p.num_experts, k_count = p.top_k;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(scores, "scores", DType::kF32, {-1, e_count}));
  const int64_t t_count = scores.dim(0);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(topk_idx, "topk_idx", DType::kI32, {t_count, k_count}));
  TANDEM_RETURN_IF_ERROR(
      ExpectTensor(dtopk_weight, "dtopk_weight", DType::kF32, {t_count, k_count}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dlogits, "dlogits", DType::kF32, {t_count, e_count}));
  const int32_t* idx_all = topk_idx.data<int32_t>();
  for (int64_t i = 0; i < t_count * k_count; ++i) {
    TANDEM_CHECK_ARG(idx_all[i] >= 0 && idx_all[i] < e_count, "topk_idx: value ", idx_all[i],
                     " at flat index ", i, " is outside [0, ", e_count, ")");
  }
  const float scale = p.routed_scaling_factor;
  ctx.ParallelFor(t_count, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* s = scores.data<float>() + t * e_count;
      const int32_t* idx = idx_all + t * k_count;
      const float* dw = dtopk_weight.data<float>() + t * k_count;
      float* dl = dlogits.data<float>() + t * e_count;
      std::fill(dl, dl + e_count, 0.0f);
      float sum = 0.0f, dot = 0.0f;  // Σ_k p_k and Σ_k dw_k p_k, k ascending
      for (int64_t k = 0; k < k_count; ++k) {
        sum += s[idx[k]];
        dot += dw[k] * s[idx[k]];
      }
      const float denom = sum + kNormEpsilon;
      for (int64_t k = 0; k < k_count; ++k) {
        float pj = s[idx[k]];
        float dp = p.norm_topk_prob ? scale * (dw[k] - dot / denom) / denom : scale * dw[k];
        dl[idx[k]] += dp * (pj * (1.0f - pj));
      }
    }
  });
  return absl::OkStatus();
}

}  // namespace tandem::kernels
