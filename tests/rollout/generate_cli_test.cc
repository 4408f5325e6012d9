// End-to-end tests of `tandem generate` on a tiny random checkpoint from `tandem init-model`: one
// JSON line per sample with the documented fields; every printed log-prob equals, bit for bit,
// HybridModel::Forward over prompt + generated tokens (the 9 printed digits round-trip fp32); the
// output does not depend on --threads, nor on other prompts served by the same engine (--prompts);
// --prompt TEXT samples what --prompt-tokens does on the ids of the checkpoint's tokenizer.json,
// and "text" decodes the tokens; bad input exits 1 with a message naming the flag.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
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

std::vector<nlohmann::json> JsonLines(const std::string& text) {
  std::vector<nlohmann::json> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    out.push_back(nlohmann::json::parse(std::string(line)));
  }
  return out;
}

class GenerateCommandTest : public testing::TinyCheckpointSuite {
 protected:
  static std::string Generate(const std::string& args) {
    return "generate --model " + Model() + " " + args;
  }
  // Every sample's log-probs are Forward's on prompt + tokens at `temperature`, bitwise.
  static void ExpectExact(const std::vector<int32_t>& prompt, const nlohmann::json& sample,
                          float temperature) {
    absl::StatusOr<model::HybridModel> hybrid = testing::LoadModel(Model());
    ASSERT_TRUE(hybrid.ok()) << hybrid.status();
    std::vector<int32_t> full = prompt;
    for (int32_t t : sample["tokens"].get<std::vector<int32_t>>()) full.push_back(t);
    std::vector<float> want = testing::ForwardLogprobs(*hybrid, full, temperature);
    want.erase(want.begin(), want.begin() + (prompt.size() - 1));
    std::vector<float> got;
    for (double v : sample["logprobs"].get<std::vector<double>>())
      got.push_back(static_cast<float>(v));
    EXPECT_TRUE(testing::BitwiseEqual(got, want)) << sample.dump();
  }
};

TEST_F(GenerateCommandTest, OneLinePerSampleExactLogprobs) {
  const CommandResult r =
      RunTandem(Generate("--prompt-tokens 1,2,3,4,5 -n 3 --max-new-tokens 6 --seed 7 "
                         "--temperature 0.9"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const std::vector<nlohmann::json> lines = JsonLines(r.out);
  ASSERT_EQ(lines.size(), 3u) << r.out;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(lines[i]["sample"], i);
    EXPECT_EQ(lines[i]["tokens"].size(), 6u);
    EXPECT_EQ(lines[i]["logprobs"].size(), 6u);
    EXPECT_EQ(lines[i]["finish_reason"], "length");
    EXPECT_FALSE(lines[i].contains("prompt"));
    ExpectExact({1, 2, 3, 4, 5}, lines[i], 0.9f);
  }
  // Same seed, two threads, smaller steps: the same bytes.
  const CommandResult again = RunTandem(
      Generate("--prompt-tokens 1,2,3,4,5 -n 3 --max-new-tokens 6 --seed 7 --temperature 0.9 "
               "--threads 2 --max-step-tokens 8"));
  EXPECT_EQ(again.out, r.out);
}

TEST_F(GenerateCommandTest, StopTokens) {
  const CommandResult r = RunTandem(Generate("--prompt-tokens 9,8 --max-new-tokens 40 --seed 1"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const std::vector<int32_t> tokens = JsonLines(r.out)[0]["tokens"].get<std::vector<int32_t>>();
  const CommandResult stopped =
      RunTandem(Generate("--prompt-tokens 9,8 --max-new-tokens 40 --seed 1 "
                         "--stop-tokens " +
                         std::to_string(tokens[3])));
  const nlohmann::json line = JsonLines(stopped.out)[0];
  EXPECT_EQ(line["finish_reason"], "stop");
  EXPECT_LE(line["tokens"].size(), 4u);
  EXPECT_EQ(line["tokens"].back(), tokens[3]);
}

// Several prompts in one engine: each prompt's samples are those it gets alone.
TEST_F(GenerateCommandTest, PromptsFileServedConcurrently) {
  const fs::path file = Root().path() / "prompts.jsonl";
  std::vector<int32_t> long_prompt;
  for (int i = 0; i < 100; ++i) long_prompt.push_back(i % 64);
  {
    std::ofstream out(file);
    out << "{\"prompt_tokens\": [1, 2, 3]}\n\n";
    out << nlohmann::json{{"prompt_tokens", long_prompt}, {"n", 2}, {"seed", 5}}.dump() << "\n";
    out << "{\"prompt_tokens\": [7], \"max_new_tokens\": 3, \"temperature\": 0}\n";
  }
  const CommandResult r = RunTandem(Generate("--prompts " + file.string() +
                                             " --max-new-tokens 5 --seed 2"
                                             " --max-step-tokens 70 --threads 2"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const std::vector<nlohmann::json> lines = JsonLines(r.out);
  ASSERT_EQ(lines.size(), 4u) << r.out;
  EXPECT_EQ(lines[0]["prompt"], 0);
  EXPECT_EQ(lines[1]["prompt"], 1);
  EXPECT_EQ(lines[2]["prompt"], 1);
  EXPECT_EQ(lines[2]["sample"], 1);
  EXPECT_EQ(lines[3]["tokens"].size(), 3u);
  ExpectExact(long_prompt, lines[2], 1.0f);
  ExpectExact({7}, lines[3], 1.0f);  // greedy reports temperature-1 log-probs
  const std::string csv = absl::StrJoin(long_prompt, ",");
  const std::vector<nlohmann::json> alone = JsonLines(
      RunTandem(Generate("--prompt-tokens " + csv + " -n 2 --seed 5 --max-new-tokens 5")).out);
  ASSERT_EQ(alone.size(), 2u);
  for (int s = 0; s < 2; ++s) {
    EXPECT_EQ(alone[s]["tokens"], lines[1 + s]["tokens"]);
    EXPECT_EQ(alone[s]["logprobs"], lines[1 + s]["logprobs"]);
  }
}

TEST_F(GenerateCommandTest, BadInputExitsWithAMessage) {
  auto fails_with = [](const std::string& args, const std::string& message) {
    const CommandResult r = RunTandem(Generate(args), Stderr::kMerge);
    EXPECT_EQ(r.exit_code, 1) << args;
    EXPECT_THAT(r.out, HasSubstr(message)) << args;
  };
  fails_with("--prompt-tokens 1,64", "prompt: id 64 at index 1 is outside the vocabulary");
  fails_with("--prompt-tokens 1,x", "--prompt-tokens: '1,x' is not a comma-separated list");
  fails_with("--prompt-tokens 1 -n 0", "n: must be >= 1");
  fails_with("--max-new-tokens 3", "give exactly one of --prompt-tokens, --prompt and --prompts");
  fails_with("--prompt-tokens 1 --prompt 12", "give exactly one of --prompt-tokens, --prompt");
  fails_with("--prompt-tokens 1 --memory-mb 1 --max-sequences 4 --max-new-tokens 100000",
             "can never fit");
  fails_with("--prompts /nonexistent.jsonl", "--prompts: cannot read");
  const CommandResult r =
      RunTandem("generate --model /nonexistent --prompt-tokens 1", Stderr::kMerge);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("--model"));
}

// A copy of the checkpoint with a "tandem_char" tokenizer.json: alphabet[i] is id 4 + i.
TEST_F(GenerateCommandTest, TextPromptUsesTheCheckpointTokenizer) {
  const fs::path dir = Root().path() / "model_with_tokenizer";
  fs::copy(Model(), dir, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  {
    std::ofstream out(dir / "tokenizer.json");
    out << R"({"type": "tandem_char", "alphabet": "0123456789+= ",
               "special_tokens": {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}})";
  }
  const std::string args = " -n 2 --max-new-tokens 6 --seed 11 --temperature 0.8";
  const CommandResult text =
      RunTandem("generate --model " + dir.string() + " --prompt '12+7='" + args);
  ASSERT_EQ(text.exit_code, 0) << text.out;
  const CommandResult ids =
      RunTandem("generate --model " + dir.string() + " --prompt-tokens 5,6,14,11,15" + args);
  ASSERT_EQ(ids.exit_code, 0) << ids.out;
  EXPECT_EQ(text.out, ids.out);  // same tokens, log-probs and "text"
  const std::vector<nlohmann::json> lines = JsonLines(text.out);
  ASSERT_EQ(lines.size(), 2u) << text.out;
  for (const nlohmann::json& line : lines) {
    ExpectExact({5, 6, 14, 11, 15}, line, 0.8f);
    // Specials decode to nothing, <unk> to '?', ids past the tokenizer's 17 to U+FFFD.
    std::string want;
    for (int32_t t : line["tokens"].get<std::vector<int32_t>>()) {
      if (t >= 17) want += "\xEF\xBF\xBD";
      if (t >= 4 && t < 17) want += "0123456789+= "[t - 4];
      if (t == 3) want += "?";
    }
    EXPECT_EQ(line["text"], want) << line.dump();
  }
  // The same token-id run without the tokenizer has no "text".
  EXPECT_FALSE(
      JsonLines(RunTandem(Generate("--prompt-tokens 5,6,14,11,15" + args)).out)[0].contains(
          "text"));

  const CommandResult unknown =
      RunTandem("generate --model " + dir.string() + " --prompt '12*7='" + args, Stderr::kMerge);
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_THAT(unknown.out, HasSubstr("--prompt: text: '*' at offset 2 is not in the tokenizer's"));
}

TEST_F(GenerateCommandTest, TextPromptWithoutTokenizerFails) {
  const CommandResult r = RunTandem(Generate("--prompt '1+1='"), Stderr::kMerge);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("--prompt: " + Model() + "/tokenizer.json: no tokenizer file"));
}

}  // namespace
}  // namespace tandem
