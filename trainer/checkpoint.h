// Training checkpoints: everything needed to resume a run exactly. Layout of <root>/step-<N>/:
//   model/                 config.json + model*.safetensors, HF names, f32 (model::SaveCheckpoint)
//   optimizer.safetensors  AdamW moments "exp_avg.<hf name>", "exp_avg_sq.<hf name>" (f32);
//                          __metadata__ {"step": "<updates applied>", "optimizer": "adamw"}
//   loop_state.json        {"format", "step", "seed", "rng_offset", "data_cursor", "extra"}
//   run_config.yaml        the resolved run config
// Durability: everything is written to <root>/.tmp-step-<N>-<pid>, every file and directory is
// fsynced, the directory is renamed to step-<N> and <root> is fsynced. A step-<N> directory
// therefore only ever exists complete; a killed save leaves a .tmp-* directory that readers ignore
// and the next successful save deletes. Only after the new checkpoint is durable are the oldest
// beyond keep_last removed. One writer per root (rank 0).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "model/config.h"
#include "model/weights.h"
#include "nlohmann/json.hpp"
#include "trainer/data.h"
#include "trainer/optimizer.h"

namespace tandem::trainer {

// The training loop's own state.
struct LoopState {
  int64_t step = 0;         // optimizer steps completed
  uint64_t seed = 0;        // run seed of the counter-based generators
  uint64_t rng_offset = 0;  // counter values consumed so far (generators resume from here)
  DataCursor data_cursor;
  nlohmann::json extra = nlohmann::json::object();  // any further loop fields (kept verbatim)
};

struct CheckpointContents {
  const model::ModelConfig* config = nullptr;
  const model::ModelWeights* weights = nullptr;
  const OptimizerState* optimizer = nullptr;
  LoopState loop;
  std::string run_config_yaml;
};

struct CheckpointOptions {
  int64_t keep_last = 3;  // complete checkpoints kept, newest first (>= 1)
  // Fault-injection hook for tests: called with a stage name after each part is durable in the
  // temporary directory ("model", "optimizer", "run_config", "loop_state") and after the rename
  // ("committed").
  std::function<void(const std::string& stage)> after_stage;
};

// "<root>/step-<step>".
std::string CheckpointDir(const std::string& root, int64_t step);

// Writes checkpoint `step` under `root` (created if missing) as described above; returns its
// directory. FailedPrecondition if step-<step> already exists.
absl::StatusOr<std::string> SaveTrainingCheckpoint(const std::string& root, int64_t step,
                                                   const CheckpointContents& contents,
                                                   const CheckpointOptions& options = {});

// The largest N with a complete <root>/step-<N> (one holding loop_state.json); nullopt when there
// is none or root does not exist. .tmp-* directories are ignored.
absl::StatusOr<std::optional<int64_t>> LatestCheckpointStep(const std::string& root);

// Resolves checkpoint.resume: "none" → nullopt; "auto" → the latest under root, if any; anything
// else is a checkpoint directory that must exist.
absl::StatusOr<std::optional<std::string>> ResolveResume(const std::string& root,
                                                         const std::string& resume);

struct LoadedCheckpoint {
  model::ModelConfig config;
  model::ModelWeights weights;
  OptimizerState optimizer;
  LoopState loop;
  std::string run_config_yaml;
};

// Reads a step-<N> directory back. Every missing or malformed part is an error naming the file.
absl::StatusOr<LoadedCheckpoint> LoadTrainingCheckpoint(const std::string& dir);

}  // namespace tandem::trainer
