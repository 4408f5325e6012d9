// End-to-end tests of `tandem sft`: a short run writes metrics.jsonl (one line per step with the
// documented fields), a checkpoint and a JSON summary, and a second invocation resumes from it;
// every bad config (unknown key, bad value, bad override, missing files) exits 1 with a message
// naming the file (and line) or the override, and the field.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/trainer/sft_test_util.h"

namespace tandem::trainer {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::TempDir;

struct Result {
  int exit_code = -1;
  std::string output;
};

// Runs `tandem <args>`; output is stdout, plus stderr when merge_stderr.
Result RunTandem(const std::string& args, bool merge_stderr) {
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

class SftCliTest : public ::testing::Test {
 protected:
  SftCliTest() : dir_("sft_cli") {}

  // A small run config in the temp dir; `extra` is appended to the YAML.
  std::string WriteConfig(const std::string& extra = "") {
    const std::string path = dir_.Sub("run.yaml");
    std::ofstream(path) << "model:\n"
                           "  config: configs/models/tiny-hybrid.json\n"
                           "tokenizer:\n"
                           "  alphabet: \"0123456789+=\"\n"
                           "data:\n"
                           "  synthetic_examples: 64\n"
                           "  max_digits: 2\n"
                           "  sequences_per_step: 8\n"
                           "trainer:\n"
                           "  total_steps: 3\n"
                           "  num_threads: 1\n"
                           "  log_every: 1\n"
                           "  output_dir: "
                        << dir_.Sub("out") << "\n"
                        << extra;
    return path;
  }

  TempDir dir_;
};

TEST_F(SftCliTest, ShortRunWritesMetricsCheckpointAndResumes) {
  const std::string config = WriteConfig();
  const Result r =
      RunTandem("sft --config " + config + " --eval-every 2 --eval-examples 10", false);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json summary = nlohmann::json::parse(r.output);
  EXPECT_EQ(summary["start_step"], 0);
  EXPECT_EQ(summary["final_step"], 3);
  EXPECT_EQ(summary["ranks"], 1);
  ASSERT_TRUE(summary.contains("final_exact_match"));
  EXPECT_TRUE(std::filesystem::exists(dir_.Sub("out/checkpoints/step-3/loop_state.json")));

  std::ifstream in(dir_.Sub("out/metrics.jsonl"));
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 3u);
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i]["step"], static_cast<int64_t>(i + 1));
    for (const char* key : {"loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed_s"}) {
      EXPECT_TRUE(lines[i].contains(key)) << key << " in line " << i;
    }
    EXPECT_GT(lines[i]["tokens_per_s"].get<double>(), 0);
  }
  EXPECT_FALSE(lines[0].contains("eval_exact_match"));
  EXPECT_TRUE(lines[1].contains("eval_exact_match"));  // --eval-every 2
  EXPECT_TRUE(lines[2].contains("eval_exact_match"));  // the last step

  // Raising total_steps resumes from step-3 (checkpoint.resume: auto).
  const Result again =
      RunTandem("sft --config " + config + " trainer.total_steps=4 --eval-every -1", false);
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(nlohmann::json::parse(again.output)["start_step"], 3);
  EXPECT_EQ(nlohmann::json::parse(again.output)["final_step"], 4);

  // Starting afresh below an existing checkpoint is refused up front, not at the clashing save.
  const Result fresh = RunTandem("sft --config " + config + " checkpoint.resume=none", true);
  EXPECT_EQ(fresh.exit_code, 1);
  EXPECT_THAT(fresh.output, AllOf(HasSubstr("checkpoint.resume"), HasSubstr("step-4")));
}

TEST_F(SftCliTest, UnknownKeyNamesFileAndField) {
  const std::string config = WriteConfig("optim:\n  lrr: 0.1\n");
  const Result r = RunTandem("sft --config " + config, true);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, AllOf(HasSubstr("tandem sft:"), HasSubstr(config), HasSubstr("lrr")));
}

TEST_F(SftCliTest, BadValueNamesFileLineAndField) {
  const std::string config = WriteConfig("optim:\n  lr: -1\n");
  const Result r = RunTandem("sft --config " + config, true);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, AllOf(HasSubstr(config + ":"), HasSubstr("optim.lr")));
}

TEST_F(SftCliTest, BadOverrideNamesTheOverrideAndField) {
  const std::string config = WriteConfig();
  Result r = RunTandem("sft --config " + config + " optim.lr=fast", true);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, AllOf(HasSubstr("optim.lr=fast"), HasSubstr("optim.lr")));
  r = RunTandem("sft --config " + config + " optim.nope=1", true);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("optim.nope"));
}

TEST_F(SftCliTest, MissingFilesAreNamed) {
  Result r = RunTandem("sft --config " + dir_.Sub("absent.yaml"), true);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr(dir_.Sub("absent.yaml")));
  const std::string config = WriteConfig();
  r = RunTandem("sft --config " + config + " model.config=" + dir_.Sub("none.json"), true);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, AllOf(HasSubstr("model.config"), HasSubstr(dir_.Sub("none.json"))));
  r = RunTandem("sft --config " + config + " data.train_path=" + dir_.Sub("none.jsonl"), true);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, AllOf(HasSubstr("data.train_path"), HasSubstr(dir_.Sub("none.jsonl"))));
}

TEST_F(SftCliTest, VocabularyTooSmallForTheTokenizerIsAnError) {
  const std::string config = WriteConfig();  // tiny-hybrid has vocab 64; printable ASCII needs 99
  const Result r = RunTandem("sft --config " + config + " tokenizer.alphabet=", true);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, AllOf(HasSubstr("model.config"), HasSubstr("vocab_size")));
}

}  // namespace
}  // namespace tandem::trainer
