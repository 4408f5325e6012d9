// `tandem train --config FILE [--device cpu|cuda] [key=value ...]`: the GRPO loop (trainer::RunRl)
// — optional SFT warm start, then prompts → samples on the rollout workers → rewards → train step →
// weights published. Under `mpirun -np P` every process is one data-parallel trainer rank (rank 0
// drives the workers). Rank 0 draws a progress line on a TTY (rewritten in place) or prints a line
// per logged step, and prints a JSON summary on stdout at the end.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/commands.h"
#include "cli/run_command.h"
#include "nlohmann/json.hpp"
#include "trainer/collectives.h"
#include "trainer/rl_config.h"
#include "trainer/rl_loop.h"

namespace tandem::cli {
namespace {

constexpr char kCommand[] = "train";

// One line per step: reward, held-out accuracy, the log-prob mismatch, throughput, ETA.
class Progress {
 public:
  Progress(bool tty, int64_t log_every)
      : tty_(tty), log_every_(log_every), start_(std::chrono::steady_clock::now()) {}

  void Phase(const std::string& name) {
    PrintProgress(tty_, name + " ...", /*end_line=*/false, /*log_line=*/true);
  }

  void Update(const trainer::RlStepMetrics& m) {
    if (m.eval_accuracy.has_value()) accuracy_ = *m.eval_accuracy;
    std::string line;
    if (m.step == 0) {
      line = absl::StrFormat("step 0/%d | held-out accuracy %.1f%% (before RL)", m.total_steps,
                             100 * accuracy_);
    } else {
      ++steps_;
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      const double eta = elapsed / steps_ * (m.total_steps - m.step);
      line = absl::StrFormat(
          "step %d/%d | reward %.3f | held-out %.1f%% | mismatch %g (%d tok) | len %.1f | "
          "%.0f rollout tok/s | ETA %s",
          m.step, m.total_steps, m.reward_mean, 100 * accuracy_, m.mismatch.max_abs_diff,
          m.mismatch.tokens_compared, m.response_length,
          m.rollout_s > 0 ? m.rollout_tokens / m.rollout_s : 0.0, FormatDuration(eta));
    }
    const bool last = m.step == m.total_steps;
    const bool evaluated = m.eval_accuracy.has_value();
    PrintProgress(tty_, line, /*end_line=*/last || evaluated,
                  /*log_line=*/m.step % log_every_ == 0 || evaluated || last);
  }

 private:
  bool tty_;
  int64_t log_every_;
  std::chrono::steady_clock::time_point start_;
  int64_t steps_ = 0;
  double accuracy_ = 0;
};

void RunTrainCommand(const RunCommandOptions& opt) {
  const trainer::RlRunConfig config =
      ConfigOrFail(kCommand, trainer::LoadRlRunConfig(opt.config_path, opt.overrides));
  std::unique_ptr<trainer::Collective> collective = MakeRankCollective(kCommand);
  const bool rank0 = collective->Rank() == 0;
  Progress progress(StderrIsTty(), config.trainer.log_every);

  trainer::RlLoopOptions loop;
  loop.collective = collective.get();
  loop.max_steps_this_run = opt.max_steps_this_run;
  loop.device = opt.device_kind();
  if (rank0) {
    loop.on_step = [&](const trainer::RlStepMetrics& m) { progress.Update(m); };
    loop.on_phase = [&](const std::string& phase) { progress.Phase(phase); };
  }
  absl::StatusOr<trainer::RlResult> result = trainer::RunRl(config, loop);
  if (!result.ok()) Fail(kCommand, std::string(result.status().message()));
  if (!rank0) return;
  nlohmann::json summary = RunSummary(result->start_step, result->final_step, collective->Size(),
                                      result->last_checkpoint, result->metrics_path);
  summary["warm_started"] = result->warm_started;
  summary["trajectories"] = result->trajectories_trained;
  summary["retries"] = result->pool.retries;
  summary["dead_workers"] = result->pool.dead_workers;
  if (result->initial_eval_accuracy.has_value()) {
    summary["initial_eval_accuracy"] = *result->initial_eval_accuracy;
  }
  if (result->final_eval_accuracy.has_value()) {
    summary["final_eval_accuracy"] = *result->final_eval_accuracy;
  }
  double max_mismatch = 0;
  int64_t compared = 0;
  for (const trainer::RlStepMetrics& m : result->steps) {
    max_mismatch = std::max(max_mismatch, m.mismatch.max_abs_diff);
    compared += m.mismatch.tokens_compared;
  }
  summary["mismatch_max_abs"] = max_mismatch;
  summary["mismatch_tokens"] = compared;
  summary["device"] = opt.device;
  std::printf("%s\n", summary.dump().c_str());
}

}  // namespace

void AddTrainCommand(CLI::App& app) {
  auto opt = std::make_shared<RunCommandOptions>();
  CLI::App* cmd = app.add_subcommand(
      kCommand, "GRPO reinforcement learning from a run config (optional SFT warm start)");
  AddRunCommandOptions(cmd, *opt, "run config YAML (configs/runs/grpo-*.yaml)",
                       "cpu, or cuda: the trainer on the GPU (one GPU per rank under mpirun) and "
                       "rollout.backend=inprocess engines on the same GPU, so rollout and trainer "
                       "log-probs stay bit-identical");
  cmd->callback([opt] { RunTrainCommand(*opt); });
}

}  // namespace tandem::cli
