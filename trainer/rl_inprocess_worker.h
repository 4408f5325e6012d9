// InProcessWorker: a RolloutWorker backed by a rollout::Engine living in this process, driven by a
// thread of its own (the engine is single-threaded; this thread is its only caller). For tests,
// single-process runs (rollout.backend: inprocess) and as the oracle the gRPC workers must match.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "kernels/core/context.h"
#include "model/hybrid_model.h"
#include "rollout/engine.h"
#include "trainer/rollout_pool.h"
#include "trainer/run_common.h"  // CopyModelWeights

namespace tandem::trainer {

class InProcessWorker final : public RolloutWorker {
 public:
  // The engine starts from a copy of `weights` (f32, host) as `version`; `threads` CPU threads
  // for its kernels (its host pool on a GPU). cuda_device >= 0: the engine runs on that GPU.
  static absl::StatusOr<std::unique_ptr<InProcessWorker>> Create(
      std::string name, const model::ModelConfig& config, const model::ModelWeights& weights,
      int64_t version, int threads, const rollout::EngineOptions& options, int cuda_device = -1);
  ~InProcessWorker() override;  // stops the thread; unfinished attempts get on_done(CANCELLED)

  std::string name() const override { return name_; }
  void Generate(const RolloutRequest& request, Callbacks callbacks) override;
  absl::StatusOr<uint64_t> UpdateWeights(int64_t version, const model::ModelWeights& weights,
                                         rollout::WeightUpdateMode mode) override;

 private:
  struct Active {
    Callbacks callbacks;
    std::vector<bool> delivered;  // per sample index
  };
  struct Update {
    int64_t version;
    model::ModelWeights weights;
    rollout::WeightUpdateMode mode;
    bool accepted = false;
    absl::Status status;
  };

  InProcessWorker(std::string name, std::unique_ptr<rollout::Engine> engine, int cuda_device);
  void Run();           // the engine thread
  void TakeCommands();  // submits queued requests and updates to the engine (engine thread)
  void Deliver();       // reports finished samples and requests (engine thread)

  std::string name_;
  std::unique_ptr<rollout::Engine> engine_;      // used by the engine thread only
  int cuda_device_;                              // the engine's GPU, or -1 (CPU)
  std::map<rollout::RequestId, Active> active_;  // engine thread only

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<RolloutRequest, Callbacks>> queued_;
  std::deque<Update*> updates_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace tandem::trainer
