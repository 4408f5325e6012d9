// The GRPO step: advantages, packing of trajectories, the log-prob contract check and PPO-clip on
// each micro-batch, then the update (step_common.h: all-reduce, AdamW, expert-bias update).
#include "trainer/rl_step.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "model/device_ops.h"
#include "model/hybrid_model_backward.h"
#include "trainer/step_common.h"

namespace tandem::trainer {
namespace {

// Σ over trained positions (mask ≠ 0) of the per-position entropies (MicroBatchPass::entropy,
// from the LM-head backward's logits; only T floats come to the host).
absl::StatusOr<double> EntropySum(const Context& ctx, const Tensor& entropy,
                                  std::span<const float> mask) {
  TANDEM_ASSIGN_OR_RETURN(const Tensor host, model::internal::ToHost(ctx, entropy));
  double sum = 0;
  for (size_t t = 0; t < mask.size(); ++t) {
    if (mask[t] != 0) sum += host.data<float>()[t];
  }
  return sum;
}

// Sums of this rank's per-micro-batch values, reduced over ranks at the end of the step.
struct LocalSums {
  double loss = 0, pg_loss = 0, clipped = 0, approx_kl = 0, ratio = 0, entropy = 0;
};

absl::Status MicroBatchStep(const Context& ctx, model::HybridModel& model, const RlMicroBatch& mb,
                            const RlStepOptions& options, double normalizer,
                            model::ModelWeights& grads, ExpertLoads& loads, LocalSums& sums,
                            LogprobMismatch& mismatch) {
  const MicroBatchLoss ppo_loss = [&](std::span<const float> logp) {
    AccumulateMismatch(mb, logp, options.trainer_version, mismatch);
    PpoLossOptions ppo = options.ppo;
    ppo.normalizer = normalizer;
    PpoLossInputs in{logp, mb.logp_rollout, mb.advantage, mb.batch.loss_mask, {}};
    return PpoClipLoss(in, ppo);
  };
  TANDEM_ASSIGN_OR_RETURN(MicroBatchPass pass,
                          ForwardBackward(ctx, model, mb.batch, options.temperature, ppo_loss,
                                          grads, loads, options.compute_entropy));
  const LossOutputs& loss = pass.loss;
  const double m = loss.metrics.num_tokens;
  sums.loss += loss.loss;
  sums.pg_loss += loss.metrics.pg_loss;
  sums.clipped += loss.metrics.clip_fraction * m;
  sums.approx_kl += loss.metrics.approx_kl * m;
  sums.ratio += loss.metrics.mean_ratio * m;
  if (options.compute_entropy) {
    TANDEM_ASSIGN_OR_RETURN(const double entropy,
                            EntropySum(ctx, pass.entropy, mb.batch.loss_mask));
    sums.entropy += entropy;
  }
  return absl::OkStatus();
}

// max over ranks of a non-negative double: each rank fills its own slot of a zeroed vector.
absl::StatusOr<double> AllReduceMax(Collective& collective, double x) {
  std::vector<float> slots(collective.Size(), 0.0f);
  slots[collective.Rank()] = static_cast<float>(x);
  TANDEM_RETURN_IF_ERROR(collective.AllReduceSum(slots.data(), collective.Size()));
  double m = 0;
  for (float s : slots) m = std::max<double>(m, s);
  return collective.Size() == 1 ? x : m;
}

}  // namespace

absl::Status AssignGroupAdvantages(std::span<Trajectory> trajectories, int64_t group_size,
                                   const GroupAdvantageOptions& options) {
  std::vector<float> rewards;
  rewards.reserve(trajectories.size());
  for (size_t i = 0; i < trajectories.size(); ++i) {
    TANDEM_CHECK_ARG(trajectories[i].group == trajectories[i - i % group_size].group,
                     "trajectories[", i, "]: groups must be contiguous runs of ", group_size);
    rewards.push_back(trajectories[i].reward);
  }
  TANDEM_ASSIGN_OR_RETURN(std::vector<float> adv, GroupAdvantages(rewards, group_size, options));
  for (size_t i = 0; i < trajectories.size(); ++i) trajectories[i].advantage = adv[i];
  return absl::OkStatus();
}

absl::StatusOr<std::vector<RlMicroBatch>> PackTrajectories(std::span<const Trajectory> trajectories,
                                                           int64_t max_tokens) {
  std::vector<Example> examples;
  examples.reserve(trajectories.size());
  for (size_t i = 0; i < trajectories.size(); ++i) {
    const Trajectory& tr = trajectories[i];
    TANDEM_CHECK_ARG(!tr.prompt.empty(), "trajectories[", i, "].prompt: expected >= 1 token");
    TANDEM_CHECK_ARG(
        tr.logprobs.size() == tr.response.size() && tr.versions.size() == tr.response.size(),
        "trajectories[", i, "]: logprobs and versions must match the response (",
        tr.response.size(), " tokens)");
    Example e;
    e.tokens = tr.prompt;
    e.tokens.insert(e.tokens.end(), tr.response.begin(), tr.response.end());
    e.loss_mask.assign(tr.prompt.size(), 0);
    e.loss_mask.resize(e.tokens.size(), 1);
    examples.push_back(std::move(e));
  }
  TANDEM_ASSIGN_OR_RETURN(std::vector<MicroBatch> packed, PackMicroBatches(examples, max_tokens));
  std::vector<RlMicroBatch> out;
  out.reserve(packed.size());
  for (MicroBatch& mb : packed) {
    RlMicroBatch r;
    const size_t T = mb.tokens.size();
    r.logp_rollout.assign(T, 0.0f);
    r.advantage.assign(T, 0.0f);
    r.version.assign(T, -1);
    for (size_t b = 0; b < mb.examples.size(); ++b) {
      const Trajectory& tr = trajectories[mb.examples[b]];
      // Response token j sits at sequence position P + j and is predicted at P + j − 1.
      const size_t first = mb.cu_seqlens[b] + tr.prompt.size() - 1;
      for (size_t j = 0; j < tr.response.size(); ++j) {
        r.logp_rollout[first + j] = tr.logprobs[j];
        r.advantage[first + j] = tr.advantage;
        r.version[first + j] = tr.versions[j];
      }
    }
    r.batch = std::move(mb);
    out.push_back(std::move(r));
  }
  return out;
}

void AccumulateMismatch(const RlMicroBatch& mb, std::span<const float> logp, int64_t version,
                        LogprobMismatch& out) {
  for (size_t t = 0; t < logp.size(); ++t) {
    if (mb.batch.loss_mask[t] == 0) continue;
    ++out.tokens_total;
    if (mb.version[t] != version) continue;
    ++out.tokens_compared;
    const float a = logp[t], b = mb.logp_rollout[t];
    if (std::bit_cast<uint32_t>(a) != std::bit_cast<uint32_t>(b)) ++out.tokens_differ;
    const double d = std::fabs(static_cast<double>(a) - b);
    out.max_abs_diff = std::max(out.max_abs_diff, std::isnan(d) ? INFINITY : d);
  }
}

absl::StatusOr<RlStepResult> RlTrainStep(const Context& ctx, Collective& collective,
                                         model::HybridModel& model, AdamW& optimizer,
                                         model::ModelWeights& grads,
                                         std::span<const Trajectory> trajectories,
                                         const RlStepOptions& options) {
  TANDEM_ASSIGN_OR_RETURN(std::vector<RlMicroBatch> mbs,
                          PackTrajectories(trajectories, options.max_tokens_per_micro_batch));
  RlStepResult result;
  int64_t counts[2] = {0, 0};  // packed positions, trained positions
  for (const RlMicroBatch& mb : mbs) {
    counts[0] += static_cast<int64_t>(mb.batch.tokens.size());
    counts[1] += mb.batch.num_targets();
  }
  TANDEM_RETURN_IF_ERROR(collective.AllReduceSum(counts, 2));
  result.tokens = counts[0];
  result.trained_tokens = counts[1];
  const double normalizer = static_cast<double>(std::max<int64_t>(counts[1], 1));

  ZeroGradients(grads);
  ExpertLoads loads = ZeroLoads(model.config());
  LocalSums sums;
  LogprobMismatch mismatch;
  for (const RlMicroBatch& mb : mbs) {
    TANDEM_RETURN_IF_ERROR(
        MicroBatchStep(ctx, model, mb, options, normalizer, grads, loads, sums, mismatch));
  }
  // fp32 sums over ranks (metrics); exact int64 sums for the token counts.
  float metric[6] = {static_cast<float>(sums.loss),    static_cast<float>(sums.pg_loss),
                     static_cast<float>(sums.clipped), static_cast<float>(sums.approx_kl),
                     static_cast<float>(sums.ratio),   static_cast<float>(sums.entropy)};
  TANDEM_RETURN_IF_ERROR(collective.AllReduceSum(metric, 6));
  int64_t mm[3] = {mismatch.tokens_compared, mismatch.tokens_total, mismatch.tokens_differ};
  TANDEM_RETURN_IF_ERROR(collective.AllReduceSum(mm, 3));
  TANDEM_ASSIGN_OR_RETURN(result.mismatch.max_abs_diff,
                          AllReduceMax(collective, mismatch.max_abs_diff));
  result.mismatch.tokens_compared = mm[0];
  result.mismatch.tokens_total = mm[1];
  result.mismatch.tokens_differ = mm[2];
  result.loss = metric[0];
  result.pg_loss = metric[1];
  result.clip_fraction = metric[2] / normalizer;
  result.approx_kl = metric[3] / normalizer;
  result.mean_ratio = metric[4] / normalizer;
  result.entropy = metric[5] / normalizer;

  TANDEM_ASSIGN_OR_RETURN(result.optimizer,
                          ApplyUpdate(ctx, collective, model, optimizer, grads, loads,
                                      options.expert_bias_update_rate, options.master));
  return result;
}

}  // namespace tandem::trainer
