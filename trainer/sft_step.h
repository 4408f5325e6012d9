// One SFT optimizer step over a data-parallel global batch: this rank's shard of the batch packed
// into micro-batches by token budget, forward + SFT cross-entropy + backward accumulated over the
// micro-batches, gradients summed over ranks, clip + AdamW, and the MoE expert-bias update with
// loads summed over ranks. The loss is normalised by the GLOBAL number of trained tokens, so the
// summed gradient is the same batch gradient however the sequences are split over ranks and
// micro-batches (up to fp32 summation order; see tests/trainer/sft_mpi_main.cc).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/core/context.h"
#include "model/hybrid_model.h"
#include "model/weights.h"
#include "trainer/collectives.h"
#include "trainer/data.h"
#include "trainer/optimizer.h"

namespace tandem::trainer {

// This rank's part of one optimizer step.
struct RankBatch {
  std::vector<Example> sequences;         // this rank's shard, in global-batch order
  std::vector<MicroBatch> micro_batches;  // first-fit packing of `sequences`
  int64_t tokens = 0;                     // packed positions over the micro-batches
  int64_t targets = 0;                    // trained positions (loss_mask = 1)
};

// The fixed rank assignment of a global batch of B sequences over P ranks: rank r takes the
// contiguous positions [r·B/P, (r+1)·B/P) of `global_indices` (indices into `examples`), then packs
// them with PackMicroBatches(max_tokens). REQUIRES: B a positive multiple of P (so every rank has
// the same number of sequences), 0 <= rank < P.
absl::StatusOr<RankBatch> ShardAndPack(std::span<const Example> examples,
                                       std::span<const int64_t> global_indices, int rank, int size,
                                       int64_t max_tokens);

struct SftStepOptions {
  double expert_bias_update_rate = 0.0;  // aux-loss-free balancing step; 0 = off
  // The fp32 master weights the update goes to when they are not the model's own: on the GPU
  // (ApplyUpdate's `master`). Null: the model's host fp32 weights.
  model::ModelWeights* master = nullptr;
};

struct SftStepResult {
  double loss = 0;      // −Σ logp over the global batch's targets / global target count
  int64_t tokens = 0;   // packed positions, all ranks
  int64_t targets = 0;  // trained positions, all ranks
  StepStats optimizer;  // grad norm (before clipping), clip scale, lr, skipped
};

// Runs one step on every rank (a collective call: every rank must call it with its own batch).
//   N = Σ_ranks batch.targets (int64 all-reduce)
//   per micro-batch: logp = TrainingForward; (loss, dlogp) = SftLoss(logp, mask, N);
//                    grads += Backward(dlogp)                       (gradient accumulation)
//   grads = Σ_ranks grads (AllReduceGradients, rank order); AdamW::Step (clip, update)
//   expert loads (tokens routed to each expert, all micro-batches) summed over ranks, then
//   UpdateExpertBiases, unless the optimizer skipped the step.
// The reported loss is the fp64 sum of this rank's micro-batch losses, all-reduced in fp32.
// `grads` is scratch of the model's shapes; it is zeroed here.
absl::StatusOr<SftStepResult> SftTrainStep(const Context& ctx, Collective& collective,
                                           model::HybridModel& model, AdamW& optimizer,
                                           model::ModelWeights& grads, const RankBatch& batch,
                                           const SftStepOptions& options);

}  // namespace tandem::trainer
