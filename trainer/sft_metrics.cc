// metrics.jsonl writer of the SFT loop.
#include "trainer/sft_metrics.h"

#include <filesystem>
#include <fstream>
#include <sstream>
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

absl::StatusOr<MetricsLog> MetricsLog::Open(const std::string& dir, int64_t start_step,
                                            int64_t log_every, bool enabled) {
  const std::string path = (std::filesystem::path(dir) / "metrics.jsonl").string();
  MetricsLog log(path, std::max<int64_t>(1, log_every), enabled);
  if (!enabled) return log;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("trainer.output_dir: cannot create ", dir, ": ", ec.message()));
  }
  const std::vector<std::string> kept =
      start_step > 0 ? LinesUpTo(path, start_step) : std::vector<std::string>{};
  std::ofstream out(path, std::ios::trunc);
  for (const std::string& line : kept) out << line << '\n';
  if (!out) return absl::InternalError(absl::StrCat(path, ": cannot write"));
  return log;
}

nlohmann::json MetricsLog::Line(const SftStepMetrics& m, double mean_loss, double tokens_per_s,
                                double elapsed_s) {
  nlohmann::json j = {
      {"step", m.step},           {"loss", mean_loss},  {"lr", m.lr},
      {"grad_norm", m.grad_norm}, {"tokens", m.tokens}, {"tokens_per_s", tokens_per_s},
      {"elapsed_s", elapsed_s}};
  if (m.skipped) j["skipped"] = true;
  if (m.eval_exact_match.has_value()) j["eval_exact_match"] = *m.eval_exact_match;
  return j;
}

absl::Status MetricsLog::Add(const SftStepMetrics& m, bool force) {
  window_loss_ += m.loss;
  ++window_steps_;
  window_tokens_ += m.tokens;
  window_seconds_ += m.step_seconds;
  if (!(force || m.eval_exact_match.has_value() || m.step % log_every_ == 0)) {
    return absl::OkStatus();
  }
  const double tokens_per_s = window_seconds_ > 0 ? window_tokens_ / window_seconds_ : 0.0;
  const nlohmann::json line =
      Line(m, window_loss_ / window_steps_, tokens_per_s,
           std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
  window_loss_ = 0;
  window_steps_ = 0;
  window_tokens_ = 0;
  window_seconds_ = 0;
  if (!enabled_) return absl::OkStatus();
  std::ofstream out(path_, std::ios::app);
  out << line.dump() << '\n';
  if (!out) return absl::InternalError(absl::StrCat(path_, ": cannot append"));
  return absl::OkStatus();
}

}  // namespace tandem::trainer
