// Scheduler: decides what one engine step runs (DESIGN.md §6). Every running sequence with one
// pending token decodes it; the rest of a per-step token budget goes to chunked prefill of
// admitted sequences, then to admitting waiting ones in FCFS order. Memory comes from the cache's
// block and slot allocators; when a decoding sequence needs a KV block and none is free, the
// lowest-priority running sequence is preempted by recompute: its memory is freed and it waits,
// ahead of later requests, to be prefilled again over prompt + generated tokens from position 0.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <vector>

#include "model/inference_cache.h"
#include "rollout/block_allocator.h"
#include "rollout/sequence.h"

namespace tandem::rollout {

struct ScheduledPiece {
  Sequence* seq = nullptr;
  int64_t num_tokens = 0;  // tokens [seq->num_cached, seq->num_cached + num_tokens) run this step
};

struct SchedulePlan {
  std::vector<ScheduledPiece> pieces;
  std::vector<Sequence*> preempted;  // sequences preempted while planning this step
  int64_t decode_tokens = 0;
  int64_t prefill_tokens = 0;
};

class Scheduler {
 public:
  // max_step_tokens: decode tokens + prefill tokens per step; prefill always gets at least one
  // chunk (kLinearAttentionChunk tokens) so it cannot starve behind a large decode batch.
  Scheduler(model::InferenceCache* cache, int64_t num_blocks, int64_t num_slots,
            int64_t max_step_tokens);

  // Blocks covering positions [0, n).
  static int64_t BlocksFor(int64_t positions);
  // Memory a waiting sequence needs to be admitted: its slot, blocks for all its tokens, and for
  // a group parent the slots and partial-block copies of its forks.
  static int64_t SlotsToAdmit(const Sequence& seq);
  static int64_t BlocksToAdmit(const Sequence& seq);

  // Adds a new (or re-queued) sequence to the waiting queue in priority order.
  void Enqueue(Sequence* seq);
  // Plans one step. `may_admit` can hold back waiting sequences (e.g. during a weight drain).
  SchedulePlan Schedule(const std::function<bool(const Sequence&)>& may_admit);
  // After the parent's prompt is in the cache: `child` continues from the same point, sharing the
  // parent's full blocks (ref counts) and taking a copy of its slot and of a partly filled last
  // block from the parent's reservations.
  void Fork(Sequence& parent, Sequence& child);
  // Frees a sequence's memory and drops it from the queues (finished, cancelled or failed).
  void Finish(Sequence& seq);
  // Preempts every running sequence (weights swapped with recompute).
  void PreemptAll();

  bool HasWork() const { return !running_.empty() || !waiting_.empty(); }
  const std::vector<Sequence*>& running() const { return running_; }
  const std::deque<Sequence*>& waiting() const { return waiting_; }
  const BlockAllocator& blocks() const { return blocks_; }
  const SlotAllocator& slots() const { return slots_; }
  int64_t num_preemptions() const { return num_preemptions_; }

 private:
  bool EnsureDecodeBlock(Sequence& seq, SchedulePlan& plan);
  bool Admit(Sequence& seq);
  void Preempt(Sequence& seq, SchedulePlan* plan);
  void ReleaseMemory(Sequence& seq);
  void InsertRunning(Sequence* seq);
  void Remove(Sequence* seq);
  int64_t PieceLength(int64_t pending, int64_t budget) const;

  model::InferenceCache* cache_;
  BlockAllocator blocks_;
  SlotAllocator slots_;
  int64_t max_step_tokens_;
  std::vector<Sequence*> running_;  // admitted, in priority order
  std::deque<Sequence*> waiting_;   // in priority order
  int64_t num_preemptions_ = 0;
};

}  // namespace tandem::rollout
