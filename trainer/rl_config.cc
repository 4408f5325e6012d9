// RlRunConfig ⇄ YAML: one table of fields drives reading, overriding, unknown-key detection and
// writing; every value remembers where it came from, so an error names the file line or override.
#include "trainer/rl_config.h"

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/core/status_macros.h"

namespace tandem::trainer {
namespace {

using FieldPtr = std::variant<std::string*, int64_t*, double*, bool*, std::vector<std::string>*>;
struct Field {
  std::string path;
  FieldPtr ptr;
};

std::vector<Field> Fields(RlRunConfig& c) {
  return {
      {"model.config", &c.model.config},
      {"model.init", &c.model.init},
      {"model.init_seed", &c.model.init_seed},
      {"tokenizer.alphabet", &c.tokenizer.alphabet},
      {"data.train_path", &c.data.train_path},
      {"data.eval_path", &c.data.eval_path},
      {"data.synthetic", &c.data.synthetic},
      {"data.synthetic_examples", &c.data.synthetic_examples},
      {"data.min_digits", &c.data.min_digits},
      {"data.max_digits", &c.data.max_digits},
      {"data.operators", &c.data.operators},
      {"data.reverse_answer", &c.data.reverse_answer},
      {"data.countdown_numbers", &c.data.countdown_numbers},
      {"data.countdown_max_number", &c.data.countdown_max_number},
      {"data.seed", &c.data.seed},
      {"data.shuffle", &c.data.shuffle},
      {"data.prompts_per_step", &c.data.prompts_per_step},
      {"grpo.samples_per_prompt", &c.grpo.samples_per_prompt},
      {"grpo.temperature", &c.grpo.temperature},
      {"grpo.max_new_tokens", &c.grpo.max_new_tokens},
      {"grpo.normalize_adv_by_std", &c.grpo.normalize_adv_by_std},
      {"grpo.clip_low", &c.grpo.clip_low},
      {"grpo.clip_high", &c.grpo.clip_high},
      {"grpo.dual_clip", &c.grpo.dual_clip},
      {"grpo.max_tokens_per_micro_batch", &c.grpo.max_tokens_per_micro_batch},
      {"reward.function", &c.reward.function},
      {"reward.options", &c.reward.options},
      {"rollout.backend", &c.rollout.backend},
      {"rollout.workers", &c.rollout.workers},
      {"rollout.addresses", &c.rollout.addresses},
      {"rollout.mode", &c.rollout.mode},
      {"rollout.max_staleness", &c.rollout.max_staleness},
      {"rollout.threads_per_worker", &c.rollout.threads_per_worker},
      {"rollout.memory_mb", &c.rollout.memory_mb},
      {"rollout.max_sequences", &c.rollout.max_sequences},
      {"rollout.max_step_tokens", &c.rollout.max_step_tokens},
      {"rollout.request_timeout_s", &c.rollout.request_timeout_s},
      {"rollout.max_attempts", &c.rollout.max_attempts},
      {"rollout.server_binary", &c.rollout.server_binary},
      {"optim.lr", &c.optim.lr},
      {"optim.min_lr", &c.optim.min_lr},
      {"optim.schedule", &c.optim.schedule},
      {"optim.warmup_steps", &c.optim.warmup_steps},
      {"optim.beta1", &c.optim.beta1},
      {"optim.beta2", &c.optim.beta2},
      {"optim.eps", &c.optim.eps},
      {"optim.weight_decay", &c.optim.weight_decay},
      {"optim.decay_embeddings", &c.optim.decay_embeddings},
      {"optim.max_grad_norm", &c.optim.max_grad_norm},
      {"optim.expert_bias_update_rate", &c.optim.expert_bias_update_rate},
      {"warm_start.steps", &c.warm_start.steps},
      {"warm_start.min_digits", &c.warm_start.min_digits},
      {"warm_start.max_digits", &c.warm_start.max_digits},
      {"warm_start.examples", &c.warm_start.examples},
      {"warm_start.sequences_per_step", &c.warm_start.sequences_per_step},
      {"warm_start.lr", &c.warm_start.lr},
      {"warm_start.warmup_steps", &c.warm_start.warmup_steps},
      {"trainer.total_steps", &c.trainer.total_steps},
      {"trainer.num_threads", &c.trainer.num_threads},
      {"trainer.log_every", &c.trainer.log_every},
      {"trainer.output_dir", &c.trainer.output_dir},
      {"trainer.seed", &c.trainer.seed},
      {"eval.every_steps", &c.eval.every_steps},
      {"eval.examples", &c.eval.examples},
      {"checkpoint.dir", &c.checkpoint.dir},
      {"checkpoint.every_steps", &c.checkpoint.every_steps},
      {"checkpoint.keep_last", &c.checkpoint.keep_last},
      {"checkpoint.resume", &c.checkpoint.resume},
      {"metrics.tensorboard", &c.metrics.tensorboard},
  };
}

using Origins = std::map<std::string, std::string>;  // field → "file.yaml:12" or "override '…'"

YAML::Node Find(const YAML::Node& root, const std::string& path) {
  YAML::Node cur;
  cur.reset(root);
  for (const absl::string_view key : absl::StrSplit(path, '.')) {
    const YAML::Node& c = cur;
    if (!c.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    YAML::Node next = c[std::string(key)];
    if (!next.IsDefined()) return next;
    cur.reset(next);
  }
  return cur;
}

void Set(YAML::Node& root, const std::string& path, const YAML::Node& value) {
  const std::vector<std::string> keys = absl::StrSplit(path, '.');
  YAML::Node cur;
  cur.reset(root);
  for (size_t i = 0; i + 1 < keys.size(); ++i) {
    if (!cur[keys[i]].IsMap()) cur[keys[i]] = YAML::Node(YAML::NodeType::Map);
    YAML::Node next = cur[keys[i]];
    cur.reset(next);
  }
  cur[keys.back()] = value;
}

absl::Status ApplyOverride(YAML::Node& root, const std::string& text,
                           const std::set<std::string>& known, Origins& origins) {
  const std::string where = absl::StrCat("override '", text, "'");
  std::string body = text;
  int plus = 0;
  while (plus < 2 && !body.empty() && body[0] == '+') body.erase(0, 1), ++plus;
  const bool remove = plus == 0 && !body.empty() && body[0] == '~';
  if (remove) body.erase(0, 1);
  const size_t eq = body.find('=');
  const std::string key = remove ? body : body.substr(0, eq);
  if (!remove && eq == std::string::npos) {
    return absl::InvalidArgumentError(where +
                                      ": expected key.path=value, +key=value, "
                                      "++key=value or ~key");
  }
  if (!known.count(key)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": unknown field '", key, "'"));
  }
  if (remove) {
    const size_t dot = key.rfind('.');
    YAML::Node parent = Find(root, key.substr(0, dot));
    if (parent.IsMap()) parent.remove(key.substr(dot + 1));
    origins.erase(key);
    return absl::OkStatus();
  }
  if (plus == 1 && Find(root, key).IsDefined()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": field '", key, "' is already set; use ", key, "=... or ++", key));
  }
  YAML::Node value;
  try {
    value = YAML::Load(body.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": bad value: ", e.what()));
  }
  Set(root, key, value);
  origins[key] = where;
  return absl::OkStatus();
}

absl::Status CheckUnknown(const YAML::Node& node, const std::string& prefix,
                          const std::set<std::string>& known, const std::string& source) {
  for (const auto& kv : node) {
    const std::string path = prefix + kv.first.as<std::string>();
    if (known.count(path)) continue;
    if (kv.second.IsMap()) {
      TANDEM_RETURN_IF_ERROR(CheckUnknown(kv.second, path + ".", known, source));
      continue;
    }
    return absl::InvalidArgumentError(
        absl::StrCat(source, ":", kv.first.Mark().line + 1, ": unknown field '", path, "'"));
  }
  return absl::OkStatus();
}

absl::Status Read(const YAML::Node& node, const Field& field, const std::string& where) {
  auto bad = [&](const char* what) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": field '", field.path, "': expected ",
                                                   what, ", got '", YAML::Dump(node), "'"));
  };
  if (auto* list = std::get_if<std::vector<std::string>*>(&field.ptr)) {
    (*list)->clear();
    if (node.IsNull()) return absl::OkStatus();
    if (node.IsScalar()) {  // "a:1,b:2" is accepted as a comma-separated list
      for (absl::string_view s : absl::StrSplit(node.as<std::string>(), ',', absl::SkipEmpty())) {
        (*list)->emplace_back(s);
      }
      return absl::OkStatus();
    }
    if (!node.IsSequence()) return bad("a list of strings");
    for (const auto& item : node) {
      if (!item.IsScalar()) return bad("a list of strings");
      (*list)->push_back(item.as<std::string>());
    }
    return absl::OkStatus();
  }
  if (node.IsNull() && std::holds_alternative<std::string*>(field.ptr)) {
    *std::get<std::string*>(field.ptr) = "";
    return absl::OkStatus();
  }
  if (!node.IsScalar()) return bad("a scalar");
  try {
    if (auto* s = std::get_if<std::string*>(&field.ptr)) **s = node.as<std::string>();
    if (auto* i = std::get_if<int64_t*>(&field.ptr)) **i = node.as<int64_t>();
    if (auto* d = std::get_if<double*>(&field.ptr)) **d = node.as<double>();
    if (auto* b = std::get_if<bool*>(&field.ptr)) **b = node.as<bool>();
  } catch (const YAML::Exception&) {
    if (std::holds_alternative<int64_t*>(field.ptr)) return bad("an integer");
    if (std::holds_alternative<double*>(field.ptr)) return bad("a number");
    return bad("true or false");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RlRunConfig> ParseRlRunConfig(const std::string& yaml_text,
                                             const std::string& source,
                                             const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": invalid YAML: ", e.what()));
  }
  if (root.IsNull() || !root.IsDefined()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) return absl::InvalidArgumentError(source + ": expected a YAML mapping");
  RlRunConfig config;
  const std::vector<Field> fields = Fields(config);
  std::set<std::string> known;
  for (const Field& f : fields) known.insert(f.path);
  TANDEM_RETURN_IF_ERROR(CheckUnknown(root, "", known, source));
  Origins origins;
  for (const Field& f : fields) {
    const YAML::Node n = Find(root, f.path);
    if (n.IsDefined()) origins[f.path] = absl::StrCat(source, ":", n.Mark().line + 1);
  }
  for (const std::string& o : overrides) {
    TANDEM_RETURN_IF_ERROR(ApplyOverride(root, o, known, origins));
  }
  for (const Field& f : fields) {
    const YAML::Node n = Find(root, f.path);
    if (n.IsDefined()) TANDEM_RETURN_IF_ERROR(Read(n, f, origins[f.path]));
  }
  TANDEM_RETURN_IF_ERROR(ValidateRlRunConfig(config, [&](const std::string& field) {
    const auto it = origins.find(field);
    return it != origins.end() ? it->second : source + " (default)";
  }));
  return config;
}

absl::StatusOr<RlRunConfig> LoadRlRunConfig(const std::string& path,
                                            const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open run config"));
  std::stringstream text;
  text << in.rdbuf();
  return ParseRlRunConfig(text.str(), path, overrides);
}

std::string RlRunConfigToYaml(const RlRunConfig& config) {
  RlRunConfig copy = config;
  YAML::Node root(YAML::NodeType::Map);
  for (const Field& f : Fields(copy)) {
    if (auto* d = std::get_if<double*>(&f.ptr)) {
      char buf[32];  // shortest text that reads back to the same double
      const auto res = std::to_chars(buf, buf + sizeof(buf), **d);
      Set(root, f.path, YAML::Node(std::string(buf, res.ptr)));
      continue;
    }
    if (auto* list = std::get_if<std::vector<std::string>*>(&f.ptr)) {
      YAML::Node seq(YAML::NodeType::Sequence);
      for (const std::string& s : **list) seq.push_back(s);
      Set(root, f.path, seq);
      continue;
    }
    std::visit([&](auto* p) { Set(root, f.path, YAML::Node(*p)); }, f.ptr);
  }
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

}  // namespace tandem::trainer
