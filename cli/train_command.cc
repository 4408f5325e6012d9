// `tandem train --config FILE [key=value ...]`: the GRPO loop (trainer::RunRl) — optional SFT warm
// start, then prompts → samples on the rollout workers → rewards → train step → weights published.
// Under `mpirun -np P` every process is one data-parallel trainer rank (rank 0 drives the workers).
// Rank 0 draws a progress line on a TTY (rewritten in place) or prints a line per logged step,
// and prints a JSON summary on stdout at the end.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/commands.h"
#include "nlohmann/json.hpp"
#include "trainer/collectives.h"
#include "trainer/rl_config.h"
#include "trainer/rl_loop.h"

namespace tandem::cli {
namespace {

constexpr char kCommand[] = "train";

struct TrainOptions {
  std::string config_path;
  std::vector<std::string> overrides;
  int64_t max_steps_this_run = 0;
};

[[noreturn]] void TrainFail(const std::string& message) { Fail(kCommand, message); }

bool LaunchedAsRank() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"}) {
    if (std::getenv(var) != nullptr) return true;
  }
  return false;
}

std::unique_ptr<trainer::Collective> MakeCollective() {
  if (!LaunchedAsRank() || !trainer::HaveMpi()) return trainer::MakeLocalCollective();
  absl::StatusOr<std::unique_ptr<trainer::Collective>> mpi = trainer::MakeMpiCollective();
  if (!mpi.ok()) TrainFail(std::string(mpi.status().message()));
  return *std::move(mpi);
}

std::string Duration(double seconds) {
  const int64_t s = std::llround(seconds);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

// One line per step: reward, held-out accuracy, the log-prob mismatch, throughput, ETA.
class Progress {
 public:
  Progress(bool tty, int64_t log_every)
      : tty_(tty), log_every_(log_every), start_(std::chrono::steady_clock::now()) {}

  void Phase(const std::string& name) {
    if (tty_) {
      std::fprintf(stderr, "\r\033[K%s ...", name.c_str());
    } else {
      std::fprintf(stderr, "%s ...\n", name.c_str());
    }
    std::fflush(stderr);
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
          m.rollout_s > 0 ? m.rollout_tokens / m.rollout_s : 0.0, Duration(eta));
    }
    const bool last = m.step == m.total_steps;
    if (tty_) {
      std::fprintf(stderr, "\r\033[K%s%s", line.c_str(),
                   last || m.eval_accuracy.has_value() ? "\n" : "");
    } else if (m.step % log_every_ == 0 || m.eval_accuracy.has_value() || last) {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
    std::fflush(stderr);
  }

 private:
  bool tty_;
  int64_t log_every_;
  std::chrono::steady_clock::time_point start_;
  int64_t steps_ = 0;
  double accuracy_ = 0;
};

void RunTrainCommand(const TrainOptions& opt) {
  absl::StatusOr<trainer::RlRunConfig> config =
      trainer::LoadRlRunConfig(opt.config_path, opt.overrides);
  if (!config.ok()) TrainFail(std::string(config.status().message()));
  std::unique_ptr<trainer::Collective> collective = MakeCollective();
  const bool rank0 = collective->Rank() == 0;
  Progress progress(isatty(fileno(stderr)) != 0, config->trainer.log_every);

  trainer::RlLoopOptions loop;
  loop.collective = collective.get();
  loop.max_steps_this_run = opt.max_steps_this_run;
  if (rank0) {
    loop.on_step = [&](const trainer::RlStepMetrics& m) { progress.Update(m); };
    loop.on_phase = [&](const std::string& phase) { progress.Phase(phase); };
  }
  absl::StatusOr<trainer::RlResult> result = trainer::RunRl(*config, loop);
  if (!result.ok()) TrainFail(std::string(result.status().message()));
  if (!rank0) return;
  nlohmann::json summary = {{"start_step", result->start_step},
                            {"final_step", result->final_step},
                            {"ranks", collective->Size()},
                            {"warm_started", result->warm_started},
                            {"trajectories", result->trajectories_trained},
                            {"retries", result->pool.retries},
                            {"dead_workers", result->pool.dead_workers},
                            {"checkpoint", result->last_checkpoint},
                            {"metrics", result->metrics_path}};
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
  std::printf("%s\n", summary.dump().c_str());
}

}  // namespace

void AddTrainCommand(CLI::App& app) {
  auto opt = std::make_shared<TrainOptions>();
  CLI::App* cmd = app.add_subcommand(
      kCommand, "GRPO reinforcement learning from a run config (optional SFT warm start)");
  cmd->add_option("--config", opt->config_path, "run config YAML (configs/runs/grpo-*.yaml)")
      ->required();
  cmd->add_option("overrides", opt->overrides,
                  "Hydra-style overrides: key.path=value, +key=value, ++key=value, ~key");
  cmd->add_option("--max-steps-this-run", opt->max_steps_this_run,
                  "stop (with a checkpoint) after this many steps; resume continues the run")
      ->capture_default_str();
  cmd->callback([opt] { RunTrainCommand(*opt); });
}

}  // namespace tandem::cli
