// The setup, resume and checkpoint steps of a training run that the SFT and GRPO loops share.
#include "trainer/run_common.h"

#include <algorithm>
#include <filesystem>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "model/config.h"

namespace tandem::trainer {
namespace {

absl::Status BuildModel(TrainerState& state, const ModelSection& m) {
  absl::StatusOr<model::ModelConfig> config = model::LoadModelConfig(m.config);
  TANDEM_RETURN_IF_ERROR(WithField("model.config", config.status()));
  if (state.tokenizer->vocab_size() > config->vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.config: vocab_size ", config->vocab_size, " is smaller than the tokenizer's ",
        state.tokenizer->vocab_size(), " ids (tokenizer.alphabet)"));
  }
  model::ModelWeights weights;
  if (m.init == "random") {
    weights = model::AllocateWeights(*config);
    model::InitWeights(*config, static_cast<uint64_t>(m.init_seed), weights);
  } else {
    absl::StatusOr<model::ModelWeights> loaded = model::LoadWeights(*config, m.init);
    TANDEM_RETURN_IF_ERROR(WithField("model.init", loaded.status()));
    weights = *std::move(loaded);
  }
  state.grads = model::AllocateWeights(*config);
  state.model.emplace(*config, std::move(weights));
  return absl::OkStatus();
}

}  // namespace

absl::Status WithField(const char* field, const absl::Status& s) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(field, ": ", s.message()));
}

absl::Status SetUpTrainer(TrainerState& state, Collective* collective, int64_t num_threads,
                          const TokenizerSection& tokenizer, const ModelSection& model,
                          const CheckpointSection& checkpoint, const std::string& output_dir) {
  state.collective = collective;
  if (state.collective == nullptr) {
    state.owned_collective = MakeLocalCollective();
    state.collective = state.owned_collective.get();
  }
  const int64_t threads =
      num_threads > 0 ? num_threads : std::max(1u, std::thread::hardware_concurrency());
  state.ctx.emplace(Context::Cpu(static_cast<int>(threads)));
  absl::StatusOr<model::CharTokenizer> tok = MakeCharTokenizer(tokenizer.alphabet);
  TANDEM_RETURN_IF_ERROR(WithField("tokenizer.alphabet", tok.status()));
  state.tokenizer.emplace(*std::move(tok));
  TANDEM_RETURN_IF_ERROR(BuildModel(state, model));
  state.checkpoint_root = checkpoint.dir.empty()
                              ? (std::filesystem::path(output_dir) / "checkpoints").string()
                              : checkpoint.dir;
  return absl::OkStatus();
}

absl::Status BuildOptimizer(TrainerState& state, const OptimSection& o, int64_t total_steps) {
  AdamWOptions adamw{o.beta1, o.beta2, o.eps, o.weight_decay, o.decay_embeddings, o.max_grad_norm};
  LrSchedule schedule{
      o.schedule == "constant" ? LrScheduleKind::kConstant : LrScheduleKind::kCosine, o.lr,
      o.min_lr, o.warmup_steps, total_steps};
  absl::StatusOr<AdamW> adam = AdamW::Create(state.model->config(), adamw, schedule);
  TANDEM_RETURN_IF_ERROR(WithField("optim", adam.status()));
  state.optimizer.emplace(*std::move(adam));
  return absl::OkStatus();
}

absl::Status LoadResumePoint(TrainerState& state, const std::string& dir,
                             const std::string& model_config) {
  TANDEM_ASSIGN_OR_RETURN(LoadedCheckpoint ckpt, LoadTrainingCheckpoint(dir));
  if (model::ModelConfigToJson(ckpt.config) != model::ModelConfigToJson(state.model->config())) {
    return absl::FailedPreconditionError(absl::StrCat("checkpoint.resume: ", dir,
                                                      " holds a different model config than ",
                                                      "model.config (", model_config, ")"));
  }
  state.model.emplace(std::move(ckpt.config), std::move(ckpt.weights));
  state.optimizer->state() = std::move(ckpt.optimizer);
  TANDEM_RETURN_IF_ERROR(
      WithField("checkpoint.resume", state.loader->Restore(ckpt.loop.data_cursor)));
  state.step = ckpt.loop.step;
  state.last_checkpoint = dir;
  return absl::OkStatus();
}

absl::Status SaveCheckpointFromRank0(TrainerState& state, int64_t keep_last,
                                     const std::function<void(CheckpointContents&)>& fill) {
  absl::Status status;
  if (state.collective->Rank() == 0) {
    CheckpointContents contents;
    contents.config = &state.model->config();
    contents.weights = &state.model->weights();
    contents.optimizer = &state.optimizer->state();
    contents.loop.step = state.step;
    fill(contents);
    CheckpointOptions options;
    options.keep_last = keep_last;
    status = SaveTrainingCheckpoint(state.checkpoint_root, state.step, contents, options).status();
  }
  int64_t failed = status.ok() ? 0 : 1;
  TANDEM_RETURN_IF_ERROR(state.collective->AllReduceSum(&failed, 1));
  TANDEM_RETURN_IF_ERROR(status);
  if (failed != 0) return absl::InternalError("checkpoint: rank 0 failed to write it");
  state.last_checkpoint = CheckpointDir(state.checkpoint_root, state.step);
  return absl::OkStatus();
}

int64_t StopStep(int64_t step, int64_t total, int64_t max_steps_this_run) {
  return max_steps_this_run > 0 ? std::min(total, step + max_steps_this_run) : total;
}

bool DueAt(int64_t step, int64_t stop, int64_t every) {
  return step == stop || (every > 0 && step % every == 0);
}

model::ModelWeights CopyModelWeights(const model::ModelConfig& config,
                                     const model::ModelWeights& weights) {
  model::ModelWeights copy = model::AllocateWeights(config);
  std::vector<Tensor> dst;
  copy.ForEachParameter([&](const std::string&, Tensor& t) { dst.push_back(t); });
  size_t i = 0;
  weights.ForEachParameter([&](const std::string&, const Tensor& t) {
    std::copy_n(t.data<float>(), t.numel(), dst[i++].data<float>());
  });
  return copy;
}

}  // namespace tandem::trainer
