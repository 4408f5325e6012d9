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
#include "model/device_weights.h"
#include "model/hybrid_model_backward_weights.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/core/cuda_util.h"
#endif

namespace tandem::trainer {
namespace {

// The GPU half of BuildModel: the fp32 master uploaded as is, the compute weights cast from the
// same host values (UploadWeights; CastMasterInto gives the same bits after every update), and
// zeroed fp32 gradients, all on the GPU.
absl::Status PlaceOnGpu(TrainerState& state, const model::ModelConfig& config,
                        const model::ModelWeights& host) {
  const Context& ctx = *state.ctx;
  TANDEM_ASSIGN_OR_RETURN(state.master, model::CopyWeightsF32(ctx, config, host, Device::kCUDA));
  TANDEM_ASSIGN_OR_RETURN(model::ModelWeights compute, model::UploadWeights(ctx, config, host));
  TANDEM_ASSIGN_OR_RETURN(state.grads, model::AllocateGradients(ctx, config));
  state.model.emplace(config, std::move(compute));
  return absl::OkStatus();
}

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
  // Checked before the weights go to the GPU: its attention kernels take these head sizes only.
  if (state.on_gpu() && config->head_dim != 32 && config->head_dim != 64 &&
      config->head_dim != 128) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.config: head_dim ", config->head_dim, " with --device cuda; the GPU attention ",
        "kernels take 32, 64 or 128 (e.g. configs/models/tiny-hybrid-addition-gpu.json)"));
  }
  if (!state.on_gpu()) {
    state.grads = model::AllocateWeights(*config);
    state.model.emplace(*config, std::move(weights));
    return absl::OkStatus();
  }
  return PlaceOnGpu(state, *config, weights);
}

#ifdef TANDEM_HAVE_CUDA
// Makes this rank's GPU current: its index among the ranks on its host (LocalRank, a collective
// call every rank makes first) modulo the GPUs it can see — one process per GPU; with one visible
// GPU per process, as Slurm's --gpus-per-task gives, that one. A single process keeps the
// current device (0 unless the caller chose another).
absl::Status UseRankGpu(Collective& collective, int* gpu) {
  absl::StatusOr<int> local = 0;
  if (collective.Size() > 1) local = LocalRank(collective);
  TANDEM_RETURN_IF_ERROR(local.status());
  if (!kernels::cuda::CudaAvailable()) {
    return absl::FailedPreconditionError("--device cuda: no usable CUDA device on this machine");
  }
  int count = 0;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&count));
  if (collective.Size() == 1) {
    TANDEM_CUDA_RETURN_IF_ERROR(cudaGetDevice(gpu));
    return absl::OkStatus();
  }
  if (count > 1 && *local >= count) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--device cuda: rank ", collective.Rank(), " is rank ", *local, " on its host, which has ",
        count, " visible GPUs; start at most one rank per GPU (or give each rank its own GPU, ",
        "e.g. srun --gpus-per-task=1)"));
  }
  *gpu = *local % count;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaSetDevice(*gpu));
  return absl::OkStatus();
}
#endif

// A context for `device`: a CPU pool, or this rank's GPU (with a host pool); several GPU ranks
// also get the NCCL collective. With several ranks every failure is agreed on (AllRanksOk), so a
// rank that cannot use its GPU stops the others instead of leaving them in NCCL's setup.
absl::Status MakeContext(TrainerState& state, int64_t threads, Device device) {
  if (device == Device::kCPU) {
    state.ctx.emplace(Context::Cpu(static_cast<int>(threads)));
    return absl::OkStatus();
  }
  const int ranks = state.collective->Size();
  if (ranks > 1 && !HaveNccl()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--device cuda: ", ranks, " ranks, but this tandem was built without NCCL, which data ",
        "parallel training on several GPUs needs; run one process (one GPU) or train on the CPU"));
  }
#ifdef TANDEM_HAVE_CUDA
  int gpu = 0;
  const absl::Status picked = UseRankGpu(*state.collective, &gpu);
  TANDEM_RETURN_IF_ERROR(ranks > 1 ? AllRanksOk(*state.collective, picked) : picked);
  state.ctx.emplace(Context::Cuda(gpu, nullptr, static_cast<int>(threads)));
  if (ranks > 1) {
    TANDEM_ASSIGN_OR_RETURN(state.device_collective,
                            MakeNcclCollective(*state.collective, state.ctx->cuda_stream()));
    state.collective = state.device_collective.get();
  }
  return absl::OkStatus();
#else
  return absl::FailedPreconditionError(
      "--device cuda: this tandem was built without CUDA (configure with -DTANDEM_CUDA=ON)");
#endif
}

// AdamW's moments moved to `device` (the GPU trainer keeps them next to its master).
absl::Status MomentsToDevice(TrainerState& state, Device device) {
  OptimizerState& o = state.optimizer->state();
  const model::ModelConfig& config = state.model->config();
  TANDEM_ASSIGN_OR_RETURN(o.m, model::CopyWeightsF32(*state.ctx, config, o.m, device));
  TANDEM_ASSIGN_OR_RETURN(o.v, model::CopyWeightsF32(*state.ctx, config, o.v, device));
  return absl::OkStatus();
}

}  // namespace

absl::Status WithField(const char* field, const absl::Status& s) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(field, ": ", s.message()));
}

absl::Status SetUpTrainer(TrainerState& state, Collective* collective, int64_t num_threads,
                          const TokenizerSection& tokenizer, const ModelSection& model,
                          const CheckpointSection& checkpoint, const std::string& output_dir,
                          Device device) {
  state.collective = collective;
  if (state.collective == nullptr) {
    state.owned_collective = MakeLocalCollective();
    state.collective = state.owned_collective.get();
  }
  const int64_t threads =
      num_threads > 0 ? num_threads : std::max(1u, std::thread::hardware_concurrency());
  state.device = device;
  TANDEM_RETURN_IF_ERROR(MakeContext(state, threads, device));
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
  if (state.on_gpu()) return MomentsToDevice(state, Device::kCUDA);
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
  state.optimizer->state() = std::move(ckpt.optimizer);
  if (state.on_gpu()) {
    TANDEM_RETURN_IF_ERROR(PlaceOnGpu(state, ckpt.config, ckpt.weights));
    TANDEM_RETURN_IF_ERROR(MomentsToDevice(state, Device::kCUDA));
  } else {
    state.model.emplace(std::move(ckpt.config), std::move(ckpt.weights));
  }
  TANDEM_RETURN_IF_ERROR(
      WithField("checkpoint.resume", state.loader->Restore(ckpt.loop.data_cursor)));
  state.step = ckpt.loop.step;
  state.last_checkpoint = dir;
  return absl::OkStatus();
}

namespace {

// The GPU trainer's checkpoint: host copies of the fp32 master and of AdamW's moments.
absl::Status SaveFromGpu(TrainerState& state, int64_t keep_last,
                         const std::function<void(CheckpointContents&)>& fill) {
  const model::ModelConfig& config = state.model->config();
  TANDEM_ASSIGN_OR_RETURN(model::ModelWeights weights, HostMasterWeights(state));
  const OptimizerState& o = state.optimizer->state();
  OptimizerState host{o.step, {}, {}};
  TANDEM_ASSIGN_OR_RETURN(host.m, model::CopyWeightsF32(*state.ctx, config, o.m, Device::kCPU));
  TANDEM_ASSIGN_OR_RETURN(host.v, model::CopyWeightsF32(*state.ctx, config, o.v, Device::kCPU));
  CheckpointContents contents;
  contents.config = &config;
  contents.weights = &weights;
  contents.optimizer = &host;
  contents.loop.step = state.step;
  fill(contents);
  CheckpointOptions options;
  options.keep_last = keep_last;
  return SaveTrainingCheckpoint(state.checkpoint_root, state.step, contents, options).status();
}

}  // namespace

absl::Status SaveCheckpointFromRank0(TrainerState& state, int64_t keep_last,
                                     const std::function<void(CheckpointContents&)>& fill) {
  absl::Status status;
  if (state.collective->Rank() == 0 && state.on_gpu()) {
    status = SaveFromGpu(state, keep_last, fill);
  } else if (state.collective->Rank() == 0) {
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

absl::StatusOr<model::ModelWeights> HostMasterWeights(TrainerState& state) {
  if (!state.on_gpu()) return CopyModelWeights(state.model->config(), state.model->weights());
  return model::CopyWeightsF32(*state.ctx, state.model->config(), state.master, Device::kCPU);
}

absl::StatusOr<model::ModelWeights> PublishedWeights(TrainerState& state) {
  if (!state.on_gpu()) return state.model->weights();
  return HostMasterWeights(state);
}

absl::Status ReplaceModelWeights(TrainerState& state, model::ModelWeights host) {
  model::ModelConfig config = state.model->config();  // emplace destroys the old model first
  if (!state.on_gpu()) {
    state.model.emplace(std::move(config), std::move(host));
    return absl::OkStatus();
  }
  return PlaceOnGpu(state, config, host);
}

}  // namespace tandem::trainer
