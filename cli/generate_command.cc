// `tandem generate`: samples continuations with the rollout engine. One prompt (--prompt-tokens) or
// many (--prompts, a JSONL file served concurrently by one engine); one JSON line per sample on
// stdout: {"sample": i, "tokens": [...], "logprobs": [...], "finish_reason": "..."} (plus
// "prompt": j with --prompts, "error" when a sample failed). Log-probs are fp32 printed with 9
// significant digits, log_softmax(logits / temperature)[token] as rollout/README.md defines.
// Text prompts (--prompt TEXT) are encoded with the checkpoint's tokenizer.json
// (model/tokenizer.h); when one is present every line also has "text", the decoded generated
// tokens. --device cuda runs the engine on GPU 0 (bf16 weight cast, KV cache in GPU memory).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
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
#include "model/hybrid_model.h"
#include "model/tokenizer.h"
#include "model/weights.h"
#include "nlohmann/json.hpp"
#include "rollout/engine.h"

namespace tandem::cli {
namespace {

constexpr char kCommand[] = "generate";

struct GenerateOptions {
  std::string model_dir;
  std::string prompt_tokens;  // "1,2,3"
  std::string prompts_file;   // JSONL, one {"prompt_tokens": [...], overrides...} per line
  std::string prompt_text;    // encoded with <model_dir>/tokenizer.json
  rollout::SamplingOptions sampling;
  std::string stop_tokens;  // "a,b"
  int threads = 1;
  std::string device = "cpu";
  int64_t memory_mb = 1024;
  int64_t max_sequences = 64;
  int64_t max_step_tokens = 256;
};

[[noreturn]] void GenerateFail(const std::string& message) { Fail(kCommand, message); }

// Parsed as int64 so that an id beyond int32 is reported by the engine's vocabulary check.
std::vector<int32_t> ParseIds(const std::string& flag, const std::string& text) {
  std::vector<int32_t> ids;
  if (text.empty()) return ids;
  for (absl::string_view piece : absl::StrSplit(text, ',')) {
    int64_t id = 0;
    if (!absl::SimpleAtoi(piece, &id)) {
      GenerateFail(absl::StrCat(flag, ": '", text, "' is not a comma-separated list of integers"));
    }
    if (id < INT32_MIN || id > INT32_MAX) {
      GenerateFail(absl::StrCat(flag, ": id ", id, " is outside the vocabulary"));
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

// One line of --prompts: prompt_tokens plus optional per-prompt overrides of the sampling flags.
rollout::GenerateRequest ParsePromptLine(const std::string& line, int64_t line_no,
                                         const rollout::SamplingOptions& defaults) {
  const std::string where = absl::StrCat("--prompts: line ", line_no, ": ");
  nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) GenerateFail(where + "not a JSON object");
  rollout::GenerateRequest r;
  r.sampling = defaults;
  try {
    if (!j.contains("prompt_tokens")) GenerateFail(where + "missing \"prompt_tokens\"");
    r.prompt = j.at("prompt_tokens").get<std::vector<int32_t>>();
    if (j.contains("n")) r.sampling.n = j.at("n").get<int64_t>();
    if (j.contains("max_new_tokens")) {
      r.sampling.max_new_tokens = j.at("max_new_tokens").get<int64_t>();
    }
    if (j.contains("seed")) r.sampling.seed = j.at("seed").get<uint64_t>();
    if (j.contains("temperature")) r.sampling.temperature = j.at("temperature").get<float>();
    if (j.contains("top_p")) r.sampling.top_p = j.at("top_p").get<float>();
    if (j.contains("top_k")) r.sampling.top_k = j.at("top_k").get<int64_t>();
    if (j.contains("stop_tokens")) {
      r.sampling.stop_token_ids = j.at("stop_tokens").get<std::vector<int32_t>>();
    }
  } catch (const nlohmann::json::exception& e) {
    GenerateFail(where + e.what());
  }
  return r;
}

// The checkpoint's tokenizer, or null when it has none that we can use. --prompt needs one; without
// --prompt an absent or HF tokenizer only drops "text", but a malformed one is still an error.
std::unique_ptr<model::Tokenizer> OptionalTokenizer(const GenerateOptions& opt) {
  absl::StatusOr<std::unique_ptr<model::Tokenizer>> tok = model::LoadTokenizer(opt.model_dir);
  if (tok.ok()) return *std::move(tok);
  if (!opt.prompt_text.empty()) {
    GenerateFail(absl::StrCat("--prompt: ", tok.status().message(),
                              " (text prompts need the checkpoint's tokenizer.json; "
                              "--prompt-tokens takes ids)"));
  }
  if (absl::IsNotFound(tok.status()) || absl::IsUnimplemented(tok.status())) return nullptr;
  GenerateFail(absl::StrCat("--model: ", tok.status().message()));
}

std::vector<rollout::GenerateRequest> Requests(const GenerateOptions& opt,
                                               const model::Tokenizer* tokenizer) {
  rollout::SamplingOptions sampling = opt.sampling;
  sampling.stop_token_ids = ParseIds("--stop-tokens", opt.stop_tokens);
  if (!opt.prompt_text.empty()) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(opt.prompt_text);
    if (!ids.ok()) GenerateFail(absl::StrCat("--prompt: ", ids.status().message()));
    return {rollout::GenerateRequest{*std::move(ids), sampling}};
  }
  if (!opt.prompt_tokens.empty()) {
    return {rollout::GenerateRequest{ParseIds("--prompt-tokens", opt.prompt_tokens), sampling}};
  }
  std::ifstream in(opt.prompts_file);
  if (!in) GenerateFail(absl::StrCat("--prompts: cannot read '", opt.prompts_file, "'"));
  std::vector<rollout::GenerateRequest> out;
  std::string line;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    out.push_back(ParsePromptLine(line, line_no, sampling));
  }
  if (out.empty()) GenerateFail(absl::StrCat("--prompts: '", opt.prompts_file, "' has no prompts"));
  return out;
}

std::string JsonFloat(float v) {
  if (!std::isfinite(v)) return "null";  // JSON has no inf or NaN
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.9g", static_cast<double>(v));
  return buf;
}

// Token by token, so that an id the model knows but the tokenizer does not prints as U+FFFD.
std::string DecodeText(const model::Tokenizer& tokenizer, const std::vector<int32_t>& tokens) {
  std::string text;
  for (int32_t t : tokens) {
    absl::StatusOr<std::string> piece = tokenizer.Decode({t});
    text += piece.ok() ? *piece : "\xEF\xBF\xBD";
  }
  return text;
}

void PrintSample(const rollout::SampleResult& s, int64_t prompt, bool with_prompt,
                 const model::Tokenizer* tokenizer) {
  std::string out = "{";
  if (with_prompt) absl::StrAppend(&out, "\"prompt\": ", prompt, ", ");
  absl::StrAppend(&out, "\"sample\": ", s.sample_index, ", \"tokens\": [");
  for (size_t i = 0; i < s.tokens.size(); ++i) absl::StrAppend(&out, i ? ", " : "", s.tokens[i]);
  absl::StrAppend(&out, "], \"logprobs\": [");
  for (size_t i = 0; i < s.logprobs.size(); ++i) {
    absl::StrAppend(&out, i ? ", " : "", JsonFloat(s.logprobs[i]));
  }
  absl::StrAppend(&out, "], \"finish_reason\": \"", rollout::FinishReasonName(s.finish_reason),
                  "\"");
  if (tokenizer != nullptr) {
    absl::StrAppend(&out, ", \"text\": ", nlohmann::json(DecodeText(*tokenizer, s.tokens)).dump());
  }
  if (!s.error.empty()) absl::StrAppend(&out, ", \"error\": ", nlohmann::json(s.error).dump());
  absl::StrAppend(&out, "}\n");
  std::fputs(out.c_str(), stdout);
}

void RunGenerate(const GenerateOptions& opt) {
  if (opt.threads < 1) GenerateFail(absl::StrCat("--threads: must be >= 1, got ", opt.threads));
  absl::StatusOr<Context> ctx = ContextForDevice(opt.device, opt.threads);
  if (!ctx.ok()) GenerateFail(std::string(ctx.status().message()));
  const int prompt_flags = int{!opt.prompt_tokens.empty()} + int{!opt.prompts_file.empty()} +
                           int{!opt.prompt_text.empty()};
  if (prompt_flags != 1) {
    GenerateFail("give exactly one of --prompt-tokens, --prompt and --prompts");
  }
  const std::unique_ptr<model::Tokenizer> tokenizer = OptionalTokenizer(opt);
  const std::vector<rollout::GenerateRequest> requests = Requests(opt, tokenizer.get());
  absl::StatusOr<model::ModelConfig> config = model::LoadModelConfig(opt.model_dir);
  if (!config.ok()) GenerateFail(absl::StrCat("--model: ", config.status().message()));
  absl::StatusOr<model::ModelWeights> weights = model::LoadWeights(*config, opt.model_dir);
  if (!weights.ok()) GenerateFail(absl::StrCat("--model: ", weights.status().message()));

  rollout::EngineOptions eo;
  eo.memory_budget_bytes = opt.memory_mb << 20;
  eo.max_sequences = opt.max_sequences;
  eo.max_step_tokens = opt.max_step_tokens;
  absl::StatusOr<std::unique_ptr<rollout::Engine>> engine = rollout::Engine::Create(
      *ctx, model::HybridModel(*std::move(config), *std::move(weights)), 0, eo);
  if (!engine.ok()) GenerateFail(std::string(engine.status().message()));
  std::vector<rollout::RequestId> ids;
  for (size_t i = 0; i < requests.size(); ++i) {
    absl::StatusOr<rollout::RequestId> id = (*engine)->Submit(requests[i]);
    if (!id.ok()) {
      GenerateFail(opt.prompts_file.empty()
                       ? std::string(id.status().message())
                       : absl::StrCat("--prompts: prompt ", i, ": ", id.status().message()));
    }
    ids.push_back(*id);
  }
  if (absl::Status s = (*engine)->RunUntilIdle(); !s.ok()) GenerateFail(std::string(s.message()));
  for (size_t i = 0; i < ids.size(); ++i) {
    for (const rollout::SampleResult& s : (*engine)->Result(ids[i])->samples) {
      PrintSample(s, static_cast<int64_t>(i), !opt.prompts_file.empty(), tokenizer.get());
    }
  }
}

}  // namespace

void AddGenerateCommand(CLI::App& app) {
  auto opt = std::make_shared<GenerateOptions>();
  CLI::App* cmd = app.add_subcommand(
      kCommand, "Sample continuations of prompts with the rollout engine (JSON lines)");
  cmd->add_option("--model", opt->model_dir, "checkpoint directory (config.json + safetensors)")
      ->required();
  cmd->add_option("--prompt-tokens", opt->prompt_tokens, "comma-separated prompt token ids");
  cmd->add_option("--prompt", opt->prompt_text,
                  "prompt text, encoded with the checkpoint's tokenizer.json");
  cmd->add_option("--prompts", opt->prompts_file,
                  "JSONL file, one {\"prompt_tokens\": [...]} per line (may override n, "
                  "max_new_tokens, seed, temperature, top_p, top_k, stop_tokens)");
  cmd->add_option("-n", opt->sampling.n, "samples per prompt")->capture_default_str();
  cmd->add_option("--max-new-tokens", opt->sampling.max_new_tokens, "tokens per sample, at most")
      ->capture_default_str();
  cmd->add_option("--seed", opt->sampling.seed, "sampling seed")->capture_default_str();
  cmd->add_option("--temperature", opt->sampling.temperature, "divides the logits; 0 = greedy")
      ->capture_default_str();
  cmd->add_option("--top-p", opt->sampling.top_p, "nucleus mass in (0, 1]")->capture_default_str();
  cmd->add_option("--top-k", opt->sampling.top_k, "keep the k most likely tokens; 0 = all")
      ->capture_default_str();
  cmd->add_option("--stop-tokens", opt->stop_tokens, "comma-separated ids that end a sample");
  cmd->add_option("--threads", opt->threads, "CPU threads (results do not depend on it)")
      ->capture_default_str();
  cmd->add_option("--device", opt->device,
                  "cpu, or cuda: the engine on GPU 0 (bf16 weight cast, cache in GPU memory)")
      ->capture_default_str();
  cmd->add_option("--memory-mb", opt->memory_mb,
                  "inference cache budget in MiB (GPU memory with cuda)")
      ->capture_default_str();
  cmd->add_option("--max-sequences", opt->max_sequences, "sequences running at once, at most")
      ->capture_default_str();
  cmd->add_option("--max-step-tokens", opt->max_step_tokens, "tokens per engine step")
      ->capture_default_str();
  cmd->callback([opt] { RunGenerate(*opt); });
}

}  // namespace tandem::cli
