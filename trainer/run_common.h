// What the SFT loop (sft_loop.cc) and the GRPO loop (rl_setup.cc, rl_loop.cc) share: the state a
// training run carries from step to step, and its setup (collective, threads, tokenizer, model,
// optimizer), resume and checkpoint steps. Internal to the loops; not an API.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/core/context.h"
#include "model/hybrid_model.h"
#include "model/tokenizer.h"
#include "model/weights.h"
#include "trainer/checkpoint.h"
#include "trainer/collectives.h"
#include "trainer/data.h"
#include "trainer/optimizer.h"
#include "trainer/run_sections.h"

namespace tandem::trainer {

struct TrainerState {
  std::unique_ptr<Collective> owned_collective;  // the local one when none was given
  Collective* collective = nullptr;
  std::optional<Context> ctx;
  std::optional<model::CharTokenizer> tokenizer;  // tokenizer.alphabet (MakeCharTokenizer)
  std::optional<model::HybridModel> model;
  std::optional<AdamW> optimizer;
  model::ModelWeights grads;  // scratch, the model's shapes
  std::optional<DataLoader> loader;
  int64_t step = 0;  // optimizer steps completed
  std::string checkpoint_root;
  std::string last_checkpoint;
};

// `s` with its message prefixed by the config field it came from: "model.config: ...".
absl::Status WithField(const char* field, const absl::Status& s);

// The collective (`collective`, or a local one when null), a CPU context of `num_threads` threads
// (0 = all hardware threads), the tokenizer, the model (model.init) with its gradient scratch,
// and the checkpoint root. Errors name the config field.
absl::Status SetUpTrainer(TrainerState& state, Collective* collective, int64_t num_threads,
                          const TokenizerSection& tokenizer, const ModelSection& model,
                          const CheckpointSection& checkpoint, const std::string& output_dir);
// The same from a run config (SftRunConfig, RlRunConfig).
template <class RunConfig>
absl::Status SetUpTrainer(TrainerState& state, Collective* collective, const RunConfig& c) {
  return SetUpTrainer(state, collective, c.trainer.num_threads, c.tokenizer, c.model, c.checkpoint,
                      c.trainer.output_dir);
}
// AdamW for the model, with the learning-rate schedule over `total_steps`.
absl::Status BuildOptimizer(TrainerState& state, const OptimSection& optim, int64_t total_steps);

// Loads a step-<N> checkpoint: weights (expert biases included), AdamW moments and step, the loop
// step and the data cursor. The checkpoint must hold the model that `model_config` (the
// model.config field) describes. Every rank reads the same directory.
absl::Status LoadResumePoint(TrainerState& state, const std::string& dir,
                             const std::string& model_config);
// Checkpoint `state.step`: rank 0 writes the model, the optimizer and the loop step, plus what
// `fill` adds (loop seed, cursor, extra fields, run config); every rank learns whether it worked
// (no rank is left waiting on a failed one). A collective call.
absl::Status SaveCheckpointFromRank0(TrainerState& state, int64_t keep_last,
                                     const std::function<void(CheckpointContents&)>& fill);

// The step this invocation stops at: `total`, or `max_steps_this_run` (> 0) steps past `step`.
int64_t StopStep(int64_t step, int64_t total, int64_t max_steps_this_run);
// Whether something done every `every` steps (0 = never) and at the stop step is due at `step`.
bool DueAt(int64_t step, int64_t stop, int64_t every);

// Owned copies of `weights` (CPU f32).
model::ModelWeights CopyModelWeights(const model::ModelConfig& config,
                                     const model::ModelWeights& weights);

}  // namespace tandem::trainer
