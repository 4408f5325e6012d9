// Scheduler: step planning, admission, forks and preemption by recompute. Prefill pieces are
// whole multiples of the linear-attention chunk except the last piece of a sequence's pending
// tokens, so every multi-token piece starts at a chunk boundary (contract rule 3, as ForwardStep
// requires).
#include "rollout/scheduler.h"

#include <algorithm>

#include "kernels/core/contract.h"

namespace tandem::rollout {

Scheduler::Scheduler(model::InferenceCache* cache, int64_t num_blocks, int64_t num_slots,
                     int64_t max_step_tokens)
    : cache_(cache), blocks_(num_blocks), slots_(num_slots), max_step_tokens_(max_step_tokens) {}

int64_t Scheduler::BlocksFor(int64_t positions) {
  return (positions + kAttentionKvTile - 1) / kAttentionKvTile;
}

int64_t Scheduler::SlotsToAdmit(const Sequence& seq) {
  return 1 + (seq.group_parent ? seq.fork_count : 0);
}

int64_t Scheduler::BlocksToAdmit(const Sequence& seq) {
  const int64_t n = static_cast<int64_t>(seq.tokens.size());
  const bool partial_last = n % kAttentionKvTile != 0;
  return BlocksFor(n) + (seq.group_parent && partial_last ? seq.fork_count : 0);
}

void Scheduler::Enqueue(Sequence* seq) {
  seq->state = SequenceState::kWaiting;
  auto it = std::upper_bound(waiting_.begin(), waiting_.end(), seq,
                             [](const Sequence* a, const Sequence* b) { return Before(*a, *b); });
  waiting_.insert(it, seq);
}

void Scheduler::InsertRunning(Sequence* seq) {
  seq->state = SequenceState::kRunning;
  auto it = std::upper_bound(running_.begin(), running_.end(), seq,
                             [](const Sequence* a, const Sequence* b) { return Before(*a, *b); });
  running_.insert(it, seq);
}

void Scheduler::Remove(Sequence* seq) {
  running_.erase(std::remove(running_.begin(), running_.end(), seq), running_.end());
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), seq), waiting_.end());
}

int64_t Scheduler::PieceLength(int64_t pending, int64_t budget) const {
  if (pending <= budget) return pending;
  return budget / kLinearAttentionChunk * kLinearAttentionChunk;
}

void Scheduler::ReleaseMemory(Sequence& seq) {
  for (int32_t b : seq.blocks) blocks_.Release(b);
  for (int32_t b : seq.fork_blocks) blocks_.Release(b);
  if (seq.slot >= 0) slots_.Release(seq.slot);
  for (int32_t s : seq.fork_slots) slots_.Release(s);
  seq.blocks.clear();
  seq.fork_blocks.clear();
  seq.fork_slots.clear();
  seq.slot = -1;
}

void Scheduler::Preempt(Sequence& seq, SchedulePlan* plan) {
  ReleaseMemory(seq);
  seq.num_cached = 0;
  Remove(&seq);
  Enqueue(&seq);
  ++num_preemptions_;
  if (plan != nullptr) plan->preempted.push_back(&seq);
}

void Scheduler::Finish(Sequence& seq) {
  ReleaseMemory(seq);
  Remove(&seq);
  seq.state = SequenceState::kFinished;
}

void Scheduler::PreemptAll() {
  while (!running_.empty()) Preempt(*running_.back(), nullptr);
}

// The block position num_cached will be written to; preempts from the back of the running list
// until one is free. Returns false when `seq` itself had to be preempted.
bool Scheduler::EnsureDecodeBlock(Sequence& seq, SchedulePlan& plan) {
  while (static_cast<int64_t>(seq.blocks.size()) < BlocksFor(seq.num_cached + 1)) {
    if (std::optional<int32_t> b = blocks_.Allocate()) {
      seq.blocks.push_back(*b);
      continue;
    }
    Sequence* victim = running_.back();
    Preempt(*victim, &plan);
    if (victim == &seq) return false;
  }
  return true;
}

bool Scheduler::Admit(Sequence& seq) {
  if (slots_.num_free() < SlotsToAdmit(seq) || blocks_.num_free() < BlocksToAdmit(seq)) {
    return false;
  }
  seq.slot = *slots_.Allocate();
  cache_->ResetSlot(seq.slot);
  const int64_t n = static_cast<int64_t>(seq.tokens.size());
  for (int64_t j = 0; j < BlocksFor(n); ++j) seq.blocks.push_back(*blocks_.Allocate());
  if (seq.group_parent) {
    for (int64_t i = 0; i < seq.fork_count; ++i) {
      seq.fork_slots.push_back(*slots_.Allocate());
      if (n % kAttentionKvTile != 0) seq.fork_blocks.push_back(*blocks_.Allocate());
    }
  }
  seq.num_cached = 0;
  InsertRunning(&seq);
  return true;
}

SchedulePlan Scheduler::Schedule(const std::function<bool(const Sequence&)>& may_admit) {
  SchedulePlan plan;
  // 1. Decode: every running sequence with one pending token, in priority order. Preemption takes
  // from the back, so it never removes a sequence already planned.
  for (size_t i = 0; i < running_.size(); ++i) {
    Sequence* seq = running_[i];
    if (seq->pending() != 1) continue;
    if (!EnsureDecodeBlock(*seq, plan)) break;  // it was the last running sequence
    plan.pieces.push_back({seq, 1});
    ++plan.decode_tokens;
  }
  // 2. Prefill of admitted sequences (all their blocks were allocated at admission).
  int64_t budget = std::max(max_step_tokens_ - plan.decode_tokens, kLinearAttentionChunk);
  for (Sequence* seq : running_) {
    if (seq->pending() <= 1) continue;
    const int64_t piece = PieceLength(seq->pending(), budget);
    if (piece == 0) break;
    plan.pieces.push_back({seq, piece});
    plan.prefill_tokens += piece;
    budget -= piece;
  }
  // 3. Admission, strictly FCFS: the first sequence that cannot be admitted stops the queue.
  while (budget > 0 && !waiting_.empty()) {
    Sequence* seq = waiting_.front();
    if (!may_admit(*seq) || !Admit(*seq)) break;
    waiting_.pop_front();
    const int64_t piece = PieceLength(seq->pending(), budget);
    if (piece == 0) break;
    plan.pieces.push_back({seq, piece});
    (piece == 1 ? plan.decode_tokens : plan.prefill_tokens) += piece;
    budget -= piece;
  }
  return plan;
}

void Scheduler::Fork(Sequence& parent, Sequence& child) {
  child.slot = parent.fork_slots.back();
  parent.fork_slots.pop_back();
  cache_->CopySlot(parent.slot, child.slot);
  child.num_cached = parent.num_cached;
  child.blocks = parent.blocks;
  int64_t shared = static_cast<int64_t>(child.blocks.size());
  if (parent.num_cached % kAttentionKvTile != 0) {
    // The partly filled last block is written again by both: each child gets its own copy.
    const int32_t copy = parent.fork_blocks.back();
    parent.fork_blocks.pop_back();
    cache_->CopyBlock(child.blocks.back(), copy);
    child.blocks.back() = copy;
    --shared;
  }
  for (int64_t j = 0; j < shared; ++j) blocks_.Retain(child.blocks[j]);
  InsertRunning(&child);
}

}  // namespace tandem::rollout
