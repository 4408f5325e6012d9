// Reading a built-in reward's JSON options: unknown keys and wrong types are errors that name the
// option, so a typo in a run config fails at startup instead of silently using a default.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace tandem::rewards {

class RewardConfig {
 public:
  // Parses `json_text` ("" means {}) and checks every key is in `known`.
  static absl::StatusOr<RewardConfig> Parse(absl::string_view reward, absl::string_view json_text,
                                            const std::vector<std::string>& known) {
    nlohmann::json j = nlohmann::json::object();
    if (!json_text.empty()) {
      j = nlohmann::json::parse(json_text.begin(), json_text.end(), nullptr, false);
      if (j.is_discarded() || !j.is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat(reward, " config: expected a JSON object, got '", json_text, "'"));
      }
    }
    for (const auto& item : j.items()) {
      if (std::find(known.begin(), known.end(), item.key()) == known.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat(reward, " config: unknown option '", item.key(),
                         "' (known: ", absl::StrJoin(known, ", "), ")"));
      }
    }
    return RewardConfig(std::string(reward), std::move(j));
  }

  // Reads option `key` as T, or `fallback` when absent. Stores the first type error in status().
  template <typename T>
  T Get(const std::string& key, T fallback) {
    if (!json_.contains(key)) return fallback;
    const nlohmann::json& v = json_.at(key);
    bool ok;
    if constexpr (std::is_same_v<T, bool>) {
      ok = v.is_boolean();
    } else if constexpr (std::is_arithmetic_v<T>) {
      ok = v.is_number();
    } else {
      ok = v.is_string();
    }
    if (!ok) {
      if (status_.ok()) {
        status_ = absl::InvalidArgumentError(absl::StrCat(reward_, " config: option '", key,
                                                          "' has the wrong type (", v.dump(), ")"));
      }
      return fallback;
    }
    return v.get<T>();
  }

  bool Has(const std::string& key) const { return json_.contains(key); }
  const absl::Status& status() const { return status_; }

 private:
  RewardConfig(std::string reward, nlohmann::json json)
      : reward_(std::move(reward)), json_(std::move(json)) {}

  std::string reward_;
  nlohmann::json json_;
  absl::Status status_;
};

}  // namespace tandem::rewards
