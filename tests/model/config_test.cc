// ModelConfig: the shipped configs parse to the architecture of MODEL.md §1, bad configs give
// errors naming the file and field, the decay matches the worked values of §2.2, and the parameter
// counts match the published totals.
#include "model/config.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tandem::model {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

constexpr char kMini[] = "configs/models/ring-mini-linear-2.0.json";
constexpr char kFlash[] = "configs/models/ring-flash-linear-2.0.json";
constexpr char kTiny[] = "configs/models/tiny-hybrid.json";

ModelConfig Load(const std::string& path) {
  absl::StatusOr<ModelConfig> c = LoadModelConfig(path);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : ModelConfig{};
}

std::vector<int64_t> SoftmaxLayers(const ModelConfig& c) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    if (c.layer_types[i] == LayerType::kSoftmax) out.push_back(i);
  }
  return out;
}

json TinyJson() {
  std::ifstream f(kTiny);
  return json::parse(f);
}

std::string ErrorOf(const json& j) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j, "configs/x.json");
  EXPECT_FALSE(c.ok());
  return c.ok() ? "" : std::string(c.status().message());
}

TEST(ModelConfig, MiniMatchesModelSpec) {
  ModelConfig c = Load(kMini);
  EXPECT_EQ(c.model_type, "bailing_moe_linear");
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.num_hidden_layers, 20);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rotary_dim(), 64);
  EXPECT_EQ(c.kv_heads(0), 16);  // linear layers are MHA
  EXPECT_EQ(c.kv_heads(4), 4);
  EXPECT_FALSE(c.IsMoeLayer(0));
  EXPECT_TRUE(c.IsMoeLayer(1));
  EXPECT_EQ(c.shared_intermediate_size(), 512);
  EXPECT_EQ(c.eos_token_id, 156892);
  EXPECT_EQ(c.dtype, "bfloat16");
  EXPECT_EQ(c.decay_convention, DecayConvention::kEngine);
  EXPECT_EQ(SoftmaxLayers(c), (std::vector<int64_t>{4, 9, 14, 19}));
}

TEST(ModelConfig, FlashSoftmaxLayers) {
  ModelConfig c = Load(kFlash);
  EXPECT_EQ(SoftmaxLayers(c), (std::vector<int64_t>{7, 15, 23, 31}));
  EXPECT_EQ(c.kv_heads(7), 4);
}

TEST(ModelConfig, TinyHybrid) {
  ModelConfig c = Load(kTiny);
  EXPECT_EQ(SoftmaxLayers(c), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(c.rotary_dim(), 8);
  EXPECT_EQ(c.kv_heads(1), 2);
}

TEST(ModelConfig, LoadsFromDirectory) {
  const std::string dir = ::testing::TempDir() + "/config_dir_test";
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json") << TinyJson().dump();
  EXPECT_EQ(Load(dir).hidden_size, 64);
  EXPECT_FALSE(LoadModelConfig("configs/models").ok());  // no config.json in there
}

TEST(ModelConfig, TailLayersAreSoftmaxAndExplicitListWins) {
  json j = TinyJson();
  j["num_hidden_layers"] = 7;
  j["layer_group_size"] = 3;  // groups [0..2], [3..5]; layer 6 is a softmax tail layer
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j, "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(SoftmaxLayers(*c), (std::vector<int64_t>{2, 5, 6}));

  j["num_hidden_layers"] = 3;
  j["layer_types"] = {"linear", "softmax", "full_attention"};
  c = ParseModelConfig(j, "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(SoftmaxLayers(*c), (std::vector<int64_t>{1, 2}));
}

TEST(ModelConfig, DefaultsAndDtypeSpellings) {
  json j = TinyJson();
  j.erase("head_dim");
  j.erase("num_key_value_heads");
  j.erase("moe_shared_expert_intermediate_size");
  j.erase("torch_dtype");
  j["dtype"] = "bfloat16";
  j["moe_intermediate_size"] = 24;
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j, "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->num_key_value_heads, 4);
  EXPECT_EQ(c->moe_shared_expert_intermediate_size, 24);
  EXPECT_EQ(c->dtype, "bfloat16");
}

TEST(ModelConfig, ErrorsNameFileFieldAndExpectation) {
  json j = TinyJson();
  j["num_attention_heads"] = -3;
  EXPECT_EQ(ErrorOf(j),
            "configs/x.json: field 'num_attention_heads': expected a positive integer, got -3");

  j = TinyJson();
  j.erase("hidden_size");
  EXPECT_THAT(ErrorOf(j), HasSubstr("configs/x.json: field 'hidden_size': expected a positive"));

  struct Case {
    const char* field;
    json value;
  };
  const Case cases[] = {
      {"num_key_value_heads", 3},
      {"num_experts_per_tok", 9},
      {"n_group", 3},
      {"topk_group", 5},
      {"group_norm_size", 7},
      {"partial_rotary_factor", 0.3},
      {"layer_types", {"linear"}},
      {"tandem_decay_convention", "hf"},
      {"rope_theta", "big"},
      {"use_qk_norm", 1},
      {"first_k_dense_replace", 9},
      {"score_function", "softmax"},
      {"vocab_size", 2.5},
      {"eos_token_id", "eos"},
  };
  for (const Case& c : cases) {
    j = TinyJson();
    j[c.field] = c.value;
    EXPECT_THAT(ErrorOf(j), HasSubstr(std::string("configs/x.json: field '") + c.field + "'"))
        << c.field;
  }
  EXPECT_THAT(ErrorOf(json::array()), HasSubstr("configs/x.json: expected a JSON object"));
}

TEST(ModelConfig, BadFilesAreErrors) {
  EXPECT_THAT(std::string(LoadModelConfig("no/such/config.json").status().message()),
              HasSubstr("no/such/config.json"));
  const std::string path = ::testing::TempDir() + "/bad_config.json";
  std::ofstream(path) << "{\"hidden_size\": 12,";
  EXPECT_THAT(std::string(LoadModelConfig(path).status().message()), HasSubstr("not valid JSON"));
}

TEST(ModelConfig, RoundTripsThroughJson) {
  for (const char* path : {kMini, kFlash, kTiny}) {
    ModelConfig c = Load(path);
    c.decay_convention = DecayConvention::kHfRemote;
    absl::StatusOr<ModelConfig> back = ParseModelConfig(ModelConfigToJson(c), "round trip");
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(ModelConfigToJson(*back), ModelConfigToJson(c)) << path;
    EXPECT_EQ(back->layer_types, c.layer_types);
    EXPECT_EQ(back->decay_convention, DecayConvention::kHfRemote);
  }
  json j = TinyJson();
  j["layer_types"] = {"softmax", "linear", "linear", "linear"};  // not expressible as a G
  ModelConfig c = *ParseModelConfig(j, "x");
  EXPECT_EQ(ParseModelConfig(ModelConfigToJson(c), "x")->layer_types, c.layer_types);
}

TEST(LinearDecay, MiniWorkedValues) {
  ModelConfig c = Load(kMini);
  std::vector<float> x0 = c.LinearDecay(0);
  ASSERT_EQ(x0.size(), 16u);
  EXPECT_FLOAT_EQ(x0[0], static_cast<float>(std::sqrt(0.5) * 1.00001));
  EXPECT_NEAR(std::exp(-x0[0]), 0.493, 5e-4);
  EXPECT_FLOAT_EQ(x0[15], static_cast<float>(std::ldexp(1.0, -8) * 1.00001));
  for (int h = 0; h < 16; ++h) {
    EXPECT_FLOAT_EQ(x0[h], static_cast<float>(std::pow(2.0, -0.5 * (h + 1)) * 1.00001)) << h;
  }
  // Last linear layer, l = 18: f = 1 − 18/19 + 1e-5.
  EXPECT_FLOAT_EQ(c.LinearDecay(18)[0], static_cast<float>(std::sqrt(0.5) * (1.0 / 19 + 1e-5)));
  c.decay_convention = DecayConvention::kHfRemote;
  EXPECT_FLOAT_EQ(c.LinearDecay(0)[0], static_cast<float>(std::sqrt(0.5) * (1 + 1.0 / 19 + 1e-5)));
  EXPECT_FLOAT_EQ(c.LinearDecay(1)[0], static_cast<float>(std::sqrt(0.5) * 1.00001));
}

TEST(LinearDecay, FlashStartsAtTwoToMinusQuarter) {
  ModelConfig c = Load(kFlash);
  std::vector<float> x = c.LinearDecay(0);
  ASSERT_EQ(x.size(), 32u);
  EXPECT_FLOAT_EQ(x[0], static_cast<float>(std::pow(2.0, -0.25) * 1.00001));
  EXPECT_FLOAT_EQ(x[31], static_cast<float>(std::ldexp(1.0, -8) * 1.00001));
}

TEST(LinearDecay, NonPowerOfTwoHeads) {
  json j = TinyJson();
  j["num_hidden_layers"] = 1;  // L <= 1: f = 1 + 1e-5
  j["layer_group_size"] = 2;   // the single layer is a tail layer; slopes do not care
  j.erase("head_dim");
  j["group_norm_size"] = 1;
  const struct {
    int heads;
    std::vector<double> log2_slopes;
  } cases[] = {
      {12, {-1, -2, -3, -4, -5, -6, -7, -8, -0.5, -1.5, -2.5, -3.5}},
      {6, {-2, -4, -6, -8, -1, -3}},
      {3, {-4, -8, -2}},
      {1, {-8}},
  };
  for (const auto& tc : cases) {
    j["num_attention_heads"] = tc.heads;
    j["num_key_value_heads"] = tc.heads;
    j["hidden_size"] = 16 * tc.heads;
    absl::StatusOr<ModelConfig> c = ParseModelConfig(j, "x");
    ASSERT_TRUE(c.ok()) << c.status();
    std::vector<float> x = c->LinearDecay(0);
    ASSERT_EQ(x.size(), tc.log2_slopes.size());
    for (size_t h = 0; h < x.size(); ++h) {
      EXPECT_FLOAT_EQ(x[h], static_cast<float>(std::exp2(tc.log2_slopes[h]) * 1.00001))
          << "heads " << tc.heads << " head " << h;
    }
  }
}

TEST(CountParameters, MiniMatchesPublishedTotals) {
  ParameterCounts n = CountParameters(Load(kMini));
  EXPECT_EQ(n.embedding, 2 * 157184LL * 2048);
  EXPECT_NEAR(n.total / 1e9, 16.4, 0.1);
  EXPECT_NEAR(n.active_non_embedding / 1e6, 957, 5);
  EXPECT_NEAR(n.active / 1e9, 1.6, 0.05);  // the model card's "1.6B activated"
  EXPECT_EQ(n.active, n.active_non_embedding + n.embedding);
}

TEST(CountParameters, FlashMatchesPublishedTotals) {
  ParameterCounts n = CountParameters(Load(kFlash));
  EXPECT_NEAR(n.total / 1e9, 104.2, 0.1);
  EXPECT_NEAR(n.active_non_embedding / 1e9, 6.1, 0.1);
  EXPECT_NEAR(n.active / 1e9, 7.4, 0.1);
}

TEST(CountParameters, TinyByHand) {
  ModelConfig c = Load(kTiny);
  const int64_t embed = 2 * 64 * 64;
  const int64_t norms = 2 * 64 + 2 * 16;                             // per layer
  const int64_t linear_attn = 3 * 64 * 64 + 64 * 64 + 64 * 64 + 64;  // qkv, dense, g_proj, g_norm
  const int64_t softmax_attn = (4 + 4) * 16 * 64 + 64 * 64;
  const int64_t dense_mlp = 3 * 128 * 64;
  const int64_t expert = 3 * 32 * 64;
  const int64_t moe = 8 * 64 + 8 + 8 * expert + expert;  // router, bias, routed, shared
  const int64_t total =
      embed + 4 * norms + 2 * linear_attn + 2 * softmax_attn + dense_mlp + 3 * moe + 64;
  ParameterCounts n = CountParameters(c);
  EXPECT_EQ(n.total, total);
  EXPECT_EQ(n.active, total - 3 * 6 * expert);
  c.tie_word_embeddings = true;
  EXPECT_EQ(CountParameters(c).embedding, 64 * 64);
  EXPECT_EQ(CountParameters(c).total, total - 64 * 64);
}

}  // namespace
}  // namespace tandem::model
