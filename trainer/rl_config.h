// RlRunConfig: the typed schema of a GRPO run (`tandem train`), loaded from YAML with Hydra-style
// command-line overrides (the grammar of run_config.h), validated into a Status that names the
// file and line (or the override) and the field, and written back as YAML beside every checkpoint.
// configs/runs/grpo-demo-tiny.yaml is the example; docs/rl.md lists every field.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "trainer/run_sections.h"

namespace tandem::trainer {

struct RlRunConfig {
  ModelSection model;
  TokenizerSection tokenizer;
  struct Data {
    std::string train_path;                // JSONL prompts (verl fields); "" = `synthetic`
    std::string eval_path;                 // held-out JSONL; "" = rows after the training set
    std::string synthetic = "arithmetic";  // "arithmetic" or "countdown" (train_path empty)
    int64_t synthetic_examples = 20000;    // training rows generated
    int64_t min_digits = 1;                // arithmetic: digits of each operand
    int64_t max_digits = 3;
    std::string operators = "+";       // arithmetic: subset of "+-*"
    bool reverse_answer = false;       // arithmetic: answers least-significant digit first
    int64_t countdown_numbers = 3;     // countdown: numbers per problem (difficulty)
    int64_t countdown_max_number = 9;  // countdown: numbers in [1, max]
    int64_t seed = 0;                  // rows and epoch shuffle
    bool shuffle = true;
    int64_t prompts_per_step = 32;  // GRPO groups per optimizer step
  } data;
  struct Grpo {
    int64_t samples_per_prompt = 8;    // n, the group size (>= 2)
    double temperature = 1.0;          // sampling temperature; the trainer's log-probs use the same
    int64_t max_new_tokens = 8;        // per sample, EOS included
    bool normalize_adv_by_std = true;  // GRPO (true) or Dr. GRPO (false)
    double clip_low = 0.2;             // PPO ε_low
    double clip_high = 0.28;           // PPO ε_high (DAPO clip-higher)
    double dual_clip = 0.0;            // 0 = off, else > 1
    int64_t max_tokens_per_micro_batch = 4096;  // packing budget, tokens
  } grpo;
  struct Reward {
    std::string function = "auto";  // "auto": the built-in named by each row's data_source
    std::string options;            // JSON object of the reward's options ("" = defaults)
  } reward;
  struct Rollout {
    // "inprocess": one engine in this process; "local": spawn `workers` rollout-server processes
    // on loopback (the embedded default); "remote": the servers at `addresses`.
    std::string backend = "local";
    int64_t workers = 2;                 // local: processes to spawn
    std::vector<std::string> addresses;  // remote: host:port of each worker
    std::string mode = "sync";           // "sync" or "async"
    int64_t max_staleness = 1;           // async: versions a token's weights may lag the trainer
    int64_t threads_per_worker = 1;      // CPU threads of each engine
    int64_t memory_mb = 256;             // engine cache budget (MiB)
    int64_t max_sequences = 256;         // engine: sequences admitted at once
    int64_t max_step_tokens = 1024;      // engine: tokens per engine step
    double request_timeout_s = 120;      // a request not done by then is retried elsewhere
    int64_t max_attempts = 4;            // per request, over workers
    std::string server_binary;           // local: the `tandem` binary; "" = this executable
  } rollout;
  // optim.*: run_sections.h; the defaults differ from SFT's: constant schedule, no warmup, no
  // weight decay.
  OptimSection optim{.schedule = "constant", .warmup_steps = 0, .weight_decay = 0.0};
  struct WarmStart {
    int64_t steps = 0;  // SFT steps before RL (addition task); 0 = no warm start
    int64_t min_digits = 1;
    int64_t max_digits = 2;
    int64_t examples = 20000;  // SFT rows generated
    int64_t sequences_per_step = 64;
    double lr = 3e-3;
    int64_t warmup_steps = 10;
  } warm_start;
  struct Trainer {
    int64_t total_steps = 100;  // GRPO steps
    int64_t num_threads = 0;    // trainer CPU threads; 0 = all hardware threads
    int64_t log_every = 1;      // steps between metric lines
    std::string output_dir = "runs/grpo";
    int64_t seed = 0;  // sampling seeds derive from it
  } trainer;
  struct Eval {
    int64_t every_steps = 10;  // held-out greedy accuracy every K steps (and at 0 and the end)
    int64_t examples = 200;    // held-out problems; 0 = no eval
  } eval;
  CheckpointSection checkpoint{.every_steps = 50, .keep_last = 2};
  struct Metrics {
    bool tensorboard = true;  // event file under <trainer.output_dir>/tensorboard
  } metrics;
};

// Parses `yaml_text` (`source` names it in errors), applies the overrides, validates. Unknown
// fields are errors. Overrides: `a.b=v`, `+a.b=v`, `++a.b=v`, `~a.b` (run_config.h).
absl::StatusOr<RlRunConfig> ParseRlRunConfig(const std::string& yaml_text,
                                             const std::string& source,
                                             const std::vector<std::string>& overrides = {});
absl::StatusOr<RlRunConfig> LoadRlRunConfig(const std::string& path,
                                            const std::vector<std::string>& overrides = {});
// Range, enum and consistency checks. `origin(field)` says where the field's value came from
// ("file.yaml:12", "override 'a.b=v'"); errors read "<origin>: field '<field>': <what>".
absl::Status ValidateRlRunConfig(const RlRunConfig& config, const ConfigOrigin& origin);
// Every field, as YAML that ParseRlRunConfig reads back to the same config.
std::string RlRunConfigToYaml(const RlRunConfig& config);

}  // namespace tandem::trainer
