// SftRunConfig ⇄ YAML: its table of fields (config_fields.h does the reading, overriding,
// unknown-key detection and writing) and its validation.
#include "trainer/run_config.h"

#include "kernels/core/status_macros.h"
#include "trainer/config_fields.h"

namespace tandem::trainer {
namespace {

std::vector<ConfigField> Fields(SftRunConfig& c) {
  std::vector<ConfigField> fields;
  AddFields(c.model, fields);
  AddFields(c.tokenizer, fields);
  fields.insert(fields.end(),
                {
                    {"data.train_path", &c.data.train_path},
                    {"data.synthetic", &c.data.synthetic},
                    {"data.synthetic_examples", &c.data.synthetic_examples},
                    {"data.min_digits", &c.data.min_digits},
                    {"data.max_digits", &c.data.max_digits},
                    {"data.reverse_answer", &c.data.reverse_answer},
                    {"data.seed", &c.data.seed},
                    {"data.shuffle", &c.data.shuffle},
                    {"data.sequences_per_step", &c.data.sequences_per_step},
                    {"data.max_tokens_per_micro_batch", &c.data.max_tokens_per_micro_batch},
                });
  AddFields(c.optim, fields);
  fields.insert(fields.end(), {
                                  {"trainer.total_steps", &c.trainer.total_steps},
                                  {"trainer.num_threads", &c.trainer.num_threads},
                                  {"trainer.log_every", &c.trainer.log_every},
                                  {"trainer.output_dir", &c.trainer.output_dir},
                              });
  AddFields(c.checkpoint, fields);
  return fields;
}

// Range and enum checks, in field order; errors name the value's origin and the field.
void CheckSftRunConfig(const SftRunConfig& c, ConfigChecker& k) {
  CheckSection(c.model, k);
  k.Require(!c.data.train_path.empty() || c.data.synthetic == "addition", "data.synthetic",
            "expected \"addition\" when data.train_path is empty");
  k.Require(c.data.synthetic == "addition" || c.data.synthetic == "none", "data.synthetic",
            "expected \"addition\" or \"none\"");
  k.Require(c.data.synthetic_examples >= 1, "data.synthetic_examples", "expected >= 1");
  k.Require(c.data.min_digits >= 1, "data.min_digits", "expected >= 1");
  k.Require(c.data.max_digits >= c.data.min_digits && c.data.max_digits <= 18, "data.max_digits",
            "expected in [data.min_digits, 18]");
  k.Require(c.data.sequences_per_step >= 1, "data.sequences_per_step", "expected >= 1");
  k.Require(c.data.max_tokens_per_micro_batch >= 1, "data.max_tokens_per_micro_batch",
            "expected >= 1");
  CheckSection(c.optim, k);
  k.Require(c.trainer.total_steps >= 1, "trainer.total_steps", "expected >= 1");
  k.Require(c.trainer.num_threads >= 0, "trainer.num_threads", "expected >= 0");
  k.Require(c.trainer.log_every >= 1, "trainer.log_every", "expected >= 1");
  k.Require(!c.trainer.output_dir.empty(), "trainer.output_dir", "expected a directory");
  CheckSection(c.checkpoint, k);
}

}  // namespace

absl::StatusOr<SftRunConfig> ParseSftRunConfig(const std::string& yaml_text,
                                               const std::string& source,
                                               const std::vector<std::string>& overrides) {
  SftRunConfig config;
  TANDEM_ASSIGN_OR_RETURN(const ConfigOrigins origins,
                          ReadConfigFields(yaml_text, source, overrides, Fields(config)));
  ConfigChecker checker(OriginOf(origins, source));
  CheckSftRunConfig(config, checker);
  TANDEM_RETURN_IF_ERROR(checker.status());
  return config;
}

absl::StatusOr<SftRunConfig> LoadSftRunConfig(const std::string& path,
                                              const std::vector<std::string>& overrides) {
  TANDEM_ASSIGN_OR_RETURN(const std::string text, ReadConfigFile(path));
  return ParseSftRunConfig(text, path, overrides);
}

std::string SftRunConfigToYaml(const SftRunConfig& config) {
  SftRunConfig copy = config;
  return ConfigFieldsToYaml(Fields(copy));
}

}  // namespace tandem::trainer
