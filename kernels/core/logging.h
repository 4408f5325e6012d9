// Tandem logs through spdlog, everywhere. Logs go to stderr so stdout stays machine-readable
// (the CLI prints JSON there).
#pragma once

#include <string_view>

#include "spdlog/spdlog.h"

namespace tandem {

// Sets up the stderr logger. `level` is one of trace, debug, info, warn, error, off.
void InitLogging(std::string_view level = "info");

}  // namespace tandem
