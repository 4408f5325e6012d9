// Engine: request intake, the step loop (schedule → ForwardStep → sample), forks, finishing and
// cancellation. Weight updates and memory reports are in engine_weights.cc.
#include "rollout/engine.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/core/contract.h"
#include "kernels/core/logging.h"
#include "kernels/core/status_macros.h"
#include "model/device_weights.h"
#include "model/hybrid_model_step.h"
#include "rollout/sampler.h"

namespace tandem::rollout {
namespace {

// With no softmax layers a KV block costs nothing; block ids are still handed out (ForwardStep
// wants a table) from this many.
constexpr int64_t kFreeBlocks = int64_t{1} << 20;

}  // namespace

absl::StatusOr<model::ModelWeights> DeviceWeights(const Context& ctx,
                                                  const model::ModelConfig& config,
                                                  const model::ModelWeights& weights) {
  if (model::WeightsDevice(weights) == ctx.device()) return weights;
  if (ctx.device() == Device::kCPU) {
    return absl::InvalidArgumentError("weights: on the GPU, but the engine runs on the CPU");
  }
  return model::UploadWeights(ctx, config, weights);
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const Context& ctx, model::HybridModel model,
                                                       int64_t weight_version,
                                                       const EngineOptions& options) {
  const model::ModelConfig& config = model.config();
  TANDEM_CHECK_ARG(options.max_sequences >= 1, "max_sequences: must be >= 1, got ",
                   options.max_sequences);
  TANDEM_CHECK_ARG(options.max_step_tokens >= 1, "max_step_tokens: must be >= 1, got ",
                   options.max_step_tokens);
  if (ctx.device() != model::WeightsDevice(model.weights())) {
    // A CUDA engine reads the GPU cast of the weights (UploadWeights), made once here.
    TANDEM_ASSIGN_OR_RETURN(model::ModelWeights weights,
                            DeviceWeights(ctx, config, model.weights()));
    model = model::HybridModel(config, std::move(weights));
  }
  const int64_t per_block = model::InferenceCache::BytesPerBlock(config, ctx.device());
  const int64_t per_slot = model::InferenceCache::BytesPerSlot(config, ctx.device());
  const int64_t slot_bytes = options.max_sequences * per_slot;
  TANDEM_CHECK_ARG(slot_bytes < options.memory_budget_bytes,
                   "memory_budget_bytes: ", options.memory_budget_bytes, " cannot hold ",
                   options.max_sequences, " linear-attention slots of ", per_slot,
                   " bytes each plus KV blocks; raise it or lower max_sequences");
  const int64_t num_blocks =
      per_block == 0 ? kFreeBlocks : (options.memory_budget_bytes - slot_bytes) / per_block;
  TANDEM_CHECK_ARG(num_blocks >= 1, "memory_budget_bytes: ", options.memory_budget_bytes,
                   " leaves ", options.memory_budget_bytes - slot_bytes,
                   " bytes after the slots, less than one KV block (", per_block, " bytes)");
  absl::StatusOr<model::InferenceCache> cache = absl::InternalError("unset");
  try {
    cache = model::InferenceCache::Create(config, per_block == 0 ? 0 : num_blocks,
                                          options.max_sequences, ctx.device());
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat("memory_budget_bytes: could not allocate ",
                                                     options.memory_budget_bytes, " bytes"));
  }
  TANDEM_RETURN_IF_ERROR(cache.status());
  return std::unique_ptr<Engine>(new Engine(ctx, std::move(model), weight_version, options,
                                            *std::move(cache), num_blocks, options.max_sequences));
}

Engine::Engine(const Context& ctx, model::HybridModel model, int64_t weight_version,
               const EngineOptions& options, model::InferenceCache cache, int64_t num_blocks,
               int64_t num_slots)
    : ctx_(ctx),
      model_(std::move(model)),
      weight_version_(weight_version),
      options_(options),
      cache_(std::move(cache)),
      num_blocks_(num_blocks),
      num_slots_(num_slots),
      scheduler_(&cache_, num_blocks, num_slots, options.max_step_tokens) {}

// The most a request ever holds at once: either all n samples right after the fork (shared prompt
// blocks, one partial-block copy and one slot each), or its longest sample alone, whose last
// generated token is never fed back (P + M − 1 positions). With preemption by recompute the
// highest-priority sequence always progresses, so a request within both limits finishes.
absl::Status Engine::CheckFits(const GenerateRequest& request) const {
  const int64_t P = static_cast<int64_t>(request.prompt.size());
  const int64_t n = request.sampling.n, M = request.sampling.max_new_tokens;
  TANDEM_CHECK_ARG(n <= num_slots_, "n: ", n, " samples need ", n,
                   " linear-attention slots at once, but the engine has ", num_slots_,
                   " (max_sequences)");
  const int64_t at_fork = Scheduler::BlocksFor(P) + (P % kAttentionKvTile != 0 ? n - 1 : 0);
  const int64_t longest = Scheduler::BlocksFor(P + M - 1);
  const int64_t need = std::max(at_fork, longest);
  TANDEM_CHECK_ARG(need <= num_blocks_, "request: a prompt of ", P, " tokens with n = ", n,
                   " and max_new_tokens = ", M, " needs ", need, " KV blocks (",
                   need * kAttentionKvTile, " positions), but the engine's memory budget of ",
                   options_.memory_budget_bytes, " bytes holds ", num_blocks_, " blocks (",
                   num_blocks_ * kAttentionKvTile, " positions); it can never fit");
  return absl::OkStatus();
}

absl::StatusOr<RequestId> Engine::Submit(GenerateRequest request) {
  TANDEM_RETURN_IF_ERROR(ValidateRequest(request, model_.config().vocab_size));
  TANDEM_RETURN_IF_ERROR(CheckFits(request));
  const RequestId id = next_request_++;
  RequestRecord& record = requests_[id];
  record.request = std::move(request);
  record.result.id = id;
  const SamplingOptions& sampling = record.request.sampling;
  record.result.samples.resize(sampling.n);
  for (int64_t i = 0; i < sampling.n; ++i) record.result.samples[i].sample_index = i;

  auto seq = std::make_unique<Sequence>();
  seq->id = next_sequence_++;
  seq->request = id;
  seq->sample_index = 0;
  seq->group_parent = sampling.n > 1;
  seq->fork_count = sampling.n - 1;
  seq->tokens = record.request.prompt;
  seq->prompt_len = static_cast<int64_t>(seq->tokens.size());
  scheduler_.Enqueue(seq.get());
  sequences_[seq->id] = std::move(seq);
  return id;
}

absl::Status Engine::Cancel(RequestId id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) {
    return absl::NotFoundError(absl::StrCat("request ", id, ": unknown or already collected"));
  }
  std::vector<Sequence*> live;
  for (auto& [seq_id, seq] : sequences_) {
    if (seq->request == id) live.push_back(seq.get());
  }
  std::sort(live.begin(), live.end(), [](Sequence* a, Sequence* b) { return Before(*a, *b); });
  for (Sequence* seq : live) FinishSequence(*seq, FinishReason::kCancelled, "");
  return absl::OkStatus();
}

absl::StatusOr<StepStats> Engine::Step() {
  MaybeApplyUpdate();
  SchedulePlan plan = scheduler_.Schedule([this](const Sequence& s) { return MayAdmit(s); });
  StepStats stats;
  stats.decode_tokens = plan.decode_tokens;
  stats.prefill_tokens = plan.prefill_tokens;
  stats.sequences = static_cast<int64_t>(plan.pieces.size());
  stats.preempted = static_cast<int64_t>(plan.preempted.size());
  stats.weight_version = weight_version_;
  if (plan.pieces.empty()) return stats;

  std::vector<model::StepSequence> batch(plan.pieces.size());
  for (size_t i = 0; i < plan.pieces.size(); ++i) {
    const Sequence& seq = *plan.pieces[i].seq;
    batch[i].slot = seq.slot;
    batch[i].start_position = seq.num_cached;
    batch[i].tokens.assign(seq.tokens.begin() + seq.num_cached,
                           seq.tokens.begin() + seq.num_cached + plan.pieces[i].num_tokens);
    batch[i].block_table = seq.blocks;
  }
  absl::StatusOr<Tensor> logits = model::ForwardStep(ctx_, model_, batch, cache_);
  if (!logits.ok()) {
    spdlog::error("rollout engine: step of {} sequences failed: {}", batch.size(),
                  logits.status().ToString());
    for (const ScheduledPiece& piece : plan.pieces) {
      FinishSequence(*piece.seq, FinishReason::kError, std::string(logits.status().message()));
    }
    return stats;
  }
  // Every sequence whose cache caught up draws its next token (and a parent's forks theirs) from
  // its row, all draws of the step in one SampleTokens call.
  std::vector<Sequence*> drawers;
  std::vector<TokenDraw> draws;
  for (size_t i = 0; i < plan.pieces.size(); ++i) {
    Sequence& seq = *plan.pieces[i].seq;
    seq.num_cached += plan.pieces[i].num_tokens;
    if (seq.pending() != 0) continue;
    for (Sequence* s : ForkIfParent(seq)) {
      drawers.push_back(s);
      draws.push_back({static_cast<int64_t>(i), &requests_[s->request].request.sampling,
                       s->sample_index, static_cast<int64_t>(s->tokens.size())});
    }
  }
  std::vector<absl::StatusOr<SampledToken>> drawn = SampleTokens(ctx_, *logits, draws);
  for (size_t k = 0; k < drawers.size(); ++k) AppendToken(*drawers[k], drawn[k]);
  return stats;
}

absl::Status Engine::RunUntilIdle() {
  while (HasWork()) {
    TANDEM_ASSIGN_OR_RETURN(StepStats stats, Step());
    if (stats.idle() && HasWork() && !pending_update_.has_value()) {
      return absl::InternalError("rollout engine: requests are queued but none can be scheduled");
    }
  }
  MaybeApplyUpdate();
  return absl::OkStatus();
}

// The sequence's cache holds all its tokens: fork the group (once, after the prompt). Returns the
// sequences that draw from its logits row: itself, then every fork.
std::vector<Sequence*> Engine::ForkIfParent(Sequence& seq) {
  std::vector<Sequence*> drawers{&seq};
  if (seq.group_parent) {
    for (int64_t i = 1; i <= seq.fork_count; ++i) {
      auto child = std::make_unique<Sequence>();
      child->id = next_sequence_++;
      child->request = seq.request;
      child->sample_index = i;
      child->tokens = seq.tokens;
      child->prompt_len = seq.prompt_len;
      scheduler_.Fork(seq, *child);
      drawers.push_back(child.get());
      sequences_[child->id] = std::move(child);
    }
    seq.group_parent = false;
    seq.fork_count = 0;
  }
  return drawers;
}

void Engine::AppendToken(Sequence& seq, const absl::StatusOr<SampledToken>& drawn) {
  if (!drawn.ok()) {
    FinishSequence(seq, FinishReason::kError, std::string(drawn.status().message()));
    return;
  }
  RequestRecord& record = requests_[seq.request];
  const SamplingOptions& sampling = record.request.sampling;
  seq.tokens.push_back(drawn->token);
  SampleResult& sample = record.result.samples[seq.sample_index];
  sample.tokens.push_back(drawn->token);
  sample.logprobs.push_back(drawn->logprob);
  sample.weight_versions.push_back(weight_version_);
  const std::vector<int32_t>& stop = sampling.stop_token_ids;
  if (std::find(stop.begin(), stop.end(), drawn->token) != stop.end()) {
    FinishSequence(seq, FinishReason::kStop, "");
  } else if (seq.generated() >= sampling.max_new_tokens) {
    FinishSequence(seq, FinishReason::kLength, "");
  }
}

void Engine::FinishSequence(Sequence& seq, FinishReason reason, const std::string& error) {
  RequestRecord& record = requests_[seq.request];
  // A parent that never forked finishes its unborn samples with it.
  const int64_t last = seq.group_parent ? seq.fork_count : 0;
  for (int64_t i = seq.sample_index; i <= seq.sample_index + last; ++i) {
    SampleResult& sample = record.result.samples[i];
    sample.finish_reason = reason;
    sample.error = error;
  }
  scheduler_.Finish(seq);
  if (record.result.finished()) finished_.push_back(seq.request);
  sequences_.erase(seq.id);  // `seq` is gone from here on
}

const RequestResult* Engine::Result(RequestId id) const {
  auto it = requests_.find(id);
  return it == requests_.end() ? nullptr : &it->second.result;
}

std::vector<RequestResult> Engine::TakeFinished() {
  std::vector<RequestResult> out;
  for (RequestId id : finished_) {
    auto it = requests_.find(id);
    out.push_back(std::move(it->second.result));
    requests_.erase(it);
  }
  finished_.clear();
  return out;
}

}  // namespace tandem::rollout
