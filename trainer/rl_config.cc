// RlRunConfig ⇄ YAML: its table of fields; config_fields.h does the reading, overriding,
// unknown-key detection and writing (validation: rl_config_validate.cc).
#include "trainer/rl_config.h"

#include "kernels/core/status_macros.h"
#include "trainer/config_fields.h"

namespace tandem::trainer {
namespace {

void AddRolloutFields(RlRunConfig::Rollout& r, std::vector<ConfigField>& fields) {
  fields.insert(fields.end(), {
                                  {"rollout.backend", &r.backend},
                                  {"rollout.workers", &r.workers},
                                  {"rollout.addresses", &r.addresses},
                                  {"rollout.mode", &r.mode},
                                  {"rollout.max_staleness", &r.max_staleness},
                                  {"rollout.threads_per_worker", &r.threads_per_worker},
                                  {"rollout.memory_mb", &r.memory_mb},
                                  {"rollout.max_sequences", &r.max_sequences},
                                  {"rollout.max_step_tokens", &r.max_step_tokens},
                                  {"rollout.request_timeout_s", &r.request_timeout_s},
                                  {"rollout.max_attempts", &r.max_attempts},
                                  {"rollout.server_binary", &r.server_binary},
                              });
}

std::vector<ConfigField> Fields(RlRunConfig& c) {
  std::vector<ConfigField> fields;
  AddFields(c.model, fields);
  AddFields(c.tokenizer, fields);
  fields.insert(fields.end(),
                {
                    {"data.train_path", &c.data.train_path},
                    {"data.eval_path", &c.data.eval_path},
                    {"data.synthetic", &c.data.synthetic},
                    {"data.synthetic_examples", &c.data.synthetic_examples},
                    {"data.min_digits", &c.data.min_digits},
                    {"data.max_digits", &c.data.max_digits},
                    {"data.operators", &c.data.operators},
                    {"data.reverse_answer", &c.data.reverse_answer},
                    {"data.countdown_numbers", &c.data.countdown_numbers},
                    {"data.countdown_max_number", &c.data.countdown_max_number},
                    {"data.seed", &c.data.seed},
                    {"data.shuffle", &c.data.shuffle},
                    {"data.prompts_per_step", &c.data.prompts_per_step},
                    {"grpo.samples_per_prompt", &c.grpo.samples_per_prompt},
                    {"grpo.temperature", &c.grpo.temperature},
                    {"grpo.max_new_tokens", &c.grpo.max_new_tokens},
                    {"grpo.normalize_adv_by_std", &c.grpo.normalize_adv_by_std},
                    {"grpo.clip_low", &c.grpo.clip_low},
                    {"grpo.clip_high", &c.grpo.clip_high},
                    {"grpo.dual_clip", &c.grpo.dual_clip},
                    {"grpo.max_tokens_per_micro_batch", &c.grpo.max_tokens_per_micro_batch},
                    {"reward.function", &c.reward.function},
                    {"reward.options", &c.reward.options},
                });
  AddRolloutFields(c.rollout, fields);
  AddFields(c.optim, fields);
  fields.insert(fields.end(),
                {
                    {"warm_start.steps", &c.warm_start.steps},
                    {"warm_start.min_digits", &c.warm_start.min_digits},
                    {"warm_start.max_digits", &c.warm_start.max_digits},
                    {"warm_start.examples", &c.warm_start.examples},
                    {"warm_start.sequences_per_step", &c.warm_start.sequences_per_step},
                    {"warm_start.lr", &c.warm_start.lr},
                    {"warm_start.warmup_steps", &c.warm_start.warmup_steps},
                    {"trainer.total_steps", &c.trainer.total_steps},
                    {"trainer.num_threads", &c.trainer.num_threads},
                    {"trainer.log_every", &c.trainer.log_every},
                    {"trainer.output_dir", &c.trainer.output_dir},
                    {"trainer.seed", &c.trainer.seed},
                    {"eval.every_steps", &c.eval.every_steps},
                    {"eval.examples", &c.eval.examples},
                });
  AddFields(c.checkpoint, fields);
  fields.push_back({"metrics.tensorboard", &c.metrics.tensorboard});
  return fields;
}

}  // namespace

absl::StatusOr<RlRunConfig> ParseRlRunConfig(const std::string& yaml_text,
                                             const std::string& source,
                                             const std::vector<std::string>& overrides) {
  RlRunConfig config;
  TANDEM_ASSIGN_OR_RETURN(const ConfigOrigins origins,
                          ReadConfigFields(yaml_text, source, overrides, Fields(config)));
  TANDEM_RETURN_IF_ERROR(ValidateRlRunConfig(config, OriginOf(origins, source)));
  return config;
}

absl::StatusOr<RlRunConfig> LoadRlRunConfig(const std::string& path,
                                            const std::vector<std::string>& overrides) {
  TANDEM_ASSIGN_OR_RETURN(const std::string text, ReadConfigFile(path));
  return ParseRlRunConfig(text, path, overrides);
}

std::string RlRunConfigToYaml(const RlRunConfig& config) {
  RlRunConfig copy = config;
  return ConfigFieldsToYaml(Fields(copy));
}

}  // namespace tandem::trainer
