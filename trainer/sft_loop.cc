// The SFT loop: set up (collective, model, data, optimizer), resume, then per step train →
// evaluate → log → checkpoint. The per-step maths is in sft_step.cc, the eval in addition_eval.cc.
#include "trainer/sft_loop.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/core/context.h"
#include "kernels/core/logging.h"
#include "kernels/core/status_macros.h"
#include "model/config.h"
#include "model/hybrid_model.h"
#include "trainer/addition_eval.h"
#include "trainer/addition_task.h"
#include "trainer/char_tokenizer.h"
#include "trainer/checkpoint.h"
#include "trainer/data.h"
#include "trainer/optimizer.h"
#include "trainer/sft_metrics.h"
#include "trainer/sft_step.h"

namespace tandem::trainer {
namespace {

// Everything the loop carries from step to step.
struct SftRun {
  const SftRunConfig* config = nullptr;
  SftLoopOptions options;
  std::unique_ptr<Collective> owned_collective;  // the local one when options.collective is null
  Collective* collective = nullptr;
  std::optional<Context> ctx;
  std::optional<CharTokenizer> tokenizer;
  std::optional<model::HybridModel> model;
  std::optional<AdamW> optimizer;
  model::ModelWeights grads;                  // scratch, the model's shapes
  std::vector<Example> examples;              // the training set
  bool eval_enabled = false;                  // the same on every rank
  std::vector<PromptResponse> eval_problems;  // this rank's share of the held-out set
  std::optional<DataLoader> loader;
  int64_t step = 0;  // optimizer steps completed
  std::string checkpoint_root;
  std::string last_checkpoint;
};

// Prefixes a status message with the config field it came from.
absl::Status Field(const char* field, const absl::Status& s) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(field, ": ", s.message()));
}

absl::Status BuildModel(SftRun& run) {
  const SftRunConfig& c = *run.config;
  absl::StatusOr<model::ModelConfig> config = model::LoadModelConfig(c.model.config);
  TANDEM_RETURN_IF_ERROR(Field("model.config", config.status()));
  if (run.tokenizer->vocab_size() > config->vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.config: vocab_size ", config->vocab_size, " is smaller than the tokenizer's ",
        run.tokenizer->vocab_size(), " ids (tokenizer.alphabet)"));
  }
  model::ModelWeights weights;
  if (c.model.init == "random") {
    weights = model::AllocateWeights(*config);
    model::InitWeights(*config, static_cast<uint64_t>(c.model.init_seed), weights);
  } else {
    absl::StatusOr<model::ModelWeights> loaded = model::LoadWeights(*config, c.model.init);
    TANDEM_RETURN_IF_ERROR(Field("model.init", loaded.status()));
    weights = *std::move(loaded);
  }
  run.grads = model::AllocateWeights(*config);
  run.model.emplace(*config, std::move(weights));
  return absl::OkStatus();
}

AdditionTaskOptions AdditionOptions(const SftRunConfig& c) {
  AdditionTaskOptions o;
  o.seed = static_cast<uint64_t>(c.data.seed);
  o.min_digits = static_cast<int>(c.data.min_digits);
  o.max_digits = static_cast<int>(c.data.max_digits);
  o.reverse_answer = c.data.reverse_answer;
  return o;
}

// The training set (JSONL file or the addition generator) and this rank's held-out problems.
absl::Status LoadData(SftRun& run) {
  const SftRunConfig& c = *run.config;
  JsonlOptions jsonl;
  jsonl.vocab_size = run.model->config().vocab_size;
  if (!c.data.train_path.empty()) {
    absl::StatusOr<std::vector<Example>> rows =
        ReadJsonl(c.data.train_path, &*run.tokenizer, jsonl);
    TANDEM_RETURN_IF_ERROR(Field("data.train_path", rows.status()));
    run.examples = *std::move(rows);
  } else {
    absl::StatusOr<std::vector<PromptResponse>> rows =
        GenerateAdditionTask(c.data.synthetic_examples, AdditionOptions(c));
    TANDEM_RETURN_IF_ERROR(Field("data", rows.status()));
    for (const PromptResponse& r : *rows) {
      const nlohmann::json row = {{"prompt", r.prompt}, {"response", r.response}};
      TANDEM_ASSIGN_OR_RETURN(Example e, ParseExample(row, "addition", &*run.tokenizer, jsonl));
      run.examples.push_back(std::move(e));
    }
  }
  if (run.examples.empty()) return absl::InvalidArgumentError("data.train_path: no examples");
  run.loader.emplace(static_cast<int64_t>(run.examples.size()), static_cast<uint64_t>(c.data.seed),
                     c.data.shuffle);

  const SftEvalOptions& eval = run.options.eval;
  if (!c.data.train_path.empty() || eval.every_steps < 0 || eval.examples <= 0) {
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<PromptResponse>> held_out =
      HeldOutAdditionProblems(AdditionOptions(c), c.data.synthetic_examples, eval.examples);
  if (absl::IsFailedPrecondition(held_out.status())) {
    // A small problem space (e.g. 1-digit operands) that the training set covers: nothing is
    // held out, so there is nothing to evaluate. Every rank reaches the same verdict.
    spdlog::warn("evaluation off: {}", std::string(held_out.status().message()));
    return absl::OkStatus();
  }
  TANDEM_RETURN_IF_ERROR(held_out.status());
  run.eval_enabled = true;
  const int64_t n = static_cast<int64_t>(held_out->size()), p = run.collective->Size();
  const int64_t r = run.collective->Rank();
  run.eval_problems.assign(held_out->begin() + r * n / p, held_out->begin() + (r + 1) * n / p);
  return absl::OkStatus();
}

absl::Status BuildOptimizer(SftRun& run) {
  const OptimSection& o = run.config->optim;
  AdamWOptions adamw{o.beta1, o.beta2, o.eps, o.weight_decay, o.decay_embeddings, o.max_grad_norm};
  LrSchedule schedule{
      o.schedule == "constant" ? LrScheduleKind::kConstant : LrScheduleKind::kCosine, o.lr,
      o.min_lr, o.warmup_steps, run.config->trainer.total_steps};
  absl::StatusOr<AdamW> adam = AdamW::Create(run.model->config(), adamw, schedule);
  TANDEM_RETURN_IF_ERROR(Field("optim", adam.status()));
  run.optimizer.emplace(*std::move(adam));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SftRun>> SetUp(const SftRunConfig& config,
                                              const SftLoopOptions& options) {
  auto run = std::make_unique<SftRun>();
  run->config = &config;
  run->options = options;
  run->collective = options.collective;
  if (run->collective == nullptr) {
    run->owned_collective = MakeLocalCollective();
    run->collective = run->owned_collective.get();
  }
  const int64_t threads = config.trainer.num_threads > 0
                              ? config.trainer.num_threads
                              : std::max(1u, std::thread::hardware_concurrency());
  run->ctx.emplace(Context::Cpu(static_cast<int>(threads)));
  if (config.tokenizer.alphabet.empty()) {
    run->tokenizer.emplace();
  } else {
    absl::StatusOr<CharTokenizer> tok = CharTokenizer::FromAlphabet(config.tokenizer.alphabet);
    TANDEM_RETURN_IF_ERROR(Field("tokenizer.alphabet", tok.status()));
    run->tokenizer.emplace(*std::move(tok));
  }
  TANDEM_RETURN_IF_ERROR(BuildModel(*run));
  TANDEM_RETURN_IF_ERROR(LoadData(*run));
  TANDEM_RETURN_IF_ERROR(BuildOptimizer(*run));
  run->checkpoint_root =
      config.checkpoint.dir.empty()
          ? (std::filesystem::path(config.trainer.output_dir) / "checkpoints").string()
          : config.checkpoint.dir;
  return run;
}

// Loads a step-<N> checkpoint: weights (expert biases included), AdamW moments and step, the
// loop step and the data cursor. Every rank reads the same directory.
absl::Status LoadResumePoint(SftRun& run, const std::string& dir) {
  TANDEM_ASSIGN_OR_RETURN(LoadedCheckpoint ckpt, LoadTrainingCheckpoint(dir));
  if (model::ModelConfigToJson(ckpt.config) != model::ModelConfigToJson(run.model->config())) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint.resume: ", dir, " holds a different model config than ",
                     "model.config (", run.config->model.config, ")"));
  }
  run.model.emplace(std::move(ckpt.config), std::move(ckpt.weights));
  run.optimizer->state() = std::move(ckpt.optimizer);
  TANDEM_RETURN_IF_ERROR(Field("checkpoint.resume", run.loader->Restore(ckpt.loop.data_cursor)));
  run.step = ckpt.loop.step;
  run.last_checkpoint = dir;
  return absl::OkStatus();
}

// checkpoint.resume, then a guard: a run never starts below an existing checkpoint of its
// directory (it would fail, or mix two runs, on reaching that step).
absl::Status MaybeResume(SftRun& run) {
  absl::StatusOr<std::optional<std::string>> dir =
      ResolveResume(run.checkpoint_root, run.config->checkpoint.resume);
  TANDEM_RETURN_IF_ERROR(Field("checkpoint.resume", dir.status()));
  if (dir->has_value()) TANDEM_RETURN_IF_ERROR(LoadResumePoint(run, **dir));
  absl::StatusOr<std::optional<int64_t>> latest = LatestCheckpointStep(run.checkpoint_root);
  TANDEM_RETURN_IF_ERROR(Field("checkpoint.dir", latest.status()));
  if (latest->has_value() && **latest > run.step) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint.resume: ", run.checkpoint_root, " already holds step-", **latest,
        ", past the start step ", run.step, "; resume it (checkpoint.resume=auto) or choose ",
        "another trainer.output_dir or checkpoint.dir"));
  }
  return absl::OkStatus();
}

// Rank 0 writes; every rank learns whether it worked (no rank is left waiting on a failed one).
absl::Status SaveCheckpoint(SftRun& run) {
  absl::Status status;
  if (run.collective->Rank() == 0) {
    CheckpointContents contents;
    contents.config = &run.model->config();
    contents.weights = &run.model->weights();
    contents.optimizer = &run.optimizer->state();
    contents.loop.step = run.step;
    contents.loop.seed = static_cast<uint64_t>(run.config->data.seed);
    contents.loop.data_cursor = run.loader->cursor();
    contents.run_config_yaml = SftRunConfigToYaml(*run.config);
    CheckpointOptions options;
    options.keep_last = run.config->checkpoint.keep_last;
    status = SaveTrainingCheckpoint(run.checkpoint_root, run.step, contents, options).status();
  }
  int64_t failed = status.ok() ? 0 : 1;
  TANDEM_RETURN_IF_ERROR(run.collective->AllReduceSum(&failed, 1));
  TANDEM_RETURN_IF_ERROR(status);
  if (failed != 0) return absl::InternalError("checkpoint: rank 0 failed to write it");
  run.last_checkpoint = CheckpointDir(run.checkpoint_root, run.step);
  return absl::OkStatus();
}

// Exact match over the held-out set: each rank decodes its share, the counts are summed.
absl::StatusOr<double> Evaluate(SftRun& run) {
  TANDEM_ASSIGN_OR_RETURN(
      ExactMatch em, AdditionExactMatch(*run.ctx, *run.model, *run.tokenizer, run.eval_problems));
  int64_t counts[2] = {em.correct, em.total};
  TANDEM_RETURN_IF_ERROR(run.collective->AllReduceSum(counts, 2));
  return counts[1] > 0 ? static_cast<double>(counts[0]) / counts[1] : 0.0;
}

// The next global batch (same indices on every rank), this rank's shard of it, one step.
absl::StatusOr<SftStepMetrics> TrainOneStep(SftRun& run) {
  const auto start = std::chrono::steady_clock::now();
  const SftRunConfig& c = *run.config;
  const std::vector<int64_t> indices = run.loader->Next(c.data.sequences_per_step);
  TANDEM_ASSIGN_OR_RETURN(RankBatch batch,
                          ShardAndPack(run.examples, indices, run.collective->Rank(),
                                       run.collective->Size(), c.data.max_tokens_per_micro_batch));
  SftStepOptions step_options;
  step_options.expert_bias_update_rate = c.optim.expert_bias_update_rate;
  TANDEM_ASSIGN_OR_RETURN(SftStepResult out,
                          SftTrainStep(*run.ctx, *run.collective, *run.model, *run.optimizer,
                                       run.grads, batch, step_options));
  ++run.step;
  SftStepMetrics m;
  m.step = run.step;
  m.total_steps = c.trainer.total_steps;
  m.loss = out.loss;
  m.lr = out.optimizer.lr;
  m.grad_norm = out.optimizer.grad_norm;
  m.skipped = out.optimizer.skipped;
  m.tokens = out.tokens;
  m.target_tokens = out.targets;
  m.step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return m;
}

// The same answer on every rank (a collective follows): it depends on the config and step alone.
bool EvalDue(const SftRun& run, int64_t stop) {
  const int64_t every = run.options.eval.every_steps;
  if (!run.eval_enabled) return false;
  return run.step == stop || (every > 0 && run.step % every == 0);
}

bool CheckpointDue(const SftRun& run, int64_t stop) {
  const int64_t every = run.config->checkpoint.every_steps;
  return run.step == stop || (every > 0 && run.step % every == 0);
}

model::ModelWeights CopyWeights(const model::ModelConfig& config, const model::ModelWeights& w) {
  model::ModelWeights copy = model::AllocateWeights(config);
  std::vector<Tensor> dst;
  copy.ForEachParameter([&](const std::string&, Tensor& t) { dst.push_back(t); });
  size_t i = 0;
  w.ForEachParameter([&](const std::string&, const Tensor& t) {
    std::copy_n(t.data<float>(), t.numel(), dst[i++].data<float>());
  });
  return copy;
}

}  // namespace

absl::StatusOr<SftResult> RunSft(const SftRunConfig& config, const SftLoopOptions& options) {
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<SftRun> run, SetUp(config, options));
  TANDEM_RETURN_IF_ERROR(MaybeResume(*run));
  SftResult result;
  result.start_step = run->step;
  const int64_t total = config.trainer.total_steps;
  const int64_t stop = options.max_steps_this_run > 0
                           ? std::min(total, run->step + options.max_steps_this_run)
                           : total;
  const bool writes_metrics = options.write_metrics && run->collective->Rank() == 0;
  TANDEM_ASSIGN_OR_RETURN(MetricsLog log,
                          MetricsLog::Open(config.trainer.output_dir, run->step,
                                           config.trainer.log_every, writes_metrics));
  while (run->step < stop) {
    TANDEM_ASSIGN_OR_RETURN(SftStepMetrics m, TrainOneStep(*run));
    if (EvalDue(*run, stop)) {
      TANDEM_ASSIGN_OR_RETURN(m.eval_exact_match, Evaluate(*run));
      result.final_exact_match = m.eval_exact_match;
    }
    TANDEM_RETURN_IF_ERROR(log.Add(m, /*force=*/run->step == stop));
    if (options.on_step) options.on_step(m);
    if (CheckpointDue(*run, stop)) TANDEM_RETURN_IF_ERROR(SaveCheckpoint(*run));
    result.steps.push_back(m);
  }
  result.final_step = run->step;
  result.last_checkpoint = run->last_checkpoint;
  result.weights = CopyWeights(run->model->config(), run->model->weights());
  return result;
}

}  // namespace tandem::trainer
