// RolloutClient: the trainer's side of tandem.v1.RolloutService (proto/tandem/v1/rollout.proto).
// Generate collects a whole request's samples from the token stream; UpdateWeights pushes a
// ModelWeights as a checksummed chunk stream and checks that the worker now holds the same bits
// (its WeightsHash equals ours). Every call has a deadline. Retry policy (another worker, the same
// request id) is the caller's. Thread-safe: calls may run concurrently on one client.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "model/weights.h"
#include "tandem/v1/rollout.pb.h"

namespace tandem::proto {

struct RolloutClientOptions {
  int64_t chunk_bytes = int64_t{2} << 20;  // weight bytes per UpdateWeights message
  int max_receive_message_bytes = 16 << 20;
  bool wait_for_ready = false;  // queue calls until the channel connects (within the deadline)
};

// One sample, assembled from its deltas.
struct GeneratedSample {
  int64_t sample_index = 0;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<int64_t> weight_versions;
  v1::FinishReason finish_reason = v1::FINISH_REASON_UNSPECIFIED;
  std::string error;
};

struct GenerateResult {
  std::vector<GeneratedSample> samples;  // by sample index
  bool replayed = false;                 // served from the worker's finished-result cache
  int64_t messages = 0;                  // stream messages received
};

struct PushResult {
  int64_t version = 0;
  uint64_t local_hash = 0;            // model::WeightsHash of the pushed weights
  uint64_t server_hash = 0;           // the worker's, after the swap; equal to local_hash
  int64_t bytes = 0;                  // weight bytes sent
  double hash_seconds = 0;            // local hashing (per-tensor checksums + whole model)
  double total_seconds = 0;           // call start to the worker's answer (hashing included)
  double server_receive_seconds = 0;  // the worker's UpdateWeightsResponse timings
  double server_hash_seconds = 0;
  double server_swap_seconds = 0;
};

class RolloutClient {
 public:
  // `target`: a gRPC target such as "localhost:50051". Plaintext.
  static absl::StatusOr<std::unique_ptr<RolloutClient>> Create(
      const std::string& target, const RolloutClientOptions& options = {});
  ~RolloutClient();

  // Runs one request to the end. `on_response` (optional) sees every stream message as it
  // arrives. Errors carry the server's code (absl and gRPC codes are the same numbers); DataLoss
  // when the stream breaks the protocol (a sample index out of range, a delta after the last).
  absl::StatusOr<GenerateResult> Generate(
      const v1::GenerateRequest& request, absl::Duration timeout,
      const std::function<void(const v1::GenerateResponse&)>& on_response = nullptr);
  absl::Status Cancel(const std::string& request_id, absl::Duration timeout);
  absl::StatusOr<v1::RolloutStatus> GetStatus(absl::Duration timeout);
  absl::StatusOr<v1::RolloutStatus> Pause(absl::Duration timeout);
  absl::StatusOr<v1::RolloutStatus> Resume(absl::Duration timeout);

  // Pushes `weights` as `version`. DataLoss when the worker's hash after the swap differs from
  // ours (then it serves other bits than we sent, and the caller should not trust it).
  absl::StatusOr<PushResult> UpdateWeights(const model::ModelWeights& weights, int64_t version,
                                           v1::WeightUpdateMode mode, absl::Duration timeout);

  const std::string& target() const { return target_; }

 private:
  struct Stub;
  RolloutClient(std::string target, RolloutClientOptions options, std::unique_ptr<Stub> stub);

  std::string target_;
  RolloutClientOptions options_;
  std::unique_ptr<Stub> stub_;
};

// The UpdateWeights stream for `weights`: the header (names, shapes, f32, per-tensor checksums,
// total bytes), then each tensor's bytes in chunks of at most `chunk_bytes`, in ForEachParameter
// order. `emit` returns false to stop early (the sender's stream broke). Exposed for tests that
// tamper with the stream.
void ForEachWeightsMessage(const model::ModelWeights& weights, int64_t version,
                           v1::WeightUpdateMode mode, int64_t chunk_bytes,
                           const std::function<bool(const v1::UpdateWeightsMessage&)>& emit);

}  // namespace tandem::proto
