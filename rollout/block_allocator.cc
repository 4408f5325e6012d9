// Free lists with reference counts. A double release would be an engine bug that hands one block
// to two sequences and corrupts both; it is logged and ignored rather than acted on.
#include "rollout/block_allocator.h"

#include "kernels/core/logging.h"

namespace tandem::rollout {

BlockAllocator::BlockAllocator(int64_t num_blocks) : ref_(num_blocks, 0) {
  free_.reserve(num_blocks);
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

std::optional<int32_t> BlockAllocator::Allocate() {
  if (free_.empty()) return std::nullopt;
  const int32_t block = free_.back();
  free_.pop_back();
  ref_[block] = 1;
  return block;
}

void BlockAllocator::Retain(int32_t block) { ++ref_[block]; }

void BlockAllocator::Release(int32_t block) {
  if (ref_[block] <= 0) {
    spdlog::error("BlockAllocator: block {} released with no owner", block);
    return;
  }
  if (--ref_[block] == 0) free_.push_back(block);
}

SlotAllocator::SlotAllocator(int64_t num_slots) : num_slots_(num_slots), used_(num_slots, false) {
  free_.reserve(num_slots);
  for (int64_t s = num_slots - 1; s >= 0; --s) free_.push_back(static_cast<int32_t>(s));
}

std::optional<int32_t> SlotAllocator::Allocate() {
  if (free_.empty()) return std::nullopt;
  const int32_t slot = free_.back();
  free_.pop_back();
  used_[slot] = true;
  return slot;
}

void SlotAllocator::Release(int32_t slot) {
  if (!used_[slot]) {
    spdlog::error("SlotAllocator: slot {} released while free", slot);
    return;
  }
  used_[slot] = false;
  free_.push_back(slot);
}

}  // namespace tandem::rollout
