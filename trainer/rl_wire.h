// Trajectories between trainer ranks: rank 0 (which drives the rollout workers and rewards)
// serializes a step's trajectories and broadcasts them; every rank gets identical copies.
// Encoding: little-endian int64 counts followed by the raw arrays; floats keep their bits.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "trainer/collectives.h"
#include "trainer/rl_step.h"

namespace tandem::trainer {

std::string EncodeTrajectories(const std::vector<Trajectory>& trajectories);
absl::StatusOr<std::vector<Trajectory>> DecodeTrajectories(const std::string& bytes);

// A collective call: rank 0's `trajectories` replace every other rank's. No-op on one rank.
absl::Status BroadcastTrajectories(Collective& collective, std::vector<Trajectory>& trajectories);

}  // namespace tandem::trainer
