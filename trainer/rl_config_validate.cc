// Validation of RlRunConfig: ranges, enums and the fields that depend on each other.
#include "trainer/config_fields.h"
#include "trainer/rl_config.h"

namespace tandem::trainer {
namespace {

void CheckData(const RlRunConfig& c, ConfigChecker& k) {
  const RlRunConfig::Data& d = c.data;
  k.Require(!d.train_path.empty() || d.synthetic == "arithmetic" || d.synthetic == "countdown",
            "data.synthetic",
            "expected \"arithmetic\" or \"countdown\" when data.train_path is empty");
  k.Require(d.synthetic_examples >= 1, "data.synthetic_examples", "expected >= 1");
  k.Require(d.min_digits >= 1, "data.min_digits", "expected >= 1");
  k.Require(d.max_digits >= d.min_digits && d.max_digits <= 9, "data.max_digits",
            "expected in [data.min_digits, 9]");
  k.Require(!d.operators.empty() && d.operators.find_first_not_of("+-*") == std::string::npos,
            "data.operators", "expected a non-empty subset of \"+-*\"");
  k.Require(d.countdown_numbers >= 2 && d.countdown_numbers <= 6, "data.countdown_numbers",
            "expected in [2, 6]");
  k.Require(d.countdown_max_number >= 1 && d.countdown_max_number <= 99,
            "data.countdown_max_number", "expected in [1, 99]");
  k.Require(d.prompts_per_step >= 1, "data.prompts_per_step", "expected >= 1");
}

void CheckGrpo(const RlRunConfig& c, ConfigChecker& k) {
  const RlRunConfig::Grpo& g = c.grpo;
  k.Require(g.samples_per_prompt >= 2, "grpo.samples_per_prompt",
            "expected >= 2 (group advantages need at least two samples)");
  k.Require(g.temperature > 0, "grpo.temperature", "expected > 0 (RL samples; 0 is greedy)");
  k.Require(g.max_new_tokens >= 1, "grpo.max_new_tokens", "expected >= 1");
  k.Require(g.clip_low >= 0 && g.clip_low < 1, "grpo.clip_low", "expected in [0, 1)");
  k.Require(g.clip_high >= 0, "grpo.clip_high", "expected >= 0");
  k.Require(g.dual_clip == 0 || g.dual_clip > 1, "grpo.dual_clip", "expected 0 (off) or > 1");
  k.Require(g.max_tokens_per_micro_batch >= 1, "grpo.max_tokens_per_micro_batch", "expected >= 1");
}

void CheckRollout(const RlRunConfig& c, ConfigChecker& k) {
  const RlRunConfig::Rollout& r = c.rollout;
  k.Require(r.backend == "inprocess" || r.backend == "local" || r.backend == "remote",
            "rollout.backend", "expected \"inprocess\", \"local\" or \"remote\"");
  k.Require(r.backend != "local" || r.workers >= 1, "rollout.workers",
            "expected >= 1 with rollout.backend local");
  k.Require(r.backend != "remote" || !r.addresses.empty(), "rollout.addresses",
            "expected at least one host:port with rollout.backend remote");
  k.Require(r.mode == "sync" || r.mode == "async", "rollout.mode",
            "expected \"sync\" or \"async\"");
  k.Require(r.max_staleness >= 0, "rollout.max_staleness", "expected >= 0");
  k.Require(r.mode != "async" || r.max_staleness >= 1, "rollout.max_staleness",
            "expected >= 1 in async mode (0 is sync mode)");
  k.Require(r.threads_per_worker >= 1, "rollout.threads_per_worker", "expected >= 1");
  k.Require(r.memory_mb >= 1, "rollout.memory_mb", "expected >= 1");
  k.Require(r.max_sequences >= 1, "rollout.max_sequences", "expected >= 1");
  k.Require(r.max_step_tokens >= 1, "rollout.max_step_tokens", "expected >= 1");
  k.Require(r.request_timeout_s > 0, "rollout.request_timeout_s", "expected > 0");
  k.Require(r.max_attempts >= 1, "rollout.max_attempts", "expected >= 1");
}

void CheckOptim(const RlRunConfig& c, ConfigChecker& k) {
  CheckSection(c.optim, k);
  const RlRunConfig::WarmStart& w = c.warm_start;
  k.Require(w.steps >= 0, "warm_start.steps", "expected >= 0");
  k.Require(w.min_digits >= 1, "warm_start.min_digits", "expected >= 1");
  k.Require(w.max_digits >= w.min_digits && w.max_digits <= 18, "warm_start.max_digits",
            "expected in [warm_start.min_digits, 18]");
  k.Require(w.examples >= 1, "warm_start.examples", "expected >= 1");
  k.Require(w.sequences_per_step >= 1, "warm_start.sequences_per_step", "expected >= 1");
  k.Require(w.lr > 0, "warm_start.lr", "expected > 0");
  k.Require(w.warmup_steps >= 0, "warm_start.warmup_steps", "expected >= 0");
}

void CheckRun(const RlRunConfig& c, ConfigChecker& k) {
  CheckSection(c.model, k);
  k.Require(c.trainer.total_steps >= 1, "trainer.total_steps", "expected >= 1");
  k.Require(c.trainer.num_threads >= 0, "trainer.num_threads", "expected >= 0");
  k.Require(c.trainer.log_every >= 1, "trainer.log_every", "expected >= 1");
  k.Require(!c.trainer.output_dir.empty(), "trainer.output_dir", "expected a directory");
  k.Require(c.eval.every_steps >= 0, "eval.every_steps", "expected >= 0 (0 = start and end)");
  k.Require(c.eval.examples >= 0, "eval.examples", "expected >= 0");
  CheckSection(c.checkpoint, k);
}

}  // namespace

absl::Status ValidateRlRunConfig(const RlRunConfig& config, const ConfigOrigin& origin) {
  ConfigChecker k(origin);
  CheckRun(config, k);
  CheckData(config, k);
  CheckGrpo(config, k);
  CheckRollout(config, k);
  CheckOptim(config, k);
  return k.status();
}

}  // namespace tandem::trainer
