// The pieces `tandem sft` and `tandem train` share: options, MPI bring-up, progress, summary.
#include "cli/run_command.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_format.h"

namespace tandem::cli {
namespace {

// True when a process manager (Open MPI's mpirun, or a PMI/PMIx launcher such as srun) started
// this process as one rank of a job.
bool LaunchedAsRank() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"}) {
    if (std::getenv(var) != nullptr) return true;
  }
  return false;
}

}  // namespace

void AddRunCommandOptions(CLI::App* cmd, RunCommandOptions& options, const std::string& config_help,
                          const std::string& device_help) {
  cmd->add_option("--config", options.config_path, config_help)->required();
  cmd->add_option("overrides", options.overrides,
                  "Hydra-style overrides: key.path=value, +key=value, ++key=value, ~key");
  cmd->add_option("--max-steps-this-run", options.max_steps_this_run,
                  "stop (with a checkpoint) after N steps; resume continues the run")
      ->capture_default_str();
  cmd->add_option("--device", options.device, device_help)
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
}

std::unique_ptr<trainer::Collective> MakeRankCollective(const std::string& command) {
  if (!LaunchedAsRank()) return trainer::MakeLocalCollective();
  if (!trainer::HaveMpi()) {
    const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
    if (size != nullptr && std::string(size) != "1") {
      Fail(command, "started by mpirun with several ranks, but this build has TANDEM_MPI=OFF");
    }
    return trainer::MakeLocalCollective();
  }
  absl::StatusOr<std::unique_ptr<trainer::Collective>> mpi = trainer::MakeMpiCollective();
  if (!mpi.ok()) Fail(command, std::string(mpi.status().message()));
  return *std::move(mpi);
}

std::string FormatDuration(double seconds) {
  const int64_t s = std::llround(seconds);
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, s / 60 % 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

bool StderrIsTty() { return isatty(fileno(stderr)) != 0; }

void PrintProgress(bool tty, const std::string& line, bool end_line, bool log_line) {
  if (tty) {
    std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), end_line ? "\n" : "");
  } else if (log_line) {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

nlohmann::json RunSummary(int64_t start_step, int64_t final_step, int ranks,
                          const std::string& checkpoint, const std::string& metrics) {
  return {{"start_step", start_step},
          {"final_step", final_step},
          {"ranks", ranks},
          {"checkpoint", checkpoint},
          {"metrics", metrics}};
}

}  // namespace tandem::cli
