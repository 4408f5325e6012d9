// RolloutPool: least-loaded dispatch, retries under the same request id, dedupe by (request id,
// sample index), dead-worker marking, and hash-checked weight publishing.
#include "trainer/rollout_pool.h"

#include <algorithm>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/core/logging.h"
#include "kernels/core/status_macros.h"
#include "model/weights_hash.h"

namespace tandem::trainer {
namespace {

// Errors after which the worker is not trusted with more work: its transport or process failed.
bool KillsWorker(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) || absl::IsAborted(s) ||
         absl::IsCancelled(s) || absl::IsUnknown(s) || absl::IsInternal(s);
}

// Errors in the request itself: another worker would fail it the same way.
bool IsPermanent(const absl::Status& s) {
  return absl::IsInvalidArgument(s) || absl::IsFailedPrecondition(s) || absl::IsOutOfRange(s) ||
         absl::IsUnimplemented(s);
}

}  // namespace

RolloutPool::RolloutPool(std::vector<std::unique_ptr<RolloutWorker>> workers,
                         RolloutPoolOptions options)
    : workers_(std::move(workers)),
      options_(options),
      load_(workers_.size(), 0),
      dead_(workers_.size(), false) {
  stats_.live_workers = static_cast<int64_t>(workers_.size());
}

RolloutPool::~RolloutPool() {
  // Workers stop their threads and deliver no callback after their destructor returns; they may
  // still call back while being destroyed, so the pool's state must outlive them.
  workers_.clear();
}

std::optional<RolloutPool::Dispatch> RolloutPool::PlanAttempt(Pending& p) {
  if (p.attempts >= options_.max_attempts) {
    p.error = absl::UnavailableError(
        absl::StrCat("rollout request ", p.request.id, " failed on ", p.attempts,
                     " attempts; last error: ", p.last_error.ToString()));
    return std::nullopt;
  }
  int64_t best = -1;
  for (int64_t w = 0; w < static_cast<int64_t>(workers_.size()); ++w) {
    if (dead_[w]) continue;
    auto key = [&](int64_t x) { return std::make_pair(p.tried.count(x) ? 1 : 0, load_[x]); };
    if (best < 0 || key(w) < key(best)) best = w;
  }
  if (best < 0) {
    p.error = absl::UnavailableError(
        absl::StrCat("rollout request ", p.request.id, ": no rollout worker is alive"));
    return std::nullopt;
  }
  if (p.attempts > 0) ++stats_.retries;
  ++p.attempts;
  p.attempt_id = next_attempt_id_++;
  p.worker = best;
  p.started = std::chrono::steady_clock::now();
  p.tried.insert(best);
  ++load_[best];
  ++outstanding_callbacks_;
  return Dispatch{best, p.attempt_id, p.request};
}

void RolloutPool::Launch(const Dispatch& d) {
  const std::string id = d.request.id;
  RolloutWorker::Callbacks cb;
  cb.on_sample = [this, id](rollout::SampleResult s) { OnSample(id, std::move(s)); };
  cb.on_done = [this, id, attempt = d.attempt_id, w = d.worker](absl::Status s) {
    OnDone(id, attempt, w, std::move(s));
  };
  workers_[d.worker]->Generate(d.request, std::move(cb));
}

absl::Status RolloutPool::Submit(RolloutRequest request) {
  std::optional<Dispatch> d;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (pending_.count(request.id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("rollout request id '", request.id, "' is already pending"));
    }
    Pending& p = pending_[request.id];
    p.samples.resize(std::max<int64_t>(1, request.request.sampling.n));
    p.request = std::move(request);
    ++stats_.requests_submitted;
    d = PlanAttempt(p);
    if (!d.has_value()) {
      absl::Status error = p.error;
      pending_.erase(p.request.id);
      return error;
    }
  }
  Launch(*d);
  return absl::OkStatus();
}

void RolloutPool::OnSample(const std::string& id, rollout::SampleResult sample) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pending_.find(id);
  if (it == pending_.end() || sample.sample_index < 0 ||
      sample.sample_index >= static_cast<int64_t>(it->second.samples.size())) {
    ++stats_.duplicate_samples;  // taken or forgotten already: nothing to add
    return;
  }
  Pending& p = it->second;
  std::optional<rollout::SampleResult>& slot = p.samples[sample.sample_index];
  if (slot.has_value()) {
    ++stats_.duplicate_samples;
    return;
  }
  slot = std::move(sample);
  ++stats_.samples_received;
  if (++p.received == static_cast<int64_t>(p.samples.size())) {
    ++stats_.requests_completed;
    completed_.push_back(id);
    cv_.notify_all();
  }
}

void RolloutPool::MarkDead(int64_t worker, std::vector<Dispatch>& redirect) {
  if (dead_[worker]) return;
  dead_[worker] = true;
  ++stats_.dead_workers;
  --stats_.live_workers;
  spdlog::warn("rollout pool: worker {} marked dead", workers_[worker]->name());
  // Its other live attempts will not finish either: send them elsewhere now.
  for (auto& [id, p] : pending_) {
    if (p.worker != worker || !p.error.ok()) continue;
    if (p.received == static_cast<int64_t>(p.samples.size())) continue;
    ++stats_.failed_attempts;
    std::optional<Dispatch> d = PlanAttempt(p);
    if (d.has_value()) redirect.push_back(*std::move(d));
  }
  cv_.notify_all();
}

void RolloutPool::OnDone(const std::string& id, int64_t attempt_id, int64_t worker,
                         absl::Status status) {
  std::vector<Dispatch> launch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    --load_[worker];
    --outstanding_callbacks_;
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    Pending& p = it->second;
    const bool complete = p.received == static_cast<int64_t>(p.samples.size());
    if (complete || attempt_id != p.attempt_id || !p.error.ok()) return;  // nothing to redo
    if (status.ok()) {
      status = absl::DataLossError(absl::StrCat("worker ", workers_[worker]->name(),
                                                " finished request ", id, " with ", p.received,
                                                " of ", p.samples.size(), " samples"));
    }
    ++stats_.failed_attempts;
    spdlog::warn("rollout pool: request {} failed on {}: {}", id, workers_[worker]->name(),
                 status.ToString());
    if (IsPermanent(status)) {
      p.error = status;
      cv_.notify_all();
      return;
    }
    p.last_error = status;
    p.worker = -1;  // this attempt is over; MarkDead must not redirect it a second time
    if (KillsWorker(status)) MarkDead(worker, launch);
    std::optional<Dispatch> d = PlanAttempt(p);
    if (d.has_value()) launch.push_back(*std::move(d));
    cv_.notify_all();
  }
  for (const Dispatch& d : launch) Launch(d);
}

std::vector<RolloutPool::Dispatch> RolloutPool::ExpireAttempts() {
  std::vector<Dispatch> out;
  const auto now = std::chrono::steady_clock::now();
  for (auto& [id, p] : pending_) {
    if (p.received == static_cast<int64_t>(p.samples.size()) || !p.error.ok()) continue;
    if (p.worker < 0 || now - p.started < options_.request_timeout) continue;
    spdlog::warn("rollout pool: request {} timed out on {}", id, workers_[p.worker]->name());
    p.last_error = absl::DeadlineExceededError("rollout request timed out");
    if (!dead_[p.worker]) {
      MarkDead(p.worker, out);  // a worker that sits on a request that long is hung; redirects p
    } else if (std::optional<Dispatch> d = PlanAttempt(p); d.has_value()) {
      out.push_back(*std::move(d));
    }
  }
  return out;
}

absl::StatusOr<std::vector<RolloutResult>> RolloutPool::Wait(const std::vector<std::string>& ids) {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    bool all = true;
    for (const std::string& id : ids) {
      auto it = pending_.find(id);
      if (it == pending_.end()) {
        return absl::NotFoundError(absl::StrCat("rollout request '", id, "' is not pending"));
      }
      const Pending& p = it->second;
      if (!p.error.ok()) return p.error;
      all = all && p.received == static_cast<int64_t>(p.samples.size());
    }
    if (all) break;
    cv_.wait_for(lock, std::chrono::milliseconds(100));
    std::vector<Dispatch> retry = ExpireAttempts();
    if (retry.empty()) continue;
    lock.unlock();
    for (const Dispatch& d : retry) Launch(d);
    lock.lock();
  }
  std::vector<RolloutResult> results;
  for (const std::string& id : ids) {
    Pending& p = pending_[id];
    RolloutResult r{id, {}, p.attempts};
    for (std::optional<rollout::SampleResult>& s : p.samples) r.samples.push_back(*std::move(s));
    results.push_back(std::move(r));
    pending_.erase(id);
    completed_.erase(std::remove(completed_.begin(), completed_.end(), id), completed_.end());
  }
  return results;
}

std::vector<std::string> RolloutPool::Completed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return completed_;
}

void RolloutPool::Forget(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.erase(id);
  completed_.erase(std::remove(completed_.begin(), completed_.end(), id), completed_.end());
}

absl::StatusOr<WeightSyncStats> RolloutPool::PublishWeights(int64_t version,
                                                            const model::ModelWeights& weights,
                                                            rollout::WeightUpdateMode mode) {
  const auto start = std::chrono::steady_clock::now();
  WeightSyncStats out;
  out.version = version;
  out.hash = model::WeightsHash(weights);
  std::vector<int64_t> live;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (int64_t w = 0; w < static_cast<int64_t>(workers_.size()); ++w) {
      if (!dead_[w]) live.push_back(w);
    }
  }
  std::vector<absl::StatusOr<uint64_t>> hashes(live.size(), absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < live.size(); ++i) {
    threads.emplace_back(
        [&, i] { hashes[i] = workers_[live[i]]->UpdateWeights(version, weights, mode); });
  }
  for (std::thread& t : threads) t.join();
  std::vector<Dispatch> redirect;
  absl::Status status = CheckPublished(live, hashes, out, redirect);
  for (const Dispatch& d : redirect) Launch(d);
  TANDEM_RETURN_IF_ERROR(status);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

absl::Status RolloutPool::CheckPublished(const std::vector<int64_t>& live,
                                         const std::vector<absl::StatusOr<uint64_t>>& hashes,
                                         WeightSyncStats& out, std::vector<Dispatch>& redirect) {
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < live.size(); ++i) {
    const std::string name = workers_[live[i]]->name();
    if (!hashes[i].ok()) {
      spdlog::warn("rollout pool: weight update v{} on {} failed: {}", out.version, name,
                   hashes[i].status().ToString());
      MarkDead(live[i], redirect);
      continue;
    }
    if (*hashes[i] != out.hash) {
      return absl::FailedPreconditionError(
          absl::StrCat("weight sync v", out.version, ": worker ", name, " holds weights with hash ",
                       *hashes[i], ", the trainer's are ", out.hash));
    }
    ++out.workers;
  }
  if (out.workers == 0) {
    return absl::UnavailableError(
        absl::StrCat("weight sync v", out.version, ": no worker is alive"));
  }
  return absl::OkStatus();
}

RolloutPoolStats RolloutPool::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace tandem::trainer
