// dlopen-based plugin loading and the C <-> C++ conversion of one score call.
#include "rewards/plugin_library.h"

#include <dlfcn.h>

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace tandem::rewards {
namespace {

tandem_reward_str View(const std::string& s) { return {s.data(), s.size()}; }

absl::Status Invalid(const std::string& path, absl::string_view what) {
  return absl::FailedPreconditionError(absl::StrCat("reward plugin ", path, ": ", what));
}

}  // namespace

absl::StatusOr<std::shared_ptr<PluginLibrary>> PluginLibrary::Open(const std::string& path) {
  // RTLD_LOCAL: two plugins may define the same symbols without interfering.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = dlerror();
    return absl::NotFoundError(
        absl::StrCat("reward plugin ", path, ": dlopen failed: ", err ? err : "unknown error"));
  }
  auto fail = [&](absl::Status s) {
    dlclose(handle);
    return s;
  };
  dlerror();
  void* symbol = dlsym(handle, TANDEM_REWARD_ENTRY_SYMBOL);
  if (symbol == nullptr) {
    return fail(Invalid(path, absl::StrCat("no symbol '", TANDEM_REWARD_ENTRY_SYMBOL,
                                           "' (declare it extern \"C\" and export it)")));
  }
  auto entry = reinterpret_cast<tandem_reward_entry_fn>(symbol);
  const tandem_reward_plugin* table = entry();
  if (table == nullptr) return fail(Invalid(path, "entry point returned NULL"));
  if (table->abi_version != TANDEM_REWARD_ABI_VERSION) {
    return fail(Invalid(path, absl::StrCat("ABI version mismatch: plugin has ", table->abi_version,
                                           ", host expects ", TANDEM_REWARD_ABI_VERSION,
                                           " (rebuild it against this reward_plugin.h)")));
  }
  if (table->struct_size < sizeof(tandem_reward_plugin)) {
    return fail(
        Invalid(path, absl::StrCat("plugin table is ", table->struct_size,
                                   " bytes, expected at least ", sizeof(tandem_reward_plugin))));
  }
  if (table->name == nullptr || table->create == nullptr || table->score == nullptr ||
      table->destroy == nullptr) {
    return fail(Invalid(path, "plugin table has a NULL name, create, score or destroy"));
  }
  return std::shared_ptr<PluginLibrary>(new PluginLibrary(path, handle, table));
}

PluginLibrary::~PluginLibrary() { dlclose(handle_); }

RewardOutcome ScoreWithPlugin(const tandem_reward_plugin& table, void* instance,
                              const RewardInput& input) {
  static const std::string kEmptyObject = "{}";
  tandem_reward_input in;
  in.struct_size = sizeof(in);
  in.prompt = View(input.prompt);
  in.response = View(input.response);
  in.ground_truth = View(input.ground_truth);
  in.data_source = View(input.data_source);
  in.extra_json = View(input.extra_json.empty() ? kEmptyObject : input.extra_json);
  // The output is large (about 2 KiB) and refilled per call; zeroing it makes every string in it
  // terminated even when a plugin writes nothing.
  auto out = std::make_unique<tandem_reward_output>();
  std::memset(out.get(), 0, sizeof(*out));
  out->struct_size = sizeof(*out);

  const int rc = table.score(instance, &in, out.get());
  out->error[sizeof(out->error) - 1] = '\0';
  const std::string who = absl::StrCat("reward plugin '", table.name, "'");
  if (rc != 0) {
    return absl::InternalError(absl::StrCat(who, ": score failed (", rc,
                                            "): ", out->error[0] ? out->error : "no message"));
  }
  if (!std::isfinite(out->score)) {
    return absl::InternalError(absl::StrCat(who, ": score is not finite (", out->score, ")"));
  }
  if (out->num_metrics > TANDEM_REWARD_MAX_METRICS) {
    return absl::InternalError(absl::StrCat(who, ": num_metrics ", out->num_metrics, " exceeds ",
                                            TANDEM_REWARD_MAX_METRICS));
  }
  RewardResult result;
  result.score = out->score;
  for (uint32_t i = 0; i < out->num_metrics; ++i) {
    tandem_reward_metric& m = out->metrics[i];
    m.name[sizeof(m.name) - 1] = '\0';
    result.metrics[m.name] = m.value;
  }
  return result;
}

absl::StatusOr<std::unique_ptr<InProcessPlugin>> InProcessPlugin::Create(
    std::shared_ptr<PluginLibrary> library, const std::string& config_json) {
  const std::string config = config_json.empty() ? "{}" : config_json;
  char error[TANDEM_REWARD_ERROR_CAP] = {0};
  void* instance = library->table().create(config.data(), config.size(), error, sizeof(error));
  if (instance == nullptr) {
    error[sizeof(error) - 1] = '\0';
    return absl::InvalidArgumentError(
        absl::StrCat("reward plugin '", library->name(), "' (", library->path(),
                     "): create failed: ", error[0] ? error : "no message"));
  }
  return std::unique_ptr<InProcessPlugin>(new InProcessPlugin(std::move(library), instance));
}

InProcessPlugin::~InProcessPlugin() {
  absl::MutexLock lock(&mu_);
  library_->table().destroy(instance_);
}

RewardOutcome InProcessPlugin::Score(const RewardInput& input) {
  absl::MutexLock lock(&mu_);
  return ScoreWithPlugin(library_->table(), instance_, input);
}

}  // namespace tandem::rewards
