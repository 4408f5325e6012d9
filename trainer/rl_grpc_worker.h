// GrpcWorker: a RolloutWorker that is a rollout server process reached over gRPC
// (proto/rollout_client.h), and the embedded default's process management: spawn K
// `tandem rollout serve` processes on loopback (each picks a free port and reports it), wait until
// each answers GetStatus, and stop them when the workers are destroyed.
// Built only with TANDEM_SERVICES (TANDEM_HAVE_ROLLOUT_CLIENT).
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/rollout_client.h"
#include "trainer/rl_config.h"
#include "trainer/rollout_pool.h"

namespace tandem::trainer {

class GrpcWorker final : public RolloutWorker {
 public:
  struct Options {
    absl::Duration request_timeout = absl::Seconds(120);  // Generate deadline
    absl::Duration update_timeout = absl::Seconds(120);   // UpdateWeights deadline
    int concurrency = 64;  // Generate calls in flight at once (one thread each)
    pid_t pid = -1;        // > 0: the process this worker owns; SIGTERM, then SIGKILL at exit
  };
  // Connects to `target` (host:port) and waits up to `connect_timeout` for GetStatus to answer.
  static absl::StatusOr<std::unique_ptr<GrpcWorker>> Connect(const std::string& target,
                                                             const Options& options,
                                                             absl::Duration connect_timeout);
  ~GrpcWorker() override;  // stops the owned process first, so in-flight calls end promptly

  std::string name() const override { return target_; }
  void Generate(const RolloutRequest& request, Callbacks callbacks) override;
  absl::StatusOr<uint64_t> UpdateWeights(int64_t version, const model::ModelWeights& weights,
                                         rollout::WeightUpdateMode mode) override;
  pid_t pid() const { return options_.pid; }
  absl::StatusOr<v1::RolloutStatus> GetStatus(absl::Duration timeout) {
    return client_->GetStatus(timeout);
  }

 private:
  GrpcWorker(std::string target, Options options, std::unique_ptr<proto::RolloutClient> client);
  void Run();  // one of the call threads
  void Serve(const RolloutRequest& request, Callbacks& callbacks);

  std::string target_;
  Options options_;
  std::unique_ptr<proto::RolloutClient> client_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<RolloutRequest, Callbacks>> queue_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// rollout.backend "local": writes the weights to <output_dir>/rollout-init/ (safetensors), starts
// rollout.workers processes of `<binary> rollout serve --port 0` on 127.0.0.1 with the rollout.*
// engine options, reads each one's port from its first stdout line, and connects. Workers' logs go
// to <output_dir>/rollout-workers/worker-<i>.log.
absl::StatusOr<std::vector<std::unique_ptr<RolloutWorker>>> SpawnLocalWorkers(
    const RlRunConfig& config, const model::ModelConfig& model_config,
    const model::ModelWeights& weights, int64_t version);

// rollout.backend "remote": one GrpcWorker per rollout.addresses entry; every worker is brought
// to `weights` as `version` by a push before training starts.
absl::StatusOr<std::vector<std::unique_ptr<RolloutWorker>>> ConnectRemoteWorkers(
    const RlRunConfig& config, const model::ModelWeights& weights, int64_t version);

}  // namespace tandem::trainer
