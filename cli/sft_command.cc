// `tandem sft --config FILE [--device cpu|cuda] [key=value ...]`: supervised fine-tuning with
// trainer::RunSft. Under `mpirun -np P` every process is one data-parallel rank (MPI collective);
// otherwise one process. --device cuda trains on the GPU: one GPU per rank under mpirun/srun,
// gradients summed through NCCL in rank order.
// Rank 0 draws a progress line on a TTY (step, loss, tokens/s, ETA, rewritten in place) or prints
// a plain line every trainer.log_every steps, and prints a JSON summary on stdout at the end.
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
#include "trainer/run_config.h"
#include "trainer/sft_loop.h"

namespace tandem::cli {
namespace {

constexpr char kCommand[] = "sft";

struct SftOptions {
  RunCommandOptions run;
  trainer::SftEvalOptions eval;
};

// Rank 0's view of progress: tokens/s of the latest step, ETA from the mean wall time per step
// of this invocation (evals and checkpoints included).
class Progress {
 public:
  Progress(bool tty, int64_t log_every)
      : tty_(tty), log_every_(log_every), start_(std::chrono::steady_clock::now()) {}

  void Update(const trainer::SftStepMetrics& m) {
    ++steps_;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double eta = elapsed / steps_ * (m.total_steps - m.step);
    const double tps = m.step_seconds > 0 ? m.tokens / m.step_seconds : 0.0;
    if (m.eval_exact_match.has_value()) last_eval_ = *m.eval_exact_match;
    std::string line = absl::StrFormat("step %d/%d | loss %.4f | %.0f tok/s | ETA %s", m.step,
                                       m.total_steps, m.loss, tps, FormatDuration(eta));
    if (last_eval_ >= 0) {
      absl::StrAppend(&line, absl::StrFormat(" | exact %.1f%%", 100 * last_eval_));
    }
    const bool last = m.step == m.total_steps;
    PrintProgress(tty_, line, /*end_line=*/last,
                  /*log_line=*/m.step % log_every_ == 0 || m.eval_exact_match.has_value() || last);
  }
  // Ends an in-place line left open by a run that stopped early.
  void Finish(const trainer::SftResult& r) {
    if (tty_ && steps_ > 0 && r.final_step != r.steps.back().total_steps) std::fputc('\n', stderr);
  }

 private:
  bool tty_;
  int64_t log_every_;
  std::chrono::steady_clock::time_point start_;
  int64_t steps_ = 0;
  double last_eval_ = -1;
};

void RunSftCommand(const SftOptions& opt) {
  const trainer::SftRunConfig config =
      ConfigOrFail(kCommand, trainer::LoadSftRunConfig(opt.run.config_path, opt.run.overrides));
  std::unique_ptr<trainer::Collective> collective = MakeRankCollective(kCommand);
  const bool rank0 = collective->Rank() == 0;
  Progress progress(StderrIsTty(), config.trainer.log_every);

  trainer::SftLoopOptions loop;
  loop.collective = collective.get();
  loop.device = opt.run.device_kind();
  loop.eval = opt.eval;
  loop.max_steps_this_run = opt.run.max_steps_this_run;
  if (rank0) loop.on_step = [&](const trainer::SftStepMetrics& m) { progress.Update(m); };
  absl::StatusOr<trainer::SftResult> result = trainer::RunSft(config, loop);
  if (!result.ok()) Fail(kCommand, std::string(result.status().message()));
  if (!rank0) return;
  progress.Finish(*result);
  nlohmann::json summary =
      RunSummary(result->start_step, result->final_step, collective->Size(),
                 result->last_checkpoint, config.trainer.output_dir + "/metrics.jsonl");
  if (result->final_exact_match.has_value()) {
    summary["final_exact_match"] = *result->final_exact_match;
  }
  if (!result->steps.empty()) summary["final_loss"] = result->steps.back().loss;
  summary["device"] = opt.run.device;
  std::printf("%s\n", summary.dump().c_str());
}

}  // namespace

void AddSftCommand(CLI::App& app) {
  auto opt = std::make_shared<SftOptions>();
  CLI::App* cmd = app.add_subcommand(
      kCommand, "Supervised fine-tuning from a run config (data parallel under mpirun)");
  AddRunCommandOptions(
      cmd, opt->run, "run config YAML (configs/runs/*.yaml)",
      "cpu, or cuda: fp32 master, gradients and AdamW on the GPU; under mpirun one "
      "GPU per rank (the rank's index on its host), gradients summed through NCCL");
  cmd->add_option("--eval-every", opt->eval.every_steps,
                  "held-out exact match every N steps (addition task); 0 = at the end, -1 = off")
      ->capture_default_str();
  cmd->add_option("--eval-examples", opt->eval.examples, "held-out problems per evaluation")
      ->capture_default_str();
  cmd->callback([opt] { RunSftCommand(*opt); });
}

}  // namespace tandem::cli
