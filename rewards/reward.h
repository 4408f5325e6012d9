// The C++ face of every reward: built-ins, dlopen'ed plugins (isolated in a worker process) and
// the remote RewardService all implement RewardFunction, so the RL loop scores a batch the same way
// whichever one a run config names. A failed sample is a per-sample error, never a failed batch.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace tandem::rewards {

// One sample: the same five fields the C ABI passes (tandem_reward_input).
struct RewardInput {
  std::string prompt;
  std::string response;      // generated text, special tokens removed
  std::string ground_truth;  // dataset reference answer; may be empty
  std::string data_source;   // dataset name; may be empty
  std::string extra_json;    // a JSON object with any other fields; empty means {}
};

struct RewardResult {
  double score = 0.0;
  std::map<std::string, double> metrics;  // optional named values, logged beside the score
  // Non-numeric values a remote reward returned (a verl dict's string entries); plugins and
  // built-ins report numbers only.
  std::map<std::string, std::string> extras;
};

// A scored sample or the reason this sample could not be scored.
using RewardOutcome = absl::StatusOr<RewardResult>;

class RewardFunction {
 public:
  virtual ~RewardFunction() = default;

  // Short identifier for logs and metrics ("math_answer", the plugin's name, ...).
  virtual std::string name() const = 0;

  // Scores one sample. An error fails this sample only. Thread-safe unless the implementation
  // says otherwise.
  virtual RewardOutcome Score(const RewardInput& input) = 0;

  // Scores a batch; result i belongs to inputs[i]. The default calls Score in order;
  // implementations that can overlap work (worker pools, the remote service) override it.
  virtual std::vector<RewardOutcome> ScoreBatch(absl::Span<const RewardInput> inputs);
};

}  // namespace tandem::rewards
