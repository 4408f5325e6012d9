// End-to-end tests of `tandem logprobs`: a tiny random checkpoint from `tandem init-model`, scored
// by the binary, must equal HybridModel::Forward in-process bit for bit (the JSON digits round-trip
// fp32); every bad input exits non-zero with a message naming the argument or file.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/core/context.h"
#include "model/config.h"
#include "model/hybrid_model.h"
#include "model/weights.h"
#include "nlohmann/json.hpp"
#include "tests/testing/compare.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

struct Result {
  int exit_code = -1;
  std::string output;
};

// Runs `tandem <args>`; output is stdout, plus stderr when merge_stderr.
Result RunTandem(const std::string& args, bool merge_stderr = false) {
  const std::string cmd =
      std::string(TANDEM_BIN) + " " + args + (merge_stderr ? " 2>&1" : " 2>/dev/null");
  Result r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) r.output.append(buf, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class LogprobsCommandTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::random_device rd;
    root_ =
        new fs::path(fs::temp_directory_path() / ("tandem_logprobs_test_" + std::to_string(rd())));
    fs::create_directories(*root_);
    const Result init = RunTandem("init-model --config configs/models/tiny-hybrid.json --out " +
                                      Model() + " --seed 3 --dtype f32",
                                  /*merge_stderr=*/true);
    ASSERT_EQ(init.exit_code, 0) << init.output;
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*root_, ec);
    delete root_;
  }
  static std::string Model() { return (*root_ / "model").string(); }

  // log p(token[t+1] | tokens[0..t]) from HybridModel::Forward in this process.
  static std::vector<float> InProcess(const std::vector<int32_t>& tokens, float temperature) {
    absl::StatusOr<model::ModelConfig> config = model::LoadModelConfig(Model());
    EXPECT_TRUE(config.ok()) << config.status();
    absl::StatusOr<model::ModelWeights> weights = model::LoadWeights(*config, Model());
    EXPECT_TRUE(weights.ok()) << weights.status();
    const model::HybridModel hybrid(*config, *std::move(weights));
    const int64_t T = tokens.size();
    std::vector<int32_t> targets(tokens.begin() + 1, tokens.end());
    targets.push_back(-1);
    model::ForwardInput in{
        Tensor::FromVector(tokens, {T}),
        Tensor::FromVector(std::vector<int32_t>{0, static_cast<int32_t>(T)}, {2}),
        Tensor::FromVector(targets, {T}), temperature};
    absl::StatusOr<Tensor> out = hybrid.Forward(Context::Cpu(1), in);
    EXPECT_TRUE(out.ok()) << out.status();
    return std::vector<float>(out->data<float>(), out->data<float>() + T - 1);
  }

  static std::vector<float> ParseLogprobs(const std::string& json_text) {
    nlohmann::json j = nlohmann::json::parse(json_text);
    std::vector<float> out;
    for (const auto& v : j.at("logprobs")) out.push_back(static_cast<float>(v.get<double>()));
    return out;
  }

  static fs::path* root_;
};
fs::path* LogprobsCommandTest::root_ = nullptr;

TEST_F(LogprobsCommandTest, MatchesInProcessForwardBitwise) {
  std::vector<int32_t> tokens;
  std::string list;
  for (int t = 0; t < 70; ++t) {  // crosses a 64-token linear-attention chunk
    tokens.push_back((t * 37 + 5) % 64);
    if (t > 0) list += ',';
    list += std::to_string(tokens.back());
  }
  for (const char* temperature : {"1", "0.7"}) {
    for (const char* threads : {"1", "2"}) {
      const Result r = RunTandem("logprobs --model " + Model() + " --tokens " + list +
                                 " --temperature " + temperature + " --threads " + threads);
      ASSERT_EQ(r.exit_code, 0) << r.output;
      const std::vector<float> got = ParseLogprobs(r.output);
      ASSERT_EQ(got.size(), tokens.size() - 1);
      EXPECT_TRUE(testing::BitwiseEqual(got, InProcess(tokens, std::stof(temperature))))
          << "temperature " << temperature << " threads " << threads;
      for (float lp : got) EXPECT_LE(lp, 0.0f);
    }
  }
}

TEST_F(LogprobsCommandTest, TwoTokensGiveOneEntry) {
  const Result r = RunTandem("logprobs --model " + Model() + " --tokens 3,4");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(testing::BitwiseEqual(ParseLogprobs(r.output), InProcess({3, 4}, 1.0f)));
}

// A bad input: a non-zero exit and a message naming the argument (and file).
void ExpectFailure(const std::string& args, const std::string& message) {
  const Result r = RunTandem(args, /*merge_stderr=*/true);
  EXPECT_NE(r.exit_code, 0) << args;
  EXPECT_THAT(r.output, HasSubstr(message)) << args;
}

// A directory under the test root holding the tiny model's config.json and nothing else.
fs::path DirWithConfig(const fs::path& root, const std::string& name, const std::string& model) {
  const fs::path dir = root / name;
  fs::create_directories(dir);
  fs::copy_file(fs::path(model) / "config.json", dir / "config.json");
  return dir;
}

TEST_F(LogprobsCommandTest, BadModelDirectoryFailsNamingTheFile) {
  const std::string missing = (*root_ / "missing").string();
  ExpectFailure("logprobs --model " + missing + " --tokens 1,2", "--model: '" + missing + "'");

  const fs::path empty = *root_ / "empty";
  fs::create_directories(empty);
  ExpectFailure("logprobs --model " + empty.string() + " --tokens 1,2",
                "--model: '" + (empty / "config.json").string() + "' not found");

  const fs::path bad_config = *root_ / "bad_config";
  fs::create_directories(bad_config);
  std::ofstream(bad_config / "config.json") << "{ not json";
  ExpectFailure("logprobs --model " + bad_config.string() + " --tokens 1,2", "config.json");

  const fs::path no_weights = DirWithConfig(*root_, "no_weights", Model());
  ExpectFailure("logprobs --model " + no_weights.string() + " --tokens 1,2",
                "--model: no weights in '" + no_weights.string() + "'");

  const fs::path truncated = DirWithConfig(*root_, "truncated", Model());
  std::ifstream in(fs::path(Model()) / "model.safetensors", std::ios::binary);
  std::string head(300, '\0');
  in.read(head.data(), head.size());
  std::ofstream(truncated / "model.safetensors", std::ios::binary) << head;
  ExpectFailure("logprobs --model " + truncated.string() + " --tokens 1,2",
                (truncated / "model.safetensors").string());
}

TEST_F(LogprobsCommandTest, BadArgumentsFailNamingTheArgument) {
  const std::string model = "logprobs --model " + Model();
  ExpectFailure(model + " --tokens 1,x,3",
                "--tokens: '1,x,3' is not a comma-separated list of integers");
  ExpectFailure(model + " --tokens 1,,3", "--tokens: '1,,3' is not");
  ExpectFailure(model + " --tokens 5", "--tokens: need at least 2 tokens");
  ExpectFailure(model + " --tokens 1,2,3,99999",
                "--tokens: id 99999 at position 3 is outside the vocabulary [0, 64)");
  ExpectFailure(model + " --tokens 1,-1", "--tokens: id -1 at position 1");
  ExpectFailure(model + " --tokens 1,2 --temperature 0", "--temperature");
  ExpectFailure(model + " --tokens 1,2 --threads 0", "--threads");
  ExpectFailure("logprobs --tokens 1,2", "--model");
}

}  // namespace
}  // namespace tandem
