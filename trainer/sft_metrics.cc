// metrics.jsonl writer of the SFT loop.
#include "trainer/sft_metrics.h"

#include <algorithm>
#include <utility>

#include "kernels/core/status_macros.h"

namespace tandem::trainer {

absl::StatusOr<MetricsLog> MetricsLog::Open(const std::string& dir, int64_t start_step,
                                            int64_t log_every, bool enabled) {
  TANDEM_ASSIGN_OR_RETURN(MetricsFile file, MetricsFile::Open(dir, start_step, enabled));
  return MetricsLog(std::move(file), std::max<int64_t>(1, log_every));
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
  return file_.Append(line);
}

}  // namespace tandem::trainer
