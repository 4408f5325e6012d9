// End-to-end tests of `tandem init-model`: --dry-run counts for the shipped configs (without
// allocating: flash would need 400 GB), a tiny checkpoint that reloads bit-identical to an
// in-process init with the same seed, and errors that name the argument or file.
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/core/bf16.h"
#include "model/config.h"
#include "model/weights.h"
#include "nlohmann/json.hpp"
#include "tests/testing/compare.h"
#include "tests/testing/tandem_cli.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using json = nlohmann::json;
using testing::CommandResult;

constexpr char kTiny[] = "configs/models/tiny-hybrid.json";

// `tandem <args>` with stdout in `out` and stderr in `err`.
CommandResult RunCli(const std::string& args) {
  return testing::RunTandem(args, testing::Stderr::kSeparate);
}

class InitModelCommandTest : public ::testing::Test {
 protected:
  InitModelCommandTest() : root_("init_model_test") {}
  std::string Path(const std::string& name) const { return root_.Sub(name); }

  testing::TempDir root_;
};

TEST_F(InitModelCommandTest, DryRunPrintsMiniCounts) {
  CommandResult r =
      RunCli("init-model --config configs/models/ring-mini-linear-2.0.json --dry-run");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_NEAR(j["total_params"].get<int64_t>() / 1e9, 16.4, 0.1);
  EXPECT_NEAR(j["active_non_embedding_params"].get<int64_t>() / 1e6, 957, 5);
  EXPECT_EQ(j["active_params"].get<int64_t>(),
            j["active_non_embedding_params"].get<int64_t>() + j["embedding_params"].get<int64_t>());
  EXPECT_THAT(r.err, HasSubstr("ring-mini-linear-2.0.json"));
}

TEST_F(InitModelCommandTest, DryRunDoesNotAllocate) {
  CommandResult r =
      RunCli("init-model --config configs/models/ring-flash-linear-2.0.json --dry-run");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NEAR(json::parse(r.out)["total_params"].get<int64_t>() / 1e9, 104.2, 0.1);
}

// Loads `dir` and compares every parameter with an in-process init of the tiny config.
void ExpectCheckpointMatches(const std::string& dir, uint64_t seed, bool bf16) {
  absl::StatusOr<model::ModelConfig> config = model::LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<model::ModelWeights> loaded = model::LoadWeights(*config, dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  model::ModelConfig tiny = *model::LoadModelConfig(kTiny);
  EXPECT_EQ(config->hidden_size, tiny.hidden_size);
  model::ModelWeights expected = model::AllocateWeights(tiny);
  model::InitWeights(tiny, seed, expected);
  std::map<std::string, Tensor> got;
  loaded->ForEachParameter([&](const std::string& name, Tensor& t) { got[name] = t; });
  int visited = 0;
  expected.ForEachParameter([&](const std::string& name, const Tensor& t) {
    ASSERT_EQ(got.count(name), 1u) << name;
    std::vector<float> want(t.data<float>(), t.data<float>() + t.numel());
    if (bf16 && name.find("mlp.gate.") == std::string::npos) {
      for (float& v : want) v = RoundToBf16(v);
    }
    ASSERT_TRUE(testing::BitwiseEqual(testing::Floats(got[name]), want)) << name;
    ++visited;
  });
  EXPECT_EQ(visited, static_cast<int>(got.size()));
}

TEST_F(InitModelCommandTest, TinyCheckpointReloadsBitIdentical) {
  const std::string out = Path("tiny/nested");
  CommandResult r =
      RunCli("init-model --config " + std::string(kTiny) + " --out " + out + " --seed 11");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["out"], out);
  EXPECT_EQ(j["seed"], 11);
  EXPECT_EQ(j["total_params"].get<int64_t>(),
            model::CountParameters(*model::LoadModelConfig(kTiny)).total);
  EXPECT_TRUE(fs::exists(out + "/config.json"));
  EXPECT_TRUE(fs::exists(out + "/model.safetensors"));
  ExpectCheckpointMatches(out, 11, /*bf16=*/false);

  const std::string out16 = Path("tiny16");
  r = RunCli("init-model --config " + std::string(kTiny) + " --out " + out16 +
             " --seed 11 --dtype bf16");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ExpectCheckpointMatches(out16, 11, /*bf16=*/true);
}

TEST_F(InitModelCommandTest, RefusesToOverwriteWithoutForce) {
  const std::string out = Path("busy");
  fs::create_directories(out);
  std::ofstream(out + "/notes.txt") << "keep";
  CommandResult r = RunCli("init-model --config " + std::string(kTiny) + " --out " + out);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("tandem init-model: --out: '" + out + "' exists and is not empty"));
  EXPECT_FALSE(fs::exists(out + "/model.safetensors"));

  r = RunCli("init-model --config " + std::string(kTiny) + " --out " + out + " --force");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ExpectCheckpointMatches(out, 0, /*bf16=*/false);
  EXPECT_TRUE(fs::exists(out + "/notes.txt"));

  const std::string empty = Path("empty");
  fs::create_directories(empty);
  EXPECT_EQ(RunCli("init-model --config " + std::string(kTiny) + " --out " + empty).exit_code, 0);
}

TEST_F(InitModelCommandTest, ErrorsNameTheArgumentOrFile) {
  CommandResult r = RunCli("init-model --config " + Path("missing.json") + " --dry-run");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("tandem init-model: --config: " + Path("missing.json")));

  const std::string bad = Path("bad.json");
  json j = json::parse(std::ifstream(kTiny));
  j["num_attention_heads"] = -3;
  std::ofstream(bad) << j.dump();
  r = RunCli("init-model --config " + bad + " --dry-run");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr(bad + ": field 'num_attention_heads': expected a positive integer, "
                                     "got -3"));

  r = RunCli("init-model --config " + std::string(kTiny));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--out: required unless --dry-run"));

  std::ofstream(Path("file")) << "x";
  r = RunCli("init-model --config " + std::string(kTiny) + " --out " + Path("file"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("exists and is not a directory"));

  r = RunCli("init-model --config " + std::string(kTiny) + " --out " + Path("x") + " --dtype f16");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("--dtype"));
  EXPECT_FALSE(fs::exists(Path("x")));
}

}  // namespace
}  // namespace tandem
