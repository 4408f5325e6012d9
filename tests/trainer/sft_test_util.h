// Helpers shared by the SFT loop tests: a small run config over the tiny hybrid model and the
// addition task, temporary directories, and bitwise comparison of whole ModelWeights.
#pragma once

#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "model/weights.h"
#include "trainer/run_config.h"

namespace tandem::trainer::testing {

// A fresh directory under the system temp dir; removed by the destructor.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    std::random_device rd;
    path_ =
        std::filesystem::temp_directory_path() / absl::StrCat("tandem_", tag, "_", rd(), "_", rd());
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string Sub(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// A few steps of SFT on 1–2 digit addition with a small token budget (so every step has several
// micro-batches) and few examples (so batches straddle epochs). `overrides` as on the CLI.
inline SftRunConfig SmallSftConfig(const std::string& output_dir,
                                   std::vector<std::string> overrides = {}) {
  const std::string yaml = absl::StrCat(R"(
model: {config: configs/models/tiny-hybrid.json, init: random, init_seed: 7}
tokenizer: {alphabet: "0123456789+="}
data: {synthetic: addition, synthetic_examples: 20, min_digits: 1, max_digits: 2,
       reverse_answer: true, seed: 3, sequences_per_step: 8, max_tokens_per_micro_batch: 40}
optim: {lr: 3.0e-3, min_lr: 3.0e-4, schedule: cosine, warmup_steps: 2,
        expert_bias_update_rate: 1.0e-2}
trainer: {total_steps: 6, num_threads: 2, log_every: 1, output_dir: ")",
                                        output_dir, R"("}
checkpoint: {every_steps: 0, keep_last: 2, resume: auto}
)");
  absl::StatusOr<SftRunConfig> config = ParseSftRunConfig(yaml, "small-sft", overrides);
  if (!config.ok()) {
    std::fprintf(stderr, "SmallSftConfig: %s\n", std::string(config.status().message()).c_str());
    std::abort();
  }
  return *config;
}

// The first parameter (ForEachParameter order) whose bits differ, or "" when all are equal.
inline std::string FirstDifferentParameter(const model::ModelWeights& a,
                                           const model::ModelWeights& b) {
  std::vector<std::pair<std::string, Tensor>> ta;
  a.ForEachParameter([&](const std::string& n, const Tensor& t) { ta.emplace_back(n, t); });
  std::string diff;
  size_t i = 0;
  b.ForEachParameter([&](const std::string& n, const Tensor& t) {
    if (!diff.empty()) return;
    if (i >= ta.size() || ta[i].first != n || ta[i].second.nbytes() != t.nbytes()) {
      diff = absl::StrCat(n, " (layout)");
    } else if (std::memcmp(ta[i].second.raw_data(), t.raw_data(), t.nbytes()) != 0) {
      diff = n;
    }
    ++i;
  });
  if (diff.empty() && i != ta.size()) diff = "(parameter count)";
  return diff;
}

}  // namespace tandem::trainer::testing
