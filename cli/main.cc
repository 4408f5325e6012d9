// tandem: one binary, one subcommand per job. Subcommands only wire libraries together.
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "kernels/core/logging.h"

namespace tandem::cli {

void Fail(const std::string& command, const std::string& message) {
  std::fprintf(stderr, "tandem %s: %s\n", command.c_str(), message.c_str());
  throw CLI::RuntimeError(1);
}

}  // namespace tandem::cli

int main(int argc, char** argv) {
  try {
    CLI::App app{"Tandem: RL for hybrid linear/softmax-attention MoE models"};
    app.require_subcommand(1);
    std::string log_level = "warn";
    app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off")
        ->capture_default_str();
    tandem::cli::AddInitModelCommand(app);
    tandem::cli::AddLogprobsCommand(app);
    tandem::cli::AddSftCommand(app);
    tandem::cli::AddGenerateCommand(app);
    tandem::cli::AddTrainCommand(app);
    tandem::cli::AddRolloutCommand(app);
    app.parse_complete_callback([&] { tandem::InitLogging(log_level); });
    CLI11_PARSE(app, argc, argv);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tandem: %s\n", e.what());
    return 1;
  }
}
