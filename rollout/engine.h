// Engine: the rollout inference engine (DESIGN.md §6). Continuous batching over a fixed memory
// budget: each Step() decodes every running sequence and prefills waiting ones in chunks within a
// token budget, through model::ForwardStep, then samples one token per sequence whose cache has
// caught up. The n samples of a request share one prompt prefill and fork after it. Weights are
// versioned and swapped between steps.
//
// Exactness: the log-prob reported for a token equals, bitwise, HybridModel::Forward's log-prob
// for it over the whole sequence at the request's temperature, whatever else was batched, however
// the prompt was split into pieces, whether the sequence was preempted and recomputed, and for any
// thread count (tests/rollout/engine_exactness_test.cc). With WeightUpdateMode::kInFlight this
// holds per weight version only for tokens whose whole prefix was computed by that version.
//
// Thread-safety: none; one thread drives Submit / Cancel / Step / UpdateWeights. Kernels inside a
// step use the Context's thread pool.
//
// Devices: with a CUDA context (default stream) the engine keeps the GPU cast of the weights
// (model::UploadWeights, made from host weights given to Create or UpdateWeights), the KV blocks
// (bf16) and linear-attention slots in GPU memory, and draws tokens there from the GPU's
// log-softmax rows (one batched LogSoftmax per step and temperature, SampleTokens; top-k / top-p
// draws read a host copy); memory_budget_bytes then counts GPU bytes. Exactness holds against
// HybridModel::Forward on the same device.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/core/context.h"
#include "model/hybrid_model.h"
#include "model/inference_cache.h"
#include "rollout/request.h"
#include "rollout/sampler.h"
#include "rollout/scheduler.h"
#include "rollout/sequence.h"

namespace tandem::rollout {

struct EngineOptions {
  // Bytes for the inference cache: max_sequences linear-state slots first, KV blocks from the
  // rest. Activations of a step are not counted (they scale with max_step_tokens).
  int64_t memory_budget_bytes = int64_t{256} << 20;
  int64_t max_sequences = 64;     // linear-state slots = most sequences admitted at once, >= 1
  int64_t max_step_tokens = 256;  // decode + prefill tokens per step, >= 1
};

enum class WeightUpdateMode {
  // Requests submitted before the update finish on the old weights; later ones are held until
  // then, and run entirely on the new weights (sync RL).
  kDrain,
  // Swap before the next step; running sequences keep their caches and continue, so their later
  // tokens carry the new version (async RL, bounded staleness).
  kInFlight,
  // Swap before the next step and preempt every running sequence, so its cache is recomputed
  // under the new weights and every later token is exact for the new version.
  kInFlightRecompute,
};

// The cache's memory in bytes and in units. kv_bytes grows with the KV blocks in use (softmax
// layers: O(tokens)); linear_state_bytes with the slots in use (linear layers: O(sequences)).
struct MemoryReport {
  int64_t budget_bytes = 0;
  int64_t bytes_per_block = 0;  // all softmax layers, kAttentionKvTile positions
  int64_t bytes_per_slot = 0;   // all linear layers, one sequence
  int64_t num_blocks = 0, num_slots = 0;
  int64_t used_blocks = 0, used_slots = 0;
  int64_t kv_bytes() const { return used_blocks * bytes_per_block; }
  int64_t linear_state_bytes() const { return used_slots * bytes_per_slot; }
  int64_t token_capacity() const;  // positions the KV blocks can hold in all
};

struct StepStats {
  int64_t decode_tokens = 0;
  int64_t prefill_tokens = 0;
  int64_t sequences = 0;  // in the step's batch
  int64_t preempted = 0;
  int64_t weight_version = 0;
  bool idle() const { return sequences == 0; }
};

// `weights` as the engine on ctx reads them: the same tensors when already on ctx's device, the
// GPU cast (model::UploadWeights) for a CUDA context and host weights.
absl::StatusOr<model::ModelWeights> DeviceWeights(const Context& ctx,
                                                  const model::ModelConfig& config,
                                                  const model::ModelWeights& weights);

class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const Context& ctx,
                                                        model::HybridModel model,
                                                        int64_t weight_version,
                                                        const EngineOptions& options);

  // Queues a request. InvalidArgument for a bad field, or for a request that could never fit in
  // this engine's memory even alone (the message gives what it needs and what there is).
  absl::StatusOr<RequestId> Submit(GenerateRequest request);
  // Finishes every unfinished sample of the request with kCancelled (keeping its tokens so far)
  // and frees its memory. NotFound for an unknown or already collected id.
  absl::Status Cancel(RequestId id);

  // Runs one engine step. A failing model step finishes its sequences with kError (and is logged);
  // the engine stays usable.
  absl::StatusOr<StepStats> Step();
  // Steps until no request is waiting or running.
  absl::Status RunUntilIdle();
  bool HasWork() const { return scheduler_.HasWork(); }

  // Installs `weights` (same shapes as the current ones) as `version`, applied between steps as
  // `mode` says. A newer update replaces one still pending.
  absl::Status UpdateWeights(int64_t version, const model::ModelWeights& weights,
                             WeightUpdateMode mode);
  int64_t weight_version() const { return weight_version_; }
  bool update_pending() const { return pending_update_.has_value(); }

  // The request's samples so far; nullptr for an unknown or collected id.
  const RequestResult* Result(RequestId id) const;
  // Finished requests in the order they finished; the engine forgets them.
  std::vector<RequestResult> TakeFinished();

  MemoryReport memory() const;
  int64_t num_preemptions() const { return scheduler_.num_preemptions(); }
  const model::HybridModel& model() const { return model_; }

 private:
  struct RequestRecord {
    GenerateRequest request;
    RequestResult result;
  };
  struct PendingUpdate {
    int64_t version;
    model::ModelWeights weights;
    WeightUpdateMode mode;
    RequestId drain_before;  // kDrain: requests with a smaller id finish first
  };

  Engine(const Context& ctx, model::HybridModel model, int64_t weight_version,
         const EngineOptions& options, model::InferenceCache cache, int64_t num_blocks,
         int64_t num_slots);

  absl::Status CheckFits(const GenerateRequest& request) const;
  bool MayAdmit(const Sequence& seq) const;
  void MaybeApplyUpdate();
  std::vector<Sequence*> ForkIfParent(Sequence& seq);
  void AppendToken(Sequence& seq, const absl::StatusOr<SampledToken>& drawn);
  void FinishSequence(Sequence& seq, FinishReason reason, const std::string& error);

  Context ctx_;
  model::HybridModel model_;
  int64_t weight_version_;
  EngineOptions options_;
  model::InferenceCache cache_;
  int64_t num_blocks_, num_slots_;
  Scheduler scheduler_;
  RequestId next_request_ = 0;
  int64_t next_sequence_ = 0;
  std::map<RequestId, RequestRecord> requests_;
  std::unordered_map<int64_t, std::unique_ptr<Sequence>> sequences_;
  std::vector<RequestId> finished_;
  std::optional<PendingUpdate> pending_update_;
};

}  // namespace tandem::rollout
