/* Tandem reward plugin C ABI, version 1. A plugin is a shared library that exports one function,
 * tandem_reward_plugin_v1(), returning a table of C function pointers. Only C types cross the
 * boundary, so a plugin may be written in C, C++, Rust or anything with a C FFI, and built with any
 * compiler. Tandem runs plugins in a separate worker process (see docs/rewards.md): a plugin that
 * crashes or hangs fails the sample it was scoring, never the run.
 */
#ifndef TANDEM_REWARD_PLUGIN_H_
#define TANDEM_REWARD_PLUGIN_H_

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* C ABI names follow C conventions (snake_case), not the project's C++ naming rules. */
/* NOLINTBEGIN(readability-identifier-naming) */

/* Bumped on any incompatible change. The host refuses a plugin whose table reports another one. */
#define TANDEM_REWARD_ABI_VERSION 1u

/* The exported entry point, by name, and its type. */
#define TANDEM_REWARD_ENTRY_SYMBOL "tandem_reward_plugin_v1"

#define TANDEM_REWARD_MAX_METRICS 16     /* named metrics one score call may report */
#define TANDEM_REWARD_METRIC_NAME_CAP 64 /* bytes, including the terminating NUL */
#define TANDEM_REWARD_ERROR_CAP 1024     /* bytes, including the terminating NUL */

/* UTF-8 text with an explicit length; not NUL-terminated, may contain NUL bytes. */
typedef struct tandem_reward_str {
  const char* data;
  size_t size;
} tandem_reward_str;

/* One sample to score. Owned by the host and valid only during the score call. */
typedef struct tandem_reward_input {
  uint32_t struct_size;           /* sizeof(tandem_reward_input) as the host compiled it */
  tandem_reward_str prompt;       /* the prompt as the model saw it (chat template applied) */
  tandem_reward_str response;     /* the generated text, special tokens removed */
  tandem_reward_str ground_truth; /* the dataset's reference answer; may be empty */
  tandem_reward_str data_source;  /* dataset name, e.g. "openai/gsm8k"; may be empty */
  tandem_reward_str extra_json;   /* a JSON object with any other fields; "{}" when none */
} tandem_reward_input;

typedef struct tandem_reward_metric {
  char name[TANDEM_REWARD_METRIC_NAME_CAP]; /* NUL-terminated */
  double value;
} tandem_reward_metric;

/* Filled by the plugin. The host zeroes it and sets struct_size before every call. */
typedef struct tandem_reward_output {
  uint32_t struct_size; /* sizeof(tandem_reward_output) as the host compiled it */
  double score;         /* the reward; must be finite */
  uint32_t num_metrics; /* entries used in metrics[], <= TANDEM_REWARD_MAX_METRICS */
  tandem_reward_metric metrics[TANDEM_REWARD_MAX_METRICS];
  char error[TANDEM_REWARD_ERROR_CAP]; /* NUL-terminated message when score() returns nonzero */
} tandem_reward_output;

/* The table a plugin exports. All function pointers are required.
 *
 * create:  builds one instance from a JSON configuration (config_json, config_size bytes; "{}" when
 *          the user gave none). Returns NULL on failure after writing a NUL-terminated message into
 *          error (error_cap bytes).
 * score:   scores one sample. Returns 0 on success, nonzero on failure (with out->error set); a
 *          failure fails only this sample. The host never calls score() on one instance from two
 *          threads at once, so an instance needs no locking; it may create several instances.
 * destroy: frees an instance. */
typedef struct tandem_reward_plugin {
  uint32_t abi_version; /* TANDEM_REWARD_ABI_VERSION as the plugin compiled it */
  uint32_t struct_size; /* sizeof(tandem_reward_plugin) as the plugin compiled it */
  const char* name;     /* short identifier, e.g. "length"; static storage */
  void* (*create)(const char* config_json, size_t config_size, char* error, size_t error_cap);
  int (*score)(void* instance, const tandem_reward_input* in, tandem_reward_output* out);
  void (*destroy)(void* instance);
} tandem_reward_plugin;

typedef const tandem_reward_plugin* (*tandem_reward_entry_fn)(void);

/* Helpers for plugin authors. */

/* Appends a metric; returns 0, or -1 when the metrics array is full. Long names are truncated. */
static inline int tandem_reward_add_metric(tandem_reward_output* out, const char* name,
                                           double value) {
  if (out->num_metrics >= TANDEM_REWARD_MAX_METRICS) return -1;
  tandem_reward_metric* m = &out->metrics[out->num_metrics++];
  snprintf(m->name, sizeof(m->name), "%s", name);
  m->value = value;
  return 0;
}

/* Copies a message into out->error (truncated to fit) and returns 1, so that a plugin can write
 * `return tandem_reward_fail(out, "...");`. */
static inline int tandem_reward_fail(tandem_reward_output* out, const char* message) {
  snprintf(out->error, sizeof(out->error), "%s", message);
  return 1;
}

/* Compares a length-delimited string with a NUL-terminated one. */
static inline int tandem_reward_str_eq(tandem_reward_str s, const char* literal) {
  size_t n = strlen(literal);
  return s.size == n && (n == 0 || memcmp(s.data, literal, n) == 0);
}

/* NOLINTEND(readability-identifier-naming) */

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* TANDEM_REWARD_PLUGIN_H_ */
