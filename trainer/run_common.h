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

// On the CPU the model's fp32 weights are the master weights the optimizer updates. On the GPU
// (device kCUDA, one GPU per rank) the fp32 master, the gradients and AdamW's moments live on the
// GPU, and the model holds the compute cast of the master (bf16 matrices; CastMasterInto after
// every update); checkpoints are written from a host copy of the master.
struct TrainerState {
  std::unique_ptr<Collective> owned_collective;  // the local one when none was given
  // GPU ranks: the NCCL collective over the given (host) one; `collective` then points to it.
  std::unique_ptr<Collective> device_collective;
  Collective* collective = nullptr;
  std::optional<Context> ctx;
  std::optional<model::CharTokenizer> tokenizer;  // tokenizer.alphabet (MakeCharTokenizer)
  std::optional<model::HybridModel> model;
  std::optional<AdamW> optimizer;
  model::ModelWeights grads;   // scratch, the model's shapes (f32 on ctx's device)
  model::ModelWeights master;  // GPU only: the fp32 master weights on the GPU
  Device device = Device::kCPU;
  std::optional<DataLoader> loader;
  int64_t step = 0;  // optimizer steps completed
  std::string checkpoint_root;
  std::string last_checkpoint;

  bool on_gpu() const { return device == Device::kCUDA; }
  // Where the step functions take the master (SftStepOptions::master): null on the CPU.
  model::ModelWeights* separate_master() { return on_gpu() ? &master : nullptr; }
};

// `s` with its message prefixed by the config field it came from: "model.config: ...".
absl::Status WithField(const char* field, const absl::Status& s);

// The collective (`collective`, or a local one when null), a context on `device` (CPU: a pool
// of `num_threads` threads, 0 = all hardware threads; CUDA: one GPU with such a host pool), the
// tokenizer, the model (model.init) with its gradient scratch (and on the GPU its fp32 master),
// and the checkpoint root. Errors name the config field. On CUDA with several ranks each rank
// takes the GPU of its index among its host's ranks (modulo the visible GPUs) and the
// gradients are reduced through NCCL (MakeNcclCollective over `collective`); FailedPrecondition
// when built without NCCL.
absl::Status SetUpTrainer(TrainerState& state, Collective* collective, int64_t num_threads,
                          const TokenizerSection& tokenizer, const ModelSection& model,
                          const CheckpointSection& checkpoint, const std::string& output_dir,
                          Device device = Device::kCPU);
// The same from a run config (SftRunConfig, RlRunConfig).
template <class RunConfig>
absl::Status SetUpTrainer(TrainerState& state, Collective* collective, const RunConfig& c,
                          Device device = Device::kCPU) {
  return SetUpTrainer(state, collective, c.trainer.num_threads, c.tokenizer, c.model, c.checkpoint,
                      c.trainer.output_dir, device);
}
// AdamW for the model, with the learning-rate schedule over `total_steps` (moments on the
// trainer's device).
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
// Owned host f32 copies of the trainer's master weights (from the GPU when it trains there).
absl::StatusOr<model::ModelWeights> HostMasterWeights(TrainerState& state);
// The f32 host weights rollout workers take (they cast them as UploadWeights does, which gives
// the trainer's compute weights bit for bit): the model's own tensors on the CPU (shared, not
// copied), a host copy of the master on the GPU.
absl::StatusOr<model::ModelWeights> PublishedWeights(TrainerState& state);
// Replaces the model's weights with `host` (f32, the model's shapes), e.g. after an SFT warm
// start: on the GPU the master, the compute cast and the gradients are placed anew.
absl::Status ReplaceModelWeights(TrainerState& state, model::ModelWeights host);

}  // namespace tandem::trainer
