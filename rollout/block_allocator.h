// Bookkeeping for the two kinds of InferenceCache memory: ref-counted KV blocks (the n samples of
// a prompt share its full prefill blocks) and linear-attention state slots (one per sequence,
// never shared). Ids only; the bytes live in model::InferenceCache. Not thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace tandem::rollout {

class BlockAllocator {
 public:
  explicit BlockAllocator(int64_t num_blocks);

  int64_t num_blocks() const { return static_cast<int64_t>(ref_.size()); }
  int64_t num_free() const { return static_cast<int64_t>(free_.size()); }
  int64_t num_used() const { return num_blocks() - num_free(); }
  int32_t ref_count(int32_t block) const { return ref_[block]; }

  // A free block with ref count 1, or nullopt when none is free.
  std::optional<int32_t> Allocate();
  // One more owner (a forked sequence sharing the block).
  void Retain(int32_t block);
  // One owner fewer; the block is free again when none is left.
  void Release(int32_t block);

 private:
  std::vector<int32_t> ref_;
  std::vector<int32_t> free_;  // a stack; lowest ids handed out first
};

class SlotAllocator {
 public:
  explicit SlotAllocator(int64_t num_slots);

  int64_t num_slots() const { return num_slots_; }
  int64_t num_free() const { return static_cast<int64_t>(free_.size()); }
  int64_t num_used() const { return num_slots_ - num_free(); }

  std::optional<int32_t> Allocate();
  void Release(int32_t slot);

 private:
  int64_t num_slots_;
  std::vector<int32_t> free_;
  std::vector<bool> used_;
};

}  // namespace tandem::rollout
