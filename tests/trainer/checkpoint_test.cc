// Checkpoints: a save/load round trip restores every bit (weights, moments, loop state, config),
// keep_last prunes only after the new one is durable, and a save SIGKILLed midway (a forked child)
// or a leftover partial directory leaves the previous checkpoint the latest and loadable; the
// partial one is removed by the next save.
#include "trainer/checkpoint.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "tests/testing/compare.h"

namespace tandem::trainer {
namespace {

namespace fs = std::filesystem;

struct Fixture {
  model::ModelConfig config;
  model::ModelWeights weights;
  OptimizerState optimizer;
  LoopState loop;
  std::string yaml;
  CheckpointContents Contents() const { return {&config, &weights, &optimizer, loop, yaml}; }
};

void FillRandom(model::ModelWeights& w, uint64_t seed) {
  w.ForEachParameter([&](const std::string&, Tensor& t) {
    std::vector<float> r = testing::RandomVector(t.numel(), seed++, 0.0f, 1.0f);
    std::copy(r.begin(), r.end(), t.data<float>());
  });
}

Fixture MakeFixture(uint64_t seed) {
  Fixture f;
  f.config = *model::LoadModelConfig("configs/models/tiny-hybrid.json");
  f.weights = model::AllocateWeights(f.config);
  model::InitWeights(f.config, seed, f.weights);
  f.optimizer = {static_cast<int64_t>(seed) * 10, model::AllocateWeights(f.config),
                 model::AllocateWeights(f.config)};
  FillRandom(f.optimizer.m, seed * 1000);
  FillRandom(f.optimizer.v, seed * 2000);
  f.loop.step = static_cast<int64_t>(seed);
  f.loop.seed = 0xFEDCBA9876543210ull;  // above 2^53: must survive JSON
  f.loop.rng_offset = seed * 77;
  f.loop.data_cursor = {.seed = 5, .epoch = 2, .position = static_cast<int64_t>(seed)};
  f.loop.extra = {{"best_reward", 0.5}, {"note", "x"}};
  f.yaml = "optim:\n  lr: 0.001\n# step " + std::to_string(seed) + "\n";
  return f;
}

void ExpectSameWeights(const model::ModelWeights& a, const model::ModelWeights& b) {
  std::vector<Tensor> ta;
  a.ForEachParameter([&](const std::string&, const Tensor& t) { ta.push_back(t); });
  size_t i = 0;
  b.ForEachParameter([&](const std::string& name, const Tensor& t) {
    ASSERT_LT(i, ta.size());
    EXPECT_TRUE(testing::BitwiseEqual(testing::Floats(ta[i++]), testing::Floats(t))) << name;
  });
  EXPECT_EQ(i, ta.size());
}

void ExpectRestores(const std::string& dir, const Fixture& f) {
  auto loaded = LoadTrainingCheckpoint(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(model::ModelConfigToJson(loaded->config), model::ModelConfigToJson(f.config));
  ExpectSameWeights(loaded->weights, f.weights);
  ExpectSameWeights(loaded->optimizer.m, f.optimizer.m);
  ExpectSameWeights(loaded->optimizer.v, f.optimizer.v);
  EXPECT_EQ(loaded->optimizer.step, f.optimizer.step);
  EXPECT_EQ(loaded->loop.step, f.loop.step);
  EXPECT_EQ(loaded->loop.seed, f.loop.seed);
  EXPECT_EQ(loaded->loop.rng_offset, f.loop.rng_offset);
  EXPECT_EQ(loaded->loop.data_cursor.ToJson(), f.loop.data_cursor.ToJson());
  EXPECT_EQ(loaded->loop.extra, f.loop.extra);
  EXPECT_EQ(loaded->run_config_yaml, f.yaml);
}

std::string FreshRoot(const std::string& name) {
  const std::string root = absl::StrCat(::testing::TempDir(), "/ckpt_", getpid(), "_", name);
  fs::remove_all(root);
  return root;
}

std::vector<std::string> Entries(const std::string& root) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(root)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(CheckpointTest, RoundTripLatestAndKeepLast) {
  const std::string root = FreshRoot("roundtrip");
  EXPECT_EQ(*LatestCheckpointStep(root), std::nullopt);
  EXPECT_EQ(*ResolveResume(root, "auto"), std::nullopt);
  std::vector<Fixture> fixtures;
  for (uint64_t step = 1; step <= 4; ++step) {
    fixtures.push_back(MakeFixture(step));
    auto dir = SaveTrainingCheckpoint(root, step, fixtures.back().Contents(),
                                      {.keep_last = 2, .after_stage = nullptr});
    ASSERT_TRUE(dir.ok()) << dir.status();
    EXPECT_EQ(*dir, CheckpointDir(root, step));
  }
  EXPECT_EQ(Entries(root), (std::vector<std::string>{"step-3", "step-4"}));
  EXPECT_EQ(*LatestCheckpointStep(root), 4);
  EXPECT_EQ(**ResolveResume(root, "auto"), CheckpointDir(root, 4));
  EXPECT_EQ(*ResolveResume(root, "none"), std::nullopt);
  EXPECT_EQ(**ResolveResume(root, CheckpointDir(root, 3)), CheckpointDir(root, 3));
  EXPECT_FALSE(ResolveResume(root, root + "/step-1").ok());
  ExpectRestores(CheckpointDir(root, 4), fixtures[3]);
  ExpectRestores(CheckpointDir(root, 3), fixtures[2]);
  auto again = SaveTrainingCheckpoint(root, 4, fixtures[3].Contents());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(CheckpointTest, SaveKilledMidwayLeavesPreviousIntact) {
  const std::string root = FreshRoot("killed");
  const Fixture first = MakeFixture(1), second = MakeFixture(2);
  ASSERT_TRUE(SaveTrainingCheckpoint(root, 1, first.Contents()).ok());
  for (const char* kill_at : {"model", "optimizer", "loop_state"}) {
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {  // the child dies inside the save, after `kill_at` is on disk
      CheckpointOptions o;
      o.after_stage = [&](const std::string& stage) {
        if (stage == kill_at) raise(SIGKILL);
      };
      (void)SaveTrainingCheckpoint(root, 2, second.Contents(), o);
      _exit(0);  // not reached
    }
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << kill_at;
    EXPECT_TRUE(fs::exists(absl::StrCat(root, "/.tmp-step-2-", child))) << kill_at;
    EXPECT_EQ(*LatestCheckpointStep(root), 1) << kill_at;
    ExpectRestores(CheckpointDir(root, 1), first);
  }
  // The next save succeeds, becomes the latest, and removes the three partial directories.
  ASSERT_TRUE(SaveTrainingCheckpoint(root, 2, second.Contents()).ok());
  EXPECT_EQ(Entries(root), (std::vector<std::string>{"step-1", "step-2"}));
  EXPECT_EQ(*LatestCheckpointStep(root), 2);
  ExpectRestores(CheckpointDir(root, 2), second);
}

TEST(CheckpointTest, PartialDirectoriesAreIgnored) {
  const std::string root = FreshRoot("partial");
  const Fixture f = MakeFixture(3);
  ASSERT_TRUE(SaveTrainingCheckpoint(root, 3, f.Contents()).ok());
  // A partial temp dir with a truncated optimizer file, and a step dir missing loop_state.json
  // (e.g. copied by hand): neither is a checkpoint.
  fs::create_directories(root + "/.tmp-step-9-12345/model");
  std::ofstream(root + "/.tmp-step-9-12345/optimizer.safetensors") << "\x08\x00\x00";
  fs::create_directories(root + "/step-7/model");
  fs::create_directories(root + "/step-x");
  EXPECT_EQ(*LatestCheckpointStep(root), 3);
  ASSERT_TRUE(SaveTrainingCheckpoint(root, 4, MakeFixture(4).Contents(),
                                     {.keep_last = 5, .after_stage = nullptr})
                  .ok());
  EXPECT_FALSE(fs::exists(root + "/.tmp-step-9-12345"));
  EXPECT_EQ(*LatestCheckpointStep(root), 4);
  ExpectRestores(CheckpointDir(root, 3), f);
}

TEST(CheckpointTest, LoadErrorsNameTheFile) {
  const std::string root = FreshRoot("errors");
  ASSERT_TRUE(SaveTrainingCheckpoint(root, 1, MakeFixture(1).Contents()).ok());
  const std::string dir = CheckpointDir(root, 1);
  std::ofstream(dir + "/loop_state.json") << "{\"format\": \"tandem.loop_state.v1\", \"step\": 1}";
  auto bad_loop = LoadTrainingCheckpoint(dir);
  ASSERT_FALSE(bad_loop.ok());
  EXPECT_NE(bad_loop.status().message().find("loop_state.json: field 'seed'"), std::string::npos)
      << bad_loop.status();
  fs::remove(dir + "/optimizer.safetensors");
  auto no_opt = LoadTrainingCheckpoint(dir);
  ASSERT_FALSE(no_opt.ok());
  EXPECT_NE(no_opt.status().message().find("optimizer.safetensors"), std::string::npos)
      << no_opt.status();
}

}  // namespace
}  // namespace tandem::trainer
