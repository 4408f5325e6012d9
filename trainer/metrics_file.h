// metrics.jsonl: one JSON object per logged step, appended as a run goes, so it can be plotted (or
// tailed) while it trains. Resuming keeps the lines up to the resume step. The SFT (sft_metrics.h)
// and GRPO (rl_metrics.h) logs write their lines through it.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tandem::trainer {

class MetricsFile {
 public:
  // <dir>/metrics.jsonl when `enabled` (else Append is a no-op). start_step 0 starts a new file; a
  // resumed run (start_step > 0) keeps the lines with step <= start_step and drops later ones,
  // which a run killed after its last checkpoint left behind.
  static absl::StatusOr<MetricsFile> Open(const std::string& dir, int64_t start_step, bool enabled);

  absl::Status Append(const nlohmann::json& line);
  const std::string& path() const { return path_; }
  bool enabled() const { return enabled_; }

 private:
  MetricsFile(std::string path, bool enabled) : path_(std::move(path)), enabled_(enabled) {}

  std::string path_;
  bool enabled_ = false;
};

}  // namespace tandem::trainer
