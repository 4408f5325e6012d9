// RlRunConfig: the shipped configs parse; overrides (incl. lists); unknown keys and bad values are
// errors naming the origin and the field; YAML round trip; the synthetic task generators and the
// verl-style JSONL rows.
#include "trainer/rl_config.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "trainer/rl_data.h"
#include "trainer/synthetic_tasks.h"

namespace tandem::trainer {
namespace {

TEST(RlConfigTest, ShippedConfigsParse) {
  for (const auto& entry : std::filesystem::directory_iterator("configs/runs")) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("grpo-", 0) != 0) continue;
    absl::StatusOr<RlRunConfig> c = LoadRlRunConfig(entry.path().string());
    EXPECT_TRUE(c.ok()) << name << ": " << c.status();
  }
}

TEST(RlConfigTest, OverridesAndErrorsNameTheField) {
  const std::string yaml = "model:\n  config: m.json\nrollout:\n  mode: async\n";
  absl::StatusOr<RlRunConfig> c = ParseRlRunConfig(
      yaml, "run.yaml",
      {"grpo.samples_per_prompt=4", "rollout.addresses=[a:1, b:2]", "++rollout.backend=remote"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->grpo.samples_per_prompt, 4);
  EXPECT_EQ(c->rollout.mode, "async");
  EXPECT_EQ(c->rollout.addresses, (std::vector<std::string>{"a:1", "b:2"}));

  absl::StatusOr<RlRunConfig> bad =
      ParseRlRunConfig(yaml + "grpo:\n  samples_per_prompt: 1\n", "run.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("run.yaml:6: field 'grpo.samples_per_prompt'"),
            std::string::npos)
      << bad.status();
  bad = ParseRlRunConfig(yaml, "run.yaml", {"rollout.max_staleness=0"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("override 'rollout.max_staleness=0'"), std::string::npos)
      << bad.status();
  bad = ParseRlRunConfig(yaml + "grpo:\n  sample_per_prompt: 3\n", "run.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("unknown field 'grpo.sample_per_prompt'"),
            std::string::npos);
  bad = ParseRlRunConfig(yaml, "run.yaml", {"rollout.backend=remote"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("rollout.addresses"), std::string::npos) << bad.status();
  bad = ParseRlRunConfig("grpo:\n  temperature: 0\n", "run.yaml");
  ASSERT_FALSE(bad.ok());  // model.config is required first
  EXPECT_NE(bad.status().message().find("model.config"), std::string::npos);
}

TEST(RlConfigTest, YamlRoundTrip) {
  absl::StatusOr<RlRunConfig> c = ParseRlRunConfig(
      "model:\n  config: m.json\n", "x", {"optim.lr=0.000123", "rollout.addresses=[h:9]"});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string yaml = RlRunConfigToYaml(*c);
  absl::StatusOr<RlRunConfig> back = ParseRlRunConfig(yaml, "round-trip");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(RlRunConfigToYaml(*back), yaml);
  EXPECT_EQ(back->optim.lr, 0.000123);
}

TEST(RlDataTest, SyntheticTasksAreSeededAndVerifiable) {
  ArithmeticTaskOptions a{7, 2, 3, "+-*"};
  absl::StatusOr<std::vector<RlPrompt>> rows = GenerateArithmetic(200, a);
  ASSERT_TRUE(rows.ok());
  absl::StatusOr<std::vector<RlPrompt>> prefix = GenerateArithmetic(10, a);
  for (int i = 0; i < 10; ++i) EXPECT_EQ((*prefix)[i].prompt, (*rows)[i].prompt);
  for (const RlPrompt& r : *rows) {
    EXPECT_EQ(r.data_source, "arithmetic");
    EXPECT_EQ(r.prompt.back(), '=');
    EXPECT_EQ(r.prompt.find_first_not_of(kArithmeticAlphabet), std::string::npos);
    EXPECT_GE(std::stoll(r.ground_truth), 0);  // '-' puts the larger operand first
  }
  EXPECT_FALSE(GenerateArithmetic(1, {0, 0, 3, "+"}).ok());
  EXPECT_FALSE(GenerateArithmetic(1, {0, 1, 3, "/"}).ok());

  absl::StatusOr<std::vector<RlPrompt>> cd = GenerateCountdown(100, {3, 4, 9});
  ASSERT_TRUE(cd.ok());
  for (const RlPrompt& r : *cd) {
    const nlohmann::json gt = nlohmann::json::parse(r.ground_truth);
    EXPECT_GT(gt["target"].get<int64_t>(), 0);
    EXPECT_EQ(gt["numbers"].size(), 4u);
    EXPECT_EQ(r.prompt.find_first_not_of(kCountdownAlphabet), std::string::npos);
  }
}

TEST(RlDataTest, VerlStyleRows) {
  const std::string path = ::testing::TempDir() + "/rl_rows.jsonl";
  {
    std::ofstream out(path);
    out << R"({"prompt": "1+2=", "ground_truth": "3", "data_source": "arithmetic"})"
        << "\n\n";
    out << R"({"prompt": [{"role": "user", "content": "4+"}, {"role": "user", "content": "5="}],)"
        << R"( "reward_model": {"ground_truth": 9}, "extra_info": {"split": "train"}})"
        << "\n";
    out << R"({"messages": [{"role": "user", "content": "x"}], "ground_truth": {"target": 3}})"
        << "\n";
  }
  absl::StatusOr<std::vector<RlPrompt>> rows = ReadRlJsonl(path);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 3u);
  EXPECT_EQ((*rows)[1].prompt, "4+5=");
  EXPECT_EQ((*rows)[1].ground_truth, "9");
  EXPECT_EQ((*rows)[1].extra_json, R"({"split":"train"})");
  EXPECT_EQ((*rows)[2].ground_truth, R"({"target":3})");
  {
    std::ofstream out(path);
    out << R"({"prompt": "1+2=", "data_source": 3})"
        << "\n";
  }
  absl::StatusOr<std::vector<RlPrompt>> bad = ReadRlJsonl(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(":1: field 'data_source'"), std::string::npos)
      << bad.status();
  // Held-out rows never repeat a training prompt.
  ArithmeticTaskOptions a{1, 1, 1, "+"};
  absl::StatusOr<std::vector<RlPrompt>> held =
      HeldOutRows([&](int64_t n) { return GenerateArithmetic(n, a); }, 40, 20);
  ASSERT_TRUE(held.ok()) << held.status();
  absl::StatusOr<std::vector<RlPrompt>> train = GenerateArithmetic(40, a);
  for (const RlPrompt& h : *held) {
    for (const RlPrompt& t : *train) EXPECT_NE(h.prompt, t.prompt);
  }
  EXPECT_FALSE(HeldOutRows([&](int64_t n) { return GenerateArithmetic(n, a); }, 40, 100).ok());
  std::remove(path.c_str());
}

}  // namespace
}  // namespace tandem::trainer
