// SftRunConfig ⇄ YAML: one table of fields drives reading, overriding, unknown-key detection and
// writing; every value remembers where it came from so errors can say so.
#include "trainer/run_config.h"

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

using FieldPtr = std::variant<std::string*, int64_t*, double*, bool*>;
struct Field {
  std::string path;
  FieldPtr ptr;
};

std::vector<Field> Fields(SftRunConfig& c) {
  return {
      {"model.config", &c.model.config},
      {"model.init", &c.model.init},
      {"model.init_seed", &c.model.init_seed},
      {"tokenizer.alphabet", &c.tokenizer.alphabet},
      {"data.train_path", &c.data.train_path},
      {"data.synthetic", &c.data.synthetic},
      {"data.synthetic_examples", &c.data.synthetic_examples},
      {"data.min_digits", &c.data.min_digits},
      {"data.max_digits", &c.data.max_digits},
      {"data.reverse_answer", &c.data.reverse_answer},
      {"data.seed", &c.data.seed},
      {"data.shuffle", &c.data.shuffle},
      {"data.sequences_per_step", &c.data.sequences_per_step},
      {"data.max_tokens_per_micro_batch", &c.data.max_tokens_per_micro_batch},
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
      {"trainer.total_steps", &c.trainer.total_steps},
      {"trainer.num_threads", &c.trainer.num_threads},
      {"trainer.log_every", &c.trainer.log_every},
      {"trainer.output_dir", &c.trainer.output_dir},
      {"checkpoint.dir", &c.checkpoint.dir},
      {"checkpoint.every_steps", &c.checkpoint.every_steps},
      {"checkpoint.keep_last", &c.checkpoint.keep_last},
      {"checkpoint.resume", &c.checkpoint.resume},
  };
}

// Where each value came from: "file.yaml:12" or "override 'a.b=v'".
using Origins = std::map<std::string, std::string>;

YAML::Node Find(const YAML::Node& root, const std::string& path) {
  YAML::Node cur;
  cur.reset(root);
  const std::vector<std::string> keys = absl::StrSplit(path, '.');
  for (const std::string& key : keys) {
    const YAML::Node& c = cur;
    if (!c.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    YAML::Node next = c[key];
    if (!next.IsDefined()) return next;
    cur.reset(next);
  }
  return cur;
}

void Set(YAML::Node& root, const std::string& path, const YAML::Node& value) {
  std::vector<std::string> keys = absl::StrSplit(path, '.');
  YAML::Node cur;
  cur.reset(root);
  for (size_t i = 0; i + 1 < keys.size(); ++i) {
    if (!cur[keys[i]].IsMap()) cur[keys[i]] = YAML::Node(YAML::NodeType::Map);
    YAML::Node next = cur[keys[i]];
    cur.reset(next);
  }
  cur[keys.back()] = value;
}

void Remove(YAML::Node& root, const std::string& path) {
  const size_t dot = path.rfind('.');
  YAML::Node parent = dot == std::string::npos ? root : Find(root, path.substr(0, dot));
  if (parent.IsMap()) parent.remove(path.substr(dot + 1));
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
    Remove(root, key);
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

// Every leaf of the YAML tree must be a known field.
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
  if (node.IsNull() && std::holds_alternative<std::string*>(field.ptr)) {
    *std::get<std::string*>(field.ptr) = "";  // `key:` with no value
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

// Range and enum checks; errors name the value's origin and the field.
absl::Status Validate(const SftRunConfig& c, const Origins& origins, const std::string& source) {
  auto fail = [&](const std::string& field, const std::string& what) {
    const auto it = origins.find(field);
    const std::string where = it != origins.end() ? it->second : source + " (default)";
    return absl::InvalidArgumentError(absl::StrCat(where, ": field '", field, "': ", what));
  };
  if (c.model.config.empty()) return fail("model.config", "required (path to config.json)");
  if (c.data.train_path.empty() && c.data.synthetic != "addition") {
    return fail("data.synthetic", "expected \"addition\" when data.train_path is empty");
  }
  if (c.data.synthetic != "addition" && c.data.synthetic != "none") {
    return fail("data.synthetic", "expected \"addition\" or \"none\"");
  }
  if (c.data.synthetic_examples < 1) return fail("data.synthetic_examples", "expected >= 1");
  if (c.data.min_digits < 1) return fail("data.min_digits", "expected >= 1");
  if (c.data.max_digits < c.data.min_digits || c.data.max_digits > 18) {
    return fail("data.max_digits", "expected in [data.min_digits, 18]");
  }
  if (c.data.sequences_per_step < 1) return fail("data.sequences_per_step", "expected >= 1");
  if (c.data.max_tokens_per_micro_batch < 1) {
    return fail("data.max_tokens_per_micro_batch", "expected >= 1");
  }
  if (!(c.optim.lr > 0)) return fail("optim.lr", "expected > 0");
  if (!(c.optim.min_lr >= 0 && c.optim.min_lr <= c.optim.lr)) {
    return fail("optim.min_lr", "expected in [0, optim.lr]");
  }
  if (c.optim.schedule != "constant" && c.optim.schedule != "cosine") {
    return fail("optim.schedule", "expected \"constant\" or \"cosine\"");
  }
  if (c.optim.warmup_steps < 0) return fail("optim.warmup_steps", "expected >= 0");
  if (!(c.optim.beta1 >= 0 && c.optim.beta1 < 1)) return fail("optim.beta1", "expected in [0, 1)");
  if (!(c.optim.beta2 >= 0 && c.optim.beta2 < 1)) return fail("optim.beta2", "expected in [0, 1)");
  if (!(c.optim.eps > 0)) return fail("optim.eps", "expected > 0");
  if (!(c.optim.weight_decay >= 0)) return fail("optim.weight_decay", "expected >= 0");
  if (!(c.optim.max_grad_norm >= 0)) return fail("optim.max_grad_norm", "expected >= 0");
  if (!(c.optim.expert_bias_update_rate >= 0)) {
    return fail("optim.expert_bias_update_rate", "expected >= 0");
  }
  if (c.trainer.total_steps < 1) return fail("trainer.total_steps", "expected >= 1");
  if (c.trainer.num_threads < 0) return fail("trainer.num_threads", "expected >= 0");
  if (c.trainer.log_every < 1) return fail("trainer.log_every", "expected >= 1");
  if (c.trainer.output_dir.empty()) return fail("trainer.output_dir", "expected a directory");
  if (c.checkpoint.every_steps < 0) return fail("checkpoint.every_steps", "expected >= 0");
  if (c.checkpoint.keep_last < 1) return fail("checkpoint.keep_last", "expected >= 1");
  if (c.checkpoint.resume.empty()) {
    return fail("checkpoint.resume", "expected \"auto\", \"none\" or a step-<N> directory");
  }
  return absl::OkStatus();
}

absl::StatusOr<SftRunConfig> ParseSftRunConfig(const std::string& yaml_text,
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
  SftRunConfig config;
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
  TANDEM_RETURN_IF_ERROR(Validate(config, origins, source));
  return config;
}

absl::StatusOr<SftRunConfig> LoadSftRunConfig(const std::string& path,
                                              const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open run config"));
  std::stringstream text;
  text << in.rdbuf();
  return ParseSftRunConfig(text.str(), path, overrides);
}

std::string SftRunConfigToYaml(const SftRunConfig& config) {
  SftRunConfig copy = config;
  YAML::Node root(YAML::NodeType::Map);
  for (const Field& f : Fields(copy)) {
    if (auto* d = std::get_if<double*>(&f.ptr)) {
      char buf[32];  // shortest text that reads back to the same double
      const auto res = std::to_chars(buf, buf + sizeof(buf), **d);
      Set(root, f.path, YAML::Node(std::string(buf, res.ptr)));
      continue;
    }
    std::visit([&](auto* p) { Set(root, f.path, YAML::Node(*p)); }, f.ptr);
  }
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

}  // namespace tandem::trainer
