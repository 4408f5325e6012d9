// Setting up a GRPO run: model and optimizer (run_common.h), data and rewards; resume or SFT warm
// start; workers.
#include <chrono>
#include <filesystem>
#include <utility>

#include "kernels/core/status_macros.h"
#include "trainer/checkpoint.h"
#include "trainer/rl_inprocess_worker.h"
#include "trainer/rl_run.h"
#include "trainer/run_config.h"
#include "trainer/sft_loop.h"
#include "trainer/synthetic_tasks.h"

namespace tandem::trainer {
namespace {

RlRowGenerator SyntheticGenerator(const RlRunConfig::Data& d) {
  if (d.synthetic == "countdown") {
    CountdownTaskOptions o{static_cast<uint64_t>(d.seed), static_cast<int>(d.countdown_numbers),
                           static_cast<int>(d.countdown_max_number)};
    return [o](int64_t n) { return GenerateCountdown(n, o); };
  }
  ArithmeticTaskOptions o{static_cast<uint64_t>(d.seed), static_cast<int>(d.min_digits),
                          static_cast<int>(d.max_digits), d.operators};
  return [o](int64_t n) { return GenerateArithmetic(n, o); };
}

absl::Status LoadData(RlRun& run) {
  const RlRunConfig::Data& d = run.config->data;
  if (!d.train_path.empty()) {
    absl::StatusOr<std::vector<RlPrompt>> rows = ReadRlJsonl(d.train_path);
    TANDEM_RETURN_IF_ERROR(WithField("data.train_path", rows.status()));
    run.train_rows = *std::move(rows);
  } else {
    absl::StatusOr<std::vector<RlPrompt>> rows = SyntheticGenerator(d)(d.synthetic_examples);
    TANDEM_RETURN_IF_ERROR(WithField("data", rows.status()));
    run.train_rows = *std::move(rows);
  }
  if (run.train_rows.empty()) return absl::InvalidArgumentError("data.train_path: no prompts");
  run.loader.emplace(static_cast<int64_t>(run.train_rows.size()), static_cast<uint64_t>(d.seed),
                     d.shuffle);
  const int64_t examples = run.config->eval.examples;
  if (!run.rank0() || examples == 0) return absl::OkStatus();
  if (!d.eval_path.empty()) {
    absl::StatusOr<std::vector<RlPrompt>> rows = ReadRlJsonl(d.eval_path);
    TANDEM_RETURN_IF_ERROR(WithField("data.eval_path", rows.status()));
    run.eval_rows = *std::move(rows);
    if (static_cast<int64_t>(run.eval_rows.size()) > examples) run.eval_rows.resize(examples);
  } else if (d.train_path.empty()) {
    absl::StatusOr<std::vector<RlPrompt>> rows =
        HeldOutRows(SyntheticGenerator(d), d.synthetic_examples, examples);
    TANDEM_RETURN_IF_ERROR(WithField("eval.examples", rows.status()));
    run.eval_rows = *std::move(rows);
  }
  return absl::OkStatus();
}

SftRunConfig WarmStartConfig(const RlRunConfig& c) {
  SftRunConfig s;
  s.model = c.model;
  s.tokenizer = c.tokenizer;
  s.data.synthetic = "addition";
  s.data.synthetic_examples = c.warm_start.examples;
  s.data.min_digits = c.warm_start.min_digits;
  s.data.max_digits = c.warm_start.max_digits;
  s.data.reverse_answer = c.data.reverse_answer;
  s.data.seed = c.data.seed;
  s.data.sequences_per_step = c.warm_start.sequences_per_step;
  s.data.max_tokens_per_micro_batch = c.grpo.max_tokens_per_micro_batch;
  s.optim.lr = c.warm_start.lr;
  s.optim.min_lr = c.warm_start.lr / 10;
  s.optim.warmup_steps = c.warm_start.warmup_steps;
  s.optim.max_grad_norm = c.optim.max_grad_norm;
  s.optim.expert_bias_update_rate = c.optim.expert_bias_update_rate;
  s.trainer.total_steps = c.warm_start.steps;
  s.trainer.num_threads = c.trainer.num_threads;
  s.trainer.log_every = 10;
  s.trainer.output_dir = (std::filesystem::path(c.trainer.output_dir) / "warm_start").string();
  s.checkpoint.every_steps = 0;
  s.checkpoint.keep_last = 1;
  s.checkpoint.resume = "auto";
  return s;
}

absl::Status WarmStart(RlRun& run) {
  run.Phase("warm start (SFT)");
  const SftRunConfig sft = WarmStartConfig(*run.config);
  SftLoopOptions options;
  options.collective = run.options.collective;
  options.device = run.device;
  options.eval.every_steps = -1;
  absl::StatusOr<SftResult> result = RunSft(sft, options);
  TANDEM_RETURN_IF_ERROR(WithField("warm_start", result.status()));
  TANDEM_RETURN_IF_ERROR(ReplaceModelWeights(run, std::move(result->weights)));
  run.warm_started = result->final_step > result->start_step;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RlRun>> SetUpRl(const RlRunConfig& config,
                                               const RlLoopOptions& options) {
  auto run = std::make_unique<RlRun>();
  run->config = &config;
  run->options = options;
  TANDEM_RETURN_IF_ERROR(CheckRolloutDevice(config, options));
  TANDEM_RETURN_IF_ERROR(SetUpTrainer(*run, options.collective, config, options.device));
  TANDEM_RETURN_IF_ERROR(BuildOptimizer(*run, config.optim, config.trainer.total_steps));
  TANDEM_RETURN_IF_ERROR(LoadData(*run));
  if (run->rank0()) {
    TANDEM_ASSIGN_OR_RETURN(RlRewarder rewarder,
                            RlRewarder::Create(config.reward, config.data.reverse_answer));
    run->rewarder.emplace(std::move(rewarder));
  }
  return run;
}

absl::Status ResumeOrWarmStart(RlRun& run) {
  absl::StatusOr<std::optional<std::string>> dir =
      ResolveResume(run.checkpoint_root, run.config->checkpoint.resume);
  TANDEM_RETURN_IF_ERROR(WithField("checkpoint.resume", dir.status()));
  if (!dir->has_value()) {
    return run.config->warm_start.steps > 0 ? WarmStart(run) : absl::OkStatus();
  }
  run.Phase("resume");
  TANDEM_RETURN_IF_ERROR(LoadResumePoint(run, **dir, run.config->model.config));
  run.resumed = true;
  return absl::OkStatus();
}

absl::Status StartWorkers(RlRun& run) {
  if (!run.rank0()) return absl::OkStatus();
  run.Phase("rollout workers");
  const model::ModelConfig& mc = run.model->config();
  TANDEM_ASSIGN_OR_RETURN(const model::ModelWeights weights, PublishedWeights(run));
  absl::StatusOr<std::vector<std::unique_ptr<RolloutWorker>>> workers =
      run.options.make_workers ? run.options.make_workers(mc, weights, run.step)
                               : MakeConfiguredWorkers(*run.config, mc, weights, run.step,
                                                       run.on_gpu() ? run.ctx->cuda_device() : -1);
  TANDEM_RETURN_IF_ERROR(WithField("rollout", workers.status()));
  if (workers->empty()) return absl::InvalidArgumentError("rollout: no workers");
  RolloutPoolOptions pool;
  pool.max_attempts = run.config->rollout.max_attempts;
  pool.request_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(run.config->rollout.request_timeout_s * 1000));
  run.pool = std::make_unique<RolloutPool>(*std::move(workers), pool);
  const bool async = run.config->rollout.mode == "async";
  run.driver =
      std::make_unique<RlRolloutDriver>(*run.pool, *run.config, *run.tokenizer, run.train_rows,
                                        async ? run.config->rollout.max_staleness : 0);
  return absl::OkStatus();
}

}  // namespace tandem::trainer
