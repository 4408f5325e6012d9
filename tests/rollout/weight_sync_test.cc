// Weight sync through RolloutClient::UpdateWeights: after a push of version 1 the server reports
// version 1 and the pushed weights' hash, and Generate's log-probs are HybridModel::Forward's under
// the new weights, bitwise, with version 1 on every token; a corrupt or partial push leaves
// version 0 serving with log-probs unchanged; drain and in-flight modes stamp tokens as promised.
#include <atomic>
#include <chrono>
#include <thread>

#include "gmock/gmock.h"
#include "model/weights_hash.h"
#include "tests/rollout/server_test_util.h"

namespace tandem::testing {
namespace {

// Every token's log-prob is Forward's under `model` (bitwise).
void ExpectLogprobsUnder(const model::HybridModel& model, const v1::GenerateRequest& request,
                         const proto::GenerateResult& got) {
  for (const proto::GeneratedSample& g : got.samples) {
    rollout::SampleResult s;
    s.sample_index = g.sample_index;
    s.tokens = g.tokens;
    s.logprobs = g.logprobs;
    ExpectExact(model, ToEngine(request), s);
  }
}

TEST(WeightSyncTest, PushedVersionServesAndLogprobsFollowTheNewWeights) {
  TestServer t = StartServer(41);
  const v1::GenerateRequest before = MakeRequest("b", {1, 2, 3, 4}, 2, 10, 5);
  auto old = t.client->Generate(before, absl::Seconds(30));
  ASSERT_TRUE(old.ok()) << old.status();
  ExpectLogprobsUnder(t.model, before, *old);

  const model::HybridModel next(t.model.config(), RandomWeights(t.model.config(), 42));
  auto pushed =
      t.client->UpdateWeights(next.weights(), 1, v1::WEIGHT_UPDATE_MODE_DRAIN, absl::Seconds(60));
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_EQ(pushed->version, 1);
  EXPECT_EQ(pushed->server_hash, model::WeightsHash(next.weights()));
  EXPECT_EQ(pushed->local_hash, pushed->server_hash);
  EXPECT_NE(pushed->server_hash, model::WeightsHash(t.model.weights()));
  auto status = t.client->GetStatus(absl::Seconds(5));
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->weight_version(), 1);
  EXPECT_EQ(status->weights_hash(), pushed->server_hash);
  EXPECT_THAT(t.server->MetricsText(), ::testing::HasSubstr("tandem_rollout_weight_version 1\n"));

  const v1::GenerateRequest after = MakeRequest("a", {1, 2, 3, 4}, 2, 10, 5);
  auto fresh = t.client->Generate(after, absl::Seconds(30));
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  ExpectLogprobsUnder(next, after, *fresh);
  for (const auto& s : fresh->samples) {
    EXPECT_EQ(s.weight_versions, std::vector<int64_t>(s.tokens.size(), 1));
  }
  EXPECT_FALSE(BitwiseEqual(fresh->samples[0].logprobs, old->samples[0].logprobs));

  // Same version again: refused, nothing changes.
  auto again =
      t.client->UpdateWeights(next.weights(), 1, v1::WEIGHT_UPDATE_MODE_DRAIN, absl::Seconds(60));
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition) << again.status();
}

TEST(WeightSyncTest, CorruptOrPartialPushLeavesTheOldVersionServing) {
  TestServer t = StartServer(43);
  const model::ModelWeights next = RandomWeights(t.model.config(), 44);
  auto stub = v1::RolloutService::NewStub(Channel(t.target));
  for (const bool corrupt : {true, false}) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::UpdateWeightsResponse response;
    auto writer = stub->UpdateWeights(&ctx, &response);
    int sent = 0;
    proto::ForEachWeightsMessage(next, 1, v1::WEIGHT_UPDATE_MODE_IN_FLIGHT, 1024,
                                 [&](const v1::UpdateWeightsMessage& m) {
                                   if (!corrupt && sent == 10) return false;  // partial
                                   v1::UpdateWeightsMessage copy = m;
                                   if (corrupt && sent == 7) {
                                     (*copy.mutable_chunk()->mutable_data())[0] ^= 1;
                                   }
                                   ++sent;
                                   return writer->Write(copy);
                                 });
    writer->WritesDone();
    EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::DATA_LOSS);
  }
  auto status = t.client->GetStatus(absl::Seconds(5));
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->weight_version(), 0);
  EXPECT_EQ(status->weights_hash(), model::WeightsHash(t.model.weights()));
  const v1::GenerateRequest request = MakeRequest("x", {7, 8, 9}, 1, 8, 1);
  auto got = t.client->Generate(request, absl::Seconds(30));
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectLogprobsUnder(t.model, request, *got);
  EXPECT_EQ(got->samples[0].weight_versions, std::vector<int64_t>(8, 0));
}

// A server whose steps take a few milliseconds, so that a push lands mid-generation.
TestServer SlowServer(uint64_t seed) {
  rollout::RolloutServerOptions options;
  options.loop.before_step = [] { std::this_thread::sleep_for(std::chrono::milliseconds(3)); };
  return StartServer(seed, options, /*blocks=*/256);
}

void PushWhileGenerating(TestServer& t, v1::WeightUpdateMode mode,
                         absl::StatusOr<proto::GenerateResult>& got) {
  std::atomic<int> messages{0};
  std::thread th([&] {
    got = t.client->Generate(MakeRequest("g", {1, 2, 3}, 2, 400, 9), absl::Seconds(60),
                             [&](const v1::GenerateResponse&) { ++messages; });
  });
  while (messages.load() < 20) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const model::ModelWeights next = RandomWeights(t.model.config(), 52);
  auto pushed = t.client->UpdateWeights(next, 1, mode, absl::Seconds(60));
  th.join();
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  ASSERT_TRUE(got.ok()) << got.status();
}

TEST(WeightSyncTest, InFlightSwapStampsLaterTokensWithTheNewVersion) {
  TestServer t = SlowServer(51);
  absl::StatusOr<proto::GenerateResult> got;
  PushWhileGenerating(t, v1::WEIGHT_UPDATE_MODE_IN_FLIGHT, got);
  for (const auto& s : got->samples) {
    ASSERT_EQ(s.weight_versions.size(), 400u);
    EXPECT_TRUE(std::is_sorted(s.weight_versions.begin(), s.weight_versions.end()));
    EXPECT_EQ(s.weight_versions.front(), 0);
    EXPECT_EQ(s.weight_versions.back(), 1);  // swapped long before the 400th token
  }
}

TEST(WeightSyncTest, DrainSwapLetsTheRunningRequestFinishOnTheOldVersion) {
  TestServer t = SlowServer(53);
  absl::StatusOr<proto::GenerateResult> got;
  PushWhileGenerating(t, v1::WEIGHT_UPDATE_MODE_DRAIN, got);
  for (const auto& s : got->samples) {
    EXPECT_EQ(s.weight_versions, std::vector<int64_t>(400, 0));
  }
  auto status = t.client->GetStatus(absl::Seconds(5));
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->weight_version(), 1);
}

}  // namespace
}  // namespace tandem::testing
