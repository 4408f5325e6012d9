// metrics.jsonl: open (truncating to the resume step) and append.
#include "trainer/metrics_file.h"

#include <filesystem>
#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"

namespace tandem::trainer {
namespace {

// The lines of `path` whose "step" is at most `max_step` (unparsable lines are dropped too).
std::vector<std::string> LinesUpTo(const std::string& path, int64_t max_step) {
  std::vector<std::string> kept;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
        j["step"].get<int64_t>() <= max_step) {
      kept.push_back(line);
    }
  }
  return kept;
}

}  // namespace

absl::StatusOr<MetricsFile> MetricsFile::Open(const std::string& dir, int64_t start_step,
                                              bool enabled) {
  MetricsFile file((std::filesystem::path(dir) / "metrics.jsonl").string(), enabled);
  if (!enabled) return file;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("trainer.output_dir: cannot create ", dir, ": ", ec.message()));
  }
  const std::vector<std::string> kept =
      start_step > 0 ? LinesUpTo(file.path_, start_step) : std::vector<std::string>{};
  std::ofstream out(file.path_, std::ios::trunc);
  for (const std::string& line : kept) out << line << '\n';
  if (!out) return absl::InternalError(absl::StrCat(file.path_, ": cannot write"));
  return file;
}

absl::Status MetricsFile::Append(const nlohmann::json& line) {
  if (!enabled_) return absl::OkStatus();
  std::ofstream out(path_, std::ios::app);
  out << line.dump() << '\n';
  if (!out) return absl::InternalError(absl::StrCat(path_, ": cannot append"));
  return absl::OkStatus();
}

}  // namespace tandem::trainer
