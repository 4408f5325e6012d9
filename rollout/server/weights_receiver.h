// WeightsReceiver: assembles one UpdateWeights transfer (proto/tandem/v1/rollout.proto) into a
// new ModelWeights off to the side of the serving one. It checks the header against the model
// (names in ForEachParameter order, shapes, f32 only, total bytes), every chunk's place (known
// tensor, in order, no gap, no overrun), and each tensor's checksum when its last byte arrives.
// Only a transfer in which every byte arrived and matched yields weights; anything else leaves
// the serving version alone.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/config.h"
#include "model/weights.h"
#include "tandem/v1/rollout.pb.h"

namespace tandem::rollout {

class WeightsReceiver {
 public:
  // InvalidArgument naming the header field that does not match the model; ResourceExhausted
  // when the new weights cannot be allocated.
  static absl::StatusOr<std::unique_ptr<WeightsReceiver>> Create(
      const v1::WeightsHeader& header, const model::ModelConfig& config,
      const std::vector<std::pair<std::string, Shape>>& signature);

  // InvalidArgument for a misplaced chunk; DataLoss when it completes a tensor whose checksum
  // does not match the header's.
  absl::Status Add(const v1::WeightsChunk& chunk);
  // The weights, when every tensor arrived whole; DataLoss naming the first incomplete tensor.
  absl::StatusOr<model::ModelWeights> Finish();

  int64_t received_bytes() const { return received_bytes_; }

 private:
  struct Slot {
    std::string name;
    Tensor view;  // into weights_
    int64_t received = 0;
    uint64_t checksum = 0;
  };
  WeightsReceiver() = default;

  model::ModelWeights weights_;
  std::vector<Slot> slots_;
  std::unordered_map<std::string, size_t> index_;
  int64_t received_bytes_ = 0;
};

}  // namespace tandem::rollout
