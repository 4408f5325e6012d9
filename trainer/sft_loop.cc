// The SFT loop: set up (collective, model, data, optimizer; run_common.h), resume, then per step
// train → evaluate → log → checkpoint. The per-step maths is in sft_step.cc, the eval in
// addition_eval.cc.
#include "trainer/sft_loop.h"

#include <chrono>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/core/logging.h"
#include "kernels/core/status_macros.h"
#include "trainer/addition_eval.h"
#include "trainer/addition_task.h"
#include "trainer/checkpoint.h"
#include "trainer/data.h"
#include "trainer/run_common.h"
#include "trainer/sft_metrics.h"
#include "trainer/sft_step.h"

namespace tandem::trainer {
namespace {

// Everything the loop carries from step to step.
struct SftRun : TrainerState {
  const SftRunConfig* config = nullptr;
  SftLoopOptions options;
  std::vector<Example> examples;              // the training set
  bool eval_enabled = false;                  // the same on every rank
  std::vector<PromptResponse> eval_problems;  // this rank's share of the held-out set
};

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
    TANDEM_RETURN_IF_ERROR(WithField("data.train_path", rows.status()));
    run.examples = *std::move(rows);
  } else {
    absl::StatusOr<std::vector<PromptResponse>> rows =
        GenerateAdditionTask(c.data.synthetic_examples, AdditionOptions(c));
    TANDEM_RETURN_IF_ERROR(WithField("data", rows.status()));
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

absl::StatusOr<std::unique_ptr<SftRun>> SetUp(const SftRunConfig& config,
                                              const SftLoopOptions& options) {
  auto run = std::make_unique<SftRun>();
  run->config = &config;
  run->options = options;
  TANDEM_RETURN_IF_ERROR(SetUpTrainer(*run, options.collective, config, options.device));
  TANDEM_RETURN_IF_ERROR(LoadData(*run));
  TANDEM_RETURN_IF_ERROR(BuildOptimizer(*run, config.optim, config.trainer.total_steps));
  return run;
}

// checkpoint.resume, then a guard: a run never starts below an existing checkpoint of its
// directory (it would fail, or mix two runs, on reaching that step).
absl::Status MaybeResume(SftRun& run) {
  absl::StatusOr<std::optional<std::string>> dir =
      ResolveResume(run.checkpoint_root, run.config->checkpoint.resume);
  TANDEM_RETURN_IF_ERROR(WithField("checkpoint.resume", dir.status()));
  if (dir->has_value()) {
    TANDEM_RETURN_IF_ERROR(LoadResumePoint(run, **dir, run.config->model.config));
  }
  absl::StatusOr<std::optional<int64_t>> latest = LatestCheckpointStep(run.checkpoint_root);
  TANDEM_RETURN_IF_ERROR(WithField("checkpoint.dir", latest.status()));
  if (latest->has_value() && **latest > run.step) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint.resume: ", run.checkpoint_root, " already holds step-", **latest,
        ", past the start step ", run.step, "; resume it (checkpoint.resume=auto) or choose ",
        "another trainer.output_dir or checkpoint.dir"));
  }
  return absl::OkStatus();
}

absl::Status SaveCheckpoint(SftRun& run) {
  return SaveCheckpointFromRank0(run, run.config->checkpoint.keep_last, [&](CheckpointContents& c) {
    c.loop.seed = static_cast<uint64_t>(run.config->data.seed);
    c.loop.data_cursor = run.loader->cursor();
    c.run_config_yaml = SftRunConfigToYaml(*run.config);
  });
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
  step_options.master = run.separate_master();
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
  return run.eval_enabled && DueAt(run.step, stop, run.options.eval.every_steps);
}

}  // namespace

absl::StatusOr<SftResult> RunSft(const SftRunConfig& config, const SftLoopOptions& options) {
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<SftRun> run, SetUp(config, options));
  TANDEM_RETURN_IF_ERROR(MaybeResume(*run));
  SftResult result;
  result.start_step = run->step;
  const int64_t stop = StopStep(run->step, config.trainer.total_steps, options.max_steps_this_run);
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
    if (DueAt(run->step, stop, config.checkpoint.every_steps)) {
      TANDEM_RETURN_IF_ERROR(SaveCheckpoint(*run));
    }
    result.steps.push_back(m);
  }
  result.final_step = run->step;
  result.last_checkpoint = run->last_checkpoint;
  TANDEM_ASSIGN_OR_RETURN(result.weights, HostMasterWeights(*run));
  return result;
}

}  // namespace tandem::trainer
