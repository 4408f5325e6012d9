// SftRunConfig: the typed schema of an SFT run, loaded from YAML with Hydra-style command-line
// overrides, validated into a Status that names the file (and line) or the override and the
// field, and written back as YAML beside every checkpoint. configs/runs/sft-addition-tiny.yaml is
// the example; docs/training.md lists every field.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "trainer/run_sections.h"

namespace tandem::trainer {

struct SftRunConfig {
  ModelSection model;
  TokenizerSection tokenizer;
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
  OptimSection optim;
  struct Trainer {
    int64_t total_steps = 500;            // optimizer steps
    int64_t num_threads = 0;              // CPU threads per rank; 0 = all hardware threads
    int64_t log_every = 10;               // steps between metric lines
    std::string output_dir = "runs/sft";  // metrics and (by default) checkpoints go here
  } trainer;
  CheckpointSection checkpoint;
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
