// The default batch scoring of RewardFunction: one sample after another.
#include "rewards/reward.h"

namespace tandem::rewards {

std::vector<RewardOutcome> RewardFunction::ScoreBatch(absl::Span<const RewardInput> inputs) {
  std::vector<RewardOutcome> outcomes;
  outcomes.reserve(inputs.size());
  for (const RewardInput& input : inputs) outcomes.push_back(Score(input));
  return outcomes;
}

}  // namespace tandem::rewards
