// Per-token losses of SFT and RL, written against per-token log-probs: each returns the loss and
// d loss / d logprob[t], which is what the model backward consumes. GRPO group advantages, the
// PPO-clip objective with the rollout log-probs as behaviour policy (MODEL.md §5), an optional k3
// KL to a reference policy, and the entropy of a logits row for metrics. All sums run in fp64 in
// index order, so the results are deterministic and independent of any thread count.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem::trainer {

struct GroupAdvantageOptions {
  // true: A = (r − mean) / (std + eps) (GRPO); false: A = r − mean (Dr. GRPO).
  bool normalize_by_std = true;
  // Added to the std; verl's default. Unit: reward units.
  double eps = 1e-6;
};

// rewards [G·n], n = group_size samples per prompt, groups contiguous. mean and std are per group,
// in fp64; std is the SAMPLE (unbiased, n − 1) standard deviation, as torch.std in verl.
// REQUIRES: group_size >= 2 when normalize_by_std (the sample std of one value is undefined),
// group_size >= 1 otherwise, rewards.size() a multiple of group_size.
absl::StatusOr<std::vector<float>> GroupAdvantages(std::span<const float> rewards,
                                                   int64_t group_size,
                                                   const GroupAdvantageOptions& options = {});

struct PpoLossOptions {
  double clip_low = 0.2;   // ε_low: the ratio is clipped below at 1 − ε_low
  double clip_high = 0.2;  // ε_high: clipped above at 1 + ε_high (DAPO "clip-higher": 0.28)
  // Dual clip (verl clip_ratio_c): for A < 0 the loss is capped at −A·c. 0 = off; else > 1.
  double dual_clip = 0.0;
  // Coefficient of the k3 KL to the reference policy; 0 = off (logp_ref may then be empty).
  double kl_coef = 0.0;
  // Token-mean denominator. 0: the sum of this call's mask. Pass the number of valid tokens of the
  // whole global batch (all micro-batches, all ranks) to get verl's "token-mean" over the step.
  double normalizer = 0.0;
};

// Per-token inputs of one (micro-)batch, all [T].
struct PpoLossInputs {
  std::span<const float> logp;          // current policy log-probs (the trainer forward)
  std::span<const float> logp_rollout;  // behaviour policy: the rollout engine's log-probs
  std::span<const float> advantages;    // per token (the sequence advantage broadcast)
  std::span<const float> mask;          // token weights, 1 on trained (response) tokens, 0 else
  std::span<const float> logp_ref;      // reference policy log-probs; empty when kl_coef = 0
};

struct PpoMetrics {
  double num_tokens = 0;     // Σ mask
  double pg_loss = 0;        // the policy-gradient term alone, token-mean
  double kl_ref = 0;         // mean k3 KL to the reference (0 when off)
  double clip_fraction = 0;  // fraction of tokens whose clipped term is selected (gradient 0)
  // Mean k3 estimate of KL(π_rollout ‖ π): r − 1 − log r with r = exp(logp − logp_rollout).
  // Exactly 0 when the trainer's log-probs equal the rollout's bit for bit.
  double approx_kl = 0;
  double mean_ratio = 0;  // mean of r
};

struct LossOutputs {
  double loss = 0;                // Σ_t mask_t·loss_t / normalizer
  std::vector<float> token_loss;  // [T] loss_t (unweighted; 0 where mask = 0)
  std::vector<float> dlogp;       // [T] d loss / d logp[t], with the mask and 1/normalizer in it
  PpoMetrics metrics;             // PPO only
};

// PPO-clip with r_t = exp(logp_t − logp_rollout_t), in fp64:
//   pg_t  = −min(r_t·A_t, clip(r_t, 1 − ε_low, 1 + ε_high)·A_t)   [then min(pg_t, −A_t·c) if dual]
//   kl_t  = exp(ref_t − logp_t) − (ref_t − logp_t) − 1            (k3, ≥ 0)
//   loss_t = pg_t + β·kl_t;  loss = Σ_t m_t·loss_t / N
//   d pg_t / d logp_t = −A_t·r_t where the unclipped term is selected, else 0
//   d kl_t / d logp_t = 1 − exp(ref_t − logp_t)
absl::StatusOr<LossOutputs> PpoClipLoss(const PpoLossInputs& in, const PpoLossOptions& options);

// SFT cross-entropy over per-token log-probs of the targets:
//   loss = −Σ_t m_t·logp_t / N,  d loss / d logp_t = −m_t / N,
// N = normalizer if > 0 else Σ m (an all-zero mask gives loss 0 and zero gradients).
absl::StatusOr<LossOutputs> SftLoss(std::span<const float> logp, std::span<const float> mask,
                                    double normalizer = 0.0);

}  // namespace tandem::trainer
