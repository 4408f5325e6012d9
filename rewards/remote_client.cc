// RewardService client: request building, deadline and retry loop, status and result conversion.
#include "rewards/remote_client.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "tandem/v1/reward.grpc.pb.h"

namespace tandem::rewards {
namespace {

// gRPC and Abseil status codes are the same numbers by design.
absl::Status FromGrpc(const grpc::Status& s, absl::string_view target) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat("RewardService.Score on ", target, ": ", s.error_message()));
}

bool Retryable(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::RESOURCE_EXHAUSTED ||
         code == grpc::StatusCode::ABORTED || code == grpc::StatusCode::DEADLINE_EXCEEDED;
}

v1::ScoreRequest BuildRequest(absl::Span<const RewardInput> inputs) {
  v1::ScoreRequest request;
  for (size_t i = 0; i < inputs.size(); ++i) {
    v1::RewardItem* item = request.add_items();
    item->set_id(std::to_string(i));
    item->set_prompt(inputs[i].prompt);
    item->set_response(inputs[i].response);
    item->set_ground_truth(inputs[i].ground_truth);
    item->set_data_source(inputs[i].data_source);
    item->set_extra_info_json(inputs[i].extra_json);
  }
  return request;
}

RewardOutcome ToOutcome(const v1::RewardResult& r) {
  if (r.has_error() && r.error().code() != 0) {
    return absl::Status(static_cast<absl::StatusCode>(r.error().code()), r.error().message());
  }
  RewardResult result;
  result.score = r.score();
  result.metrics.insert(r.metrics().begin(), r.metrics().end());
  result.extras.insert(r.extras().begin(), r.extras().end());
  return result;
}

}  // namespace

struct RemoteRewardClient::Stub {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::RewardService::Stub> stub;
};

RemoteRewardClient::RemoteRewardClient(std::string target, RemoteRewardOptions options,
                                       std::unique_ptr<Stub> stub)
    : target_(std::move(target)), options_(options), stub_(std::move(stub)) {}

RemoteRewardClient::~RemoteRewardClient() = default;

absl::StatusOr<std::unique_ptr<RemoteRewardClient>> RemoteRewardClient::Create(
    const std::string& target, const RemoteRewardOptions& options) {
  if (target.empty()) return absl::InvalidArgumentError("RewardService target: empty");
  if (options.max_attempts < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RemoteRewardOptions.max_attempts: expected >= 1, got ", options.max_attempts));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("RemoteRewardOptions.timeout: expected > 0");
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  auto stub = std::make_unique<Stub>();
  stub->channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  stub->stub = v1::RewardService::NewStub(stub->channel);
  return std::unique_ptr<RemoteRewardClient>(
      new RemoteRewardClient(target, options, std::move(stub)));
}

absl::StatusOr<std::vector<RewardOutcome>> RemoteRewardClient::ScoreRemote(
    absl::Span<const RewardInput> inputs) {
  const v1::ScoreRequest request = BuildRequest(inputs);
  v1::ScoreResponse response;
  grpc::Status status;
  absl::Duration backoff = options_.initial_backoff;
  for (int attempt = 1;; ++attempt) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
    context.set_wait_for_ready(options_.wait_for_ready);
    response.Clear();
    status = stub_->stub->Score(&context, request, &response);
    if (status.ok() || !Retryable(status.error_code()) || attempt >= options_.max_attempts) break;
    absl::SleepFor(backoff);
    backoff *= 2;
  }
  if (!status.ok()) return FromGrpc(status, target_);
  if (response.results_size() != static_cast<int>(inputs.size())) {
    return absl::DataLossError(absl::StrCat("RewardService.Score on ", target_, ": sent ",
                                            inputs.size(), " items, got ", response.results_size(),
                                            " results"));
  }
  std::vector<RewardOutcome> outcomes;
  outcomes.reserve(inputs.size());
  for (const v1::RewardResult& r : response.results()) outcomes.push_back(ToOutcome(r));
  return outcomes;
}

RewardOutcome RemoteRewardClient::Score(const RewardInput& input) {
  auto outcomes = ScoreRemote(absl::MakeConstSpan(&input, 1));
  if (!outcomes.ok()) return outcomes.status();
  return std::move((*outcomes)[0]);
}

std::vector<RewardOutcome> RemoteRewardClient::ScoreBatch(absl::Span<const RewardInput> inputs) {
  auto outcomes = ScoreRemote(inputs);
  if (outcomes.ok()) return *std::move(outcomes);
  return std::vector<RewardOutcome>(inputs.size(), outcomes.status());
}

}  // namespace tandem::rewards
