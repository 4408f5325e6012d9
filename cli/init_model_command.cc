// `tandem init-model`: writes a randomly initialised checkpoint (config.json + safetensors with HF
// names) for a model config, or with --dry-run only reports its parameter counts without
// allocating anything. stdout carries one JSON object; the human summary goes to stderr.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <new>
#include <string>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "model/config.h"
#include "model/weights.h"
#include "nlohmann/json.hpp"

namespace tandem::cli {
namespace {

constexpr char kCommand[] = "init-model";

struct InitModelOptions {
  std::string config;  // HF config.json (or a directory holding one)
  std::string out;     // checkpoint directory to create
  uint64_t seed = 0;   // initialisation seed; same seed → same bits on every machine
  std::string dtype = "f32";
  bool dry_run = false;  // only count parameters
  bool force = false;    // allow writing into a non-empty --out
};

[[noreturn]] void InitFail(const std::string& message) { Fail(kCommand, message); }

nlohmann::json CountsJson(const model::ParameterCounts& n) {
  return {{"total_params", n.total},
          {"active_params", n.active},
          {"active_non_embedding_params", n.active_non_embedding},
          {"embedding_params", n.embedding}};
}

// 16423448320 → "16.42B", 956952320 → "957.0M".
std::string HumanCount(int64_t n) {
  char buf[32];
  if (n >= 1000000000) {
    std::snprintf(buf, sizeof(buf), "%.2fB", n / 1e9);
  } else if (n >= 1000000) {
    std::snprintf(buf, sizeof(buf), "%.1fM", n / 1e6);
  } else {
    std::snprintf(buf, sizeof(buf), "%.1fK", n / 1e3);
  }
  return buf;
}

// --out must be absent, an empty directory, or (with --force) any directory.
void CheckOutDir(const InitModelOptions& o) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (o.out.empty()) InitFail("--out: required unless --dry-run is given");
  if (!fs::exists(o.out, ec)) return;
  if (!fs::is_directory(o.out, ec)) {
    InitFail(absl::StrCat("--out: '", o.out, "' exists and is not a directory"));
  }
  if (!o.force && !fs::is_empty(o.out, ec)) {
    InitFail(absl::StrCat("--out: '", o.out,
                          "' exists and is not empty (pass --force to write into it)"));
  }
}

void RunInitModel(const InitModelOptions& o) {
  absl::StatusOr<model::ModelConfig> config = model::LoadModelConfig(o.config);
  if (!config.ok()) InitFail(absl::StrCat("--config: ", config.status().message()));
  const model::ParameterCounts counts = model::CountParameters(*config);
  nlohmann::json summary = CountsJson(counts);
  std::fprintf(stderr, "%s: %s parameters, %s active per token (%s active non-embedding)\n",
               o.config.c_str(), HumanCount(counts.total).c_str(),
               HumanCount(counts.active).c_str(), HumanCount(counts.active_non_embedding).c_str());
  if (o.dry_run) {
    std::printf("%s\n", summary.dump().c_str());
    return;
  }
  CheckOutDir(o);
  const DType dtype = o.dtype == "bf16" ? DType::kBF16 : DType::kF32;
  absl::Status saved;
  try {
    model::ModelWeights weights = model::AllocateWeights(*config);
    model::InitWeights(*config, o.seed, weights);
    saved = model::SaveCheckpoint(*config, weights, o.out, dtype);
  } catch (const std::bad_alloc&) {
    InitFail(absl::StrCat("not enough memory for ", counts.total, " fp32 parameters (",
                          counts.total * 4 / 1e9, " GB); --dry-run only counts them"));
  }
  if (!saved.ok()) InitFail(absl::StrCat("--out: ", saved.message()));
  summary["out"] = o.out;
  summary["seed"] = o.seed;
  summary["dtype"] = o.dtype;
  std::printf("%s\n", summary.dump().c_str());
}

}  // namespace

void AddInitModelCommand(CLI::App& app) {
  auto opts = std::make_shared<InitModelOptions>();
  CLI::App* cmd = app.add_subcommand(
      kCommand, "Write a randomly initialised checkpoint for a model config (HF config.json)");
  cmd->add_option("--config", opts->config,
                  "model config.json, e.g. configs/models/tiny-hybrid.json")
      ->required();
  cmd->add_option("--out", opts->out, "checkpoint directory to create (config.json + safetensors)");
  cmd->add_option("--seed", opts->seed, "initialisation seed")->capture_default_str();
  cmd->add_option("--dtype", opts->dtype, "stored dtype: f32 or bf16 (router stays f32)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  cmd->add_flag("--dry-run", opts->dry_run,
                "print the parameter counts as JSON and exit without allocating weights");
  cmd->add_flag("--force", opts->force, "write into --out even if it is not empty");
  cmd->callback([opts] { RunInitModel(*opts); });
}

}  // namespace tandem::cli
