// Run config: the example file loads, overrides of every kind apply, errors name the file:line or
// the override and the field, and the YAML written beside checkpoints reads back identically.
#include "trainer/run_config.h"

#include "gtest/gtest.h"

namespace tandem::trainer {
namespace {

constexpr char kYaml[] = R"(model:
  config: configs/models/tiny-hybrid.json
optim:
  lr: 0.002
  schedule: constant
data:
  max_digits: 4
)";

std::string Message(const absl::Status& s) { return std::string(s.message()); }

TEST(RunConfigTest, ExampleConfigLoads) {
  // ctest runs in the source root.
  auto c = LoadSftRunConfig("configs/runs/sft-addition-tiny.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model.config, "configs/models/tiny-hybrid-addition.json");
  EXPECT_EQ(c->tokenizer.alphabet, "0123456789+=");
  EXPECT_DOUBLE_EQ(c->optim.lr, 3e-3);
  EXPECT_TRUE(c->data.reverse_answer);
}

TEST(RunConfigTest, DefaultsAndValues) {
  auto c = ParseSftRunConfig(kYaml, "run.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->optim.lr, 0.002);
  EXPECT_EQ(c->optim.schedule, "constant");
  EXPECT_EQ(c->data.max_digits, 4);
  EXPECT_EQ(c->data.min_digits, 1);  // default
  EXPECT_DOUBLE_EQ(c->optim.beta2, 0.95);
  EXPECT_EQ(c->checkpoint.resume, "auto");
  auto empty = ParseSftRunConfig(std::string(kYaml) + "checkpoint:\n  dir:\n", "run.yaml");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->checkpoint.dir, "");
}

TEST(RunConfigTest, HydraOverrides) {
  auto c = ParseSftRunConfig(kYaml, "run.yaml",
                             {"optim.lr=5e-4", "++optim.schedule=cosine", "+trainer.total_steps=7",
                              "~data.max_digits", "data.shuffle=false", "checkpoint.dir=/tmp/x"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->optim.lr, 5e-4);
  EXPECT_EQ(c->optim.schedule, "cosine");
  EXPECT_EQ(c->trainer.total_steps, 7);
  EXPECT_EQ(c->data.max_digits, 3);  // reset to the default
  EXPECT_FALSE(c->data.shuffle);
  EXPECT_EQ(c->checkpoint.dir, "/tmp/x");
}

TEST(RunConfigTest, ErrorsNameTheSourceAndField) {
  struct Case {
    std::string yaml;
    std::vector<std::string> overrides;
    std::string expect;
  } cases[] = {
      {kYaml, {"optim.lr=abc"}, "override 'optim.lr=abc': field 'optim.lr': expected a number"},
      {kYaml, {"optim.lr=-1"}, "override 'optim.lr=-1': field 'optim.lr': expected > 0"},
      {kYaml, {"optim.lrr=1"}, "override 'optim.lrr=1': unknown field 'optim.lrr'"},
      {kYaml, {"+optim.lr=1"}, "field 'optim.lr' is already set"},
      {kYaml, {"optim.lr"}, "expected key.path=value"},
      {kYaml, {"trainer.total_steps=1.5"}, "field 'trainer.total_steps': expected an integer"},
      {kYaml, {"data.shuffle=maybe"}, "field 'data.shuffle': expected true or false"},
      {std::string(kYaml) + "  min_digits: 9\n", {}, "run.yaml:7: field 'data.max_digits'"},
      {std::string(kYaml) + "  typo: 1\n", {}, "run.yaml:8: unknown field 'data.typo'"},
      {"optim:\n  schedule: linear\n", {"model.config=x"}, "run.yaml:2: field 'optim.schedule'"},
      {"optim: {lr: 1}\n", {}, "field 'model.config': required"},
      {"optim:\n  lr: [1, 2]\n",
       {"model.config=x"},
       "run.yaml:2: field 'optim.lr': expected a scalar"},
      {"model: [", {}, "run.yaml: invalid YAML"},
  };
  for (const Case& c : cases) {
    auto r = ParseSftRunConfig(c.yaml, "run.yaml", c.overrides);
    ASSERT_FALSE(r.ok()) << c.expect;
    EXPECT_NE(Message(r.status()).find(c.expect), std::string::npos) << Message(r.status());
  }
  EXPECT_EQ(LoadSftRunConfig("/nonexistent.yaml").status().code(), absl::StatusCode::kNotFound);
}

TEST(RunConfigTest, YamlRoundTrip) {
  auto c = ParseSftRunConfig(kYaml, "run.yaml",
                             {"optim.lr=0.00123456789", "tokenizer.alphabet=' +#:'", "data.seed=-5",
                              "optim.decay_embeddings=true"});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string yaml = SftRunConfigToYaml(*c);
  auto back = ParseSftRunConfig(yaml, "saved.yaml");
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << yaml;
  EXPECT_EQ(SftRunConfigToYaml(*back), yaml);
  EXPECT_EQ(back->optim.lr, 0.00123456789);
  EXPECT_EQ(back->tokenizer.alphabet, " +#:");
  EXPECT_EQ(back->data.seed, -5);
  EXPECT_TRUE(back->optim.decay_embeddings);
  EXPECT_EQ(back->checkpoint.dir, "");
}

}  // namespace
}  // namespace tandem::trainer
