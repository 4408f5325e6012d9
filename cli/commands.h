// The `tandem` subcommands. Each Add*Command registers its options on the app and a callback that
// wires the libraries together; the callback reports failure by throwing CLI::RuntimeError with
// exit code 1 after printing a clear message to stderr.
#pragma once

#include "CLI/CLI.hpp"

namespace tandem::cli {

void AddInitModelCommand(CLI::App& app);  // init_model_command.cc
void AddLogprobsCommand(CLI::App& app);   // logprobs_command.cc
void AddSftCommand(CLI::App& app);        // sft_command.cc
void AddGenerateCommand(CLI::App& app);   // generate_command.cc
void AddTrainCommand(CLI::App& app);      // train_command.cc
void AddRolloutCommand(CLI::App& app);    // rollout_serve_command.cc

// Prints "tandem <command>: <message>" to stderr and throws CLI::RuntimeError(1).
[[noreturn]] void Fail(const std::string& command, const std::string& message);

}  // namespace tandem::cli
