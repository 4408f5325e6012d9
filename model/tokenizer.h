// Tokenizer: text <-> token ids for a checkpoint, loaded from `<model_dir>/tokenizer.json`.
// Supported: the Tandem character tokenizer ({"type": "tandem_char", ...}, docs/models.md
// "Tokenizer"), one id per byte of a fixed ASCII alphabet, for synthetic tasks and tiny models.
// A Hugging Face tokenizer.json (byte-level BPE, DESIGN.md §5) is recognised and refused with
// Unimplemented, so a real checkpoint fails honestly instead of being mis-tokenised.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tandem::model {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Text the tokenizer cannot represent is InvalidArgument naming the character and its offset.
  virtual absl::StatusOr<std::vector<int32_t>> Encode(const std::string& text) const = 0;
  // Ids outside [0, vocab_size()) are InvalidArgument naming the index.
  virtual absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  // Special tokens by name ("<pad>", "<eos>", "<bos>", "<unk>", ...); −1 when absent.
  virtual int32_t SpecialId(const std::string& name) const = 0;
  int32_t bos_id() const { return SpecialId("<bos>"); }
  int32_t eos_id() const { return SpecialId("<eos>"); }
  int32_t pad_id() const { return SpecialId("<pad>"); }
};

// The "tandem_char" form: special tokens take ids 0..S−1 (any names, each id once); alphabet[i]
// is id S + i. Specials decode to nothing, except "<unk>" to '?'.
class CharTokenizer final : public Tokenizer {
 public:
  // REQUIRES (else InvalidArgument): a non-empty alphabet of distinct printable-ASCII or
  // whitespace bytes; special ids exactly 0..S−1.
  static absl::StatusOr<CharTokenizer> Create(const std::string& alphabet,
                                              const std::map<std::string, int32_t>& specials);
  // Parses the tokenizer.json object; errors name the field.
  static absl::StatusOr<CharTokenizer> FromJson(const nlohmann::json& j);
  nlohmann::json ToJson() const;

  absl::StatusOr<std::vector<int32_t>> Encode(const std::string& text) const override;
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override {
    return static_cast<int64_t>(specials_.size() + alphabet_.size());
  }
  int32_t SpecialId(const std::string& name) const override;
  const std::string& alphabet() const { return alphabet_; }

 private:
  CharTokenizer(std::string alphabet, std::map<std::string, int32_t> specials);

  std::string alphabet_;
  std::map<std::string, int32_t> specials_;
  std::array<int32_t, 256> id_of_{};  // byte → id, −1 when not in the alphabet
};

// Reads `<model_dir>/tokenizer.json`. NotFound (naming the path) when absent; Unimplemented for a
// Hugging Face tokenizer.json (it has a "model" key); InvalidArgument, naming the file, otherwise.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir);

// A byte for messages: 'c' when printable, else "byte 0xNN".
std::string DescribeByte(unsigned char c);

}  // namespace tandem::model
