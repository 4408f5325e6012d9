// EngineLoop: the engine thread (commands → deadlines → step → deltas → finished requests) and
// the thread-safe entry points that feed it.
#include "rollout/server/engine_loop.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/core/logging.h"

namespace tandem::rollout {
namespace {

// Tokens per second are measured over this window.
constexpr absl::Duration kRateWindow = absl::Seconds(10);
// How long the thread sleeps when it has nothing to do and no deadline comes sooner.
constexpr absl::Duration kIdleWake = absl::Milliseconds(200);

bool NaturallyFinished(const RequestResult& result) {
  for (const SampleResult& s : result.samples) {
    if (s.finish_reason != FinishReason::kStop && s.finish_reason != FinishReason::kLength) {
      return false;
    }
  }
  return true;
}

}  // namespace

EngineLoop::EngineLoop(std::unique_ptr<Engine> engine, uint64_t weights_hash,
                       EngineLoopOptions options)
    : engine_(std::move(engine)), config_(engine_->model().config()), options_(std::move(options)) {
  engine_->model().weights().ForEachParameter(
      [&](const std::string& name, const Tensor& t) { signature_.emplace_back(name, t.shape()); });
  status_.weight_version = engine_->weight_version();
  status_.weights_hash = weights_hash;
  status_.memory = engine_->memory();
  status_.max_queued = options_.max_queued;
  status_.max_sequences = status_.memory.num_slots;
  newest_version_ = engine_->weight_version();
  thread_ = std::thread([this] { Run(); });
}

EngineLoop::~EngineLoop() { Stop(); }

void EngineLoop::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void EngineLoop::Post(Command command) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    inbox_.push_back(std::move(command));
  }
  wake_.notify_all();
}

absl::StatusOr<uint64_t> EngineLoop::Submit(const std::string& client_id, GenerateRequest request,
                                            uint64_t fingerprint, absl::Time deadline,
                                            const std::shared_ptr<GenerationSink>& sink) {
  if (absl::Status s = ValidateRequest(request, config_.vocab_size); !s.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    ++status_.rejected_requests;
    return s;
  }
  std::vector<SampleDelta> replay;
  uint64_t serial = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    absl::Status reject;
    auto cached = std::find_if(cache_.begin(), cache_.end(),
                               [&](const auto& entry) { return entry.first == client_id; });
    if (stopping_) {
      reject = absl::UnavailableError("server: shutting down");
    } else if (active_.count(client_id) != 0) {
      reject = absl::AlreadyExistsError(
          absl::StrCat("request_id: '", client_id, "' is already running on this server"));
    } else if (cached != cache_.end() && cached->second.fingerprint != fingerprint) {
      reject = absl::AlreadyExistsError(absl::StrCat(
          "request_id: '", client_id, "' was used for a different request that has finished"));
    } else if (cached != cache_.end()) {
      replay = cached->second.samples;
    } else if (paused_) {
      reject = absl::UnavailableError("server: paused (Pause); retry later or on another worker");
    } else if (status_.queued_requests >= options_.max_queued) {
      ++status_.overloaded_requests;
      reject = absl::ResourceExhaustedError(
          absl::StrCat("server: overloaded, ", status_.queued_requests,
                       " requests are waiting (limit ", options_.max_queued, ")"));
    }
    if (!reject.ok()) {
      ++status_.rejected_requests;
      return reject;
    }
    if (replay.empty()) {
      serial = next_serial_++;
      active_[client_id] = Active{serial, fingerprint};
      ++status_.queued_requests;
      ++status_.running_requests;
      inbox_.push_back(
          Command{SubmitCommand{client_id, serial, std::move(request), fingerprint, deadline, sink},
                  std::nullopt, std::nullopt});
    }
  }
  if (!replay.empty()) {
    sink->OnDeltas(std::move(replay), /*replayed=*/true);
    sink->OnEnd(absl::OkStatus());
    return uint64_t{0};
  }
  wake_.notify_all();
  return serial;
}

absl::Status EngineLoop::Cancel(const std::string& client_id) {
  uint64_t serial = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = active_.find(client_id);
    if (it == active_.end()) {
      return absl::NotFoundError(
          absl::StrCat("request_id: '", client_id, "' is not running on this server"));
    }
    serial = it->second.serial;
  }
  Post(Command{std::nullopt, CancelCommand{client_id, serial}, std::nullopt});
  return absl::OkStatus();
}

void EngineLoop::Abandon(const std::string& client_id, uint64_t serial) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = active_.find(client_id);
    if (it == active_.end() || it->second.serial != serial) return;
    active_.erase(it);
  }
  Post(Command{std::nullopt, CancelCommand{client_id, serial}, std::nullopt});
}

absl::Status EngineLoop::BeginUpdate(int64_t version) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return absl::UnavailableError("server: shutting down");
  if (update_receiving_) {
    return absl::AbortedError("UpdateWeights: another weight update is being received");
  }
  if (version <= newest_version_) {
    return absl::FailedPreconditionError(
        absl::StrCat("version: ", version, " is not newer than version ", newest_version_,
                     version == status_.weight_version ? " (serving now)" : ""));
  }
  update_receiving_ = true;
  return absl::OkStatus();
}

void EngineLoop::AbandonUpdate() {
  std::lock_guard<std::mutex> lock(mu_);
  update_receiving_ = false;
}

void EngineLoop::SwapWeights(int64_t version, model::ModelWeights weights, uint64_t weights_hash,
                             WeightUpdateMode mode, std::function<void(absl::Status)> done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    update_receiving_ = false;
    newest_version_ = std::max(newest_version_, version);
  }
  Post(Command{std::nullopt, std::nullopt,
               SwapCommand{version, std::move(weights), weights_hash, mode, std::move(done)}});
}

void EngineLoop::Pause() {
  std::lock_guard<std::mutex> lock(mu_);
  paused_ = true;
}

void EngineLoop::Resume() {
  std::lock_guard<std::mutex> lock(mu_);
  paused_ = false;
}

LoopStatus EngineLoop::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  LoopStatus s = status_;
  s.paused = paused_;
  return s;
}

// ---- engine thread ----

void EngineLoop::Run() {
  for (;;) {
    std::deque<Command> commands;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (!stopping_ && inbox_.empty() && !engine_->HasWork() && !engine_->update_pending()) {
        wake_.wait_until(lock, absl::ToChronoTime(NextWake()));
      }
      if (stopping_) break;
      commands.swap(inbox_);
    }
    for (Command& c : commands) Execute(std::move(c));
    CancelExpired();
    if (engine_->HasWork() || engine_->update_pending()) StepOnce();
    Publish();
    CheckSwapApplied();
  }
  Shutdown();
}

absl::Time EngineLoop::NextWake() const {
  absl::Time wake = absl::Now() + kIdleWake;
  for (const auto& [id, r] : records_) wake = std::min(wake, r.deadline - options_.deadline_margin);
  return wake;
}

void EngineLoop::Execute(Command command) {
  if (command.submit) {
    ExecuteSubmit(std::move(*command.submit));
  } else if (command.cancel) {
    auto it = by_client_.find(command.cancel->client_id);
    if (it == by_client_.end() || records_.at(it->second).serial != command.cancel->serial) return;
    (void)engine_->Cancel(it->second);  // NotFound only for a collected request: nothing to do
  } else if (command.swap) {
    SwapCommand& swap = *command.swap;
    absl::Status s = engine_->UpdateWeights(swap.version, swap.weights, swap.mode);
    if (!s.ok()) {
      swap.done(s);
      return;
    }
    if (pending_swap_) {
      pending_swap_->done(absl::AbortedError(absl::StrCat("version ", pending_swap_->version,
                                                          " was replaced by version ", swap.version,
                                                          " before the engine swapped it in")));
    }
    pending_swap_ = PendingSwap{swap.version, swap.hash, std::move(swap.done)};
  }
}

void EngineLoop::ExecuteSubmit(SubmitCommand command) {
  const int64_t n = command.request.sampling.n;
  absl::StatusOr<RequestId> id = engine_->Submit(std::move(command.request));
  if (!id.ok()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      --status_.queued_requests;
      --status_.running_requests;
      ++status_.rejected_requests;
      auto it = active_.find(command.client_id);
      if (it != active_.end() && it->second.serial == command.serial) active_.erase(it);
    }
    command.sink->OnEnd(id.status());
    return;
  }
  Record& r = records_[*id];
  r.client_id = command.client_id;
  r.serial = command.serial;
  r.fingerprint = command.fingerprint;
  r.deadline = command.deadline;
  r.sink = std::move(command.sink);
  r.sent.assign(n, 0);
  r.final_sent.assign(n, false);
  by_client_[r.client_id] = *id;
}

void EngineLoop::CancelExpired() {
  const absl::Time now = absl::Now();
  for (auto& [id, r] : records_) {
    if (!r.deadline_cancelled && now >= r.deadline - options_.deadline_margin) {
      r.deadline_cancelled = true;
      (void)engine_->Cancel(id);
    }
  }
}

void EngineLoop::StepOnce() {
  if (options_.before_step) options_.before_step();
  absl::StatusOr<StepStats> stats = engine_->Step();
  if (!stats.ok()) {
    spdlog::error("rollout server: engine step failed: {}", stats.status().ToString());
    return;
  }
  std::unique_lock<std::mutex> lock(mu_);
  status_.running_sequences = stats->sequences;
  if (stats->idle()) {
    // Nothing could be scheduled (e.g. new requests held behind a drain): do not spin.
    wake_.wait_for(lock, std::chrono::milliseconds(1),
                   [this] { return stopping_ || !inbox_.empty(); });
  }
}

// Sends every sample's new tokens, then ends the requests the engine finished.
void EngineLoop::Publish() {
  for (auto& [id, r] : records_) {
    const RequestResult* result = engine_->Result(id);
    if (result == nullptr) continue;
    std::vector<SampleDelta> deltas;
    int64_t request_tokens = 0;
    for (const SampleResult& s : result->samples) {
      const size_t i = static_cast<size_t>(s.sample_index);
      const bool ends = s.finish_reason != FinishReason::kNone && !r.final_sent[i];
      if (s.tokens.size() == r.sent[i] && !ends) continue;
      SampleDelta d;
      d.sample_index = s.sample_index;
      d.tokens.assign(s.tokens.begin() + r.sent[i], s.tokens.end());
      d.logprobs.assign(s.logprobs.begin() + r.sent[i], s.logprobs.end());
      d.weight_versions.assign(s.weight_versions.begin() + r.sent[i], s.weight_versions.end());
      request_tokens += static_cast<int64_t>(d.tokens.size());
      r.sent[i] = s.tokens.size();
      if (ends) {
        d.finish_reason = s.finish_reason;
        d.error = s.error;
        r.final_sent[i] = true;
      }
      deltas.push_back(std::move(d));
    }
    if (deltas.empty()) continue;
    {
      // Counted before the client can see the tokens.
      std::lock_guard<std::mutex> lock(mu_);
      status_.generated_tokens += request_tokens;
      if (!r.started && request_tokens > 0) {
        r.started = true;
        --status_.queued_requests;
      }
    }
    r.sink->OnDeltas(std::move(deltas), /*replayed=*/false);
  }
  for (const RequestResult& result : engine_->TakeFinished()) {
    EndRecord(result.id, &result, absl::OkStatus());
  }
  const absl::Time now = absl::Now();
  std::lock_guard<std::mutex> lock(mu_);
  status_.memory = engine_->memory();  // cancellations free memory without a step
  if (!engine_->HasWork()) status_.running_sequences = 0;
  if (rate_window_.empty() || now - rate_window_.back().first >= absl::Milliseconds(100)) {
    rate_window_.emplace_back(now, status_.generated_tokens);
  }
  while (rate_window_.size() > 1 && now - rate_window_.front().first > kRateWindow) {
    rate_window_.pop_front();
  }
  const double span = absl::ToDoubleSeconds(now - rate_window_.front().first);
  status_.tokens_per_second =
      span > 0 ? static_cast<double>(status_.generated_tokens - rate_window_.front().second) / span
               : 0.0;
}

// Forgets a request the engine no longer holds: frees its client id, caches a naturally finished
// result, tells the sink.
void EngineLoop::EndRecord(RequestId id, const RequestResult* result, const absl::Status& status) {
  auto it = records_.find(id);
  if (it == records_.end()) return;
  Record r = std::move(it->second);
  records_.erase(it);
  auto by = by_client_.find(r.client_id);
  if (by != by_client_.end() && by->second == id) by_client_.erase(by);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!r.started) --status_.queued_requests;
    --status_.running_requests;
    ++status_.finished_requests;
    auto active = active_.find(r.client_id);
    if (active != active_.end() && active->second.serial == r.serial) active_.erase(active);
    if (result != nullptr && NaturallyFinished(*result) && options_.result_cache_size > 0) {
      Cached cached{r.fingerprint, {}};
      for (const SampleResult& s : result->samples) {
        cached.samples.push_back(SampleDelta{s.sample_index, s.tokens, s.logprobs,
                                             s.weight_versions, s.finish_reason, s.error});
      }
      cache_.emplace_front(r.client_id, std::move(cached));
      while (static_cast<int64_t>(cache_.size()) > options_.result_cache_size) cache_.pop_back();
    } else if (result != nullptr) {
      ++status_.cancelled_requests;
    }
  }
  r.sink->OnEnd(status);
}

void EngineLoop::CheckSwapApplied() {
  if (!pending_swap_ || engine_->weight_version() != pending_swap_->version) return;
  PendingSwap swap = std::move(*pending_swap_);
  pending_swap_.reset();
  {
    std::lock_guard<std::mutex> lock(mu_);
    status_.weight_version = swap.version;
    status_.weights_hash = swap.hash;
    ++status_.weight_updates;
  }
  swap.done(absl::OkStatus());
}

// Stopping: every open request and pending swap ends with Unavailable.
void EngineLoop::Shutdown() {
  const absl::Status stopping = absl::UnavailableError("server: shutting down");
  std::deque<Command> commands;
  {
    std::lock_guard<std::mutex> lock(mu_);
    commands.swap(inbox_);
  }
  for (Command& c : commands) {
    if (c.submit) c.submit->sink->OnEnd(stopping);
    if (c.swap) c.swap->done(stopping);
  }
  std::vector<RequestId> ids;
  for (const auto& [id, r] : records_) ids.push_back(id);
  for (RequestId id : ids) {
    (void)engine_->Cancel(id);
    EndRecord(id, nullptr, stopping);
  }
  if (pending_swap_) pending_swap_->done(stopping);
  pending_swap_.reset();
}

}  // namespace tandem::rollout
