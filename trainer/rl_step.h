// One GRPO optimizer step over a batch of trajectories (MODEL.md §5, DESIGN.md §2): pack
// prompt+response sequences with the loss mask on the response → TrainingForward → compare the
// trainer's log-probs with the rollout's → PPO-clip with the ROLLOUT log-probs as behaviour policy
// → Backward → all-reduce → clip + AdamW → expert-bias update.
//
// The mismatch metric is the numerics contract checked on every step (DESIGN.md §3 rule 7): over
// the response tokens whose weight version equals the trainer's version, max |Δlogp| and the
// fraction of tokens whose two fp32 log-probs differ in any bit. Both are 0 in exact mode.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/core/context.h"
#include "model/hybrid_model.h"
#include "model/weights.h"
#include "trainer/collectives.h"
#include "trainer/data.h"
#include "trainer/losses.h"
#include "trainer/optimizer.h"

namespace tandem::trainer {

// One sampled response to a prompt, as the trainer consumes it (STYLE.md data flow: Token{id,
// logprob, weight_version} → Trajectory → TrainBatch).
struct Trajectory {
  std::string request_id;
  int64_t sample_index = 0;
  int64_t group = 0;              // index of its prompt (GRPO group) in the step's batch
  std::vector<int32_t> prompt;    // the tokens the engine was given (BOS + prompt)
  std::vector<int32_t> response;  // generated tokens, the stop token included
  std::vector<float> logprobs;    // [response] rollout log-probs at the sampling temperature
  std::vector<int64_t> versions;  // [response] weight version that computed each token
  std::string finish_reason;      // "stop", "length", ...
  float reward = 0;
  float advantage = 0;
  bool reward_error = false;  // the reward failed: reward 0, error counted
};

// Fills `advantage` of every trajectory from the rewards of its group (GroupAdvantages over
// groups of `group_size` contiguous trajectories). REQUIRES: trajectories sorted by group, each
// group complete.
absl::Status AssignGroupAdvantages(std::span<Trajectory> trajectories, int64_t group_size,
                                   const GroupAdvantageOptions& options);

// A packed micro-batch with per-position RL inputs aligned to MicroBatch::targets: position t
// predicts tokens[t + 1]; where that token is a response token j of trajectory i,
// logp_rollout[t] = logprobs[j], advantage[t] = advantage of i, version[t] = versions[j].
struct RlMicroBatch {
  MicroBatch batch;
  std::vector<float> logp_rollout;  // [T]
  std::vector<float> advantage;     // [T]
  std::vector<int64_t> version;     // [T], −1 off the response
};

// First-fit packing (PackMicroBatches) of prompt + response with the loss mask on the response.
absl::StatusOr<std::vector<RlMicroBatch>> PackTrajectories(std::span<const Trajectory> trajectories,
                                                           int64_t max_tokens);

// The contract check: rollout vs trainer log-probs on the tokens computed by `version`.
struct LogprobMismatch {
  int64_t tokens_compared = 0;  // tokens whose weight version == the trainer's
  int64_t tokens_total = 0;     // trained tokens in all
  int64_t tokens_differ = 0;    // of the compared, how many differ in any bit
  double max_abs_diff = 0;      // max |Δ| over the compared
  double fraction_differ() const {
    return tokens_compared > 0 ? static_cast<double>(tokens_differ) / tokens_compared : 0.0;
  }
};
// Adds one micro-batch's comparison. `logp` [T] from the trainer forward.
void AccumulateMismatch(const RlMicroBatch& mb, std::span<const float> logp, int64_t version,
                        LogprobMismatch& out);

struct RlStepOptions {
  PpoLossOptions ppo;        // normalizer is set by the step (global token count)
  float temperature = 1.0f;  // the rollout's sampling temperature
  int64_t max_tokens_per_micro_batch = 4096;
  double expert_bias_update_rate = 0.0;  // 0 = off
  int64_t trainer_version = 0;           // the weight version of `model` at this forward
  bool compute_entropy = true;           // policy entropy over trained tokens (an extra LM head)
  // The fp32 master weights the optimizer updates when they are not the model's own (the GPU
  // trainer: TrainerState::separate_master()); the model then holds their compute cast.
  model::ModelWeights* master = nullptr;
};

struct RlStepResult {
  double loss = 0;  // PPO objective, token-mean over the global batch
  double pg_loss = 0;
  double clip_fraction = 0;  // token-weighted over the global batch
  double approx_kl = 0;      // k3 KL(π_rollout ‖ π), token mean
  double mean_ratio = 0;
  double entropy = 0;          // nats per trained token
  LogprobMismatch mismatch;    // summed over ranks (max over ranks for max_abs_diff)
  int64_t tokens = 0;          // packed positions, all ranks
  int64_t trained_tokens = 0;  // response positions, all ranks
  StepStats optimizer;
};

// A collective call: each rank passes its shard of the step's trajectories.
absl::StatusOr<RlStepResult> RlTrainStep(const Context& ctx, Collective& collective,
                                         model::HybridModel& model, AdamW& optimizer,
                                         model::ModelWeights& grads,
                                         std::span<const Trajectory> trajectories,
                                         const RlStepOptions& options);

}  // namespace tandem::trainer
