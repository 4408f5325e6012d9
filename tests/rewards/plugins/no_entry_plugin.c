/* A test shared library that is not a reward plugin: it lacks tandem_reward_plugin_v1. */
int tandem_not_a_reward_plugin(void) { return 42; }
