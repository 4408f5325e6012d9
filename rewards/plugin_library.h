// Loading reward plugins: dlopen a shared library, resolve tandem_reward_plugin_v1, validate the
// table it returns (ABI version, struct size, function pointers), and call it with the C structs of
// include/tandem/reward_plugin.h. This runs inside the isolated worker process (isolated_plugin.h);
// InProcessPlugin is for plugins you trust not to crash or hang, and for the worker itself.
#pragma once

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "rewards/include/tandem/reward_plugin.h"
#include "rewards/reward.h"

namespace tandem::rewards {

class PluginLibrary {
 public:
  // Errors name the file and what failed: NotFound (dlopen failed: missing file or unresolved
  // dependency, with dlerror's text), FailedPrecondition (no entry symbol, entry returned NULL,
  // ABI version mismatch, table too small, NULL function pointer).
  static absl::StatusOr<std::shared_ptr<PluginLibrary>> Open(const std::string& path);

  PluginLibrary(const PluginLibrary&) = delete;
  PluginLibrary& operator=(const PluginLibrary&) = delete;
  ~PluginLibrary();  // dlclose

  const tandem_reward_plugin& table() const { return *table_; }
  const std::string& path() const { return path_; }
  std::string name() const { return table_->name; }

 private:
  PluginLibrary(std::string path, void* handle, const tandem_reward_plugin* table)
      : path_(std::move(path)), handle_(handle), table_(table) {}

  std::string path_;
  void* handle_;
  const tandem_reward_plugin* table_;
};

// Calls table.score on one instance and converts the C output: a nonzero return becomes an
// Internal status carrying out->error; a non-finite score or an out-of-range metric count is an
// error too. The output struct is NUL-terminated defensively before any string is read.
RewardOutcome ScoreWithPlugin(const tandem_reward_plugin& table, void* instance,
                              const RewardInput& input);

// One plugin instance called directly in this process: no crash or time-limit protection.
// Thread-safe (calls are serialised, as the ABI promises plugins).
class InProcessPlugin : public RewardFunction {
 public:
  // `config_json` is passed to the plugin's create() ("" is sent as "{}").
  static absl::StatusOr<std::unique_ptr<InProcessPlugin>> Create(
      std::shared_ptr<PluginLibrary> library, const std::string& config_json);
  ~InProcessPlugin() override;

  std::string name() const override { return library_->name(); }
  RewardOutcome Score(const RewardInput& input) override;

 private:
  InProcessPlugin(std::shared_ptr<PluginLibrary> library, void* instance)
      : library_(std::move(library)), instance_(instance) {}

  std::shared_ptr<PluginLibrary> library_;
  absl::Mutex mu_;
  void* instance_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tandem::rewards
