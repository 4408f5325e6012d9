// Example Tandem reward plugin: rewards responses whose length is close to a target.
//   score = max(0, 1 - |length - target| / target),  metric "length"
// Config (JSON): {"target": 200, "unit": "words"}; unit is "words" (default) or "bytes".
// Written in C++, exported through the C ABI of tandem/reward_plugin.h: no C++ type crosses the
// boundary, and no exception may escape it (every entry point catches).
#include <tandem/reward_plugin.h>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

namespace {

struct LengthReward {
  double target = 0;
  bool words = true;
};

// A deliberately tiny reader for this plugin's two flat options; a real plugin would use a JSON
// library. Returns the text after `"key":`, or an empty string.
std::string ValueOf(const std::string& json, const std::string& key) {
  size_t pos = json.find("\"" + key + "\"");
  if (pos == std::string::npos) return "";
  pos = json.find(':', pos);
  if (pos == std::string::npos) return "";
  size_t end = json.find_first_of(",}", pos);
  std::string value = json.substr(pos + 1, end - pos - 1);
  size_t a = value.find_first_not_of(" \t\n\""), b = value.find_last_not_of(" \t\n\"");
  return a == std::string::npos ? "" : value.substr(a, b - a + 1);
}

size_t CountWords(tandem_reward_str s) {
  size_t words = 0;
  bool in_word = false;
  for (size_t i = 0; i < s.size; ++i) {
    const bool space = std::isspace(static_cast<unsigned char>(s.data[i])) != 0;
    if (!space && !in_word) ++words;
    in_word = !space;
  }
  return words;
}

void* Create(const char* config_json, size_t config_size, char* error, size_t error_cap) {
  try {
    const std::string config(config_json, config_size);
    auto* reward = new LengthReward;
    reward->target = std::atof(ValueOf(config, "target").c_str());
    const std::string unit = ValueOf(config, "unit");
    reward->words = unit.empty() || unit == "words";
    if (!(reward->target > 0) || (unit != "" && unit != "words" && unit != "bytes")) {
      std::snprintf(error, error_cap, "length plugin: need \"target\" > 0 and unit words|bytes");
      delete reward;
      return nullptr;
    }
    return reward;
  } catch (const std::exception& e) {
    std::snprintf(error, error_cap, "length plugin: %s", e.what());
    return nullptr;
  }
}

int Score(void* instance, const tandem_reward_input* in, tandem_reward_output* out) {
  const auto* reward = static_cast<const LengthReward*>(instance);
  const double length =
      static_cast<double>(reward->words ? CountWords(in->response) : in->response.size);
  out->score = std::fmax(0.0, 1.0 - std::fabs(length - reward->target) / reward->target);
  tandem_reward_add_metric(out, "length", length);
  return 0;
}

void Destroy(void* instance) { delete static_cast<LengthReward*>(instance); }

}  // namespace

// The C ABI entry point's name is fixed by reward_plugin.h.
extern "C" __attribute__((visibility("default"))) const tandem_reward_plugin*
tandem_reward_plugin_v1(void) {  // NOLINT(readability-identifier-naming)
  static const tandem_reward_plugin table = {
      TANDEM_REWARD_ABI_VERSION, sizeof(tandem_reward_plugin), "length", Create, Score, Destroy};
  return &table;
}
