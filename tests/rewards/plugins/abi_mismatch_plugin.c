/* A test plugin built for a future ABI version: the loader must refuse it by name and version. */
#include "tandem/reward_plugin.h"

static void* create(const char* config, size_t size, char* error, size_t cap) { return (void*)1; }
static int score(void* instance, const tandem_reward_input* in, tandem_reward_output* out) {
  return 0;
}
static void destroy(void* instance) {}

const tandem_reward_plugin* tandem_reward_plugin_v1(void) {
  static const tandem_reward_plugin table = {TANDEM_REWARD_ABI_VERSION + 41,
                                             sizeof(tandem_reward_plugin),
                                             "future",
                                             create,
                                             score,
                                             destroy};
  return &table;
}
