// Training data: JSONL datasets → token sequences with a loss mask, a seeded epoch order with a
// cursor that checkpoints save and restore, and packing of sequences into micro-batches by token
// budget in the packed form the model reads (tokens, cu_seqlens, targets).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/hybrid_model.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"

namespace tandem::trainer {

// The trainer's character tokenizer: model::CharTokenizer ("tandem_char", model/tokenizer.h) with
// the specials 0 <pad>, 1 <eos>, 2 <bos>, 3 <unk>, then id 4 + i for alphabet[i]. "" = printable
// ASCII 0x20..0x7E (95 characters, vocab 99); a smaller alphabet (e.g. "0123456789+=") fits tiny
// models (vocab 16). The special ids match configs/models/tiny-* (pad_token_id 0, eos_token_id 1).
// REQUIRES (else InvalidArgument naming the byte): distinct printable-ASCII, \t or \n bytes.
absl::StatusOr<model::CharTokenizer> MakeCharTokenizer(const std::string& alphabet);

// One training sequence. loss_mask[t] = 1 when token t is a target (its log-prob is trained).
struct Example {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> loss_mask;  // same length as tokens
};

struct JsonlOptions {
  bool add_bos = true;     // text / prompt rows: prepend the tokenizer's BOS (never a target)
  bool add_eos = true;     // text / prompt rows: append EOS (a target)
  int64_t vocab_size = 0;  // > 0: input_ids must lie in [0, vocab_size)
};

// Reads one row per non-blank line, each one of:
//   {"text": str}                                  every token a target
//   {"prompt": str, "response": str}               targets: the response (and EOS) only
//   {"input_ids": [int], "loss_mask": [0|1]?}      as given; no mask = every token a target
// Text rows need `tokenizer` (may be null for input_ids-only files). Any bad line is
// InvalidArgument "<path>:<line>: field '<name>': <what was expected>".
absl::StatusOr<std::vector<Example>> ReadJsonl(const std::string& path,
                                               const model::Tokenizer* tokenizer,
                                               const JsonlOptions& options = {});
// The same for one parsed row; `where` prefixes errors (e.g. "file.jsonl:12").
absl::StatusOr<Example> ParseExample(const nlohmann::json& row, const std::string& where,
                                     const model::Tokenizer* tokenizer,
                                     const JsonlOptions& options);

// A packed micro-batch in the model's layout (model::ForwardInput). For sequence b spanning
// [cu_seqlens[b], cu_seqlens[b+1]): targets[t] = tokens[t+1] where loss_mask of t+1 is set, else
// −1 (so the model can skip the LM head there), and −1 at the last position; loss_mask[t] = 1 iff
// targets[t] >= 0.
struct MicroBatch {
  std::vector<int32_t> tokens;      // [T]
  std::vector<int32_t> cu_seqlens;  // [B + 1]
  std::vector<int32_t> targets;     // [T]
  std::vector<float> loss_mask;     // [T]
  std::vector<int64_t> examples;    // [B] index of each sequence in the input span
  int64_t num_targets() const;
};

// First-fit in input order: each example goes into the first micro-batch (in creation order) with
// room for it, else opens a new one. Deterministic; sequences keep their input order within a
// micro-batch. An example longer than max_tokens is InvalidArgument naming its index.
absl::StatusOr<std::vector<MicroBatch>> PackMicroBatches(std::span<const Example> examples,
                                                         int64_t max_tokens);

// The model's ForwardInput (CPU i32 tensors) for a micro-batch.
model::ForwardInput ToForwardInput(const MicroBatch& batch, float temperature = 1.0f);

// Where a DataLoader is: epoch, and position within that epoch's order.
struct DataCursor {
  uint64_t seed = 0;  // shuffle seed
  int64_t epoch = 0;
  int64_t position = 0;  // examples already taken from this epoch
  nlohmann::json ToJson() const;
  static absl::StatusOr<DataCursor> FromJson(const nlohmann::json& j);
};

// Hands out example indices: epoch e visits a permutation of [0, size) (identity when shuffle is
// off) drawn from (seed, e) alone, so a restored cursor resumes exactly. Batches may straddle
// epochs. Not thread-safe.
class DataLoader {
 public:
  DataLoader(int64_t size, uint64_t seed, bool shuffle);
  std::vector<int64_t> Next(int64_t count);
  const DataCursor& cursor() const { return cursor_; }
  // REQUIRES: same seed as this loader's and position <= size; else InvalidArgument.
  absl::Status Restore(const DataCursor& cursor);

 private:
  void MakeOrder();
  int64_t size_;
  bool shuffle_;
  DataCursor cursor_;
  std::vector<int64_t> order_;  // this epoch's permutation
};

}  // namespace tandem::trainer
