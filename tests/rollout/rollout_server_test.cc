// RolloutServer in process, through RolloutClient over loopback: Generate returns what the engine
// alone returns and HybridModel::Forward's log-probs bitwise, also with concurrent clients;
// deltas stream one engine step at a time; Cancel, client disconnect and deadline expiry each
// cancel the request and free its memory; duplicate ids, the finished-result cache, overload,
// Pause/Resume, health and reflection.
#include <atomic>
#include <chrono>
#include <thread>

#include "gmock/gmock.h"
#include "tests/rollout/server_test_util.h"

namespace tandem::testing {
namespace {

using ::testing::HasSubstr;

// What the engine alone produces for `request` (a fresh engine over the same model).
rollout::RequestResult EngineAlone(const model::HybridModel& model,
                                   const v1::GenerateRequest& request) {
  auto engine = MakeEngine(model, 64, 8, 256, 1);
  absl::StatusOr<rollout::RequestId> id = engine->Submit(ToEngine(request));
  EXPECT_TRUE(id.ok()) << id.status();
  EXPECT_TRUE(engine->RunUntilIdle().ok());
  return *engine->Result(*id);
}

void ExpectSameAsEngineAndForward(const model::HybridModel& model,
                                  const v1::GenerateRequest& request,
                                  const proto::GenerateResult& got) {
  const rollout::RequestResult want = EngineAlone(model, request);
  ASSERT_EQ(got.samples.size(), want.samples.size());
  for (size_t i = 0; i < want.samples.size(); ++i) {
    const rollout::SampleResult& w = want.samples[i];
    const proto::GeneratedSample& g = got.samples[i];
    EXPECT_EQ(g.tokens, w.tokens) << "sample " << i;
    EXPECT_TRUE(BitwiseEqual(g.logprobs, w.logprobs)) << "sample " << i;
    EXPECT_EQ(g.weight_versions, w.weight_versions);
    EXPECT_EQ(g.finish_reason, w.finish_reason == rollout::FinishReason::kStop
                                   ? v1::FINISH_REASON_STOP
                                   : v1::FINISH_REASON_LENGTH);
    rollout::SampleResult as_engine = w;
    as_engine.logprobs = g.logprobs;
    as_engine.tokens = g.tokens;
    ExpectExact(model, ToEngine(request), as_engine);
  }
}

TEST(RolloutServerTest, GenerateEqualsEngineAndForwardBitwise) {
  TestServer t = StartServer(11);
  const v1::GenerateRequest request = MakeRequest("a", {1, 2, 3, 4, 5, 6, 7}, 3, 20, 99, 0.9f);
  absl::StatusOr<proto::GenerateResult> got = t.client->Generate(request, absl::Seconds(30));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FALSE(got->replayed);
  ExpectSameAsEngineAndForward(t.model, request, *got);
}

TEST(RolloutServerTest, ConcurrentClientsGetWhatEachGetsAlone) {
  TestServer t = StartServer(12);
  std::vector<v1::GenerateRequest> requests;
  for (int i = 0; i < 6; ++i) {
    std::vector<int32_t> prompt;
    for (int j = 0; j < 5 + 23 * i; ++j) prompt.push_back((7 * j + i) % 64);
    requests.push_back(MakeRequest(absl::StrCat("r", i), prompt, 1 + i % 3, 10 + 3 * i, i));
  }
  std::vector<absl::StatusOr<proto::GenerateResult>> results(requests.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < requests.size(); ++i) {
    threads.emplace_back(
        [&, i] { results[i] = t.client->Generate(requests[i], absl::Seconds(60)); });
  }
  for (std::thread& th : threads) th.join();
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i].status();
    ExpectSameAsEngineAndForward(t.model, requests[i], *results[i]);
  }
}

TEST(RolloutServerTest, DeltasStreamStepByStep) {
  TestServer t = StartServer(13);
  const v1::GenerateRequest request = MakeRequest("s", {5, 6, 7}, 2, 12, 3);
  std::vector<v1::GenerateResponse> messages;
  auto got = t.client->Generate(request, absl::Seconds(30),
                                [&](const v1::GenerateResponse& r) { messages.push_back(r); });
  ASSERT_TRUE(got.ok()) << got.status();
  // One token per sample per step: 12 messages, each with a one-token delta for both samples.
  ASSERT_EQ(messages.size(), 12u);
  for (size_t m = 0; m < messages.size(); ++m) {
    ASSERT_EQ(messages[m].deltas_size(), 2);
    for (const v1::SampleDelta& d : messages[m].deltas()) {
      EXPECT_EQ(d.token_ids_size(), 1);
      EXPECT_EQ(d.finish_reason() != v1::FINISH_REASON_UNSPECIFIED, m + 1 == messages.size());
    }
  }
}

// A gate in front of every engine step, to hold requests queued or slow their generation.
struct Gate {
  std::atomic<bool> open{true};
  std::atomic<int> step_sleep_ms{0};
  void Wait() const {
    while (!open.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (step_sleep_ms.load() > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(step_sleep_ms.load()));
    }
  }
};

TestServer GatedServer(uint64_t seed, Gate& gate, int64_t max_queued = 256) {
  rollout::RolloutServerOptions options;
  options.loop.before_step = [&gate] { gate.Wait(); };
  options.loop.max_queued = max_queued;
  options.loop.deadline_margin = absl::Milliseconds(300);
  return StartServer(seed, options, /*blocks=*/256);
}

bool Idle(const v1::RolloutStatus& s) {
  return s.running_requests() == 0 && s.queued_requests() == 0 && s.slots_used() == 0 &&
         s.kv_blocks_used() == 0;
}

TEST(RolloutServerTest, CancelEndsTheStreamWithCancelledSamples) {
  Gate gate;
  gate.step_sleep_ms = 5;
  TestServer t = GatedServer(14, gate);
  std::atomic<int> messages{0};
  absl::StatusOr<proto::GenerateResult> got;
  std::thread th([&] {
    got = t.client->Generate(MakeRequest("c", {1, 2, 3}, 2, 5000, 1), absl::Seconds(60),
                             [&](const v1::GenerateResponse&) { ++messages; });
  });
  while (messages.load() < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_TRUE(t.client->Cancel("c", absl::Seconds(5)).ok());
  th.join();
  ASSERT_TRUE(got.ok()) << got.status();
  for (const proto::GeneratedSample& s : got->samples) {
    EXPECT_EQ(s.finish_reason, v1::FINISH_REASON_CANCELLED);
    EXPECT_GE(s.tokens.size(), 3u);
    EXPECT_LT(s.tokens.size(), 5000u);
  }
  EXPECT_TRUE(WaitForStatus(*t.client, Idle));
  EXPECT_EQ(t.client->Cancel("c", absl::Seconds(5)).code(), absl::StatusCode::kNotFound);
  // A cancelled request is not cached: the same id runs again.
  gate.step_sleep_ms = 0;
  auto again = t.client->Generate(MakeRequest("c", {1, 2, 3}, 2, 4, 1), absl::Seconds(30));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->replayed);
}

TEST(RolloutServerTest, ClientDisconnectCancelsTheRequest) {
  Gate gate;
  gate.step_sleep_ms = 5;
  TestServer t = GatedServer(15, gate);
  {
    auto stub = v1::RolloutService::NewStub(Channel(t.target));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    auto reader = stub->Generate(&ctx, MakeRequest("d", {4, 5}, 3, 5000, 2));
    v1::GenerateResponse r;
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(reader->Read(&r));
    auto running = t.client->GetStatus(absl::Seconds(5));
    ASSERT_TRUE(running.ok());
    EXPECT_EQ(running->running_requests(), 1);
    EXPECT_EQ(running->slots_used(), 3);
    ctx.TryCancel();
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  EXPECT_TRUE(WaitForStatus(*t.client, Idle));
  EXPECT_THAT(t.server->MetricsText(), HasSubstr("tandem_rollout_requests_cancelled_total 1\n"));
}

TEST(RolloutServerTest, DeadlineExpiryCancelsWithPartialTokens) {
  Gate gate;
  gate.step_sleep_ms = 5;
  TestServer t = GatedServer(16, gate);
  const absl::Time start = absl::Now();
  auto got = t.client->Generate(MakeRequest("e", {9}, 1, 5000, 3), absl::Milliseconds(1500));
  const absl::Duration took = absl::Now() - start;
  ASSERT_TRUE(got.ok()) << got.status();  // ended by the server, before gRPC's deadline
  EXPECT_EQ(got->samples[0].finish_reason, v1::FINISH_REASON_CANCELLED);
  EXPECT_GT(got->samples[0].tokens.size(), 0u);
  EXPECT_LT(took, absl::Milliseconds(1500));
  EXPECT_TRUE(WaitForStatus(*t.client, Idle));
}

TEST(RolloutServerTest, RequestIdsRunningDuplicateFinishedReplayedDifferentRejected) {
  Gate gate;
  TestServer t = GatedServer(17, gate);
  const v1::GenerateRequest request = MakeRequest("dup", {3, 1, 4, 1, 5}, 2, 8, 5);
  gate.open = false;
  absl::StatusOr<proto::GenerateResult> first;
  std::thread th([&] { first = t.client->Generate(request, absl::Seconds(30)); });
  ASSERT_TRUE(WaitForStatus(*t.client, [](const auto& s) { return s.running_requests() == 1; }));
  auto second = t.client->Generate(request, absl::Seconds(30));
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists) << second.status();
  EXPECT_THAT(second.status().message(), HasSubstr("request_id"));
  gate.open = true;
  th.join();
  ASSERT_TRUE(first.ok()) << first.status();
  // Finished: a retry is served from the cache, bit for bit.
  auto replay = t.client->Generate(request, absl::Seconds(30));
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_TRUE(replay->replayed);
  for (size_t i = 0; i < first->samples.size(); ++i) {
    EXPECT_EQ(replay->samples[i].tokens, first->samples[i].tokens);
    EXPECT_TRUE(BitwiseEqual(replay->samples[i].logprobs, first->samples[i].logprobs));
    EXPECT_EQ(replay->samples[i].finish_reason, first->samples[i].finish_reason);
  }
  v1::GenerateRequest other = request;
  other.mutable_sampling()->set_seed(6);
  EXPECT_EQ(t.client->Generate(other, absl::Seconds(30)).status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST(RolloutServerTest, OverloadIsResourceExhaustedAndRecovers) {
  Gate gate;
  TestServer t = GatedServer(18, gate, /*max_queued=*/2);
  gate.open = false;
  std::vector<std::thread> threads;
  std::vector<absl::Status> statuses(2);
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] {
      statuses[i] =
          t.client->Generate(MakeRequest(absl::StrCat("q", i), {1, 2}, 1, 4, i), absl::Seconds(30))
              .status();
    });
  }
  ASSERT_TRUE(WaitForStatus(*t.client, [](const auto& s) { return s.queued_requests() == 2; }));
  auto third = t.client->Generate(MakeRequest("q2", {1, 2}, 1, 4, 2), absl::Seconds(30));
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted) << third.status();
  EXPECT_THAT(third.status().message(), HasSubstr("overloaded"));
  gate.open = true;
  for (std::thread& th : threads) th.join();
  for (const absl::Status& s : statuses) EXPECT_TRUE(s.ok()) << s;
  EXPECT_TRUE(t.client->Generate(MakeRequest("q2", {1, 2}, 1, 4, 2), absl::Seconds(30)).ok());
}

TEST(RolloutServerTest, PauseRefusesNewRequestsAndFlipsReadiness) {
  TestServer t = StartServer(19);
  EXPECT_EQ(HealthStatus(t.target, ""), 1);
  EXPECT_EQ(HealthStatus(t.target, "tandem.v1.RolloutService"), 1);
  auto paused = t.client->Pause(absl::Seconds(5));
  ASSERT_TRUE(paused.ok());
  EXPECT_TRUE(paused->paused());
  auto refused = t.client->Generate(MakeRequest("p", {1}, 1, 2, 0), absl::Seconds(10));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
  EXPECT_EQ(HealthStatus(t.target, "tandem.v1.RolloutService"), 2);
  EXPECT_EQ(HealthStatus(t.target, ""), 1);  // the process is alive
  ASSERT_TRUE(t.client->Resume(absl::Seconds(5)).ok());
  EXPECT_EQ(HealthStatus(t.target, "tandem.v1.RolloutService"), 1);
  EXPECT_TRUE(t.client->Generate(MakeRequest("p", {1}, 1, 2, 0), absl::Seconds(10)).ok());
}

TEST(RolloutServerTest, ReflectionListsTheRolloutService) {
  TestServer t = StartServer(20);
  auto channel = Channel(t.target);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> stream(
      grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
          channel.get(),
          grpc::internal::RpcMethod("/grpc.reflection.v1alpha.ServerReflection/"
                                    "ServerReflectionInfo",
                                    grpc::internal::RpcMethod::BIDI_STREAMING),
          &ctx));
  // ServerReflectionRequest{list_services = 7: ""}.
  ASSERT_TRUE(stream->Write(Bytes(std::string("\x3a\x00", 2))));
  stream->WritesDone();
  grpc::ByteBuffer response;
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_THAT(ToString(response), HasSubstr("tandem.v1.RolloutService"));
  EXPECT_THAT(ToString(response), HasSubstr("grpc.health.v1.Health"));
  EXPECT_TRUE(stream->Finish().ok());
}

}  // namespace
}  // namespace tandem::testing
