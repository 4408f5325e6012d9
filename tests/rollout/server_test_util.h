// Helpers for the rollout server tests: an in-process RolloutServer over a random tiny model, a
// client, request builders, and raw-bytes calls (for requests a typed stub cannot produce, and for
// the health and reflection services, whose C++ stubs Debian does not ship). The raw calls use
// the same grpc::internal factories that generated stubs call.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/client_unary_call.h>
#include <grpcpp/impl/codegen/sync_stream.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "proto/rollout_client.h"
#include "rollout/server/rollout_server.h"
#include "tandem/v1/rollout.grpc.pb.h"
#include "tests/rollout/engine_test_util.h"

namespace tandem::testing {

struct TestServer {
  model::HybridModel model;  // a copy of the served model (the trainer's view)
  std::unique_ptr<rollout::RolloutServer> server;
  std::unique_ptr<proto::RolloutClient> client;
  std::string target;
};

// A server on a free loopback port over RandomModel(tiny-hybrid, seed), 8 sequences, 64 blocks.
inline TestServer StartServer(uint64_t seed, rollout::RolloutServerOptions options = {},
                              int64_t blocks = 64) {
  TestServer t{RandomModel(TinyHybridConfig(), seed), nullptr, nullptr, ""};
  std::unique_ptr<rollout::Engine> engine = MakeEngine(t.model, blocks, 8, 256, 1);
  EXPECT_NE(engine, nullptr);
  options.host = "127.0.0.1";
  options.port = 0;
  absl::StatusOr<std::unique_ptr<rollout::RolloutServer>> server =
      rollout::RolloutServer::Start(std::move(engine), options);
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return t;
  t.server = *std::move(server);
  t.target = absl::StrCat("127.0.0.1:", t.server->port());
  auto client = proto::RolloutClient::Create(t.target);
  EXPECT_TRUE(client.ok()) << client.status();
  if (client.ok()) t.client = *std::move(client);
  return t;
}

inline v1::GenerateRequest MakeRequest(const std::string& id, std::vector<int32_t> prompt,
                                       int64_t n, int64_t max_tokens, uint64_t seed,
                                       float temperature = 1.0f) {
  v1::GenerateRequest r;
  r.set_request_id(id);
  r.mutable_prompt_token_ids()->Add(prompt.begin(), prompt.end());
  r.mutable_sampling()->set_n(n);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  r.mutable_sampling()->set_temperature(temperature);
  r.mutable_sampling()->set_seed(seed);
  return r;
}

inline rollout::GenerateRequest ToEngine(const v1::GenerateRequest& r) {
  rollout::GenerateRequest e;
  e.prompt.assign(r.prompt_token_ids().begin(), r.prompt_token_ids().end());
  e.sampling.n = r.sampling().n();
  e.sampling.max_new_tokens = r.sampling().max_tokens();
  e.sampling.temperature = r.sampling().has_temperature() ? r.sampling().temperature() : 1.0f;
  e.sampling.top_p = r.sampling().has_top_p() ? r.sampling().top_p() : 1.0f;
  e.sampling.top_k = r.sampling().top_k();
  e.sampling.stop_token_ids.assign(r.sampling().stop_token_ids().begin(),
                                   r.sampling().stop_token_ids().end());
  e.sampling.seed = r.sampling().seed();
  return e;
}

inline grpc::ByteBuffer Bytes(const std::string& s) {
  grpc::Slice slice(s);
  return grpc::ByteBuffer(&slice, 1);
}

inline std::string ToString(const grpc::ByteBuffer& b) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!b.Dump(&slices).ok()) return out;
  for (const grpc::Slice& s : slices)
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

inline std::shared_ptr<grpc::Channel> Channel(const std::string& target) {
  return grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
}

// A unary call of `method` ("/pkg.Service/Method") with raw request bytes.
inline grpc::Status RawUnary(const std::string& target, const std::string& method,
                             const std::string& request, std::string* response,
                             bool deadline = true) {
  auto channel = Channel(target);
  grpc::ClientContext ctx;
  if (deadline) ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::ByteBuffer out;
  grpc::Status s = grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
      channel.get(),
      grpc::internal::RpcMethod(method.c_str(), grpc::internal::RpcMethod::NORMAL_RPC), &ctx,
      Bytes(request), &out);
  if (response != nullptr) *response = ToString(out);
  return s;
}

// Generate with raw request bytes: the messages received and the final status.
inline grpc::Status RawGenerate(const std::string& target, const std::string& request,
                                std::vector<v1::GenerateResponse>* responses = nullptr,
                                bool deadline = true) {
  auto channel = Channel(target);
  grpc::ClientContext ctx;
  if (deadline) ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
      grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(
          channel.get(),
          grpc::internal::RpcMethod("/tandem.v1.RolloutService/Generate",
                                    grpc::internal::RpcMethod::SERVER_STREAMING),
          &ctx, Bytes(request)));
  grpc::ByteBuffer message;
  while (reader->Read(&message)) {
    v1::GenerateResponse r;
    EXPECT_TRUE(r.ParseFromString(ToString(message)));
    if (responses != nullptr) responses->push_back(r);
  }
  return reader->Finish();
}

// grpc.health.v1.Health/Check for `service`: the ServingStatus number (1 = SERVING,
// 2 = NOT_SERVING), or -1 when the call failed. HealthCheckRequest{string service = 1}.
inline int HealthStatus(const std::string& target, const std::string& service) {
  std::string request;
  request.push_back(0x0a);
  request.push_back(static_cast<char>(service.size()));
  request += service;
  std::string response;
  grpc::Status s = RawUnary(target, "/grpc.health.v1.Health/Check", request, &response);
  if (!s.ok()) return -1;
  // HealthCheckResponse{ServingStatus status = 1}: tag 0x08 then the varint (absent = 0).
  return response.size() == 2 && response[0] == 0x08 ? response[1] : 0;
}

// Polls GetStatus until `done` holds or 10 s pass.
template <typename Pred>
bool WaitForStatus(proto::RolloutClient& client, Pred done) {
  for (int i = 0; i < 1000; ++i) {
    absl::StatusOr<v1::RolloutStatus> s = client.GetStatus(absl::Seconds(5));
    if (s.ok() && done(*s)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

}  // namespace tandem::testing
