// What `tandem sft` (sft_command.cc) and `tandem train` (train_command.cc) share: the run-config
// options, the data-parallel group of this process, the progress line on stderr and the JSON
// summary on stdout.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "cli/commands.h"
#include "nlohmann/json.hpp"
#include "trainer/collectives.h"

namespace tandem::cli {

struct RunCommandOptions {
  std::string config_path;             // --config
  std::vector<std::string> overrides;  // key.path=value ...
  int64_t max_steps_this_run = 0;      // --max-steps-this-run
  std::string device = "cpu";          // --device: cpu | cuda

  Device device_kind() const { return device == "cuda" ? Device::kCUDA : Device::kCPU; }
};

// Registers --config (`config_help` names the example configs), the overrides,
// --max-steps-this-run and --device (`device_help` says what cuda means for the command).
void AddRunCommandOptions(CLI::App* cmd, RunCommandOptions& options, const std::string& config_help,
                          const std::string& device_help);

// The loaded run config, or `command` fails with the loader's message.
template <class Config>
Config ConfigOrFail(const std::string& command, absl::StatusOr<Config> config) {
  if (!config.ok()) Fail(command, std::string(config.status().message()));
  return *std::move(config);
}

// This process's data-parallel group: an MPI collective when a process manager (Open MPI's
// mpirun, or a PMI/PMIx launcher such as srun) started it as one rank of a job, else a local one.
// `command` fails when MPI cannot start, or when several ranks were launched but this build has
// TANDEM_MPI=OFF (each would train alone and write the same directory).
std::unique_ptr<trainer::Collective> MakeRankCollective(const std::string& command);

// "42s", "3m05s", "1h02m".
std::string FormatDuration(double seconds);
// Whether stderr is a terminal (progress lines are then rewritten in place).
bool StderrIsTty();
// Rank 0's progress line on stderr: on a TTY rewritten in place (and ended when `end_line`),
// otherwise printed as its own line when `log_line`.
void PrintProgress(bool tty, const std::string& line, bool end_line, bool log_line);

// The fields every run summary has.
nlohmann::json RunSummary(int64_t start_step, int64_t final_step, int ranks,
                          const std::string& checkpoint, const std::string& metrics);

}  // namespace tandem::cli
