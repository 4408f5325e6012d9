// CharTokenizer: one id per character, for synthetic tasks and demos that need no real vocabulary.
// model/ owns real tokenizers; this one lives in trainer/ until a tokenizer interface exists there.
//   id 0 <pad>, 1 <eos>, 2 <bos>, 3 <unk>, then id 4 + i for alphabet[i].
// The default alphabet is printable ASCII 0x20..0x7E (95 characters, vocab 99). A smaller alphabet
// (e.g. "0123456789+=") fits tiny models (vocab 16). The special ids match configs/models/tiny-*
// (pad_token_id 0, eos_token_id 1).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem::trainer {

// What the data reader needs from a tokenizer.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual absl::StatusOr<std::vector<int32_t>> Encode(const std::string& text) const = 0;
  virtual absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // −1: none
  virtual int32_t eos_id() const = 0;  // −1: none
};

class CharTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kPad = 0, kEos = 1, kBos = 2, kUnk = 3, kFirstChar = 4;

  // The printable-ASCII tokenizer.
  CharTokenizer();
  // REQUIRES (else InvalidArgument): a non-empty alphabet of distinct bytes.
  static absl::StatusOr<CharTokenizer> FromAlphabet(const std::string& alphabet);
  static std::string PrintableAscii();

  // A character outside the alphabet is InvalidArgument naming it and its offset (no silent <unk>,
  // so a typo in a dataset is found at load time).
  absl::StatusOr<std::vector<int32_t>> Encode(const std::string& text) const override;
  // Specials decode to nothing, except <unk> to '?'; ids outside [0, vocab) are an error.
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override {
    return kFirstChar + static_cast<int64_t>(alphabet_.size());
  }
  int32_t bos_id() const override { return kBos; }
  int32_t eos_id() const override { return kEos; }
  const std::string& alphabet() const { return alphabet_; }

 private:
  explicit CharTokenizer(const std::string& alphabet);  // REQUIRES: validated alphabet

  std::string alphabet_;
  std::array<int32_t, 256> id_of_{};  // byte → id, −1 when not in the alphabet
};

}  // namespace tandem::trainer
