// EngineLoop: the rollout engine on its own thread, stepping while there is work, fed through a
// thread-safe command queue (submit, cancel, weight swap) and reporting each request's progress
// to a GenerationSink as token deltas. It knows nothing of gRPC: rollout_server.cc adapts it.
//
// Requests carry the client's id. A client id that is running is ALREADY_EXISTS; a finished one
// (every sample stop/length) stays in a small cache and a retry with the same request is replayed
// from it, so a retry after a lost stream loses nothing. A cancelled request is not cached: a
// retry generates it again, with the same tokens under the same weight version (sampling is keyed
// by seed, sample and position only).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "rollout/engine.h"

namespace tandem::rollout {

// New tokens of one sample since its previous delta; finish_reason != kNone on its last one.
struct SampleDelta {
  int64_t sample_index = 0;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<int64_t> weight_versions;
  FinishReason finish_reason = FinishReason::kNone;
  std::string error;
};

// Receives one request's progress. Calls are never concurrent and OnEnd comes last, once. They
// run on the engine thread (or, for a cached replay, in Submit's caller), so they must not block.
class GenerationSink {
 public:
  virtual ~GenerationSink() = default;
  virtual void OnDeltas(std::vector<SampleDelta> deltas, bool replayed) = 0;
  // OK after every sample's last delta; an error when the request ended otherwise (the engine
  // rejected it, or the server stopped).
  virtual void OnEnd(const absl::Status& status) = 0;
};

struct EngineLoopOptions {
  int64_t max_queued = 256;         // accepted requests without a first token; more: overloaded
  int64_t result_cache_size = 256;  // finished results kept for retries
  // A request is cancelled this long before its deadline, so that its final messages (cancelled,
  // tokens so far) still reach the client before gRPC ends the call.
  absl::Duration deadline_margin = absl::Milliseconds(50);
  std::function<void()> before_step;  // tests: runs before every engine step
};

struct LoopStatus {
  int64_t weight_version = 0;
  uint64_t weights_hash = 0;
  int64_t queued_requests = 0;
  int64_t running_requests = 0;
  int64_t running_sequences = 0;
  MemoryReport memory;
  int64_t max_queued = 0;
  int64_t max_sequences = 0;
  int64_t generated_tokens = 0;
  double tokens_per_second = 0;
  int64_t finished_requests = 0;
  int64_t cancelled_requests = 0;  // any sample cancelled (Cancel, deadline, disconnect)
  int64_t rejected_requests = 0;   // Submit errors, including overload
  int64_t overloaded_requests = 0;
  int64_t weight_updates = 0;
  bool paused = false;
};

class EngineLoop {
 public:
  // Starts the engine thread. `weights_hash` is model::WeightsHash of the engine's weights.
  EngineLoop(std::unique_ptr<Engine> engine, uint64_t weights_hash, EngineLoopOptions options);
  // Stop()s.
  ~EngineLoop();

  // Thread-safe from here on.

  // Queues a request; its progress goes to `sink`. Errors (nothing is sent to the sink then):
  // InvalidArgument for a bad field; AlreadyExists for a running id, or a cached one whose
  // request differs (`fingerprint`); Unavailable when paused or stopping; ResourceExhausted when
  // max_queued requests wait. A cached id replays its result to `sink` before returning.
  // Whether the request fits in memory is checked on the engine thread (sink->OnEnd). Returns
  // the request's serial number (for Abandon), 0 for a replay.
  absl::StatusOr<uint64_t> Submit(const std::string& client_id, GenerateRequest request,
                                  uint64_t fingerprint, absl::Time deadline,
                                  const std::shared_ptr<GenerationSink>& sink);
  // Cancels a running request: its unfinished samples end with kCancelled (sent to its sink).
  // NotFound when `client_id` is not running.
  absl::Status Cancel(const std::string& client_id);
  // The client of request `serial` went away: cancels it and frees its id at once (a retry may
  // reuse the id).
  void Abandon(const std::string& client_id, uint64_t serial);

  // Weight updates, one at a time: BeginUpdate reserves the slot (Aborted when another update is
  // receiving; FailedPrecondition when `version` is not newer than the serving and pending ones),
  // then exactly one of AbandonUpdate or SwapWeights. `done` runs on the engine thread once the
  // engine serves `version` (OK), or with an error (superseded, stopping).
  absl::Status BeginUpdate(int64_t version);
  void AbandonUpdate();
  void SwapWeights(int64_t version, model::ModelWeights weights, uint64_t weights_hash,
                   WeightUpdateMode mode, std::function<void(absl::Status)> done);

  void Pause();
  void Resume();
  LoopStatus status() const;
  // Immutable after construction, so safe to read from any thread.
  const model::ModelConfig& config() const { return config_; }
  // Every weight tensor's name and shape, in ForEachParameter order.
  const std::vector<std::pair<std::string, Shape>>& signature() const { return signature_; }

  // Ends every open request with Unavailable and stops the thread. Idempotent.
  void Stop();

 private:
  struct SubmitCommand {
    std::string client_id;
    uint64_t serial;
    GenerateRequest request;
    uint64_t fingerprint;
    absl::Time deadline;
    std::shared_ptr<GenerationSink> sink;
  };
  struct CancelCommand {
    std::string client_id;
    uint64_t serial;
  };
  struct SwapCommand {
    int64_t version;
    model::ModelWeights weights;
    uint64_t hash;
    WeightUpdateMode mode;
    std::function<void(absl::Status)> done;
  };
  struct Command {
    std::optional<SubmitCommand> submit;
    std::optional<CancelCommand> cancel;
    std::optional<SwapCommand> swap;
  };
  // A request the engine holds (engine thread only).
  struct Record {
    std::string client_id;
    uint64_t serial = 0;
    uint64_t fingerprint = 0;
    absl::Time deadline;
    std::shared_ptr<GenerationSink> sink;
    std::vector<size_t> sent;      // tokens sent per sample
    std::vector<bool> final_sent;  // last delta sent per sample
    bool started = false;          // a token was produced (no longer queued)
    bool deadline_cancelled = false;
  };
  struct Active {
    uint64_t serial = 0;
    uint64_t fingerprint = 0;
  };
  struct Cached {
    uint64_t fingerprint = 0;
    std::vector<SampleDelta> samples;  // whole samples, each with its finish reason
  };
  struct PendingSwap {
    int64_t version;
    uint64_t hash;
    std::function<void(absl::Status)> done;
  };

  void Run();
  void Execute(Command command);
  void ExecuteSubmit(SubmitCommand command);
  void CancelExpired();
  void StepOnce();
  void Publish();
  void EndRecord(RequestId id, const RequestResult* result, const absl::Status& status);
  void CheckSwapApplied();
  void Shutdown();
  absl::Time NextWake() const;
  void Post(Command command);

  std::unique_ptr<Engine> engine_;
  const model::ModelConfig config_;
  std::vector<std::pair<std::string, Shape>> signature_;
  const EngineLoopOptions options_;

  // Engine thread only.
  std::map<RequestId, Record> records_;
  std::unordered_map<std::string, RequestId> by_client_;
  std::optional<PendingSwap> pending_swap_;
  std::deque<std::pair<absl::Time, int64_t>> rate_window_;  // (time, generated tokens)

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Command> inbox_;                        // guarded by mu_
  std::unordered_map<std::string, Active> active_;   // guarded by mu_
  std::list<std::pair<std::string, Cached>> cache_;  // guarded by mu_; most recent first
  uint64_t next_serial_ = 1;                         // guarded by mu_
  bool paused_ = false, stopping_ = false;           // guarded by mu_
  bool update_receiving_ = false;                    // guarded by mu_
  int64_t newest_version_ = 0;                       // guarded by mu_: serving or pending
  LoopStatus status_;                                // guarded by mu_
  std::thread thread_;
};

}  // namespace tandem::rollout
