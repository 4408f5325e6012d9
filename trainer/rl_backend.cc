// rollout.backend → RolloutWorkers: in-process engines, or gRPC workers (spawned on loopback or
// at configured addresses) when the build has the rollout client.
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "trainer/rl_inprocess_worker.h"
#ifdef TANDEM_HAVE_ROLLOUT_CLIENT
#include "trainer/rl_grpc_worker.h"
#endif
#include "trainer/rl_run.h"

namespace tandem::trainer {

namespace {
rollout::EngineOptions EngineOptionsOf(const RlRunConfig::Rollout& r) {
  rollout::EngineOptions o;
  o.memory_budget_bytes = r.memory_mb << 20;
  o.max_sequences = r.max_sequences;
  o.max_step_tokens = r.max_step_tokens;
  return o;
}
}  // namespace

absl::Status CheckRolloutDevice(const RlRunConfig& config, const RlLoopOptions& options) {
  if (options.device != Device::kCUDA || options.make_workers ||
      config.rollout.backend == "inprocess") {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "rollout.backend: \"", config.rollout.backend,
      "\" with --device cuda; expected \"inprocess\" (rollout engines on the trainer's GPU: the "
      "gRPC workers run on the CPU, whose log-probs are not the GPU trainer's bits)"));
}

absl::StatusOr<std::vector<std::unique_ptr<RolloutWorker>>> MakeConfiguredWorkers(
    const RlRunConfig& config, const model::ModelConfig& model_config,
    const model::ModelWeights& weights, int64_t version, int cuda_device) {
  const RlRunConfig::Rollout& r = config.rollout;
  std::vector<std::unique_ptr<RolloutWorker>> workers;
  if (r.backend == "inprocess") {
    const int64_t count = std::max<int64_t>(1, r.workers);
    for (int64_t i = 0; i < count; ++i) {
      TANDEM_ASSIGN_OR_RETURN(
          std::unique_ptr<InProcessWorker> w,
          InProcessWorker::Create(absl::StrCat("inprocess-", i), model_config, weights, version,
                                  static_cast<int>(r.threads_per_worker), EngineOptionsOf(r),
                                  cuda_device));
      workers.push_back(std::move(w));
    }
    return workers;
  }
#ifdef TANDEM_HAVE_ROLLOUT_CLIENT
  if (r.backend == "local") return SpawnLocalWorkers(config, model_config, weights, version);
  return ConnectRemoteWorkers(config, weights, version);
#else
  return absl::UnimplementedError(
      absl::StrCat("rollout.backend \"", r.backend,
                   "\" needs the gRPC rollout client, which this build lacks "
                   "(TANDEM_SERVICES=OFF); use rollout.backend=inprocess"));
#endif
}

}  // namespace tandem::trainer
