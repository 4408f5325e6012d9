// The GRPO loop: per step, rollouts and rewards (rank 0) → trajectories to every rank → train
// step → publish weights → metrics → held-out eval → checkpoint. Setup is in rl_setup.cc.
#include "trainer/rl_loop.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "trainer/addition_eval.h"
#include "trainer/checkpoint.h"
#include "trainer/rl_run.h"
#include "trainer/rl_wire.h"

namespace tandem::trainer {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Held-out accuracy: greedy decoding by the trainer's model, judged by the rewards (rank 0).
absl::StatusOr<double> Evaluate(RlRun& run) {
  if (run.eval_rows.empty()) return absl::FailedPreconditionError("no held-out rows");
  std::vector<std::vector<int32_t>> prompts;
  std::vector<const RlPrompt*> rows;
  for (const RlPrompt& r : run.eval_rows) {
    TANDEM_ASSIGN_OR_RETURN(std::vector<int32_t> p, run.driver->PromptTokens(r));
    prompts.push_back(std::move(p));
    rows.push_back(&r);
  }
  const std::vector<int64_t> max_new(prompts.size(), run.config->grpo.max_new_tokens);
  TANDEM_ASSIGN_OR_RETURN(
      auto outputs, GreedyDecode(*run.ctx, *run.model, prompts, max_new, run.tokenizer->eos_id()));
  TANDEM_ASSIGN_OR_RETURN(std::vector<ScoredResponse> scored,
                          run.rewarder->Score(rows, outputs, *run.tokenizer));
  int64_t correct = 0;
  for (const ScoredResponse& s : scored) correct += s.correct ? 1 : 0;
  return static_cast<double>(correct) / static_cast<double>(scored.size());
}

bool EvalDue(const RlRun& run, int64_t stop) {
  const RlRunConfig::Eval& e = run.config->eval;
  if (!run.rank0() || e.examples == 0 || run.eval_rows.empty()) return false;
  return run.step == 0 || DueAt(run.step, stop, e.every_steps);
}

absl::Status SaveCheckpoint(RlRun& run) {
  return SaveCheckpointFromRank0(run, run.config->checkpoint.keep_last, [&](CheckpointContents& c) {
    c.loop.seed = static_cast<uint64_t>(run.config->trainer.seed);
    // Prompts drawn for steps not trained yet (async lookahead) are drawn again on resume.
    auto next = run.cursor_before.find(run.step + 1);
    c.loop.data_cursor = next != run.cursor_before.end() ? next->second : run.loader->cursor();
    c.loop.extra = {{"weight_version", run.step}};
    c.run_config_yaml = RlRunConfigToYaml(*run.config);
  });
}

absl::Status EnsureSubmitted(RlRun& run, int64_t step) {
  if (run.driver->Submitted(step)) return absl::OkStatus();
  run.cursor_before[step] = run.loader->cursor();
  const std::vector<int64_t> rows = run.loader->Next(run.config->data.prompts_per_step);
  TANDEM_RETURN_IF_ERROR(run.driver->Submit(step, rows));
  if (run.options.after_submit) run.options.after_submit(step);
  return absl::OkStatus();
}

// Rewards, then group advantages; fills the reward metrics.
absl::Status ScoreTrajectories(RlRun& run, const std::vector<int64_t>& rows,
                               std::vector<Trajectory>& trajs, RlStepMetrics& m) {
  std::vector<const RlPrompt*> prompt_rows;
  std::vector<std::vector<int32_t>> responses;
  for (const Trajectory& t : trajs) {
    prompt_rows.push_back(&run.train_rows[rows[t.group]]);
    responses.push_back(t.response);
  }
  TANDEM_ASSIGN_OR_RETURN(std::vector<ScoredResponse> scored,
                          run.rewarder->Score(prompt_rows, responses, *run.tokenizer));
  double sum = 0, sum_sq = 0, length = 0;
  int64_t correct = 0;
  for (size_t i = 0; i < trajs.size(); ++i) {
    trajs[i].reward = scored[i].error ? 0.0f : static_cast<float>(scored[i].score);
    trajs[i].reward_error = scored[i].error;
    m.reward_errors += scored[i].error ? 1 : 0;
    correct += scored[i].correct ? 1 : 0;
    sum += trajs[i].reward;
    sum_sq += static_cast<double>(trajs[i].reward) * trajs[i].reward;
    length += static_cast<double>(trajs[i].response.size());
  }
  const double n = static_cast<double>(std::max<size_t>(trajs.size(), 1));
  m.reward_mean = sum / n;
  m.reward_std = std::sqrt(std::max(0.0, sum_sq / n - m.reward_mean * m.reward_mean));
  m.train_accuracy = correct / n;
  m.response_length = length / n;
  GroupAdvantageOptions adv;
  adv.normalize_by_std = run.config->grpo.normalize_adv_by_std;
  return AssignGroupAdvantages(trajs, run.config->grpo.samples_per_prompt, adv);
}

// Rank 0: the step's trajectories with rewards and advantages.
absl::StatusOr<std::vector<Trajectory>> Rollouts(RlRun& run, int64_t step, RlStepMetrics& m) {
  const RlRunConfig& c = *run.config;
  const int64_t ahead = c.rollout.mode == "async" ? c.rollout.max_staleness : 0;
  for (int64_t s = step; s <= std::min(step + ahead, c.trainer.total_steps); ++s) {
    TANDEM_RETURN_IF_ERROR(EnsureSubmitted(run, s));
  }
  const std::vector<int64_t> rows = run.driver->Rows(step);
  CollectStats cs;
  TANDEM_ASSIGN_OR_RETURN(std::vector<Trajectory> trajs, run.driver->Collect(step, run.step, cs));
  run.cursor_before.erase(step);
  m.rollout_s = cs.latency_seconds;
  m.rollout_wait_s = cs.wait_seconds;
  m.rollout_tokens = cs.generated_tokens;
  m.stale_dropped = cs.stale_dropped;
  m.staleness_max = cs.staleness_max;
  m.staleness_mean = cs.generated_tokens > 0 ? cs.staleness_sum / cs.generated_tokens : 0.0;
  m.prompts = static_cast<int64_t>(rows.size());
  m.trajectories = static_cast<int64_t>(trajs.size());
  const auto start = Clock::now();
  TANDEM_RETURN_IF_ERROR(ScoreTrajectories(run, rows, trajs, m));
  m.reward_s = Since(start);
  return trajs;
}

absl::StatusOr<RlStepMetrics> RunStep(RlRun& run) {
  const auto step_start = Clock::now();
  const RlRunConfig& c = *run.config;
  RlStepMetrics m;
  m.step = run.step + 1;
  m.total_steps = c.trainer.total_steps;
  std::vector<Trajectory> trajs;
  if (run.rank0()) {
    TANDEM_ASSIGN_OR_RETURN(trajs, Rollouts(run, m.step, m));
  }
  TANDEM_RETURN_IF_ERROR(BroadcastTrajectories(*run.collective, trajs));
  const int64_t n = static_cast<int64_t>(trajs.size()), p = run.collective->Size();
  const int64_t r = run.collective->Rank();
  std::span<const Trajectory> shard(trajs.data() + r * n / p, (r + 1) * n / p - r * n / p);

  const auto train_start = Clock::now();
  RlStepOptions options;
  options.ppo.clip_low = c.grpo.clip_low;
  options.ppo.clip_high = c.grpo.clip_high;
  options.ppo.dual_clip = c.grpo.dual_clip;
  options.temperature = static_cast<float>(c.grpo.temperature);
  options.max_tokens_per_micro_batch = c.grpo.max_tokens_per_micro_batch;
  options.expert_bias_update_rate = c.optim.expert_bias_update_rate;
  options.trainer_version = run.step;
  options.master = run.separate_master();
  TANDEM_ASSIGN_OR_RETURN(RlStepResult out, RlTrainStep(*run.ctx, *run.collective, *run.model,
                                                        *run.optimizer, run.grads, shard, options));
  m.train_s = Since(train_start);
  ++run.step;
  m.version = run.step;
  m.mismatch = out.mismatch;
  m.entropy = out.entropy;
  m.clip_fraction = out.clip_fraction;
  m.approx_kl = out.approx_kl;
  m.mean_ratio = out.mean_ratio;
  m.pg_loss = out.pg_loss;
  m.loss = out.loss;
  m.grad_norm = out.optimizer.grad_norm;
  m.lr = out.optimizer.lr;
  m.train_tokens = out.tokens;
  if (run.rank0()) {
    const bool async = c.rollout.mode == "async";
    TANDEM_ASSIGN_OR_RETURN(const model::ModelWeights published, PublishedWeights(run));
    TANDEM_ASSIGN_OR_RETURN(
        WeightSyncStats sync,
        run.pool->PublishWeights(run.step, published,
                                 async ? rollout::WeightUpdateMode::kInFlightRecompute
                                       : rollout::WeightUpdateMode::kDrain));
    m.weight_sync_s = sync.seconds;
    const RolloutPoolStats ps = run.pool->stats();
    m.retries = ps.retries;
    m.duplicate_samples = ps.duplicate_samples;
    m.failed_attempts = ps.failed_attempts;
    m.live_workers = ps.live_workers;
  }
  m.step_s = Since(step_start);
  return m;
}

}  // namespace

absl::StatusOr<RlResult> RunRl(const RlRunConfig& config, const RlLoopOptions& options) {
  const auto run_start = Clock::now();
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<RlRun> run, SetUpRl(config, options));
  TANDEM_RETURN_IF_ERROR(ResumeOrWarmStart(*run));
  TANDEM_RETURN_IF_ERROR(StartWorkers(*run));
  RlResult result;
  result.start_step = run->step;
  result.warm_started = run->warm_started;
  const int64_t total = config.trainer.total_steps;
  const int64_t stop = StopStep(run->step, total, options.max_steps_this_run);
  TANDEM_ASSIGN_OR_RETURN(
      RlMetricsLog log,
      RlMetricsLog::Open(config.trainer.output_dir, run->step, config.metrics.tensorboard,
                         options.write_metrics && run->rank0()));
  result.metrics_path = log.path();
  if (EvalDue(*run, stop) && run->step == 0) {
    RlStepMetrics m0;
    m0.total_steps = total;
    run->Phase("evaluating");
    TANDEM_ASSIGN_OR_RETURN(m0.eval_accuracy, Evaluate(*run));
    result.initial_eval_accuracy = m0.eval_accuracy;
    m0.elapsed_s = Since(run_start);
    TANDEM_RETURN_IF_ERROR(log.Add(m0));
    if (options.on_step) options.on_step(m0);
  }
  while (run->step < stop) {
    TANDEM_ASSIGN_OR_RETURN(RlStepMetrics m, RunStep(*run));
    if (EvalDue(*run, stop)) {
      const auto eval_start = Clock::now();
      TANDEM_ASSIGN_OR_RETURN(m.eval_accuracy, Evaluate(*run));
      m.eval_s = Since(eval_start);
      result.final_eval_accuracy = m.eval_accuracy;
      if (!result.initial_eval_accuracy.has_value()) result.initial_eval_accuracy = m.eval_accuracy;
    }
    m.elapsed_s = Since(run_start);
    result.trajectories_trained += m.trajectories;
    if (run->rank0() &&
        (m.step % config.trainer.log_every == 0 || m.step == stop || m.eval_accuracy.has_value())) {
      TANDEM_RETURN_IF_ERROR(log.Add(m));
    }
    if (options.on_step && run->rank0()) options.on_step(m);
    if (DueAt(run->step, stop, config.checkpoint.every_steps)) {
      TANDEM_RETURN_IF_ERROR(SaveCheckpoint(*run));
    }
    result.steps.push_back(m);
  }
  result.final_step = run->step;
  result.last_checkpoint = run->last_checkpoint;
  if (run->pool) result.pool = run->pool->stats();
  return result;
}

}  // namespace tandem::trainer
