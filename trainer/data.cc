// JSONL rows → Examples, first-fit packing, and the seeded epoch order behind DataCursor.
#include "trainer/data.h"

#include <fstream>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "trainer/splitmix.h"

namespace tandem::trainer {
namespace {

absl::Status FieldError(const std::string& where, const char* field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": field '", field, "': ", what));
}

absl::StatusOr<std::string> StringField(const nlohmann::json& row, const std::string& where,
                                        const char* field) {
  const auto it = row.find(field);
  if (it == row.end()) return FieldError(where, field, "missing");
  if (!it->is_string()) return FieldError(where, field, "expected a string");
  return it->get<std::string>();
}

absl::StatusOr<std::vector<int32_t>> EncodeField(const nlohmann::json& row,
                                                 const std::string& where, const char* field,
                                                 const model::Tokenizer* tokenizer) {
  TANDEM_ASSIGN_OR_RETURN(std::string text, StringField(row, where, field));
  if (tokenizer == nullptr) return FieldError(where, field, "text rows need a tokenizer");
  auto ids = tokenizer->Encode(text);
  if (!ids.ok()) return FieldError(where, field, std::string(ids.status().message()));
  return *std::move(ids);
}

// {"input_ids": [...], "loss_mask": [...]?}
absl::StatusOr<Example> ParseIds(const nlohmann::json& row, const std::string& where,
                                 const JsonlOptions& options) {
  const nlohmann::json& ids = row["input_ids"];
  if (!ids.is_array() || ids.empty()) {
    return FieldError(where, "input_ids", "expected a non-empty array of integers");
  }
  Example ex;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!ids[i].is_number_integer()) {
      return FieldError(where, "input_ids", absl::StrCat("element ", i, " is not an integer"));
    }
    const int64_t id = ids[i].get<int64_t>();
    if (id < 0 || id > INT32_MAX || (options.vocab_size > 0 && id >= options.vocab_size)) {
      return FieldError(where, "input_ids",
                        absl::StrCat("element ", i, " = ", id, " outside [0, vocab_size ",
                                     options.vocab_size, ")"));
    }
    ex.tokens.push_back(static_cast<int32_t>(id));
  }
  ex.loss_mask.assign(ex.tokens.size(), 1);
  const auto mask = row.find("loss_mask");
  if (mask == row.end()) return ex;
  if (!mask->is_array() || mask->size() != ids.size()) {
    return FieldError(where, "loss_mask",
                      absl::StrCat("expected an array of ", ids.size(), " values (one per id)"));
  }
  for (size_t i = 0; i < mask->size(); ++i) {
    const nlohmann::json& m = (*mask)[i];
    const bool ok = m.is_boolean() || (m.is_number_integer() && (m == 0 || m == 1));
    if (!ok) return FieldError(where, "loss_mask", absl::StrCat("element ", i, " is not 0/1"));
    ex.loss_mask[i] = m.is_boolean() ? m.get<bool>() : m.get<int>();
  }
  return ex;
}

void Append(Example& ex, const std::vector<int32_t>& ids, uint8_t mask) {
  ex.tokens.insert(ex.tokens.end(), ids.begin(), ids.end());
  ex.loss_mask.insert(ex.loss_mask.end(), ids.size(), mask);
}

}  // namespace

absl::StatusOr<model::CharTokenizer> MakeCharTokenizer(const std::string& alphabet) {
  std::string chars = alphabet;
  if (chars.empty()) {
    for (char c = 0x20; c <= 0x7E; ++c) chars.push_back(c);
  }
  return model::CharTokenizer::Create(chars,
                                      {{"<pad>", 0}, {"<eos>", 1}, {"<bos>", 2}, {"<unk>", 3}});
}

absl::StatusOr<Example> ParseExample(const nlohmann::json& row, const std::string& where,
                                     const model::Tokenizer* tokenizer,
                                     const JsonlOptions& options) {
  if (!row.is_object()) return absl::InvalidArgumentError(where + ": expected a JSON object");
  if (row.contains("input_ids")) return ParseIds(row, where, options);
  Example ex;
  const int32_t bos = tokenizer != nullptr ? tokenizer->bos_id() : -1;
  const int32_t eos = tokenizer != nullptr ? tokenizer->eos_id() : -1;
  if (options.add_bos && bos >= 0) Append(ex, {bos}, 0);
  if (row.contains("text")) {
    TANDEM_ASSIGN_OR_RETURN(auto ids, EncodeField(row, where, "text", tokenizer));
    Append(ex, ids, 1);
  } else if (row.contains("prompt")) {
    TANDEM_ASSIGN_OR_RETURN(auto prompt, EncodeField(row, where, "prompt", tokenizer));
    TANDEM_ASSIGN_OR_RETURN(auto response, EncodeField(row, where, "response", tokenizer));
    Append(ex, prompt, 0);
    Append(ex, response, 1);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(where,
                     ": expected one of the fields 'text', 'prompt'+'response' or "
                     "'input_ids'"));
  }
  if (options.add_eos && eos >= 0) Append(ex, {eos}, 1);
  if (ex.tokens.empty()) return absl::InvalidArgumentError(where + ": the row has no tokens");
  return ex;
}

absl::StatusOr<std::vector<Example>> ReadJsonl(const std::string& path,
                                               const model::Tokenizer* tokenizer,
                                               const JsonlOptions& options) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::vector<Example> examples;
  std::string line;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = absl::StrCat(path, ":", line_no);
    nlohmann::json row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (row.is_discarded()) return absl::InvalidArgumentError(where + ": not valid JSON");
    TANDEM_ASSIGN_OR_RETURN(Example ex, ParseExample(row, where, tokenizer, options));
    examples.push_back(std::move(ex));
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return examples;
}

int64_t MicroBatch::num_targets() const {
  int64_t n = 0;
  for (int32_t t : targets) n += t >= 0;
  return n;
}

absl::StatusOr<std::vector<MicroBatch>> PackMicroBatches(std::span<const Example> examples,
                                                         int64_t max_tokens) {
  TANDEM_CHECK_ARG(max_tokens > 0, "max_tokens: expected > 0, got ", max_tokens);
  std::vector<std::vector<int64_t>> bins;
  std::vector<int64_t> used;
  for (size_t i = 0; i < examples.size(); ++i) {
    const int64_t len = static_cast<int64_t>(examples[i].tokens.size());
    TANDEM_CHECK_ARG(len > 0 && len <= max_tokens, "examples[", i, "]: length ", len,
                     " does not fit max_tokens ", max_tokens);
    TANDEM_CHECK_ARG(examples[i].loss_mask.size() == examples[i].tokens.size(), "examples[", i,
                     "]: loss_mask has ", examples[i].loss_mask.size(), " entries for ", len,
                     " tokens");
    size_t b = 0;
    while (b < bins.size() && used[b] + len > max_tokens) ++b;
    if (b == bins.size()) bins.emplace_back(), used.push_back(0);
    bins[b].push_back(static_cast<int64_t>(i));
    used[b] += len;
  }
  std::vector<MicroBatch> out(bins.size());
  for (size_t b = 0; b < bins.size(); ++b) {
    MicroBatch& mb = out[b];
    mb.cu_seqlens.push_back(0);
    for (int64_t i : bins[b]) {
      const Example& ex = examples[i];
      const size_t n = ex.tokens.size();
      mb.tokens.insert(mb.tokens.end(), ex.tokens.begin(), ex.tokens.end());
      for (size_t t = 0; t < n; ++t) {
        const bool target = t + 1 < n && ex.loss_mask[t + 1] != 0;
        mb.targets.push_back(target ? ex.tokens[t + 1] : -1);
        mb.loss_mask.push_back(target ? 1.0f : 0.0f);
      }
      mb.cu_seqlens.push_back(static_cast<int32_t>(mb.tokens.size()));
      mb.examples.push_back(i);
    }
  }
  return out;
}

model::ForwardInput ToForwardInput(const MicroBatch& batch, float temperature) {
  model::ForwardInput in;
  const int64_t t = static_cast<int64_t>(batch.tokens.size());
  in.tokens = Tensor::FromVector(batch.tokens, {t});    // [T]
  in.cu_seqlens = Tensor::FromVector(batch.cu_seqlens,  // [B + 1]
                                     {static_cast<int64_t>(batch.cu_seqlens.size())});
  in.targets = Tensor::FromVector(batch.targets, {t});  // [T]
  in.temperature = temperature;
  return in;
}

nlohmann::json DataCursor::ToJson() const {
  // The seed is a string: JSON readers may round integers above 2^53.
  return {{"seed", std::to_string(seed)}, {"epoch", epoch}, {"position", position}};
}

absl::StatusOr<DataCursor> DataCursor::FromJson(const nlohmann::json& j) {
  DataCursor c;
  const bool ok = j.is_object() && j.contains("seed") && j["seed"].is_string() &&
                  j.contains("epoch") && j["epoch"].is_number_integer() && j.contains("position") &&
                  j["position"].is_number_integer();
  if (!ok) {
    return absl::InvalidArgumentError(
        "data_cursor: expected {\"seed\": \"<u64>\", \"epoch\": int, \"position\": int}");
  }
  try {
    c.seed = std::stoull(j["seed"].get<std::string>());
  } catch (const std::exception&) {
    return absl::InvalidArgumentError("data_cursor: field 'seed' is not an unsigned integer");
  }
  c.epoch = j["epoch"].get<int64_t>();
  c.position = j["position"].get<int64_t>();
  if (c.epoch < 0 || c.position < 0) {
    return absl::InvalidArgumentError("data_cursor: epoch and position must be >= 0");
  }
  return c;
}

DataLoader::DataLoader(int64_t size, uint64_t seed, bool shuffle) : size_(size), shuffle_(shuffle) {
  cursor_.seed = seed;
  MakeOrder();
}

void DataLoader::MakeOrder() {
  order_.resize(size_);
  std::iota(order_.begin(), order_.end(), int64_t{0});
  if (!shuffle_) return;
  SplitMix64 rng(SplitMix64::Mix(cursor_.seed, static_cast<uint64_t>(cursor_.epoch)));
  for (int64_t i = size_ - 1; i > 0; --i) {  // Fisher–Yates
    std::swap(order_[i], order_[rng.Below(static_cast<uint64_t>(i) + 1)]);
  }
}

std::vector<int64_t> DataLoader::Next(int64_t count) {
  std::vector<int64_t> out;
  if (size_ == 0) return out;
  for (int64_t k = 0; k < count; ++k) {
    if (cursor_.position == size_) {
      ++cursor_.epoch;
      cursor_.position = 0;
      MakeOrder();
    }
    out.push_back(order_[cursor_.position++]);
  }
  return out;
}

absl::Status DataLoader::Restore(const DataCursor& cursor) {
  TANDEM_CHECK_ARG(cursor.seed == cursor_.seed, "data_cursor.seed: ", cursor.seed,
                   " differs from the loader's seed ", cursor_.seed);
  TANDEM_CHECK_ARG(cursor.position >= 0 && cursor.position <= size_,
                   "data_cursor.position: ", cursor.position, " outside [0, ", size_, "]");
  TANDEM_CHECK_ARG(cursor.epoch >= 0, "data_cursor.epoch: expected >= 0, got ", cursor.epoch);
  cursor_ = cursor;
  MakeOrder();
  return absl::OkStatus();
}

}  // namespace tandem::trainer
