// CharTokenizer: a byte → id table over a fixed alphabet.
#include "trainer/char_tokenizer.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tandem::trainer {
namespace {
std::string Printable(unsigned char c) {
  if (c >= 0x20 && c <= 0x7E) return absl::StrCat("'", std::string(1, static_cast<char>(c)), "'");
  return absl::StrFormat("byte 0x%02x", c);
}
}  // namespace

std::string CharTokenizer::PrintableAscii() {
  std::string s;
  for (int c = 0x20; c <= 0x7E; ++c) s.push_back(static_cast<char>(c));
  return s;
}

CharTokenizer::CharTokenizer() : CharTokenizer(PrintableAscii()) {}

CharTokenizer::CharTokenizer(const std::string& alphabet) : alphabet_(alphabet) {
  id_of_.fill(-1);
  for (size_t i = 0; i < alphabet_.size(); ++i) {
    id_of_[static_cast<unsigned char>(alphabet_[i])] = kFirstChar + static_cast<int32_t>(i);
  }
}

absl::StatusOr<CharTokenizer> CharTokenizer::FromAlphabet(const std::string& alphabet) {
  if (alphabet.empty()) return absl::InvalidArgumentError("alphabet: expected at least one char");
  std::array<bool, 256> seen{};
  for (unsigned char c : alphabet) {
    if (seen[c]) {
      return absl::InvalidArgumentError(
          absl::StrCat("alphabet: ", Printable(c), " appears more than once"));
    }
    seen[c] = true;
  }
  return CharTokenizer(alphabet);
}

absl::StatusOr<std::vector<int32_t>> CharTokenizer::Encode(const std::string& text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (id_of_[c] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("text: ", Printable(c), " at offset ", i,
                                                     " is not in the tokenizer's alphabet"));
    }
    ids.push_back(id_of_[c]);
  }
  return ids;
}

absl::StatusOr<std::string> CharTokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("ids[", i, "] = ", id, ": outside [0, ", vocab_size(), ")"));
    }
    if (id >= kFirstChar) {
      text.push_back(alphabet_[id - kFirstChar]);
    } else if (id == kUnk) {
      text.push_back('?');
    }
  }
  return text;
}

}  // namespace tandem::trainer
