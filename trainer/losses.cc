// Losses over per-token log-probs: fp64 per-token maths, fp64 sums in index order.
#include "trainer/losses.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"

namespace tandem::trainer {
namespace {

absl::Status CheckSize(std::span<const float> v, size_t n, const char* name) {
  if (v.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected ", n, " values (one per token), got ", v.size()));
  }
  return absl::OkStatus();
}

// Σ mask in index order, or the caller's normalizer.
absl::StatusOr<double> Normalizer(std::span<const float> mask, double normalizer) {
  TANDEM_CHECK_ARG(normalizer >= 0, "normalizer: expected >= 0, got ", normalizer);
  if (normalizer > 0) return normalizer;
  double n = 0;
  for (float m : mask) n += m;
  return n;
}

}  // namespace

absl::StatusOr<std::vector<float>> GroupAdvantages(std::span<const float> rewards,
                                                   int64_t group_size,
                                                   const GroupAdvantageOptions& options) {
  const int64_t min_size = options.normalize_by_std ? 2 : 1;
  TANDEM_CHECK_ARG(group_size >= min_size, "group_size: expected >= ", min_size, ", got ",
                   group_size);
  TANDEM_CHECK_ARG(rewards.size() % group_size == 0, "rewards: size ", rewards.size(),
                   " is not a multiple of group_size ", group_size);
  TANDEM_CHECK_ARG(options.eps >= 0, "eps: expected >= 0, got ", options.eps);
  std::vector<float> advantages(rewards.size());
  for (size_t g = 0; g < rewards.size(); g += group_size) {
    const float* r = rewards.data() + g;
    double mean = 0;
    for (int64_t i = 0; i < group_size; ++i) mean += r[i];
    mean /= static_cast<double>(group_size);
    double scale = 1.0;
    if (options.normalize_by_std) {
      double ss = 0;  // Σ (r − mean)², then the unbiased variance
      for (int64_t i = 0; i < group_size; ++i) ss += (r[i] - mean) * (r[i] - mean);
      scale = 1.0 / (std::sqrt(ss / static_cast<double>(group_size - 1)) + options.eps);
    }
    for (int64_t i = 0; i < group_size; ++i) {
      advantages[g + i] = static_cast<float>((r[i] - mean) * scale);
    }
  }
  return advantages;
}

absl::StatusOr<LossOutputs> PpoClipLoss(const PpoLossInputs& in, const PpoLossOptions& options) {
  const size_t t_count = in.logp.size();
  TANDEM_RETURN_IF_ERROR(CheckSize(in.logp_rollout, t_count, "logp_rollout"));
  TANDEM_RETURN_IF_ERROR(CheckSize(in.advantages, t_count, "advantages"));
  TANDEM_RETURN_IF_ERROR(CheckSize(in.mask, t_count, "mask"));
  TANDEM_CHECK_ARG(options.clip_low >= 0 && options.clip_low < 1,
                   "clip_low: expected in [0, 1), got ", options.clip_low);
  TANDEM_CHECK_ARG(options.clip_high >= 0, "clip_high: expected >= 0, got ", options.clip_high);
  TANDEM_CHECK_ARG(options.dual_clip == 0 || options.dual_clip > 1,
                   "dual_clip: expected 0 (off) or > 1, got ", options.dual_clip);
  TANDEM_CHECK_ARG(options.kl_coef >= 0, "kl_coef: expected >= 0, got ", options.kl_coef);
  const bool use_kl = options.kl_coef > 0;
  if (use_kl) TANDEM_RETURN_IF_ERROR(CheckSize(in.logp_ref, t_count, "logp_ref"));
  TANDEM_ASSIGN_OR_RETURN(const double n, Normalizer(in.mask, options.normalizer));

  LossOutputs out;
  out.token_loss.assign(t_count, 0.0f);
  out.dlogp.assign(t_count, 0.0f);
  PpoMetrics& mt = out.metrics;
  double loss_sum = 0, pg_sum = 0, kl_sum = 0, clipped = 0, approx_kl = 0, ratio_sum = 0, mass = 0;
  const double lo = 1.0 - options.clip_low, hi = 1.0 + options.clip_high;
  for (size_t t = 0; t < t_count; ++t) {
    const double m = in.mask[t];
    if (m == 0) continue;
    const double log_ratio = static_cast<double>(in.logp[t]) - in.logp_rollout[t];
    const double r = std::exp(log_ratio);
    const double a = in.advantages[t];
    const double unclipped = -r * a;
    const double clipped_term = -std::clamp(r, lo, hi) * a;
    // The loss is the max of the two negated terms; the unclipped one carries the gradient.
    double pg = std::max(unclipped, clipped_term);
    double dpg = unclipped >= clipped_term ? -a * r : 0.0;
    if (options.dual_clip > 0 && a < 0 && pg > -a * options.dual_clip) {
      pg = -a * options.dual_clip;
      dpg = 0.0;
    }
    if (unclipped < clipped_term) clipped += m;
    double kl = 0, dkl = 0;
    if (use_kl) {
      const double d = static_cast<double>(in.logp_ref[t]) - in.logp[t];  // ref − logp
      kl = std::exp(d) - d - 1.0;
      dkl = 1.0 - std::exp(d);
    }
    const double token_loss = pg + options.kl_coef * kl;
    out.token_loss[t] = static_cast<float>(token_loss);
    out.dlogp[t] = n > 0 ? static_cast<float>(m * (dpg + options.kl_coef * dkl) / n) : 0.0f;
    loss_sum += m * token_loss;
    pg_sum += m * pg;
    kl_sum += m * kl;
    approx_kl += m * (r - 1.0 - log_ratio);
    ratio_sum += m * r;
    mass += m;
  }
  out.loss = n > 0 ? loss_sum / n : 0.0;
  mt.num_tokens = mass;
  mt.pg_loss = n > 0 ? pg_sum / n : 0.0;
  if (mass > 0) {
    mt.kl_ref = kl_sum / mass;
    mt.clip_fraction = clipped / mass;
    mt.approx_kl = approx_kl / mass;
    mt.mean_ratio = ratio_sum / mass;
  }
  return out;
}

absl::StatusOr<LossOutputs> SftLoss(std::span<const float> logp, std::span<const float> mask,
                                    double normalizer) {
  TANDEM_RETURN_IF_ERROR(CheckSize(mask, logp.size(), "mask"));
  TANDEM_ASSIGN_OR_RETURN(const double n, Normalizer(mask, normalizer));
  LossOutputs out;
  out.token_loss.assign(logp.size(), 0.0f);
  out.dlogp.assign(logp.size(), 0.0f);
  double sum = 0;
  for (size_t t = 0; t < logp.size(); ++t) {
    if (mask[t] == 0) continue;
    out.token_loss[t] = -logp[t];
    sum += -static_cast<double>(mask[t]) * logp[t];
    if (n > 0) out.dlogp[t] = static_cast<float>(-static_cast<double>(mask[t]) / n);
  }
  out.loss = n > 0 ? sum / n : 0.0;
  out.metrics.num_tokens = n;
  return out;
}

}  // namespace tandem::trainer
