// Engine: versioned weight swaps between steps (drain-first, in-flight, in-flight with recompute)
// and the memory report.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/contract.h"
#include "kernels/core/logging.h"
#include "kernels/core/status_macros.h"
#include "rollout/engine.h"

namespace tandem::rollout {
namespace {

// Every tensor's name and shape, in ForEachParameter order.
std::vector<std::pair<std::string, Shape>> Signature(const model::ModelWeights& weights) {
  std::vector<std::pair<std::string, Shape>> out;
  weights.ForEachParameter(
      [&](const std::string& name, const Tensor& t) { out.emplace_back(name, t.shape()); });
  return out;
}

}  // namespace

absl::Status Engine::UpdateWeights(int64_t version, const model::ModelWeights& weights,
                                   WeightUpdateMode mode) {
  const auto want = Signature(model_.weights());
  const auto got = Signature(weights);
  TANDEM_CHECK_ARG(want.size() == got.size(), "weights: ", got.size(), " tensors, expected ",
                   want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    TANDEM_CHECK_ARG(want[i] == got[i], "weights: tensor ", i, " is ", got[i].first, " ",
                     ShapeString(got[i].second), ", expected ", want[i].first, " ",
                     ShapeString(want[i].second));
  }
  TANDEM_ASSIGN_OR_RETURN(model::ModelWeights on_device,
                          DeviceWeights(ctx_, model_.config(), weights));
  pending_update_ = PendingUpdate{version, std::move(on_device), mode, next_request_};
  MaybeApplyUpdate();
  return absl::OkStatus();
}

bool Engine::MayAdmit(const Sequence& seq) const {
  return !(pending_update_.has_value() && pending_update_->mode == WeightUpdateMode::kDrain &&
           seq.request >= pending_update_->drain_before);
}

void Engine::MaybeApplyUpdate() {
  if (!pending_update_.has_value()) return;
  if (pending_update_->mode == WeightUpdateMode::kDrain) {
    // Wait until no request submitted before the update is still running or waiting.
    for (const auto& [id, seq] : sequences_) {
      if (seq->request < pending_update_->drain_before) return;
    }
  }
  if (pending_update_->mode == WeightUpdateMode::kInFlightRecompute) scheduler_.PreemptAll();
  model_.weights() = std::move(pending_update_->weights);
  spdlog::info("rollout engine: weights v{} -> v{}", weight_version_, pending_update_->version);
  weight_version_ = pending_update_->version;
  pending_update_.reset();
}

int64_t MemoryReport::token_capacity() const { return num_blocks * kAttentionKvTile; }

MemoryReport Engine::memory() const {
  MemoryReport r;
  r.budget_bytes = options_.memory_budget_bytes;
  r.bytes_per_block = model::InferenceCache::BytesPerBlock(model_.config(), ctx_.device());
  r.bytes_per_slot = model::InferenceCache::BytesPerSlot(model_.config(), ctx_.device());
  r.num_blocks = num_blocks_;
  r.num_slots = num_slots_;
  r.used_blocks = scheduler_.blocks().num_used();
  r.used_slots = scheduler_.slots().num_used();
  return r;
}

}  // namespace tandem::rollout
