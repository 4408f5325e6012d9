// End-to-end tests of `tandem logprobs`: a tiny random checkpoint from `tandem init-model`, scored
// by the binary, must equal HybridModel::Forward in-process bit for bit (the JSON digits round-trip
// fp32); every bad input exits non-zero with a message naming the argument or file.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/hybrid_model.h"
#include "nlohmann/json.hpp"
#include "tests/testing/compare.h"
#include "tests/testing/tandem_cli.h"
#include "tests/testing/tiny_model.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

using testing::CommandResult;
using testing::RunTandem;
using testing::Stderr;

class LogprobsCommandTest : public testing::TinyCheckpointSuite {
 protected:
  // log p(token[t+1] | tokens[0..t]) from HybridModel::Forward in this process.
  static std::vector<float> InProcess(const std::vector<int32_t>& tokens, float temperature) {
    absl::StatusOr<model::HybridModel> hybrid = testing::LoadModel(Model());
    EXPECT_TRUE(hybrid.ok()) << hybrid.status();
    if (!hybrid.ok()) return {};
    return testing::ForwardLogprobs(*hybrid, tokens, temperature);
  }

  static std::vector<float> ParseLogprobs(const std::string& json_text) {
    nlohmann::json j = nlohmann::json::parse(json_text);
    std::vector<float> out;
    for (const auto& v : j.at("logprobs")) out.push_back(static_cast<float>(v.get<double>()));
    return out;
  }
};

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
      const CommandResult r = RunTandem("logprobs --model " + Model() + " --tokens " + list +
                                        " --temperature " + temperature + " --threads " + threads);
      ASSERT_EQ(r.exit_code, 0) << r.out;
      const std::vector<float> got = ParseLogprobs(r.out);
      ASSERT_EQ(got.size(), tokens.size() - 1);
      EXPECT_TRUE(testing::BitwiseEqual(got, InProcess(tokens, std::stof(temperature))))
          << "temperature " << temperature << " threads " << threads;
      for (float lp : got) EXPECT_LE(lp, 0.0f);
    }
  }
}

TEST_F(LogprobsCommandTest, TwoTokensGiveOneEntry) {
  const CommandResult r = RunTandem("logprobs --model " + Model() + " --tokens 3,4");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(testing::BitwiseEqual(ParseLogprobs(r.out), InProcess({3, 4}, 1.0f)));
}

// A bad input: a non-zero exit and a message naming the argument (and file).
void ExpectFailure(const std::string& args, const std::string& message) {
  const CommandResult r = RunTandem(args, Stderr::kMerge);
  EXPECT_NE(r.exit_code, 0) << args;
  EXPECT_THAT(r.out, HasSubstr(message)) << args;
}

// A directory under the test root holding the tiny model's config.json and nothing else.
fs::path DirWithConfig(const fs::path& root, const std::string& name, const std::string& model) {
  const fs::path dir = root / name;
  fs::create_directories(dir);
  fs::copy_file(fs::path(model) / "config.json", dir / "config.json");
  return dir;
}

TEST_F(LogprobsCommandTest, BadModelDirectoryFailsNamingTheFile) {
  const std::string missing = Root().Sub("missing");
  ExpectFailure("logprobs --model " + missing + " --tokens 1,2", "--model: '" + missing + "'");

  const fs::path empty = Root().path() / "empty";
  fs::create_directories(empty);
  ExpectFailure("logprobs --model " + empty.string() + " --tokens 1,2",
                "--model: '" + (empty / "config.json").string() + "' not found");

  const fs::path bad_config = Root().path() / "bad_config";
  fs::create_directories(bad_config);
  std::ofstream(bad_config / "config.json") << "{ not json";
  ExpectFailure("logprobs --model " + bad_config.string() + " --tokens 1,2", "config.json");

  const fs::path no_weights = DirWithConfig(Root().path(), "no_weights", Model());
  ExpectFailure("logprobs --model " + no_weights.string() + " --tokens 1,2",
                "--model: no weights in '" + no_weights.string() + "'");

  const fs::path truncated = DirWithConfig(Root().path(), "truncated", Model());
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
