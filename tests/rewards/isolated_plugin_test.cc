// Tests for plugin loading (rewards/plugin_library.h) and process isolation
// (rewards/isolated_plugin.h): clear load errors, and a plugin that crashes, aborts, exits or hangs
// fails only the sample it was scoring while the next sample scores on a fresh worker. The test
// plugins (tests/rewards/plugins/*.c) and the example plugin are built as shared libraries; their
// paths are compiled in.
#include "rewards/isolated_plugin.h"

#include <gtest/gtest.h>

#include "absl/time/clock.h"
#include "rewards/plugin_library.h"
#include "rewards/worker_protocol.h"

namespace tandem::rewards {
namespace {

RewardInput Response(std::string text) {
  RewardInput in;
  in.response = std::move(text);
  return in;
}

bool Contains(const absl::Status& s, absl::string_view text) {
  return s.message().find(text) != absl::string_view::npos;
}

TEST(PluginLibrary, LoadErrorsNameFileAndCause) {
  auto missing = PluginLibrary::Open("/nonexistent/reward.so");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(missing.status(), "/nonexistent/reward.so")) << missing.status();

  auto no_entry = PluginLibrary::Open(NO_ENTRY_PLUGIN);
  EXPECT_EQ(no_entry.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(no_entry.status(), "tandem_reward_plugin_v1")) << no_entry.status();
  EXPECT_TRUE(Contains(no_entry.status(), NO_ENTRY_PLUGIN)) << no_entry.status();

  auto future = PluginLibrary::Open(ABI_MISMATCH_PLUGIN);
  EXPECT_EQ(future.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(future.status(), "ABI version mismatch: plugin has 42, host expects 1"))
      << future.status();
}

TEST(InProcessPlugin, ExamplePluginScores) {
  auto library = PluginLibrary::Open(LENGTH_PLUGIN);
  ASSERT_TRUE(library.ok()) << library.status();
  EXPECT_EQ((*library)->name(), "length");
  auto plugin = InProcessPlugin::Create(*library, R"({"target": 4})");
  ASSERT_TRUE(plugin.ok()) << plugin.status();
  RewardOutcome o = (*plugin)->Score(Response("one two three four"));
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->score, 1.0);
  EXPECT_EQ(o->metrics.at("length"), 4.0);
  o = (*plugin)->Score(Response("one two"));
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->score, 0.5);
  auto bytes = InProcessPlugin::Create(*library, R"({"target": 10, "unit": "bytes"})");
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ((*bytes)->Score(Response("12345"))->score, 0.5);
  auto bad = InProcessPlugin::Create(*library, R"({"target": -1})");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(bad.status(), "need \"target\" > 0")) << bad.status();
}

TEST(InProcessPlugin, PluginErrorsAreSampleErrors) {
  auto library = PluginLibrary::Open(FAULTY_PLUGIN);
  ASSERT_TRUE(library.ok()) << library.status();
  auto plugin = InProcessPlugin::Create(*library, "");
  ASSERT_TRUE(plugin.ok()) << plugin.status();
  RewardOutcome fail = (*plugin)->Score(Response("fail"));
  EXPECT_EQ(fail.status().code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(Contains(fail.status(), "asked to fail")) << fail.status();
  EXPECT_TRUE(Contains((*plugin)->Score(Response("nan")).status(), "not finite"));
  EXPECT_EQ((*plugin)->Score(Response("fine"))->score, 4.0);
}

IsolatedPluginOptions FastOptions() {
  IsolatedPluginOptions options;
  options.timeout = absl::Milliseconds(500);
  return options;
}

TEST(IsolatedPlugin, LoadErrorsSurfaceAtCreate) {
  auto future = IsolatedPlugin::Create(ABI_MISMATCH_PLUGIN, "", FastOptions());
  EXPECT_EQ(future.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(future.status(), "ABI version mismatch")) << future.status();
  auto missing = IsolatedPlugin::Create("/nonexistent/reward.so", "", FastOptions());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  auto create = IsolatedPlugin::Create(FAULTY_PLUGIN, R"({"fail_create": true})", FastOptions());
  EXPECT_EQ(create.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(create.status(), "fail_create was requested")) << create.status();
  IsolatedPluginOptions no_worker = FastOptions();
  no_worker.worker_path = "/nonexistent/tandem_reward_worker";
  auto exec_fails = IsolatedPlugin::Create(FAULTY_PLUGIN, "", no_worker);
  EXPECT_EQ(exec_fails.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(Contains(exec_fails.status(), "No such file or directory")) << exec_fails.status();
}

// Each misbehaviour fails its own sample with a recorded cause; the next sample scores on a
// fresh worker (its call counter restarts at 1).
TEST(IsolatedPlugin, CrashesAndHangsFailOnlyTheirSample) {
  auto plugin = IsolatedPlugin::Create(FAULTY_PLUGIN, "", FastOptions());
  ASSERT_TRUE(plugin.ok()) << plugin.status();
  EXPECT_EQ((*plugin)->name(), "faulty");
  struct Case {
    const char* response;
    absl::StatusCode code;
    const char* cause;
  };
  const Case cases[] = {
      {"segv", absl::StatusCode::kInternal, "killed by signal 11"},
      {"abort", absl::StatusCode::kInternal, "killed by signal 6"},
      {"exit", absl::StatusCode::kInternal, "exited with status 3"},
      {"hang", absl::StatusCode::kDeadlineExceeded, "timed out after 500ms"},
  };
  int64_t restarts = 0;
  for (const Case& c : cases) {
    RewardOutcome warm = (*plugin)->Score(Response("ab"));
    ASSERT_TRUE(warm.ok()) << warm.status();
    const absl::Time start = absl::Now();
    RewardOutcome bad = (*plugin)->Score(Response(c.response));
    EXPECT_LT(absl::Now() - start, absl::Seconds(3)) << c.response;
    EXPECT_EQ(bad.status().code(), c.code) << c.response << ": " << bad.status();
    EXPECT_TRUE(Contains(bad.status(), c.cause)) << c.response << ": " << bad.status();
    EXPECT_TRUE(Contains(bad.status(), "faulty")) << bad.status();
    EXPECT_EQ((*plugin)->restarts(), ++restarts);
    RewardOutcome next = (*plugin)->Score(Response("abc"));
    ASSERT_TRUE(next.ok()) << c.response << ": " << next.status();
    EXPECT_EQ(next->score, 3.0);
    EXPECT_EQ(next->metrics.at("calls"), 1.0) << "a fresh worker after " << c.response;
  }
  // A plugin's own error and stdout noise do not disturb the worker.
  EXPECT_TRUE(Contains((*plugin)->Score(Response("fail")).status(), "asked to fail"));
  RewardOutcome printed = (*plugin)->Score(Response("print"));
  ASSERT_TRUE(printed.ok()) << printed.status();
  EXPECT_EQ(printed->metrics.at("calls"), 3.0);
  EXPECT_EQ((*plugin)->restarts(), restarts);
}

TEST(IsolatedPlugin, BatchOverSeveralWorkers) {
  IsolatedPluginOptions options;
  options.timeout = absl::Seconds(1);
  options.num_workers = 3;
  auto plugin = IsolatedPlugin::Create(FAULTY_PLUGIN, "", options);
  ASSERT_TRUE(plugin.ok()) << plugin.status();
  std::vector<RewardInput> batch;
  for (int i = 0; i < 12; ++i) batch.push_back(Response(std::string(i + 1, 'x')));
  batch[3] = Response("segv");
  batch[7] = Response("hang");
  batch[8] = Response("hang");
  const absl::Time start = absl::Now();
  std::vector<RewardOutcome> out = (*plugin)->ScoreBatch(batch);
  // The two hangs run on different workers at the same time: about 1 s, not 2.
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(1900));
  ASSERT_EQ(out.size(), batch.size());
  for (int i = 0; i < 12; ++i) {
    if (i == 3) {
      EXPECT_EQ(out[i].status().code(), absl::StatusCode::kInternal) << out[i].status();
    } else if (i == 7 || i == 8) {
      EXPECT_EQ(out[i].status().code(), absl::StatusCode::kDeadlineExceeded) << out[i].status();
    } else {
      ASSERT_TRUE(out[i].ok()) << i << ": " << out[i].status();
      EXPECT_EQ(out[i]->score, i + 1.0);
    }
  }
  EXPECT_EQ((*plugin)->restarts(), 3);
}

TEST(IsolatedPlugin, ExamplePluginOutOfProcess) {
  auto plugin = IsolatedPlugin::Create(LENGTH_PLUGIN, R"({"target": 2})");
  ASSERT_TRUE(plugin.ok()) << plugin.status();
  RewardOutcome o = (*plugin)->Score(Response("hello world"));
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->score, 1.0);
  EXPECT_EQ(o->metrics.at("length"), 2.0);
}

TEST(WorkerProtocol, RoundTrips) {
  RewardInput in{"p", std::string("r\0s", 3), "g", "d", "{}"};
  auto decoded = worker::DecodeInput(worker::EncodeInput(in));
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->response, in.response);
  EXPECT_EQ(decoded->extra_json, "{}");
  RewardResult r;
  r.score = -0.25;
  r.metrics = {{"a", 1.5}, {"b", -2}};
  auto ok = worker::DecodeOutcome(worker::EncodeOutcome(r));
  ASSERT_TRUE(ok.ok() && ok->ok());
  EXPECT_EQ((*ok)->score, -0.25);
  EXPECT_EQ((*ok)->metrics, r.metrics);
  auto err = worker::DecodeOutcome(worker::EncodeOutcome(absl::DeadlineExceededError("slow")));
  ASSERT_TRUE(err.ok());
  EXPECT_EQ(err->status(), absl::DeadlineExceededError("slow"));
  EXPECT_FALSE(worker::DecodeOutcome("\x01").ok());
  EXPECT_FALSE(worker::DecodeInput(worker::EncodeInput(in) + "x").ok());
}

}  // namespace
}  // namespace tandem::rewards
