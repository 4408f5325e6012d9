// The sections that the SFT and RL run configs (run_config.h, rl_config.h) share: the same fields
// under the same YAML keys, read, written and checked by the same code. A config may give a
// section its own defaults (RlRunConfig does for optim and checkpoint).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "trainer/config_fields.h"

namespace tandem::trainer {

struct ModelSection {
  std::string config;           // HF config.json (file or directory); required
  std::string init = "random";  // "random" (seeded init) or a model checkpoint directory
  int64_t init_seed = 1234;     // seed of the random init
};

struct TokenizerSection {
  std::string alphabet;  // character-tokenizer alphabet; "" = printable ASCII (vocab 99)
};

struct OptimSection {
  double lr = 1e-3;                 // peak learning rate
  double min_lr = 1e-4;             // cosine floor; unused by "constant"
  std::string schedule = "cosine";  // "constant" or "cosine" (both after linear warmup)
  int64_t warmup_steps = 20;        // optimizer steps of linear warmup
  double beta1 = 0.9;               // AdamW
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.01;             // decoupled; never on norms or expert_bias
  bool decay_embeddings = false;          // apply weight decay to model.word_embeddings too
  double max_grad_norm = 1.0;             // global L2 clip; 0 = off
  double expert_bias_update_rate = 1e-3;  // aux-loss-free balancing step; 0 = off
};

struct CheckpointSection {
  std::string dir{};            // "" = <trainer.output_dir>/checkpoints
  int64_t every_steps = 100;    // 0 = only at the end
  int64_t keep_last = 3;        // newest checkpoints kept (>= 1)
  std::string resume = "auto";  // "auto" (latest in dir, if any), "none", or a step-<N> directory
};

// Appends the section's fields ("model.config", ...) to a config's field table.
void AddFields(ModelSection& s, std::vector<ConfigField>& fields);
void AddFields(TokenizerSection& s, std::vector<ConfigField>& fields);
void AddFields(OptimSection& s, std::vector<ConfigField>& fields);
void AddFields(CheckpointSection& s, std::vector<ConfigField>& fields);

// Range and enum checks, in field order.
void CheckSection(const ModelSection& s, ConfigChecker& k);
void CheckSection(const OptimSection& s, ConfigChecker& k);
void CheckSection(const CheckpointSection& s, ConfigChecker& k);

}  // namespace tandem::trainer
