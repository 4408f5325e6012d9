// Sequence: one sample of a request as the scheduler sees it — its tokens (prompt + generated),
// how many of them are in the cache, and the cache memory it holds. A request starts as one
// sequence (sample 0, the group parent) that prefills the prompt once and then forks the other
// n − 1 samples, which share its full KV blocks and copy its linear-attention slot.
#pragma once

#include <cstdint>
#include <vector>

#include "rollout/request.h"

namespace tandem::rollout {

enum class SequenceState { kWaiting, kRunning, kFinished };

struct Sequence {
  int64_t id = 0;             // engine-unique
  RequestId request = 0;      // FCFS order: requests are served in id order
  int64_t sample_index = 0;   // keys the sampler's RNG with the request seed and the position
  bool group_parent = false;  // forks samples 1..n−1 when its prompt prefill completes
  int64_t fork_count = 0;     // how many samples it forks (n − 1 while group_parent)

  std::vector<int32_t> tokens;  // prompt + generated; tokens[t] sits at position t
  int64_t prompt_len = 0;
  int64_t num_cached = 0;  // positions [0, num_cached) are in the cache

  SequenceState state = SequenceState::kWaiting;
  int32_t slot = -1;
  std::vector<int32_t> blocks;       // blocks[j] holds positions [j·tile, (j+1)·tile)
  std::vector<int32_t> fork_slots;   // reserved at admission for the forked samples
  std::vector<int32_t> fork_blocks;  // reserved copies of a partly filled last prompt block

  // Tokens known but not yet in the cache: the next step runs them through the model.
  int64_t pending() const { return static_cast<int64_t>(tokens.size()) - num_cached; }
  int64_t generated() const { return static_cast<int64_t>(tokens.size()) - prompt_len; }
};

// Scheduling priority: earlier request first, then lower sample index (FCFS; preemption takes the
// last).
inline bool Before(const Sequence& a, const Sequence& b) {
  if (a.request != b.request) return a.request < b.request;
  if (a.sample_index != b.sample_index) return a.sample_index < b.sample_index;
  return a.id < b.id;
}

}  // namespace tandem::rollout
