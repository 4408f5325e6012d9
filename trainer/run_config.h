// SftRunConfig: the typed schema of an SFT run, loaded from YAML with Hydra-style command-line
// overrides, validated into a Status that names the file (and line) or the override and the
// field, and written back as YAML beside every checkpoint. configs/runs/sft-addition-tiny.yaml is
// the example; docs/training.md lists every field.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem::trainer {

struct SftRunConfig {
  struct Model {
    std::string config;           // HF config.json (file or directory); required
    std::string init = "random";  // "random" (seeded init) or a model checkpoint directory
    int64_t init_seed = 1234;     // seed of the random init
  } model;
  struct Tokenizer {
    std::string alphabet;  // CharTokenizer alphabet; "" = printable ASCII (vocab 99)
  } tokenizer;
  struct Data {
    std::string train_path;              // JSONL file; "" = generate `synthetic`
    std::string synthetic = "addition";  // "addition" or "none"
    int64_t synthetic_examples = 20000;  // rows generated when train_path is ""
    int64_t min_digits = 1;              // addition operands: digits in [min, max]
    int64_t max_digits = 3;
    bool reverse_answer = false;      // addition: answer least-significant digit first
    int64_t seed = 0;                 // data seed: synthetic rows and the epoch shuffle
    bool shuffle = true;              // shuffle the order each epoch
    int64_t sequences_per_step = 64;  // global batch: sequences per optimizer step (all ranks)
    int64_t max_tokens_per_micro_batch = 4096;  // packing budget, tokens per micro-batch
  } data;
  struct Optim {
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
  } optim;
  struct Trainer {
    int64_t total_steps = 500;            // optimizer steps
    int64_t num_threads = 0;              // CPU threads per rank; 0 = all hardware threads
    int64_t log_every = 10;               // steps between metric lines
    std::string output_dir = "runs/sft";  // metrics and (by default) checkpoints go here
  } trainer;
  struct Checkpoint {
    std::string dir;              // "" = <trainer.output_dir>/checkpoints
    int64_t every_steps = 100;    // 0 = only at the end
    int64_t keep_last = 3;        // newest checkpoints kept (>= 1)
    std::string resume = "auto";  // "auto" (latest in dir, if any), "none", or a step-<N> directory
  } checkpoint;
};

// Parses `yaml_text` (`source` names it in errors), applies `overrides`, then validates.
// Overrides (Hydra grammar subset): `a.b=v` sets a field; `+a.b=v` sets a field the YAML does not
// have (error if it does); `++a.b=v` sets it either way; `~a.b` resets it to its default. Values
// are YAML scalars. Unknown fields (YAML or override) are errors, to catch typos.
absl::StatusOr<SftRunConfig> ParseSftRunConfig(const std::string& yaml_text,
                                               const std::string& source,
                                               const std::vector<std::string>& overrides = {});
// Reads `path` then as ParseSftRunConfig.
absl::StatusOr<SftRunConfig> LoadSftRunConfig(const std::string& path,
                                              const std::vector<std::string>& overrides = {});
// Every field, as YAML that ParseSftRunConfig reads back to the same config.
std::string SftRunConfigToYaml(const SftRunConfig& config);

}  // namespace tandem::trainer
