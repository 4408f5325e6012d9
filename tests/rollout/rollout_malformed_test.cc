// Malformed requests to the rollout server, each answered with a clear error (the right code and
// a message naming the field), after each of which the server still serves: random bytes as a
// whole message and inside fields, invalid UTF-8, out-of-vocabulary ids, n = 0, huge max_tokens,
// a missing deadline, bad sampling values; and for UpdateWeights wrong dtypes, shapes, names and
// sizes, misplaced chunks, a corrupt checksum, a truncated stream, a stale version, a client that
// gives up midway. The served version and hash never change; a good push afterwards succeeds.
#include <random>

#include "gmock/gmock.h"
#include "model/weights_hash.h"
#include "tests/rollout/server_test_util.h"

namespace tandem::testing {
namespace {

using ::testing::HasSubstr;

class MalformedTest : public ::testing::Test {
 protected:
  // The server still answers a good request exactly as before.
  void ExpectStillServing() {
    auto got = t_.client->Generate(MakeRequest(absl::StrCat("ok", ++good_), {1, 2, 3}, 2, 3, 7),
                                   absl::Seconds(30));
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->samples.size(), 2u);
    auto status = t_.client->GetStatus(absl::Seconds(5));
    ASSERT_TRUE(status.ok()) << status.status();
    EXPECT_EQ(status->weight_version(), 0);
    EXPECT_EQ(status->weights_hash(), model::WeightsHash(t_.model.weights()));
  }

  // A Generate of raw bytes fails with `code` and a message containing `what`.
  void ExpectGenerateError(const std::string& bytes, grpc::StatusCode code, const std::string& what,
                           bool deadline = true) {
    SCOPED_TRACE(what);
    std::vector<v1::GenerateResponse> responses;
    const grpc::Status s = RawGenerate(t_.target, bytes, &responses, deadline);
    EXPECT_EQ(s.error_code(), code) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(what));
    EXPECT_TRUE(responses.empty());
    ExpectStillServing();
  }
  void ExpectGenerateError(const v1::GenerateRequest& r, const std::string& what) {
    ExpectGenerateError(r.SerializeAsString(), grpc::StatusCode::INVALID_ARGUMENT, what);
  }

  TestServer t_ = StartServer(31);
  int good_ = 0;
};

TEST_F(MalformedTest, RandomBytesAsTheWholeMessage) {
  std::mt19937_64 rng(1);
  for (int trial = 0; trial < 20; ++trial) {
    std::string bytes(1 + rng() % 200, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    const grpc::Status s = RawGenerate(t_.target, bytes);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_FALSE(s.error_message().empty());
  }
  ExpectStillServing();
  ExpectGenerateError(std::string("\x0a\xff\x01", 3), grpc::StatusCode::INVALID_ARGUMENT,
                      "not a protobuf encoding");
}

TEST_F(MalformedTest, RandomBytesInsideFields) {
  const v1::GenerateRequest good = MakeRequest("f", {1, 2, 3}, 1, 4, 0);
  // request_id: bytes that are not UTF-8.
  v1::GenerateRequest r = good;
  r.set_request_id(std::string("id\xff\xfe\x80", 5));
  ExpectGenerateError(r.SerializeAsString(), grpc::StatusCode::INVALID_ARGUMENT,
                      "GenerateRequest.request_id: not valid UTF-8");
  // prompt_token_ids: a packed run whose last varint never ends.
  std::string bytes = good.SerializeAsString();
  bytes += std::string("\x12\x03\x05\x81\xff", 5);
  ExpectGenerateError(bytes, grpc::StatusCode::INVALID_ARGUMENT,
                      "GenerateRequest.prompt_token_ids: malformed packed varints");
  // sampling: random bytes where the submessage should be.
  bytes = good.SerializeAsString() + std::string("\x1a\x04\xff\xff\xff\xff", 6);
  ExpectGenerateError(bytes, grpc::StatusCode::INVALID_ARGUMENT, "GenerateRequest.sampling");
  // Random values in every numeric field.
  std::mt19937_64 rng(2);
  for (int trial = 0; trial < 20; ++trial) {
    v1::GenerateRequest x = good;
    x.set_prompt_token_ids(0, static_cast<int32_t>(rng()));
    x.mutable_sampling()->set_n(static_cast<int64_t>(rng()));
    x.mutable_sampling()->set_max_tokens(static_cast<int64_t>(rng()));
    const grpc::Status s = RawGenerate(t_.target, x.SerializeAsString());
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  }
  ExpectStillServing();
}

TEST_F(MalformedTest, BadFieldValuesNameTheField) {
  const v1::GenerateRequest good = MakeRequest("v", {1, 2, 3}, 1, 4, 0);
  v1::GenerateRequest r = good;
  r.set_prompt_token_ids(1, 64);  // vocab_size = 64
  ExpectGenerateError(r, "prompt_token_ids[1]: 64 is outside the vocabulary [0, 64)");
  r = good;
  r.set_prompt_token_ids(2, -1);
  ExpectGenerateError(r, "prompt_token_ids[2]: -1");
  r = good;
  r.clear_prompt_token_ids();
  ExpectGenerateError(r, "prompt_token_ids: must hold at least one");
  r = good;
  r.mutable_sampling()->set_n(0);
  ExpectGenerateError(r, "sampling.n: must be >= 1, got 0");
  r = good;
  r.mutable_sampling()->set_n(1000000000);
  ExpectGenerateError(r, "n: 1000000000 samples need");  // the engine's memory check
  r = good;
  r.mutable_sampling()->set_max_tokens(0);
  ExpectGenerateError(r, "sampling.max_tokens: must be in [1, ");
  r = good;
  r.mutable_sampling()->set_max_tokens(int64_t{1} << 60);
  ExpectGenerateError(r, "sampling.max_tokens");
  r = good;
  r.mutable_sampling()->set_max_tokens(100000);  // allowed, but more than the KV budget holds
  ExpectGenerateError(r, "it can never fit");
  r = good;
  r.clear_sampling();
  ExpectGenerateError(r, "sampling: missing");
  r = good;
  r.mutable_sampling()->set_temperature(std::nanf(""));
  ExpectGenerateError(r, "sampling.temperature");
  r = good;
  r.mutable_sampling()->set_temperature(-1);
  ExpectGenerateError(r, "sampling.temperature");
  r = good;
  r.mutable_sampling()->set_top_p(0);
  ExpectGenerateError(r, "sampling.top_p");
  r = good;
  r.mutable_sampling()->set_top_k(-3);
  ExpectGenerateError(r, "sampling.top_k");
  r = good;
  r.mutable_sampling()->add_stop_token_ids(99);
  ExpectGenerateError(r, "sampling.stop_token_ids[0]: 99");
  r = good;
  r.clear_request_id();
  ExpectGenerateError(r, "request_id: must be 1-256 bytes, got 0");
  r = good;
  r.set_request_id(std::string(300, 'x'));
  ExpectGenerateError(r, "request_id: must be 1-256 bytes, got 300");
}

TEST_F(MalformedTest, MissingDeadline) {
  ExpectGenerateError(MakeRequest("nd", {1}, 1, 2, 0).SerializeAsString(),
                      grpc::StatusCode::INVALID_ARGUMENT, "deadline", /*deadline=*/false);
}

TEST_F(MalformedTest, UnaryMethodsRejectGarbage) {
  std::string response;
  grpc::Status s = RawUnary(t_.target, "/tandem.v1.RolloutService/Cancel",
                            std::string("\x0a\x03\xff\xfe\xfd", 5), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("CancelRequest.request_id: not valid UTF-8"));
  s = RawUnary(t_.target, "/tandem.v1.RolloutService/GetStatus", "\xff\xff\xff", &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  s = RawUnary(t_.target, "/tandem.v1.RolloutService/Cancel", "", &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  ExpectStillServing();
}

// ---- UpdateWeights ----

class MalformedWeightsTest : public MalformedTest {
 protected:
  void SetUp() override {
    MalformedTest::SetUp();
    next_ = RandomWeights(t_.model.config(), 32);
    proto::ForEachWeightsMessage(next_, 1, v1::WEIGHT_UPDATE_MODE_DRAIN, 4096,
                                 [&](const v1::UpdateWeightsMessage& m) {
                                   messages_.push_back(m.SerializeAsString());
                                   return true;
                                 });
  }

  // Streams raw messages; the call's status.
  grpc::Status Push(const std::vector<std::string>& messages, bool deadline = true) {
    auto channel = Channel(t_.target);
    grpc::ClientContext ctx;
    if (deadline) ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::ByteBuffer response;
    std::unique_ptr<grpc::ClientWriter<grpc::ByteBuffer>> writer(
        grpc::internal::ClientWriterFactory<grpc::ByteBuffer>::Create(
            channel.get(),
            grpc::internal::RpcMethod("/tandem.v1.RolloutService/UpdateWeights",
                                      grpc::internal::RpcMethod::CLIENT_STREAMING),
            &ctx, &response));
    for (const std::string& m : messages) {
      if (!writer->Write(Bytes(m))) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }
  void ExpectPushError(const std::vector<std::string>& messages, grpc::StatusCode code,
                       const std::string& what, bool deadline = true) {
    SCOPED_TRACE(what);
    const grpc::Status s = Push(messages, deadline);
    EXPECT_EQ(s.error_code(), code) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(what));
    ExpectStillServing();  // version 0 and its hash are still served
  }
  // The stream with its header changed by `edit`.
  std::vector<std::string> WithHeader(const std::function<void(v1::WeightsHeader&)>& edit) {
    std::vector<std::string> out = messages_;
    v1::UpdateWeightsMessage m;
    m.ParseFromString(out[0]);
    edit(*m.mutable_header());
    out[0] = m.SerializeAsString();
    return out;
  }
  std::vector<std::string> WithChunk(size_t i, const std::function<void(v1::WeightsChunk&)>& edit) {
    std::vector<std::string> out = messages_;
    v1::UpdateWeightsMessage m;
    m.ParseFromString(out[i]);
    edit(*m.mutable_chunk());
    out[i] = m.SerializeAsString();
    return out;
  }

  model::ModelWeights next_;
  std::vector<std::string> messages_;  // header, then chunks of 4 KiB
};

TEST_F(MalformedWeightsTest, HeaderErrors) {
  ExpectPushError(WithHeader([](auto& h) { h.mutable_tensors(3)->set_dtype(v1::DTYPE_BF16); }),
                  grpc::StatusCode::INVALID_ARGUMENT, "header.tensors[3].dtype: DTYPE_BF16");
  ExpectPushError(WithHeader([](auto& h) { h.mutable_tensors(0)->set_shape(0, 65); }),
                  grpc::StatusCode::INVALID_ARGUMENT, "header.tensors[0].shape: [65, 64]");
  ExpectPushError(WithHeader([](auto& h) { h.mutable_tensors(1)->set_name("bogus"); }),
                  grpc::StatusCode::INVALID_ARGUMENT, "header.tensors[1].name: 'bogus'");
  ExpectPushError(WithHeader([](auto& h) { h.mutable_tensors()->RemoveLast(); }),
                  grpc::StatusCode::INVALID_ARGUMENT, "header.tensors: ");
  ExpectPushError(WithHeader([](auto& h) { h.set_total_bytes(h.total_bytes() + 4); }),
                  grpc::StatusCode::INVALID_ARGUMENT, "header.total_bytes");
  ExpectPushError(WithHeader([](auto& h) { h.set_mode(static_cast<v1::WeightUpdateMode>(9)); }),
                  grpc::StatusCode::INVALID_ARGUMENT, "header.mode");
  ExpectPushError(WithHeader([](auto& h) { h.set_version(0); }),
                  grpc::StatusCode::FAILED_PRECONDITION, "version: 0 is not newer");
  ExpectPushError({messages_[1]}, grpc::StatusCode::INVALID_ARGUMENT,
                  "the first message must be a header");
  ExpectPushError({}, grpc::StatusCode::INVALID_ARGUMENT, "ended before a header");
  ExpectPushError({"\xff\xff\xff\xff"}, grpc::StatusCode::INVALID_ARGUMENT, "UpdateWeightsMessage");
  ExpectPushError(messages_, grpc::StatusCode::INVALID_ARGUMENT, "deadline", /*deadline=*/false);
}

TEST_F(MalformedWeightsTest, ChunkErrorsCorruptionAndTruncation) {
  ExpectPushError(WithChunk(1, [](auto& c) { c.set_tensor("nope"); }),
                  grpc::StatusCode::INVALID_ARGUMENT, "chunk.tensor: 'nope'");
  ExpectPushError(WithChunk(1, [](auto& c) { c.set_offset(8); }),
                  grpc::StatusCode::INVALID_ARGUMENT, "chunk.offset: 8");
  ExpectPushError(WithChunk(1, [](auto& c) { c.mutable_data()->append(1 << 16, 'x'); }),
                  grpc::StatusCode::INVALID_ARGUMENT, "overrun");
  ExpectPushError(WithChunk(1, [](auto& c) { c.clear_data(); }), grpc::StatusCode::INVALID_ARGUMENT,
                  "chunk.data: empty");
  // One flipped bit: the tensor's checksum no longer matches.
  ExpectPushError(WithChunk(2, [](auto& c) { (*c.mutable_data())[5] ^= 0x10; }),
                  grpc::StatusCode::DATA_LOSS, "checksum");
  // A stream that stops halfway.
  std::vector<std::string> half(messages_.begin(), messages_.begin() + messages_.size() / 2);
  ExpectPushError(half, grpc::StatusCode::DATA_LOSS, "the stream ended early");
  // A second header.
  std::vector<std::string> twice = messages_;
  twice.insert(twice.begin() + 2, messages_[0]);
  ExpectPushError(twice, grpc::StatusCode::INVALID_ARGUMENT, "a second header");
  // Random bytes in place of a chunk.
  std::vector<std::string> garbage = messages_;
  garbage[3] = std::string("\x12\x05\x0a\x03\xc0\xaf\x00", 7);
  ExpectPushError(garbage, grpc::StatusCode::INVALID_ARGUMENT,
                  "UpdateWeightsMessage.chunk > WeightsChunk.tensor: not valid UTF-8");
}

TEST_F(MalformedWeightsTest, AClientThatGivesUpMidwayLeavesTheVersion) {
  auto channel = Channel(t_.target);
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::ByteBuffer response;
    std::unique_ptr<grpc::ClientWriter<grpc::ByteBuffer>> writer(
        grpc::internal::ClientWriterFactory<grpc::ByteBuffer>::Create(
            channel.get(),
            grpc::internal::RpcMethod("/tandem.v1.RolloutService/UpdateWeights",
                                      grpc::internal::RpcMethod::CLIENT_STREAMING),
            &ctx, &response));
    for (size_t i = 0; i < messages_.size() / 2; ++i)
      ASSERT_TRUE(writer->Write(Bytes(messages_[i])));
    ctx.TryCancel();
    EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  ExpectStillServing();
  // The client's Finish can return before the server has seen the cancel; until it has, a new
  // push is ABORTED (another update is being received), which the trainer retries. Once seen, the
  // slot is free: a good push goes through. A slot that stays taken fails here.
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  auto pushed = t_.client->UpdateWeights(next_, 1, v1::WEIGHT_UPDATE_MODE_DRAIN, absl::Seconds(30));
  while (absl::IsAborted(pushed.status()) && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(20));
    pushed = t_.client->UpdateWeights(next_, 1, v1::WEIGHT_UPDATE_MODE_DRAIN, absl::Seconds(30));
  }
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_EQ(pushed->server_hash, model::WeightsHash(next_));
}

}  // namespace
}  // namespace tandem::testing
