// `tandem logprobs`: scores a token sequence with a checkpoint. Prints {"logprobs": [...]} where
// entry t = log p(tokens[t+1] | tokens[0..t]), each printed with 9 significant digits so the fp32
// value round-trips exactly. The numbers come from HybridModel::Forward, the trainer's forward, on
// the CPU or (--device cuda) on the GPU with the bf16 weight cast.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "cli/device_option.h"
#include "kernels/core/context.h"
#include "model/config.h"
#include "model/device_weights.h"
#include "model/hybrid_model.h"
#include "model/weights.h"

namespace tandem::cli {
namespace {

constexpr char kCommand[] = "logprobs";

struct LogprobsOptions {
  std::string model_dir;
  std::string tokens;
  float temperature = 1.0f;
  int threads = 1;
  std::string device = "cpu";
};

[[noreturn]] void LogprobsFail(const std::string& message) { Fail(kCommand, message); }

// Parsed as int64 so a huge id is reported as outside the vocabulary, not as unparsable.
std::vector<int64_t> ParseTokens(const std::string& text) {
  std::vector<int64_t> tokens;
  for (absl::string_view piece : absl::StrSplit(text, ',')) {
    int64_t id = 0;
    if (!absl::SimpleAtoi(piece, &id)) {
      LogprobsFail(
          absl::StrCat("--tokens: '", text, "' is not a comma-separated list of integers"));
    }
    tokens.push_back(id);
  }
  if (tokens.size() < 2) {
    LogprobsFail(
        absl::StrCat("--tokens: need at least 2 tokens to score one, got ", tokens.size()));
  }
  return tokens;
}

// The checkpoint directory must exist and hold config.json (checked before the weights so a bad
// config is reported first).
void CheckModelDir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(dir, ec)) LogprobsFail(absl::StrCat("--model: '", dir, "' does not exist"));
  if (!fs::is_directory(dir, ec)) {
    LogprobsFail(absl::StrCat("--model: '", dir, "' is not a directory"));
  }
  const fs::path path(dir);
  if (!fs::exists(path / "config.json", ec)) {
    LogprobsFail(absl::StrCat("--model: '", (path / "config.json").string(), "' not found"));
  }
}

void CheckWeightsPresent(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path path(dir);
  if (!fs::exists(path / "model.safetensors", ec) &&
      !fs::exists(path / "model.safetensors.index.json", ec)) {
    LogprobsFail(absl::StrCat("--model: no weights in '", dir,
                              "' (expected model.safetensors or model.safetensors.index.json)"));
  }
}

void PrintLogprobs(const float* logprob, int64_t n) {
  std::string out = "{\"logprobs\": [";
  char buf[32];
  for (int64_t t = 0; t < n; ++t) {
    if (std::isfinite(logprob[t])) {
      std::snprintf(buf, sizeof(buf), "%.9g", static_cast<double>(logprob[t]));
    } else {
      std::snprintf(buf, sizeof(buf), "null");  // JSON has no inf or NaN
    }
    absl::StrAppend(&out, t > 0 ? ", " : "", buf);
  }
  absl::StrAppend(&out, "]}\n");
  std::fputs(out.c_str(), stdout);
}

void RunLogprobs(const LogprobsOptions& opt) {
  if (!(std::isfinite(opt.temperature) && opt.temperature > 0.0f)) {
    LogprobsFail(absl::StrCat("--temperature: must be a finite number > 0, got ", opt.temperature));
  }
  if (opt.threads < 1) LogprobsFail(absl::StrCat("--threads: must be >= 1, got ", opt.threads));
  absl::StatusOr<Context> ctx = ContextForDevice(opt.device, opt.threads);
  if (!ctx.ok()) LogprobsFail(std::string(ctx.status().message()));
  std::vector<int64_t> ids = ParseTokens(opt.tokens);
  CheckModelDir(opt.model_dir);
  absl::StatusOr<model::ModelConfig> config = model::LoadModelConfig(opt.model_dir);
  if (!config.ok()) LogprobsFail(std::string(config.status().message()));
  std::vector<int32_t> tokens;
  for (size_t t = 0; t < ids.size(); ++t) {
    if (ids[t] < 0 || ids[t] >= config->vocab_size) {
      LogprobsFail(absl::StrCat("--tokens: id ", ids[t], " at position ", t,
                                " is outside the vocabulary [0, ", config->vocab_size, ")"));
    }
    tokens.push_back(static_cast<int32_t>(ids[t]));
  }
  CheckWeightsPresent(opt.model_dir);
  absl::StatusOr<model::ModelWeights> weights = model::LoadWeights(*config, opt.model_dir);
  if (!weights.ok()) LogprobsFail(std::string(weights.status().message()));
  if (ctx->device() == Device::kCUDA) {
    weights = model::UploadWeights(*ctx, *config, *weights);
    if (!weights.ok()) LogprobsFail(std::string(weights.status().message()));
  }
  const model::HybridModel hybrid(*std::move(config), *std::move(weights));

  // One sequence; position t targets token t + 1, the last position has no target.
  const int64_t T = static_cast<int64_t>(tokens.size());
  std::vector<int32_t> targets(tokens.begin() + 1, tokens.end());
  targets.push_back(-1);
  model::ForwardInput input{
      Tensor::FromVector(tokens, {T}),
      Tensor::FromVector(std::vector<int32_t>{0, static_cast<int32_t>(T)}, {2}),
      Tensor::FromVector(targets, {T}), opt.temperature};
  absl::StatusOr<Tensor> logprob = hybrid.Forward(*ctx, input);
  if (!logprob.ok()) LogprobsFail(std::string(logprob.status().message()));
  PrintLogprobs(logprob->data<float>(), T - 1);
}

}  // namespace

void AddLogprobsCommand(CLI::App& app) {
  auto opt = std::make_shared<LogprobsOptions>();
  CLI::App* cmd = app.add_subcommand(
      kCommand, "Print log p(token[t+1] | tokens[0..t]) for a token sequence, as JSON");
  cmd->add_option("--model", opt->model_dir, "checkpoint directory (config.json + safetensors)")
      ->required();
  cmd->add_option("--tokens", opt->tokens, "comma-separated token ids, at least 2")->required();
  cmd->add_option("--temperature", opt->temperature, "divides the logits; > 0")
      ->capture_default_str();
  cmd->add_option("--threads", opt->threads, "CPU threads (results do not depend on it)")
      ->capture_default_str();
  cmd->add_option("--device", opt->device,
                  "cpu, or cuda: the GPU forward with the bf16 weight cast (GPU 0)")
      ->capture_default_str();
  cmd->callback([opt] { RunLogprobs(*opt); });
}

}  // namespace tandem::cli
