// metrics.jsonl and TensorBoard scalars of the GRPO loop.
#include "trainer/rl_metrics.h"

#include <filesystem>
#include <utility>

#include "kernels/core/status_macros.h"

namespace tandem::trainer {
namespace {

double PerSecond(int64_t tokens, double seconds) { return seconds > 0 ? tokens / seconds : 0.0; }

}  // namespace

nlohmann::json RlMetricsToJson(const RlStepMetrics& m) {
  if (m.step == 0) {  // the evaluation before the first step: nothing else happened yet
    nlohmann::json j = {{"step", 0}, {"elapsed_s", m.elapsed_s}};
    if (m.eval_accuracy.has_value()) j["eval_accuracy"] = *m.eval_accuracy;
    return j;
  }
  nlohmann::json j = {
      {"step", m.step},
      {"version", m.version},
      {"prompts", m.prompts},
      {"trajectories", m.trajectories},
      {"reward_mean", m.reward_mean},
      {"reward_std", m.reward_std},
      {"reward_errors", m.reward_errors},
      {"train_accuracy", m.train_accuracy},
      {"response_length", m.response_length},
      {"mismatch_max_abs", m.mismatch.max_abs_diff},
      {"mismatch_fraction", m.mismatch.fraction_differ()},
      {"mismatch_tokens", m.mismatch.tokens_compared},
      {"mismatch_tokens_total", m.mismatch.tokens_total},
      {"entropy", m.entropy},
      {"clip_fraction", m.clip_fraction},
      {"approx_kl", m.approx_kl},
      {"mean_ratio", m.mean_ratio},
      {"pg_loss", m.pg_loss},
      {"loss", m.loss},
      {"grad_norm", m.grad_norm},
      {"lr", m.lr},
      {"rollout_tokens", m.rollout_tokens},
      {"train_tokens", m.train_tokens},
      {"rollout_tokens_per_s", PerSecond(m.rollout_tokens, m.rollout_s)},
      {"train_tokens_per_s", PerSecond(m.train_tokens, m.train_s)},
      {"rollout_s", m.rollout_s},
      {"rollout_wait_s", m.rollout_wait_s},
      {"reward_s", m.reward_s},
      {"train_s", m.train_s},
      {"weight_sync_s", m.weight_sync_s},
      {"step_s", m.step_s},
      {"staleness_mean", m.staleness_mean},
      {"staleness_max", m.staleness_max},
      {"stale_dropped", m.stale_dropped},
      {"retries", m.retries},
      {"duplicate_samples", m.duplicate_samples},
      {"failed_attempts", m.failed_attempts},
      {"live_workers", m.live_workers},
      {"elapsed_s", m.elapsed_s},
  };
  if (m.eval_accuracy.has_value()) {
    j["eval_accuracy"] = *m.eval_accuracy;
    j["eval_s"] = m.eval_s;
  }
  return j;
}

std::vector<std::pair<std::string, float>> RlMetricsScalars(const RlStepMetrics& m) {
  if (m.step == 0) {
    if (!m.eval_accuracy.has_value()) return {};
    return {{"eval/accuracy", *m.eval_accuracy}};
  }
  std::vector<std::pair<std::string, float>> s = {
      {"reward/mean", m.reward_mean},
      {"reward/std", m.reward_std},
      {"reward/errors", m.reward_errors},
      {"reward/train_accuracy", m.train_accuracy},
      {"rollout/response_length", m.response_length},
      {"mismatch/max_abs", m.mismatch.max_abs_diff},
      {"mismatch/fraction", m.mismatch.fraction_differ()},
      {"mismatch/tokens", m.mismatch.tokens_compared},
      {"actor/entropy", m.entropy},
      {"actor/clip_fraction", m.clip_fraction},
      {"actor/approx_kl", m.approx_kl},
      {"actor/pg_loss", m.pg_loss},
      {"actor/grad_norm", m.grad_norm},
      {"actor/lr", m.lr},
      {"perf/rollout_tokens_per_s", PerSecond(m.rollout_tokens, m.rollout_s)},
      {"perf/train_tokens_per_s", PerSecond(m.train_tokens, m.train_s)},
      {"perf/weight_sync_s", m.weight_sync_s},
      {"perf/rollout_wait_s", m.rollout_wait_s},
      {"perf/step_s", m.step_s},
      {"rollout/staleness_mean", m.staleness_mean},
      {"rollout/staleness_max", m.staleness_max},
      {"rollout/stale_dropped", m.stale_dropped},
      {"rollout/retries", m.retries},
  };
  if (m.eval_accuracy.has_value()) s.emplace_back("eval/accuracy", *m.eval_accuracy);
  return s;
}

absl::StatusOr<RlMetricsLog> RlMetricsLog::Open(const std::string& dir, int64_t start_step,
                                                bool tensorboard, bool enabled) {
  TANDEM_ASSIGN_OR_RETURN(MetricsFile file, MetricsFile::Open(dir, start_step, enabled));
  RlMetricsLog log(std::move(file));
  if (enabled && tensorboard) {
    absl::StatusOr<TensorBoardWriter> tb =
        TensorBoardWriter::Open((std::filesystem::path(dir) / "tensorboard").string());
    if (!tb.ok()) return tb.status();
    log.tensorboard_.emplace(*std::move(tb));
  }
  return log;
}

absl::Status RlMetricsLog::Add(const RlStepMetrics& m) {
  if (!file_.enabled()) return absl::OkStatus();
  TANDEM_RETURN_IF_ERROR(file_.Append(RlMetricsToJson(m)));
  if (tensorboard_.has_value()) return tensorboard_->AddScalars(m.step, RlMetricsScalars(m));
  return absl::OkStatus();
}

}  // namespace tandem::trainer
