// GrpcWorker: Generate calls on a fixed set of threads, samples delivered as their last delta
// arrives (so a stream that breaks later keeps them), weight pushes through RolloutClient.
#include "trainer/rl_grpc_worker.h"

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "model/weights_hash.h"

namespace tandem::trainer {
namespace {

rollout::FinishReason FromProto(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_STOP:
      return rollout::FinishReason::kStop;
    case v1::FINISH_REASON_LENGTH:
      return rollout::FinishReason::kLength;
    case v1::FINISH_REASON_CANCELLED:
      return rollout::FinishReason::kCancelled;
    case v1::FINISH_REASON_ERROR:
      return rollout::FinishReason::kError;
    default:
      return rollout::FinishReason::kNone;
  }
}

v1::WeightUpdateMode ToProto(rollout::WeightUpdateMode mode) {
  switch (mode) {
    case rollout::WeightUpdateMode::kDrain:
      return v1::WEIGHT_UPDATE_MODE_DRAIN;
    case rollout::WeightUpdateMode::kInFlight:
      return v1::WEIGHT_UPDATE_MODE_IN_FLIGHT;
    default:
      return v1::WEIGHT_UPDATE_MODE_IN_FLIGHT_RECOMPUTE;
  }
}

v1::GenerateRequest ToProto(const RolloutRequest& r) {
  v1::GenerateRequest p;
  p.set_request_id(r.id);
  for (int32_t t : r.request.prompt) p.add_prompt_token_ids(t);
  const rollout::SamplingOptions& s = r.request.sampling;
  v1::SamplingParams* sp = p.mutable_sampling();
  sp->set_n(s.n);
  sp->set_max_tokens(s.max_new_tokens);
  sp->set_temperature(s.temperature);
  sp->set_top_p(s.top_p);
  sp->set_top_k(s.top_k);
  for (int32_t t : s.stop_token_ids) sp->add_stop_token_ids(t);
  sp->set_seed(s.seed);
  return p;
}

// SIGTERM, up to 3 s for a clean exit, then SIGKILL.
void StopProcess(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, nullptr, WNOHANG) != 0) return;  // reaped (or not our child)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

}  // namespace

absl::StatusOr<std::unique_ptr<GrpcWorker>> GrpcWorker::Connect(const std::string& target,
                                                                const Options& options,
                                                                absl::Duration connect_timeout) {
  proto::RolloutClientOptions co;
  co.wait_for_ready = false;  // a dead worker must fail fast (UNAVAILABLE), not queue calls
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<proto::RolloutClient> client,
                          proto::RolloutClient::Create(target, co));
  const absl::Time deadline = absl::Now() + connect_timeout;
  absl::Status last;
  while (absl::Now() < deadline) {
    absl::StatusOr<v1::RolloutStatus> status = client->GetStatus(absl::Seconds(2));
    if (status.ok()) {
      return std::unique_ptr<GrpcWorker>(new GrpcWorker(target, options, std::move(client)));
    }
    last = status.status();
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::UnavailableError(
      absl::StrCat("rollout worker ", target, " did not answer GetStatus: ", last.ToString()));
}

GrpcWorker::GrpcWorker(std::string target, Options options,
                       std::unique_ptr<proto::RolloutClient> client)
    : target_(std::move(target)), options_(options), client_(std::move(client)) {
  for (int i = 0; i < std::max(1, options_.concurrency); ++i) {
    threads_.emplace_back([this] { Run(); });
  }
}

GrpcWorker::~GrpcWorker() {
  StopProcess(options_.pid);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
  for (auto& [request, callbacks] : queue_) {
    callbacks.on_done(absl::CancelledError(target_ + ": worker shut down"));
  }
}

void GrpcWorker::Generate(const RolloutRequest& request, Callbacks callbacks) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.emplace_back(request, std::move(callbacks));
  }
  cv_.notify_one();
}

void GrpcWorker::Run() {
  for (;;) {
    std::pair<RolloutRequest, Callbacks> item;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ and nothing left to serve
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    Serve(item.first, item.second);
  }
}

void GrpcWorker::Serve(const RolloutRequest& request, Callbacks& callbacks) {
  const int64_t n = request.request.sampling.n;
  std::vector<rollout::SampleResult> partial(n);
  std::vector<bool> delivered(n, false);
  absl::Status failed;  // a sample that ended cancelled or in error fails the attempt
  auto on_response = [&](const v1::GenerateResponse& response) {
    for (const v1::SampleDelta& d : response.deltas()) {
      if (d.sample_index() < 0 || d.sample_index() >= n) continue;  // the client rejects these
      rollout::SampleResult& s = partial[d.sample_index()];
      s.sample_index = d.sample_index();
      s.tokens.insert(s.tokens.end(), d.token_ids().begin(), d.token_ids().end());
      s.logprobs.insert(s.logprobs.end(), d.logprobs().begin(), d.logprobs().end());
      s.weight_versions.insert(s.weight_versions.end(), d.weight_versions().begin(),
                               d.weight_versions().end());
      const rollout::FinishReason reason = FromProto(d.finish_reason());
      if (reason == rollout::FinishReason::kNone) continue;
      s.finish_reason = reason;
      if (reason == rollout::FinishReason::kStop || reason == rollout::FinishReason::kLength) {
        delivered[d.sample_index()] = true;
        callbacks.on_sample(s);
      } else if (failed.ok()) {
        failed =
            absl::UnavailableError(absl::StrCat(target_, ": sample ", d.sample_index(), " ",
                                                rollout::FinishReasonName(reason), " ", d.error()));
      }
    }
  };
  absl::StatusOr<proto::GenerateResult> result =
      client_->Generate(ToProto(request), options_.request_timeout, on_response);
  if (!result.ok()) {
    callbacks.on_done(absl::Status(result.status().code(),
                                   absl::StrCat(target_, ": ", result.status().message())));
    return;
  }
  callbacks.on_done(failed);
}

absl::StatusOr<uint64_t> GrpcWorker::UpdateWeights(int64_t version,
                                                   const model::ModelWeights& weights,
                                                   rollout::WeightUpdateMode mode) {
  absl::StatusOr<proto::PushResult> r =
      client_->UpdateWeights(weights, version, ToProto(mode), options_.update_timeout);
  if (!r.ok()) {
    return absl::Status(r.status().code(), absl::StrCat(target_, ": ", r.status().message()));
  }
  return r->server_hash;
}

}  // namespace tandem::trainer
