#include "kernels/core/logging.h"

#include <string>

#include "spdlog/sinks/stdout_color_sinks.h"

namespace tandem {

void InitLogging(std::string_view level) {
  auto logger = spdlog::stderr_color_mt("tandem");
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  logger->set_level(spdlog::level::from_str(std::string(level)));
  spdlog::set_default_logger(logger);
}

}  // namespace tandem
