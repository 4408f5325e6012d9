// Client of tandem.v1.RewardService (proto/tandem/v1/reward.proto): rewards served by another
// process or machine, in any language, e.g. rewards/python/tandem_reward_server.py running verl
// compute_score functions. Every call carries a deadline; calls that fail for transient reasons are
// retried with exponential backoff (scoring is idempotent). Built only with TANDEM_SERVICES.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "rewards/reward.h"

namespace tandem::rewards {

struct RemoteRewardOptions {
  absl::Duration timeout = absl::Seconds(60);  // deadline of each attempt (a whole batch)
  int max_attempts = 3;                        // tries for UNAVAILABLE / RESOURCE_EXHAUSTED /
                                               // ABORTED / DEADLINE_EXCEEDED
  absl::Duration initial_backoff = absl::Milliseconds(200);  // doubles after each failed try
  // Queue calls until the channel connects (within the deadline) instead of failing fast while
  // the server is still starting.
  bool wait_for_ready = false;
  int max_message_bytes = 64 << 20;  // send and receive limit; batches of long responses are big
};

class RemoteRewardClient : public RewardFunction {
 public:
  // `target` is a gRPC target ("localhost:50051", "dns:///rewards.svc:50051"). Plaintext.
  static absl::StatusOr<std::unique_ptr<RemoteRewardClient>> Create(
      const std::string& target, const RemoteRewardOptions& options = {});
  ~RemoteRewardClient() override;

  // Scores a batch in one RPC (after retries). The outer status is a failure of the call itself,
  // with gRPC's code mapped 1:1 to absl::StatusCode and the target in the message; the inner
  // outcomes are per item. Thread-safe.
  absl::StatusOr<std::vector<RewardOutcome>> ScoreRemote(absl::Span<const RewardInput> inputs);

  // RewardFunction: a failed call becomes every item's error.
  std::string name() const override { return "remote:" + target_; }
  RewardOutcome Score(const RewardInput& input) override;
  std::vector<RewardOutcome> ScoreBatch(absl::Span<const RewardInput> inputs) override;

 private:
  struct Stub;
  RemoteRewardClient(std::string target, RemoteRewardOptions options, std::unique_ptr<Stub> stub);

  std::string target_;
  RemoteRewardOptions options_;
  std::unique_ptr<Stub> stub_;
};

}  // namespace tandem::rewards
