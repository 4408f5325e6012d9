// RolloutPool with fake workers: least-loaded dispatch, a failed attempt retried on another worker
// under the same request id (nothing lost, nothing counted twice), dead-worker marking, permanent
// errors, timeouts of a hung worker, and hash-checked weight publishing.
#include "trainer/rollout_pool.h"

#include <atomic>
#include <map>
#include <mutex>

#include "gtest/gtest.h"
#include "model/config.h"
#include "model/weights_hash.h"

namespace tandem::trainer {
namespace {

// Sample i of a request is a pure function of (seed, i): what a real worker gives on a retry.
rollout::SampleResult MakeSample(const RolloutRequest& r, int64_t i) {
  rollout::SampleResult s;
  s.sample_index = i;
  s.tokens = {static_cast<int32_t>(r.request.sampling.seed % 100), static_cast<int32_t>(i)};
  s.logprobs = {-1.0f, -0.5f};
  s.weight_versions = {0, 0};
  s.finish_reason = rollout::FinishReason::kLength;
  return s;
}

class FakeWorker : public RolloutWorker {
 public:
  enum class Mode { kOk, kFailAfter, kInvalid, kHang };
  FakeWorker(std::string name, Mode mode, int64_t fail_after = 0)
      : name_(std::move(name)), mode_(mode), fail_after_(fail_after) {}
  ~FakeWorker() override {
    for (Callbacks& cb : hung_) cb.on_done(absl::CancelledError("shut down"));
  }
  std::string name() const override { return name_; }

  // Calls back synchronously (inside Generate), which the pool must tolerate.
  void Generate(const RolloutRequest& request, Callbacks cb) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++calls_[request.id];
    }
    const int64_t n = request.request.sampling.n;
    switch (mode_) {
      case Mode::kOk:
        for (int64_t i = 0; i < n; ++i) cb.on_sample(MakeSample(request, i));
        cb.on_done(absl::OkStatus());
        return;
      case Mode::kFailAfter:
        for (int64_t i = 0; i < std::min(n, fail_after_); ++i) cb.on_sample(MakeSample(request, i));
        cb.on_done(absl::UnavailableError("connection reset"));
        return;
      case Mode::kInvalid:
        cb.on_done(absl::InvalidArgumentError("prompt_token_ids: bad"));
        return;
      case Mode::kHang:
        std::lock_guard<std::mutex> lock(mu_);
        hung_.push_back(std::move(cb));
        return;
    }
  }

  absl::StatusOr<uint64_t> UpdateWeights(int64_t, const model::ModelWeights& weights,
                                         rollout::WeightUpdateMode) override {
    if (mode_ == Mode::kFailAfter) return absl::UnavailableError("down");
    return model::WeightsHash(weights) + (corrupt_hash_ ? 1 : 0);
  }

  int64_t calls(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_[id];
  }
  int64_t total_calls() {
    std::lock_guard<std::mutex> lock(mu_);
    int64_t t = 0;
    for (auto& [id, c] : calls_) t += c;
    return t;
  }
  bool corrupt_hash_ = false;

 private:
  std::string name_;
  Mode mode_;
  int64_t fail_after_;
  std::mutex mu_;
  std::map<std::string, int64_t> calls_;
  std::vector<Callbacks> hung_;
};

RolloutRequest Request(const std::string& id, int64_t n, uint64_t seed) {
  RolloutRequest r;
  r.id = id;
  r.request.prompt = {2, 5, 6};
  r.request.sampling.n = n;
  r.request.sampling.seed = seed;
  return r;
}

struct Pool {
  std::vector<FakeWorker*> fakes;
  std::unique_ptr<RolloutPool> pool;
};

Pool MakePool(std::vector<std::unique_ptr<FakeWorker>> workers,
              std::chrono::milliseconds timeout = std::chrono::milliseconds(60000)) {
  Pool p;
  std::vector<std::unique_ptr<RolloutWorker>> base;
  for (auto& w : workers) {
    p.fakes.push_back(w.get());
    base.push_back(std::move(w));
  }
  RolloutPoolOptions options;
  options.max_attempts = 3;
  options.request_timeout = timeout;
  p.pool = std::make_unique<RolloutPool>(std::move(base), options);
  return p;
}

TEST(RolloutPoolTest, SpreadsRequestsAndReturnsEverySampleOnce) {
  std::vector<std::unique_ptr<FakeWorker>> w;
  for (int i = 0; i < 3; ++i)
    w.push_back(std::make_unique<FakeWorker>("w" + std::to_string(i), FakeWorker::Mode::kOk));
  Pool p = MakePool(std::move(w));
  std::vector<std::string> ids;
  for (int i = 0; i < 9; ++i) {
    ids.push_back("r" + std::to_string(i));
    ASSERT_TRUE(p.pool->Submit(Request(ids.back(), 4, i)).ok());
  }
  absl::StatusOr<std::vector<RolloutResult>> results = p.pool->Wait(ids);
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 9u);
  for (size_t i = 0; i < results->size(); ++i) {
    EXPECT_EQ((*results)[i].id, ids[i]);
    ASSERT_EQ((*results)[i].samples.size(), 4u);
    for (int64_t s = 0; s < 4; ++s) EXPECT_EQ((*results)[i].samples[s].sample_index, s);
  }
  // Synchronous fakes finish at once, so every worker is least loaded in turn: ties go to the
  // lowest index, and all requests may land on one worker. What matters: nothing is lost.
  const RolloutPoolStats st = p.pool->stats();
  EXPECT_EQ(st.samples_received, 36);
  EXPECT_EQ(st.duplicate_samples, 0);
  EXPECT_EQ(st.retries, 0);
  EXPECT_EQ(st.requests_completed, 9);
  ASSERT_TRUE(p.pool->Submit(Request("r9", 1, 0)).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(p.pool->Submit(Request("r9", 1, 0))));  // still pending
}

TEST(RolloutPoolTest, FailedAttemptIsRetriedElsewhereUnderTheSameIdWithoutDuplicates) {
  std::vector<std::unique_ptr<FakeWorker>> w;
  w.push_back(std::make_unique<FakeWorker>("flaky", FakeWorker::Mode::kFailAfter, 2));
  w.push_back(std::make_unique<FakeWorker>("good", FakeWorker::Mode::kOk));
  Pool p = MakePool(std::move(w));
  ASSERT_TRUE(p.pool->Submit(Request("req", 4, 7)).ok());
  ASSERT_TRUE(p.pool->Submit(Request("req2", 4, 8)).ok());
  absl::StatusOr<std::vector<RolloutResult>> results = p.pool->Wait({"req", "req2"});
  ASSERT_TRUE(results.ok()) << results.status();
  const RolloutResult& r = (*results)[0];
  ASSERT_EQ(r.samples.size(), 4u);
  EXPECT_EQ(r.attempts, 2);
  for (int64_t s = 0; s < 4; ++s) {
    EXPECT_EQ(r.samples[s].tokens, MakeSample(Request("req", 4, 7), s).tokens);
  }
  EXPECT_EQ(p.fakes[0]->calls("req"), 1);
  EXPECT_EQ(p.fakes[1]->calls("req"), 1);
  EXPECT_EQ(p.fakes[0]->calls("req2"), 0) << "a dead worker got more work";
  const RolloutPoolStats st = p.pool->stats();
  EXPECT_EQ(st.samples_received, 8);
  EXPECT_EQ(st.duplicate_samples, 2);  // the retry re-sent the two samples "flaky" delivered
  EXPECT_EQ(st.retries, 1);
  EXPECT_EQ(st.dead_workers, 1);
  EXPECT_EQ(st.live_workers, 1);
}

TEST(RolloutPoolTest, PermanentErrorFailsTheRequestWithoutRetry) {
  std::vector<std::unique_ptr<FakeWorker>> w;
  w.push_back(std::make_unique<FakeWorker>("strict", FakeWorker::Mode::kInvalid));
  w.push_back(std::make_unique<FakeWorker>("good", FakeWorker::Mode::kOk));
  Pool p = MakePool(std::move(w));
  ASSERT_TRUE(p.pool->Submit(Request("bad", 2, 1)).ok());
  absl::StatusOr<std::vector<RolloutResult>> results = p.pool->Wait({"bad"});
  EXPECT_TRUE(absl::IsInvalidArgument(results.status())) << results.status();
  EXPECT_EQ(p.fakes[1]->total_calls(), 0);
}

TEST(RolloutPoolTest, EveryWorkerDeadIsUnavailable) {
  std::vector<std::unique_ptr<FakeWorker>> w;
  w.push_back(std::make_unique<FakeWorker>("a", FakeWorker::Mode::kFailAfter, 0));
  w.push_back(std::make_unique<FakeWorker>("b", FakeWorker::Mode::kFailAfter, 1));
  Pool p = MakePool(std::move(w));
  ASSERT_TRUE(p.pool->Submit(Request("x", 3, 1)).ok());
  absl::StatusOr<std::vector<RolloutResult>> results = p.pool->Wait({"x"});
  EXPECT_TRUE(absl::IsUnavailable(results.status())) << results.status();
  EXPECT_TRUE(absl::IsUnavailable(p.pool->Submit(Request("y", 1, 1))));
}

TEST(RolloutPoolTest, HungWorkerTimesOutAndItsRequestsMove) {
  std::vector<std::unique_ptr<FakeWorker>> w;
  w.push_back(std::make_unique<FakeWorker>("hung", FakeWorker::Mode::kHang));
  w.push_back(std::make_unique<FakeWorker>("good", FakeWorker::Mode::kOk));
  Pool p = MakePool(std::move(w), std::chrono::milliseconds(200));
  // The hung worker takes the first request (both idle, lower index); the second goes to "good".
  ASSERT_TRUE(p.pool->Submit(Request("a", 2, 1)).ok());
  ASSERT_TRUE(p.pool->Submit(Request("b", 2, 2)).ok());
  absl::StatusOr<std::vector<RolloutResult>> results = p.pool->Wait({"a", "b"});
  ASSERT_TRUE(results.ok()) << results.status();
  EXPECT_EQ((*results)[0].attempts, 2);
  EXPECT_EQ(p.pool->stats().dead_workers, 1);
}

TEST(RolloutPoolTest, PublishChecksHashesAndDropsFailedWorkers) {
  absl::StatusOr<model::ModelConfig> loaded =
      model::LoadModelConfig("configs/models/tiny-hybrid.json");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const model::ModelConfig& config = *loaded;
  model::ModelWeights weights = model::AllocateWeights(config);
  model::InitWeights(config, 3, weights);
  {
    std::vector<std::unique_ptr<FakeWorker>> w;
    w.push_back(std::make_unique<FakeWorker>("ok", FakeWorker::Mode::kOk));
    w.push_back(std::make_unique<FakeWorker>("down", FakeWorker::Mode::kFailAfter));
    Pool p = MakePool(std::move(w));
    absl::StatusOr<WeightSyncStats> sync =
        p.pool->PublishWeights(1, weights, rollout::WeightUpdateMode::kDrain);
    ASSERT_TRUE(sync.ok()) << sync.status();
    EXPECT_EQ(sync->workers, 1);
    EXPECT_EQ(sync->hash, model::WeightsHash(weights));
    EXPECT_EQ(p.pool->stats().dead_workers, 1);
  }
  std::vector<std::unique_ptr<FakeWorker>> w;
  w.push_back(std::make_unique<FakeWorker>("liar", FakeWorker::Mode::kOk));
  w.back()->corrupt_hash_ = true;
  Pool p = MakePool(std::move(w));
  absl::StatusOr<WeightSyncStats> sync =
      p.pool->PublishWeights(1, weights, rollout::WeightUpdateMode::kDrain);
  EXPECT_TRUE(absl::IsFailedPrecondition(sync.status())) << sync.status();
}

}  // namespace
}  // namespace tandem::trainer
