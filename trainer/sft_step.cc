// One data-parallel SFT step: shard and pack, forward/backward over micro-batches with the SFT
// loss, then the update (step_common.h: all-reduce, AdamW, expert-bias update).
#include "trainer/sft_step.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "trainer/losses.h"
#include "trainer/step_common.h"

namespace tandem::trainer {

absl::StatusOr<RankBatch> ShardAndPack(std::span<const Example> examples,
                                       std::span<const int64_t> global_indices, int rank, int size,
                                       int64_t max_tokens) {
  const int64_t B = static_cast<int64_t>(global_indices.size());
  TANDEM_CHECK_ARG(size >= 1 && rank >= 0 && rank < size, "rank: expected in [0, ", size, "), got ",
                   rank);
  TANDEM_CHECK_ARG(B > 0 && B % size == 0, "data.sequences_per_step: expected a positive multiple",
                   " of the number of ranks (", size, "), got ", B);
  const int64_t per_rank = B / size;
  RankBatch batch;
  batch.sequences.reserve(per_rank);
  for (int64_t i = rank * per_rank; i < (rank + 1) * per_rank; ++i) {
    const int64_t index = global_indices[i];
    TANDEM_CHECK_ARG(index >= 0 && index < static_cast<int64_t>(examples.size()), "global_indices[",
                     i, "]: ", index, " is outside [0, ", examples.size(), ")");
    batch.sequences.push_back(examples[index]);
  }
  TANDEM_ASSIGN_OR_RETURN(batch.micro_batches, PackMicroBatches(batch.sequences, max_tokens));
  for (const MicroBatch& mb : batch.micro_batches) {
    batch.tokens += static_cast<int64_t>(mb.tokens.size());
    batch.targets += mb.num_targets();
  }
  return batch;
}

absl::StatusOr<SftStepResult> SftTrainStep(const Context& ctx, Collective& collective,
                                           model::HybridModel& model, AdamW& optimizer,
                                           model::ModelWeights& grads, const RankBatch& batch,
                                           const SftStepOptions& options) {
  SftStepResult result;
  int64_t counts[2] = {batch.tokens, batch.targets};
  TANDEM_RETURN_IF_ERROR(collective.AllReduceSum(counts, 2));
  result.tokens = counts[0];
  result.targets = counts[1];
  // The global token count: every rank's token losses are divided by the same N.
  const double normalizer = static_cast<double>(std::max<int64_t>(result.targets, 1));

  ZeroGradients(grads);
  ExpertLoads loads = ZeroLoads(model.config());
  double local_loss = 0;  // fp64, micro-batches in order
  for (const MicroBatch& mb : batch.micro_batches) {
    // The micro-batch's share of the global loss: its Σ −logp / N.
    const MicroBatchLoss sft_loss = [&](std::span<const float> logp) {
      return SftLoss(logp, mb.loss_mask, normalizer);
    };
    TANDEM_ASSIGN_OR_RETURN(MicroBatchPass pass,
                            ForwardBackward(ctx, model, mb, 1.0f, sft_loss, grads, loads));
    local_loss += pass.loss.loss;
  }
  float loss = static_cast<float>(local_loss);
  TANDEM_RETURN_IF_ERROR(collective.AllReduceSum(&loss, 1));
  result.loss = loss;

  TANDEM_ASSIGN_OR_RETURN(result.optimizer,
                          ApplyUpdate(ctx, collective, model, optimizer, grads, loads,
                                      options.expert_bias_update_rate, options.master));
  return result;
}

}  // namespace tandem::trainer
