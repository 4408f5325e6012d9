// RL prompt rows from JSONL (verl-like fields) and the held-out split.
#include "trainer/rl_data.h"

#include <fstream>
#include <unordered_set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"

namespace tandem::trainer {
namespace {

absl::Status Bad(const std::string& where, const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": field '", field, "': ", what));
}

// Joins the "content" strings of a message list.
absl::StatusOr<std::string> JoinMessages(const nlohmann::json& messages, const std::string& where,
                                         const std::string& field) {
  std::string text;
  for (size_t i = 0; i < messages.size(); ++i) {
    const nlohmann::json& m = messages[i];
    if (!m.is_object() || !m.contains("content") || !m["content"].is_string()) {
      return Bad(where, absl::StrCat(field, "[", i, "]"),
                 "expected an object with a string \"content\"");
    }
    text += m["content"].get<std::string>();
  }
  return text;
}

absl::StatusOr<std::string> ReadPrompt(const nlohmann::json& row, const std::string& where) {
  const char* field = row.contains("prompt") ? "prompt" : "messages";
  if (!row.contains(field)) return Bad(where, "prompt", "required (or \"messages\")");
  const nlohmann::json& p = row[field];
  if (p.is_string()) return p.get<std::string>();
  if (p.is_array()) return JoinMessages(p, where, field);
  return Bad(where, field, "expected a string or a list of messages");
}

absl::StatusOr<std::string> ReadGroundTruth(const nlohmann::json& row, const std::string& where) {
  const nlohmann::json* gt = nullptr;
  std::string field = "ground_truth";
  if (row.contains("ground_truth")) {
    gt = &row["ground_truth"];
  } else if (row.contains("reward_model") && row["reward_model"].is_object() &&
             row["reward_model"].contains("ground_truth")) {
    gt = &row["reward_model"]["ground_truth"];
    field = "reward_model.ground_truth";
  }
  if (gt == nullptr || gt->is_null()) return std::string();
  if (gt->is_string()) return gt->get<std::string>();
  if (gt->is_number() || gt->is_object() || gt->is_array() || gt->is_boolean()) return gt->dump();
  return Bad(where, field, "expected a string, a number or an object");
}

}  // namespace

absl::StatusOr<RlPrompt> ParseRlPrompt(const nlohmann::json& row, const std::string& where) {
  if (!row.is_object()) return absl::InvalidArgumentError(where + ": expected a JSON object");
  RlPrompt p;
  TANDEM_ASSIGN_OR_RETURN(p.prompt, ReadPrompt(row, where));
  TANDEM_ASSIGN_OR_RETURN(p.ground_truth, ReadGroundTruth(row, where));
  if (row.contains("data_source")) {
    if (!row["data_source"].is_string()) return Bad(where, "data_source", "expected a string");
    p.data_source = row["data_source"].get<std::string>();
  }
  for (const char* field : {"extra", "extra_info"}) {
    if (!row.contains(field)) continue;
    if (!row[field].is_object()) return Bad(where, field, "expected an object");
    p.extra_json = row[field].dump();
    break;
  }
  return p;
}

absl::StatusOr<std::vector<RlPrompt>> ReadRlJsonl(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::vector<RlPrompt> rows;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    const std::string where = absl::StrCat(path, ":", n);
    const nlohmann::json row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (row.is_discarded()) return absl::InvalidArgumentError(where + ": not valid JSON");
    TANDEM_ASSIGN_OR_RETURN(RlPrompt p, ParseRlPrompt(row, where));
    rows.push_back(std::move(p));
  }
  return rows;
}

absl::Status WriteRlJsonl(const std::string& path, const std::vector<RlPrompt>& rows) {
  std::ofstream out(path, std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open for writing"));
  for (const RlPrompt& r : rows) {
    nlohmann::json j = {
        {"prompt", r.prompt}, {"ground_truth", r.ground_truth}, {"data_source", r.data_source}};
    if (!r.extra_json.empty()) j["extra"] = nlohmann::json::parse(r.extra_json);
    out << j.dump() << '\n';
  }
  out.flush();
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<RlPrompt>> HeldOutRows(const RlRowGenerator& generator,
                                                  int64_t first_index, int64_t count) {
  TANDEM_CHECK_ARG(first_index >= 0, "first_index: expected >= 0, got ", first_index);
  TANDEM_CHECK_ARG(count >= 0, "count: expected >= 0, got ", count);
  const int64_t generated = first_index + 4 * count + 64;  // headroom for skipped duplicates
  TANDEM_ASSIGN_OR_RETURN(std::vector<RlPrompt> rows, generator(generated));
  std::unordered_set<std::string> seen;
  for (int64_t i = 0; i < first_index; ++i) seen.insert(rows[i].prompt);
  std::vector<RlPrompt> held_out;
  for (int64_t i = first_index; i < generated && static_cast<int64_t>(held_out.size()) < count;
       ++i) {
    if (seen.insert(rows[i].prompt).second) held_out.push_back(rows[i]);
  }
  if (static_cast<int64_t>(held_out.size()) < count) {
    return absl::FailedPreconditionError(absl::StrCat("held-out rows: only ", held_out.size(),
                                                      " of ", count, " are distinct from the ",
                                                      first_index, " training rows"));
  }
  return held_out;
}

}  // namespace tandem::trainer
