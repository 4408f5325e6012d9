// InProcessWorker: a command queue in front of a rollout::Engine and the thread that steps it.
#include "trainer/rl_inprocess_worker.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "model/weights_hash.h"

#ifdef TANDEM_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace tandem::trainer {

absl::StatusOr<std::unique_ptr<InProcessWorker>> InProcessWorker::Create(
    std::string name, const model::ModelConfig& config, const model::ModelWeights& weights,
    int64_t version, int threads, const rollout::EngineOptions& options, int cuda_device) {
  model::HybridModel model(config, CopyModelWeights(config, weights));
  const Context ctx = cuda_device >= 0 ? Context::Cuda(cuda_device, nullptr, std::max(1, threads))
                                       : Context::Cpu(std::max(1, threads));
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<rollout::Engine> engine,
                          rollout::Engine::Create(ctx, std::move(model), version, options));
  return std::unique_ptr<InProcessWorker>(
      new InProcessWorker(std::move(name), std::move(engine), cuda_device));
}

InProcessWorker::InProcessWorker(std::string name, std::unique_ptr<rollout::Engine> engine,
                                 int cuda_device)
    : name_(std::move(name)), engine_(std::move(engine)), cuda_device_(cuda_device) {
  thread_ = std::thread([this] { Run(); });
}

InProcessWorker::~InProcessWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  const absl::Status cancelled = absl::CancelledError(name_ + ": worker shut down");
  for (auto& [id, a] : active_) a.callbacks.on_done(cancelled);
  for (auto& [request, callbacks] : queued_) callbacks.on_done(cancelled);
}

void InProcessWorker::Generate(const RolloutRequest& request, Callbacks callbacks) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queued_.emplace_back(request, std::move(callbacks));
  }
  cv_.notify_all();
}

absl::StatusOr<uint64_t> InProcessWorker::UpdateWeights(int64_t version,
                                                        const model::ModelWeights& weights,
                                                        rollout::WeightUpdateMode mode) {
  Update update{version, CopyModelWeights(engine_->model().config(), weights), mode, false,
                absl::OkStatus()};
  const uint64_t hash = model::WeightsHash(update.weights);
  std::unique_lock<std::mutex> lock(mu_);
  updates_.push_back(&update);
  cv_.notify_all();
  cv_.wait(lock, [&] { return update.accepted || stop_; });
  if (!update.accepted) return absl::CancelledError(name_ + ": worker shut down");
  TANDEM_RETURN_IF_ERROR(update.status);
  return hash;  // the engine now owns exactly these bits
}

void InProcessWorker::TakeCommands() {
  std::deque<std::pair<RolloutRequest, Callbacks>> queued;
  std::deque<Update*> updates;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queued.swap(queued_);
    updates.swap(updates_);
  }
  for (Update* u : updates) {
    absl::Status s = engine_->UpdateWeights(u->version, u->weights, u->mode);
    std::lock_guard<std::mutex> lock(mu_);
    u->status = s;
    u->accepted = true;
  }
  if (!updates.empty()) cv_.notify_all();
  for (auto& [request, callbacks] : queued) {
    absl::StatusOr<rollout::RequestId> id = engine_->Submit(request.request);
    if (!id.ok()) {
      callbacks.on_done(id.status());
      continue;
    }
    Active& a = active_[*id];
    a.callbacks = std::move(callbacks);
    a.delivered.assign(request.request.sampling.n, false);
  }
}

void InProcessWorker::Deliver() {
  std::vector<rollout::RequestId> done;
  for (auto& [id, a] : active_) {
    const rollout::RequestResult* r = engine_->Result(id);
    if (r == nullptr) continue;
    for (const rollout::SampleResult& s : r->samples) {
      if (s.finish_reason == rollout::FinishReason::kNone || a.delivered[s.sample_index]) continue;
      if (s.finish_reason == rollout::FinishReason::kError) continue;  // reported by on_done
      a.delivered[s.sample_index] = true;
      a.callbacks.on_sample(s);
    }
    if (r->finished()) done.push_back(id);
  }
  if (done.empty()) return;
  for (rollout::RequestResult& r : engine_->TakeFinished()) {
    auto it = active_.find(r.id);
    if (it == active_.end()) continue;
    absl::Status status;
    for (const rollout::SampleResult& s : r.samples) {
      if (s.finish_reason == rollout::FinishReason::kError) {
        status =
            absl::InternalError(absl::StrCat(name_, ": sample ", s.sample_index, ": ", s.error));
      }
    }
    Callbacks callbacks = std::move(it->second.callbacks);
    active_.erase(it);
    callbacks.on_done(status);
  }
}

void InProcessWorker::Run() {
#ifdef TANDEM_HAVE_CUDA
  // A new thread starts on device 0; the engine's kernels and memory are on cuda_device_.
  if (cuda_device_ >= 0) (void)cudaSetDevice(cuda_device_);
#endif
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        return stop_ || !queued_.empty() || !updates_.empty() || engine_->HasWork() ||
               engine_->update_pending();
      });
      if (stop_) return;
    }
    TakeCommands();
    if (engine_->HasWork() || engine_->update_pending()) {
      absl::StatusOr<rollout::StepStats> step = engine_->Step();
      if (!step.ok()) {
        for (auto& [id, a] : active_) (void)engine_->Cancel(id);
      }
    }
    Deliver();
  }
}

}  // namespace tandem::trainer
