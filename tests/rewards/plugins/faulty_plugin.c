/* A test plugin that misbehaves on request: the response text picks what score() does.
 *   "segv"  dereferences NULL        "abort" calls abort()        "hang" never returns
 *   "fail"  returns an error         "nan"   returns a NaN score  "exit" calls exit(3)
 *   "print" writes to stdout first   anything else: score = length of the response
 * Every result carries metric "calls": how many calls this instance has served, so a test can see
 * that a crashed worker was replaced by a fresh one. Config {"fail_create": true} fails create().
 */
#define _GNU_SOURCE /* memmem */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tandem/reward_plugin.h"

typedef struct {
  long calls;
} faulty;

static void* faulty_create(const char* config, size_t size, char* error, size_t error_cap) {
  const char* needle = "\"fail_create\": true";
  if (memmem(config, size, needle, strlen(needle)) != NULL) {
    snprintf(error, error_cap, "fail_create was requested");
    return NULL;
  }
  return calloc(1, sizeof(faulty));
}

static int faulty_score(void* instance, const tandem_reward_input* in, tandem_reward_output* out) {
  faulty* f = (faulty*)instance;
  f->calls++;
  if (tandem_reward_str_eq(in->response, "segv")) {
    volatile int* null_pointer = NULL;
    *null_pointer = 1;
  }
  if (tandem_reward_str_eq(in->response, "abort")) abort();
  if (tandem_reward_str_eq(in->response, "exit")) exit(3);
  if (tandem_reward_str_eq(in->response, "hang")) {
    for (;;) sleep(1);
  }
  if (tandem_reward_str_eq(in->response, "fail")) return tandem_reward_fail(out, "asked to fail");
  if (tandem_reward_str_eq(in->response, "print")) {
    printf("noise on stdout\n");
    fflush(stdout);
  }
  out->score = tandem_reward_str_eq(in->response, "nan") ? NAN : (double)in->response.size;
  tandem_reward_add_metric(out, "calls", (double)f->calls);
  return 0;
}

static void faulty_destroy(void* instance) { free(instance); }

const tandem_reward_plugin* tandem_reward_plugin_v1(void) {
  static const tandem_reward_plugin table = {TANDEM_REWARD_ABI_VERSION,
                                             sizeof(tandem_reward_plugin),
                                             "faulty",
                                             faulty_create,
                                             faulty_score,
                                             faulty_destroy};
  return &table;
}
