// LoadTokenizer and the "tandem_char" character tokenizer: a byte → id table over a fixed alphabet.
#include "model/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tandem::model {
namespace {

constexpr char kCharType[] = "tandem_char";

bool AllowedByte(unsigned char c) { return (c >= 0x20 && c <= 0x7E) || c == '\t' || c == '\n'; }

}  // namespace

std::string DescribeByte(unsigned char c) {
  if (c >= 0x20 && c <= 0x7E) return absl::StrCat("'", std::string(1, static_cast<char>(c)), "'");
  return absl::StrFormat("byte 0x%02x", c);
}

CharTokenizer::CharTokenizer(std::string alphabet, std::map<std::string, int32_t> specials)
    : alphabet_(std::move(alphabet)), specials_(std::move(specials)) {
  id_of_.fill(-1);
  const auto first = static_cast<int32_t>(specials_.size());
  for (size_t i = 0; i < alphabet_.size(); ++i) {
    id_of_[static_cast<unsigned char>(alphabet_[i])] = first + static_cast<int32_t>(i);
  }
}

absl::StatusOr<CharTokenizer> CharTokenizer::Create(
    const std::string& alphabet, const std::map<std::string, int32_t>& specials) {
  if (alphabet.empty()) return absl::InvalidArgumentError("alphabet: expected at least one char");
  std::array<bool, 256> seen{};
  for (size_t i = 0; i < alphabet.size(); ++i) {
    const auto c = static_cast<unsigned char>(alphabet[i]);
    if (!AllowedByte(c)) {
      return absl::InvalidArgumentError(absl::StrCat("alphabet: ", DescribeByte(c), " at offset ",
                                                     i, " is not printable ASCII or \\t, \\n"));
    }
    if (seen[c]) {
      return absl::InvalidArgumentError(
          absl::StrCat("alphabet: ", DescribeByte(c), " appears more than once"));
    }
    seen[c] = true;
  }
  std::vector<bool> taken(specials.size(), false);
  for (const auto& [name, id] : specials) {
    if (id < 0 || id >= static_cast<int32_t>(specials.size()) || taken[id]) {
      return absl::InvalidArgumentError(
          absl::StrCat("special_tokens: \"", name, "\" = ", id, ": the ", specials.size(),
                       " special tokens must take the ids 0..", specials.size() - 1, " once each"));
    }
    taken[id] = true;
  }
  return CharTokenizer(alphabet, specials);
}

absl::StatusOr<CharTokenizer> CharTokenizer::FromJson(const nlohmann::json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("expected a JSON object");
  if (!j.contains("type") || j["type"] != kCharType) {
    return absl::InvalidArgumentError(absl::StrCat("type: expected \"", kCharType, "\""));
  }
  if (!j.contains("alphabet") || !j["alphabet"].is_string()) {
    return absl::InvalidArgumentError("alphabet: expected a string");
  }
  std::map<std::string, int32_t> specials;
  if (j.contains("special_tokens")) {
    const nlohmann::json& s = j["special_tokens"];
    if (!s.is_object()) return absl::InvalidArgumentError("special_tokens: expected an object");
    for (const auto& [name, id] : s.items()) {
      if (!id.is_number_integer()) {
        return absl::InvalidArgumentError(
            absl::StrCat("special_tokens: \"", name, "\": expected an integer id"));
      }
      specials[name] = id.get<int32_t>();
    }
  }
  return Create(j["alphabet"].get<std::string>(), specials);
}

nlohmann::json CharTokenizer::ToJson() const {
  return {{"type", kCharType}, {"alphabet", alphabet_}, {"special_tokens", specials_}};
}

int32_t CharTokenizer::SpecialId(const std::string& name) const {
  auto it = specials_.find(name);
  return it == specials_.end() ? -1 : it->second;
}

absl::StatusOr<std::vector<int32_t>> CharTokenizer::Encode(const std::string& text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (id_of_[c] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("text: ", DescribeByte(c), " at offset ", i,
                                                     " is not in the tokenizer's alphabet"));
    }
    ids.push_back(id_of_[c]);
  }
  return ids;
}

absl::StatusOr<std::string> CharTokenizer::Decode(const std::vector<int32_t>& ids) const {
  const auto first = static_cast<int32_t>(specials_.size());
  const int32_t unk = SpecialId("<unk>");
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("ids[", i, "] = ", id, ": outside [0, ", vocab_size(), ")"));
    }
    if (id >= first) {
      text.push_back(alphabet_[id - first]);
    } else if (id == unk) {
      text.push_back('?');
    }
  }
  return text;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir) {
  const std::string path = (std::filesystem::path(model_dir) / "tokenizer.json").string();
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": no tokenizer file"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(buffer.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  if (j.contains("model")) {
    return absl::UnimplementedError(absl::StrCat(
        path, ": HF byte-level BPE tokenizers are not supported yet: pass --prompt-tokens"));
  }
  absl::StatusOr<CharTokenizer> tok = CharTokenizer::FromJson(j);
  if (!tok.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", tok.status().message()));
  }
  return std::make_unique<CharTokenizer>(*std::move(tok));
}

}  // namespace tandem::model
