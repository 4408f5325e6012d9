// The YAML machinery shared by the run configs (run_config.h, rl_config.h): a config is a table of
// typed fields (dotted path → member), read from YAML with Hydra-style overrides, checked for
// unknown keys and written back as YAML. Every value remembers where it came from ("file.yaml:12"
// or "override 'a.b=v'"), so validation errors can name it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tandem::trainer {

// A config field: its dotted path ("optim.lr") and the member that holds its value.
using ConfigValue = std::variant<std::string*, int64_t*, double*, bool*, std::vector<std::string>*>;
struct ConfigField {
  std::string path;
  ConfigValue ptr;
};

// field path → where its value came from: "file.yaml:12" or "override 'a.b=v'".
using ConfigOrigins = std::map<std::string, std::string>;

// Parses `yaml_text` (`source` names it in errors), rejects keys that are not in `fields`, applies
// `overrides`, then reads every field present into its member (absent ones keep their defaults).
// Overrides (Hydra grammar subset): `a.b=v` sets a field; `+a.b=v` sets a field the YAML does not
// have (error if it does); `++a.b=v` sets it either way; `~a.b` resets it to its default. Values
// are YAML scalars; a list field also takes a sequence or "x,y". Returns the fields' origins.
absl::StatusOr<ConfigOrigins> ReadConfigFields(const std::string& yaml_text,
                                               const std::string& source,
                                               const std::vector<std::string>& overrides,
                                               const std::vector<ConfigField>& fields);

// The text of the run config at `path`; NotFound "<path>: cannot open run config".
absl::StatusOr<std::string> ReadConfigFile(const std::string& path);

// Every field, as YAML that ReadConfigFields reads back to the same values (doubles in their
// shortest round-trip form).
std::string ConfigFieldsToYaml(const std::vector<ConfigField>& fields);

// Where a field's value came from, for validation errors.
using ConfigOrigin = std::function<std::string(const std::string& field)>;
// The recorded origin, else "<source> (default)".
ConfigOrigin OriginOf(const ConfigOrigins& origins, const std::string& source);

// Range and enum checks of a config: keeps the first failure, as
// InvalidArgument "<origin>: field '<field>': <what>".
class ConfigChecker {
 public:
  explicit ConfigChecker(ConfigOrigin origin) : origin_(std::move(origin)) {}
  void Require(bool ok, const std::string& field, const std::string& what);
  const absl::Status& status() const { return status_; }

 private:
  ConfigOrigin origin_;
  absl::Status status_;
};

}  // namespace tandem::trainer
