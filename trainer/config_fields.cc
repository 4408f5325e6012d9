// Run-config fields ⇄ YAML: lookup and assignment by dotted path, the override grammar, unknown-key
// detection and typed reads whose errors name the value's origin and the field.
#include "trainer/config_fields.h"

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/core/status_macros.h"

namespace tandem::trainer {
namespace {

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

void Remove(YAML::Node& root, const std::string& path) {
  const size_t dot = path.rfind('.');
  YAML::Node parent = dot == std::string::npos ? root : Find(root, path.substr(0, dot));
  if (parent.IsMap()) parent.remove(path.substr(dot + 1));
}

absl::Status ApplyOverride(YAML::Node& root, const std::string& text,
                           const std::set<std::string>& known, ConfigOrigins& origins) {
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

absl::Status ReadList(const YAML::Node& node, std::vector<std::string>& list,
                      const std::function<absl::Status(const char*)>& bad) {
  list.clear();
  if (node.IsNull()) return absl::OkStatus();
  if (node.IsScalar()) {  // "a:1,b:2" is accepted as a comma-separated list
    for (absl::string_view s : absl::StrSplit(node.as<std::string>(), ',', absl::SkipEmpty())) {
      list.emplace_back(s);
    }
    return absl::OkStatus();
  }
  if (!node.IsSequence()) return bad("a list of strings");
  for (const auto& item : node) {
    if (!item.IsScalar()) return bad("a list of strings");
    list.push_back(item.as<std::string>());
  }
  return absl::OkStatus();
}

absl::Status Read(const YAML::Node& node, const ConfigField& field, const std::string& where) {
  auto bad = [&](const char* what) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": field '", field.path, "': expected ",
                                                   what, ", got '", YAML::Dump(node), "'"));
  };
  if (auto* list = std::get_if<std::vector<std::string>*>(&field.ptr)) {
    return ReadList(node, **list, bad);
  }
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

absl::StatusOr<ConfigOrigins> ReadConfigFields(const std::string& yaml_text,
                                               const std::string& source,
                                               const std::vector<std::string>& overrides,
                                               const std::vector<ConfigField>& fields) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": invalid YAML: ", e.what()));
  }
  if (root.IsNull() || !root.IsDefined()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) return absl::InvalidArgumentError(source + ": expected a YAML mapping");
  std::set<std::string> known;
  for (const ConfigField& f : fields) known.insert(f.path);
  TANDEM_RETURN_IF_ERROR(CheckUnknown(root, "", known, source));
  ConfigOrigins origins;
  for (const ConfigField& f : fields) {
    const YAML::Node n = Find(root, f.path);
    if (n.IsDefined()) origins[f.path] = absl::StrCat(source, ":", n.Mark().line + 1);
  }
  for (const std::string& o : overrides) {
    TANDEM_RETURN_IF_ERROR(ApplyOverride(root, o, known, origins));
  }
  for (const ConfigField& f : fields) {
    const YAML::Node n = Find(root, f.path);
    if (n.IsDefined()) TANDEM_RETURN_IF_ERROR(Read(n, f, origins[f.path]));
  }
  return origins;
}

absl::StatusOr<std::string> ReadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open run config"));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string ConfigFieldsToYaml(const std::vector<ConfigField>& fields) {
  YAML::Node root(YAML::NodeType::Map);
  for (const ConfigField& f : fields) {
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

ConfigOrigin OriginOf(const ConfigOrigins& origins, const std::string& source) {
  return [&origins, source](const std::string& field) {
    const auto it = origins.find(field);
    return it != origins.end() ? it->second : source + " (default)";
  };
}

void ConfigChecker::Require(bool ok, const std::string& field, const std::string& what) {
  if (ok || !status_.ok()) return;
  status_ =
      absl::InvalidArgumentError(absl::StrCat(origin_(field), ": field '", field, "': ", what));
}

}  // namespace tandem::trainer
