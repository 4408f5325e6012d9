// RolloutPool: the trainer's view of its rollout workers (DESIGN.md §7). Requests go to the
// least-loaded live worker; a failed or timed-out request is sent again, under the SAME request
// id and seed, to another worker; samples are deduplicated by (request id, sample index), so a
// retry never loses a sample nor counts one twice. A worker whose transport fails is marked dead
// and gets no more work. Weight publishing pushes a version to every live worker and checks the
// hash each one reports against the trainer's.
//
// Workers implement RolloutWorker: in-process (rl_inprocess_worker.h, a rollout::Engine on its own
// thread), over gRPC (rl_grpc_worker.h), or fakes in tests.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/weights.h"
#include "rollout/engine.h"
#include "rollout/request.h"

namespace tandem::trainer {

// One logical request: a prompt with n samples. `id` is unique per logical request; every attempt
// of it (on any worker) carries the same id and the same sampling seed, so with the same weights a
// retry draws the same tokens.
struct RolloutRequest {
  std::string id;
  rollout::GenerateRequest request;
};

struct RolloutResult {
  std::string id;
  std::vector<rollout::SampleResult> samples;  // n entries, by sample index
  int64_t attempts = 0;                        // dispatches it took (1 = no retry)
};

class RolloutWorker {
 public:
  struct Callbacks {
    // Each finished sample, from any thread, possibly before Generate returns.
    std::function<void(rollout::SampleResult)> on_sample;
    // Exactly once, after the attempt's last on_sample. A non-OK status means the attempt failed
    // (samples not delivered are lost with it); UNAVAILABLE marks a dead transport.
    std::function<void(absl::Status)> on_done;
  };
  virtual ~RolloutWorker() = default;
  virtual std::string name() const = 0;
  // Starts one attempt of `request` and returns without waiting for it.
  virtual void Generate(const RolloutRequest& request, Callbacks callbacks) = 0;
  // Installs `weights` as `version` (blocking until the worker holds them) and returns the
  // model::WeightsHash of the weights the worker installed.
  virtual absl::StatusOr<uint64_t> UpdateWeights(int64_t version,
                                                 const model::ModelWeights& weights,
                                                 rollout::WeightUpdateMode mode) = 0;
};

struct RolloutPoolOptions {
  int64_t max_attempts = 4;  // dispatches per request before it fails the run
  std::chrono::milliseconds request_timeout{120000};  // then the attempt counts as failed
};

// Counters since the pool was made. "samples" are unique (request id, sample index) pairs.
struct RolloutPoolStats {
  int64_t requests_submitted = 0;
  int64_t requests_completed = 0;
  int64_t samples_received = 0;   // unique samples stored
  int64_t duplicate_samples = 0;  // samples of a retry that were already held: dropped
  int64_t retries = 0;            // dispatches beyond the first
  int64_t failed_attempts = 0;    // attempts that ended in an error or a timeout
  int64_t dead_workers = 0;
  int64_t live_workers = 0;
};

struct WeightSyncStats {
  int64_t version = 0;
  int64_t workers = 0;  // live workers updated
  double seconds = 0;   // wall time of the whole publish
  uint64_t hash = 0;    // the trainer's model::WeightsHash, equal to every worker's
};

// Thread-safe.
class RolloutPool {
 public:
  // REQUIRES: at least one worker.
  RolloutPool(std::vector<std::unique_ptr<RolloutWorker>> workers, RolloutPoolOptions options);
  ~RolloutPool();
  RolloutPool(const RolloutPool&) = delete;
  RolloutPool& operator=(const RolloutPool&) = delete;

  // Dispatches a new request. InvalidArgument for an id already pending; Unavailable when no
  // worker is alive.
  absl::Status Submit(RolloutRequest request);
  // Blocks until every request in `ids` is complete and returns them in that order; the pool
  // then forgets them. An error when one of them failed on max_attempts workers or every worker
  // died; the other results stay pending.
  absl::StatusOr<std::vector<RolloutResult>> Wait(const std::vector<std::string>& ids);
  // Ids of completed requests not yet taken, in completion order.
  std::vector<std::string> Completed() const;
  // Cancels the pool's interest in a pending request: later samples of it are dropped.
  void Forget(const std::string& id);

  // Pushes `weights` to every live worker concurrently; a worker that fails is marked dead.
  // FailedPrecondition when a worker reports a hash other than model::WeightsHash(weights);
  // Unavailable when no worker is left alive.
  absl::StatusOr<WeightSyncStats> PublishWeights(int64_t version,
                                                 const model::ModelWeights& weights,
                                                 rollout::WeightUpdateMode mode);

  RolloutPoolStats stats() const;
  int64_t num_workers() const { return static_cast<int64_t>(workers_.size()); }

 private:
  struct Pending {
    RolloutRequest request;
    std::vector<std::optional<rollout::SampleResult>> samples;
    int64_t received = 0;
    int64_t attempts = 0;
    int64_t attempt_id = 0;  // the live attempt; callbacks of older ones only deliver samples
    int64_t worker = -1;     // worker of the live attempt
    std::chrono::steady_clock::time_point started;
    std::set<int64_t> tried;  // workers that got an attempt
    absl::Status error;       // set when the request failed for good
    absl::Status last_error;  // of the latest failed attempt
  };
  struct Dispatch {
    int64_t worker = -1;
    int64_t attempt_id = 0;
    RolloutRequest request;
  };

  // Picks a worker for the next attempt of `p` (least loaded live one, untried ones first) and
  // records the attempt; nullopt (and p.error set) when none is left. REQUIRES: mu_ held.
  std::optional<Dispatch> PlanAttempt(Pending& p);
  void Launch(const Dispatch& d);  // REQUIRES: mu_ not held
  void OnSample(const std::string& id, rollout::SampleResult sample);
  void OnDone(const std::string& id, int64_t attempt_id, int64_t worker, absl::Status status);
  // Fails attempts older than the timeout over to other workers. REQUIRES: mu_ held.
  std::vector<Dispatch> ExpireAttempts();
  // Stops dispatching to `worker` and re-plans its live attempts into `redirect` (to Launch once
  // mu_ is released). REQUIRES: mu_ held.
  void MarkDead(int64_t worker, std::vector<Dispatch>& redirect);
  // Marks workers whose update failed dead; FailedPrecondition on a hash mismatch.
  absl::Status CheckPublished(const std::vector<int64_t>& live,
                              const std::vector<absl::StatusOr<uint64_t>>& hashes,
                              WeightSyncStats& out, std::vector<Dispatch>& redirect);

  std::vector<std::unique_ptr<RolloutWorker>> workers_;
  RolloutPoolOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Pending> pending_;
  std::vector<std::string> completed_;  // ids, completion order
  std::vector<int64_t> load_;           // attempts in flight per worker
  std::vector<bool> dead_;
  int64_t outstanding_callbacks_ = 0;  // attempts whose on_done has not run yet
  int64_t next_attempt_id_ = 1;
  RolloutPoolStats stats_;
};

}  // namespace tandem::trainer
