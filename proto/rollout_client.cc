// RolloutClient: stream assembly for Generate, the chunked weight push, unary calls.
#include "proto/rollout_client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "model/weights_hash.h"
#include "proto/grpc_status.h"
#include "tandem/v1/rollout.grpc.pb.h"

namespace tandem::proto {
namespace {

std::chrono::system_clock::time_point Deadline(absl::Duration timeout) {
  return absl::ToChronoTime(absl::Now() + timeout);
}

// Appends a delta to its sample; DataLoss when the stream breaks the protocol.
absl::Status Apply(const v1::SampleDelta& d, std::vector<GeneratedSample>& samples) {
  if (d.sample_index() < 0 || d.sample_index() >= static_cast<int64_t>(samples.size())) {
    return absl::DataLossError(absl::StrCat("Generate: delta for sample ", d.sample_index(),
                                            " of a request with n = ", samples.size()));
  }
  GeneratedSample& s = samples[d.sample_index()];
  if (s.finish_reason != v1::FINISH_REASON_UNSPECIFIED) {
    return absl::DataLossError(
        absl::StrCat("Generate: delta for sample ", d.sample_index(), " after its last one"));
  }
  if (d.logprobs_size() != d.token_ids_size() || d.weight_versions_size() != d.token_ids_size()) {
    return absl::DataLossError(absl::StrCat("Generate: delta for sample ", d.sample_index(),
                                            " with mismatched token/logprob/version counts"));
  }
  s.tokens.insert(s.tokens.end(), d.token_ids().begin(), d.token_ids().end());
  s.logprobs.insert(s.logprobs.end(), d.logprobs().begin(), d.logprobs().end());
  s.weight_versions.insert(s.weight_versions.end(), d.weight_versions().begin(),
                           d.weight_versions().end());
  s.finish_reason = d.finish_reason();
  s.error = d.error();
  return absl::OkStatus();
}

}  // namespace

struct RolloutClient::Stub {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::RolloutService::Stub> stub;
};

RolloutClient::RolloutClient(std::string target, RolloutClientOptions options,
                             std::unique_ptr<Stub> stub)
    : target_(std::move(target)), options_(options), stub_(std::move(stub)) {}

RolloutClient::~RolloutClient() = default;

absl::StatusOr<std::unique_ptr<RolloutClient>> RolloutClient::Create(
    const std::string& target, const RolloutClientOptions& options) {
  if (target.empty()) return absl::InvalidArgumentError("RolloutService target: empty");
  if (options.chunk_bytes < 1 || options.chunk_bytes > (int64_t{3} << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("RolloutClientOptions.chunk_bytes: must be in [1, 3 MiB] (the server's "
                     "receive limit is 4 MiB a message), got ",
                     options.chunk_bytes));
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  auto stub = std::make_unique<Stub>();
  stub->channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  stub->stub = v1::RolloutService::NewStub(stub->channel);
  return std::unique_ptr<RolloutClient>(new RolloutClient(target, options, std::move(stub)));
}

absl::StatusOr<GenerateResult> RolloutClient::Generate(
    const v1::GenerateRequest& request, absl::Duration timeout,
    const std::function<void(const v1::GenerateResponse&)>& on_response) {
  grpc::ClientContext context;
  context.set_deadline(Deadline(timeout));
  context.set_wait_for_ready(options_.wait_for_ready);
  GenerateResult result;
  const int64_t n = request.has_sampling() ? std::max<int64_t>(request.sampling().n(), 0) : 0;
  result.samples.resize(n);
  for (int64_t i = 0; i < n; ++i) result.samples[i].sample_index = i;
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub_->stub->Generate(&context, request);
  v1::GenerateResponse response;
  absl::Status protocol;
  while (reader->Read(&response)) {
    ++result.messages;
    result.replayed = result.replayed || response.replayed();
    if (on_response) on_response(response);
    for (const v1::SampleDelta& d : response.deltas()) {
      if (protocol.ok()) protocol = Apply(d, result.samples);
    }
    if (!protocol.ok()) context.TryCancel();
  }
  const grpc::Status status = reader->Finish();
  if (!protocol.ok()) return protocol;
  if (!status.ok()) {
    return FromGrpcStatus(status, absl::StrCat("RolloutService.Generate on ", target_));
  }
  for (const GeneratedSample& s : result.samples) {
    if (s.finish_reason == v1::FINISH_REASON_UNSPECIFIED) {
      return absl::DataLossError(absl::StrCat("RolloutService.Generate on ", target_,
                                              ": the stream ended OK before sample ",
                                              s.sample_index, " finished"));
    }
  }
  return result;
}

absl::Status RolloutClient::Cancel(const std::string& request_id, absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(Deadline(timeout));
  v1::CancelRequest request;
  request.set_request_id(request_id);
  v1::CancelResponse response;
  return FromGrpcStatus(stub_->stub->Cancel(&context, request, &response),
                        absl::StrCat("RolloutService.Cancel on ", target_));
}

absl::StatusOr<v1::RolloutStatus> RolloutClient::GetStatus(absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(Deadline(timeout));
  context.set_wait_for_ready(options_.wait_for_ready);
  v1::RolloutStatus response;
  const grpc::Status s = stub_->stub->GetStatus(&context, v1::GetStatusRequest(), &response);
  if (!s.ok()) return FromGrpcStatus(s, absl::StrCat("RolloutService.GetStatus on ", target_));
  return response;
}

absl::StatusOr<v1::RolloutStatus> RolloutClient::Pause(absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(Deadline(timeout));
  v1::RolloutStatus response;
  const grpc::Status s = stub_->stub->Pause(&context, v1::PauseRequest(), &response);
  if (!s.ok()) return FromGrpcStatus(s, absl::StrCat("RolloutService.Pause on ", target_));
  return response;
}

absl::StatusOr<v1::RolloutStatus> RolloutClient::Resume(absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(Deadline(timeout));
  v1::RolloutStatus response;
  const grpc::Status s = stub_->stub->Resume(&context, v1::ResumeRequest(), &response);
  if (!s.ok()) return FromGrpcStatus(s, absl::StrCat("RolloutService.Resume on ", target_));
  return response;
}

void ForEachWeightsMessage(const model::ModelWeights& weights, int64_t version,
                           v1::WeightUpdateMode mode, int64_t chunk_bytes,
                           const std::function<bool(const v1::UpdateWeightsMessage&)>& emit) {
  v1::UpdateWeightsMessage message;
  v1::WeightsHeader* header = message.mutable_header();
  header->set_version(version);
  header->set_mode(mode);
  int64_t total = 0;
  weights.ForEachParameter([&](const std::string& name, const Tensor& t) {
    v1::TensorSpec* spec = header->add_tensors();
    spec->set_name(name);
    for (int64_t d : t.shape()) spec->add_shape(d);
    spec->set_dtype(v1::DTYPE_F32);
    spec->set_checksum(model::HashBytes(t.raw_data(), t.nbytes()));
    total += static_cast<int64_t>(t.nbytes());
  });
  header->set_total_bytes(total);
  if (!emit(message)) return;
  bool open = true;
  weights.ForEachParameter([&](const std::string& name, const Tensor& t) {
    const auto* bytes = static_cast<const char*>(t.raw_data());
    const auto nbytes = static_cast<int64_t>(t.nbytes());
    for (int64_t offset = 0; open && offset < nbytes; offset += chunk_bytes) {
      v1::UpdateWeightsMessage chunk_message;
      v1::WeightsChunk* chunk = chunk_message.mutable_chunk();
      chunk->set_tensor(name);
      chunk->set_offset(offset);
      chunk->set_data(bytes + offset, std::min(chunk_bytes, nbytes - offset));
      open = emit(chunk_message);
    }
  });
}

absl::StatusOr<PushResult> RolloutClient::UpdateWeights(const model::ModelWeights& weights,
                                                        int64_t version, v1::WeightUpdateMode mode,
                                                        absl::Duration timeout) {
  const absl::Time start = absl::Now();
  PushResult result;
  result.version = version;
  result.local_hash = model::WeightsHash(weights);
  grpc::ClientContext context;
  context.set_deadline(Deadline(timeout));
  v1::UpdateWeightsResponse response;
  std::unique_ptr<grpc::ClientWriter<v1::UpdateWeightsMessage>> writer =
      stub_->stub->UpdateWeights(&context, &response);
  bool header_sent = false;
  ForEachWeightsMessage(weights, version, mode, options_.chunk_bytes,
                        [&](const v1::UpdateWeightsMessage& m) {
                          if (!header_sent) {
                            result.hash_seconds = absl::ToDoubleSeconds(absl::Now() - start);
                            header_sent = true;
                          } else {
                            result.bytes += static_cast<int64_t>(m.chunk().data().size());
                          }
                          return writer->Write(m);
                        });
  writer->WritesDone();
  const grpc::Status status = writer->Finish();
  result.total_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (!status.ok()) {
    return FromGrpcStatus(status, absl::StrCat("RolloutService.UpdateWeights on ", target_));
  }
  result.server_hash = response.weights_hash();
  result.server_receive_seconds = response.receive_seconds();
  result.server_hash_seconds = response.hash_seconds();
  result.server_swap_seconds = response.swap_seconds();
  if (response.version() != version || result.server_hash != result.local_hash) {
    return absl::DataLossError(absl::StrFormat(
        "RolloutService.UpdateWeights on %s: the worker serves version %d with weights hash "
        "%016x, we pushed version %d with hash %016x",
        target_, response.version(), result.server_hash, version, result.local_hash));
  }
  return result;
}

}  // namespace tandem::proto
