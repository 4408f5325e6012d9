// The shared run-config sections: their field tables and checks.
#include "trainer/run_sections.h"

namespace tandem::trainer {

void AddFields(ModelSection& s, std::vector<ConfigField>& fields) {
  fields.push_back({"model.config", &s.config});
  fields.push_back({"model.init", &s.init});
  fields.push_back({"model.init_seed", &s.init_seed});
}

void AddFields(TokenizerSection& s, std::vector<ConfigField>& fields) {
  fields.push_back({"tokenizer.alphabet", &s.alphabet});
}

void AddFields(OptimSection& s, std::vector<ConfigField>& fields) {
  fields.insert(fields.end(), {
                                  {"optim.lr", &s.lr},
                                  {"optim.min_lr", &s.min_lr},
                                  {"optim.schedule", &s.schedule},
                                  {"optim.warmup_steps", &s.warmup_steps},
                                  {"optim.beta1", &s.beta1},
                                  {"optim.beta2", &s.beta2},
                                  {"optim.eps", &s.eps},
                                  {"optim.weight_decay", &s.weight_decay},
                                  {"optim.decay_embeddings", &s.decay_embeddings},
                                  {"optim.max_grad_norm", &s.max_grad_norm},
                                  {"optim.expert_bias_update_rate", &s.expert_bias_update_rate},
                              });
}

void AddFields(CheckpointSection& s, std::vector<ConfigField>& fields) {
  fields.insert(fields.end(), {
                                  {"checkpoint.dir", &s.dir},
                                  {"checkpoint.every_steps", &s.every_steps},
                                  {"checkpoint.keep_last", &s.keep_last},
                                  {"checkpoint.resume", &s.resume},
                              });
}

void CheckSection(const ModelSection& s, ConfigChecker& k) {
  k.Require(!s.config.empty(), "model.config", "required (path to config.json)");
}

void CheckSection(const OptimSection& s, ConfigChecker& k) {
  k.Require(s.lr > 0, "optim.lr", "expected > 0");
  k.Require(s.min_lr >= 0 && s.min_lr <= s.lr, "optim.min_lr", "expected in [0, optim.lr]");
  k.Require(s.schedule == "constant" || s.schedule == "cosine", "optim.schedule",
            "expected \"constant\" or \"cosine\"");
  k.Require(s.warmup_steps >= 0, "optim.warmup_steps", "expected >= 0");
  k.Require(s.beta1 >= 0 && s.beta1 < 1, "optim.beta1", "expected in [0, 1)");
  k.Require(s.beta2 >= 0 && s.beta2 < 1, "optim.beta2", "expected in [0, 1)");
  k.Require(s.eps > 0, "optim.eps", "expected > 0");
  k.Require(s.weight_decay >= 0, "optim.weight_decay", "expected >= 0");
  k.Require(s.max_grad_norm >= 0, "optim.max_grad_norm", "expected >= 0");
  k.Require(s.expert_bias_update_rate >= 0, "optim.expert_bias_update_rate", "expected >= 0");
}

void CheckSection(const CheckpointSection& s, ConfigChecker& k) {
  k.Require(s.every_steps >= 0, "checkpoint.every_steps", "expected >= 0");
  k.Require(s.keep_last >= 1, "checkpoint.keep_last", "expected >= 1");
  k.Require(!s.resume.empty(), "checkpoint.resume",
            "expected \"auto\", \"none\" or a step-<N> directory");
}

}  // namespace tandem::trainer
