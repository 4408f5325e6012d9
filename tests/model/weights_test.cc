// ModelWeights: HF names and shapes, deterministic seeded init, checkpoint save → load round trips
// (f32 bitwise, bf16 = RoundToBf16, sharded), and load errors that name the file and tensor.
#include "model/weights.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/core/bf16.h"
#include "model/safetensors.h"
#include "tests/testing/compare.h"

namespace tandem::model {
namespace {

using testing::BitwiseEqual;
using testing::Floats;
using ::testing::HasSubstr;

ModelConfig Tiny() {
  absl::StatusOr<ModelConfig> c = LoadModelConfig("configs/models/tiny-hybrid.json");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/weights_test/" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

std::map<std::string, Tensor> Params(ModelWeights& w) {
  std::map<std::string, Tensor> out;
  w.ForEachParameter([&](const std::string& name, Tensor& t) { out[name] = t; });
  return out;
}

// Element-wise bitwise comparison of every parameter; `expect` maps an original value to the
// expected loaded one.
void ExpectSameParams(ModelWeights& a, ModelWeights& b,
                      const std::function<float(const std::string&, float)>& expect) {
  std::map<std::string, Tensor> pa = Params(a), pb = Params(b);
  ASSERT_EQ(pa.size(), pb.size());
  for (auto& [name, t] : pa) {
    ASSERT_EQ(pb.count(name), 1u) << name;
    const Tensor& u = pb[name];
    ASSERT_EQ(t.shape(), u.shape()) << name;
    std::vector<float> want(t.numel());
    for (int64_t i = 0; i < t.numel(); ++i) want[i] = expect(name, t.data<float>()[i]);
    ASSERT_TRUE(BitwiseEqual(Floats(u), want, u.shape())) << name;
  }
}

TEST(Weights, NamesAndShapesFollowTheHfLayout) {
  ModelConfig c = Tiny();
  ModelWeights w = AllocateWeights(c);
  std::vector<std::string> names;
  std::map<std::string, Shape> shapes;
  int64_t params = 0;
  w.ForEachParameter([&](const std::string& name, const Tensor& t) {
    names.push_back(name);
    shapes[name] = t.shape();
    params += t.numel();
  });
  EXPECT_EQ(params, CountParameters(c).total);
  EXPECT_EQ(names.front(), "model.word_embeddings.weight");
  EXPECT_EQ(names.back(), "lm_head.weight");
  // Layer 0: linear attention + dense MLP.
  const std::vector<std::string> layer0(names.begin() + 1, names.begin() + 13);
  EXPECT_EQ(layer0, (std::vector<std::string>{
                        "model.layers.0.input_layernorm.weight",
                        "model.layers.0.attention.query_key_value.weight",
                        "model.layers.0.attention.query_layernorm.weight",
                        "model.layers.0.attention.key_layernorm.weight",
                        "model.layers.0.attention.g_proj.weight",
                        "model.layers.0.attention.g_norm.weight",
                        "model.layers.0.attention.dense.weight",
                        "model.layers.0.post_attention_layernorm.weight",
                        "model.layers.0.mlp.gate_proj.weight",
                        "model.layers.0.mlp.up_proj.weight",
                        "model.layers.0.mlp.down_proj.weight",
                        "model.layers.1.input_layernorm.weight",
                    }));
  EXPECT_EQ(shapes["model.layers.0.attention.query_key_value.weight"], (Shape{192, 64}));
  EXPECT_EQ(shapes["model.layers.1.attention.query_key_value.weight"], (Shape{128, 64}));  // GQA
  EXPECT_EQ(shapes["model.layers.0.attention.g_norm.weight"], (Shape{64}));
  EXPECT_EQ(shapes.count("model.layers.1.attention.g_proj.weight"), 0u);  // softmax layer
  EXPECT_EQ(shapes["model.layers.1.mlp.gate.weight"], (Shape{8, 64}));
  EXPECT_EQ(shapes["model.layers.1.mlp.gate.expert_bias"], (Shape{8}));
  EXPECT_EQ(shapes["model.layers.3.mlp.experts.7.gate_proj.weight"], (Shape{32, 64}));
  EXPECT_EQ(shapes["model.layers.3.mlp.experts.7.down_proj.weight"], (Shape{64, 32}));
  EXPECT_EQ(shapes["model.layers.2.mlp.shared_experts.up_proj.weight"], (Shape{32, 64}));
  EXPECT_EQ(shapes.count("model.layers.1.mlp.gate_proj.weight"), 0u);
  EXPECT_EQ(w.layers[1].experts.gate.shape(), (Shape{8, 32, 64}));

  c.tie_word_embeddings = true;
  ModelWeights tied = AllocateWeights(c);
  EXPECT_EQ(tied.lm_head.raw_data(), tied.embed.raw_data());
  EXPECT_EQ(Params(tied).count("lm_head.weight"), 0u);
}

TEST(Weights, InitIsDeterministicAndKeyedByName) {
  ModelConfig c = Tiny();
  ModelWeights a = AllocateWeights(c), b = AllocateWeights(c), other = AllocateWeights(c);
  InitWeights(c, 7, a);
  InitWeights(c, 7, b);
  InitWeights(c, 8, other);
  ExpectSameParams(a, b, [](const std::string&, float v) { return v; });
  EXPECT_FALSE(BitwiseEqual(Floats(a.embed), Floats(other.embed)));
  EXPECT_FALSE(BitwiseEqual(Floats(a.layers[2].experts.up), Floats(other.layers[2].experts.up)));

  // Values depend on (seed, name, index) only: a 2-layer model shares the tensors of the 4-layer
  // one.
  ModelConfig small = c;
  small.num_hidden_layers = 2;
  small.layer_types.resize(2);
  ModelWeights s = AllocateWeights(small);
  InitWeights(small, 7, s);
  EXPECT_TRUE(BitwiseEqual(Floats(s.embed), Floats(a.embed)));
  EXPECT_TRUE(BitwiseEqual(Floats(s.layers[1].experts.down), Floats(a.layers[1].experts.down)));

  // Every expert gets its own stream, written through the per-expert views.
  std::map<std::string, Tensor> pa = Params(a);
  EXPECT_FALSE(BitwiseEqual(Floats(pa["model.layers.1.mlp.experts.0.gate_proj.weight"]),
                            Floats(pa["model.layers.1.mlp.experts.1.gate_proj.weight"])));
  EXPECT_EQ(pa["model.layers.1.mlp.experts.1.gate_proj.weight"].raw_data(),
            a.layers[1].experts.gate.data<float>() + 32 * 64);
}

TEST(Weights, InitDistribution) {
  ModelConfig c = Tiny();
  ModelWeights w = AllocateWeights(c);
  InitWeights(c, 0, w);
  double sum = 0, sum_sq = 0;
  int64_t n = 0;
  w.ForEachParameter([&](const std::string& name, const Tensor& t) {
    const float* p = t.data<float>();
    if (name.find("expert_bias") != std::string::npos) {
      for (int64_t i = 0; i < t.numel(); ++i) ASSERT_EQ(p[i], 0.0f) << name;
    } else if (t.rank() == 1) {
      for (int64_t i = 0; i < t.numel(); ++i) ASSERT_EQ(p[i], 1.0f) << name;
    } else {
      for (int64_t i = 0; i < t.numel(); ++i) {
        sum += p[i];
        sum_sq += double{p[i]} * p[i];
      }
      n += t.numel();
    }
  });
  const double mean = sum / n, std = std::sqrt(sum_sq / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 3 * 0.02 / std::sqrt(double(n)) * 2);
  EXPECT_NEAR(std, 0.02, 0.02 * 0.01);
}

// Golden bits of seed 0: a change to the generator (or a libm that disagrees) shows up here.
TEST(Weights, InitGoldenValues) {
  ModelConfig c = Tiny();
  ModelWeights w = AllocateWeights(c);
  InitWeights(c, 0, w);
  std::map<std::string, Tensor> p = Params(w);
  const std::map<std::string, std::vector<uint32_t>> golden = {
      {"model.word_embeddings.weight", {0xbcda0ac8, 0xbcea04d5, 0x3ca3e4b1, 0x3c5310a3}},
      {"model.layers.3.mlp.experts.5.up_proj.weight",
       {0xbcc69ddc, 0xbbca8001, 0x3cf0b10c, 0x3ce53ff5}},
  };
  for (const auto& [name, bits] : golden) {
    std::vector<uint32_t> got(4);
    std::memcpy(got.data(), p[name].data<float>(), 16);
    EXPECT_EQ(got, bits) << name;
  }
}

TEST(Weights, SaveLoadRoundTripF32IsBitwise) {
  ModelConfig c = Tiny();
  ModelWeights w = AllocateWeights(c);
  InitWeights(c, 3, w);
  const std::string dir = FreshDir("f32");
  ASSERT_TRUE(SaveCheckpoint(c, w, dir, DType::kF32).ok());
  EXPECT_TRUE(std::filesystem::exists(dir + "/model.safetensors"));
  absl::StatusOr<ModelConfig> saved = LoadModelConfig(dir);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(ModelConfigToJson(*saved), ModelConfigToJson(c));
  absl::StatusOr<ModelWeights> back = LoadWeights(*saved, dir);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameParams(w, *back, [](const std::string&, float v) { return v; });
}

TEST(Weights, SaveLoadRoundTripBf16AndSharded) {
  ModelConfig c = Tiny();
  ModelWeights w = AllocateWeights(c);
  InitWeights(c, 4, w);
  for (LayerWeights& l : w.layers) {  // a non-trivial fp32 bias, which must survive exactly
    if (!l.expert_bias.defined()) continue;
    for (int64_t e = 0; e < l.expert_bias.numel(); ++e)
      l.expert_bias.data<float>()[e] = 0.1f * e + 1e-4f;
  }
  const std::string dir = FreshDir("bf16");
  ASSERT_TRUE(SaveCheckpoint(c, w, dir, DType::kBF16, /*max_shard_bytes=*/40000).ok());
  EXPECT_FALSE(std::filesystem::exists(dir + "/model.safetensors"));
  auto index = ReadSafetensorsIndex(dir + "/model.safetensors.index.json");
  ASSERT_TRUE(index.ok()) << index.status();
  std::set<std::string> shards;
  for (const auto& [name, file] : index->weight_map) shards.insert(file);
  EXPECT_GT(shards.size(), 2u);
  EXPECT_EQ(LoadModelConfig(dir)->dtype, "bfloat16");

  absl::StatusOr<ModelWeights> back = LoadWeights(c, dir);
  ASSERT_TRUE(back.ok()) << back.status();
  // The router and its bias are kept in fp32, like the released checkpoints.
  ExpectSameParams(w, *back, [](const std::string& name, float v) {
    return name.find("mlp.gate.") != std::string::npos ? v : RoundToBf16(v);
  });
  auto ckpt = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok());
  EXPECT_EQ(ckpt->FileOf("model.norm.weight")->Find("model.norm.weight")->dtype, DType::kBF16);
  EXPECT_EQ(
      ckpt->FileOf("model.layers.1.mlp.gate.weight")->Find("model.layers.1.mlp.gate.weight")->dtype,
      DType::kF32);
}

// Rewrites `dir`/model.safetensors with `edit` applied to the list of tensors.
void RewriteCheckpoint(const std::string& dir,
                       const std::function<void(std::vector<TensorToWrite>&)>& edit) {
  std::vector<TensorToWrite> tensors;
  {
    auto file = SafetensorsFile::Open(dir + "/model.safetensors");
    ASSERT_TRUE(file.ok()) << file.status();
    for (const std::string& name : (*file)->names()) {
      Tensor t = (*file)->Get(name)->Clone();
      tensors.push_back({name, t, t.dtype()});
    }
  }
  edit(tensors);
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", tensors).ok());
}

TEST(Weights, LoadErrorsNameFileAndTensor) {
  ModelConfig c = Tiny();
  ModelWeights w = AllocateWeights(c);
  InitWeights(c, 5, w);
  const std::string dir = FreshDir("errors");
  ASSERT_TRUE(SaveCheckpoint(c, w, dir, DType::kF32).ok());
  const std::string file = dir + "/model.safetensors";

  // Extra tensors (e.g. MTP layers) are ignored.
  RewriteCheckpoint(dir, [](std::vector<TensorToWrite>& t) {
    t.push_back({"model.mtp.0.eh_proj.weight", Tensor::Zeros({2, 2}, DType::kF32), DType::kF32});
  });
  EXPECT_TRUE(LoadWeights(c, dir).ok());

  RewriteCheckpoint(dir, [](std::vector<TensorToWrite>& t) {
    for (TensorToWrite& x : t) {
      if (x.name == "model.norm.weight") x.tensor = Tensor::Zeros({32}, DType::kF32);
    }
  });
  EXPECT_EQ(LoadWeights(c, dir).status().message(),
            file + ": tensor 'model.norm.weight': expected shape [64], got [32]");

  RewriteCheckpoint(dir, [](std::vector<TensorToWrite>& t) {
    for (TensorToWrite& x : t) {
      if (x.name == "model.norm.weight")
        x = {x.name, Tensor::Zeros({64}, DType::kI32), DType::kI32};
    }
  });
  EXPECT_THAT(std::string(LoadWeights(c, dir).status().message()),
              HasSubstr(file + ": tensor 'model.norm.weight': expected a floating-point tensor"));

  RewriteCheckpoint(dir, [](std::vector<TensorToWrite>& t) {
    std::erase_if(t, [](const TensorToWrite& x) {
      return x.name == "lm_head.weight" ||
             x.name == "model.layers.2.mlp.experts.3.up_proj.weight" ||
             x.name == "model.norm.weight";
    });
  });
  absl::Status missing = LoadWeights(c, dir).status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.message(), dir +
                                   ": 3 tensor(s) missing from the checkpoint: "
                                   "model.layers.2.mlp.experts.3.up_proj.weight, "
                                   "model.norm.weight, lm_head.weight");
  EXPECT_THAT(std::string(LoadWeights(c, FreshDir("absent")).status().message()),
              HasSubstr("model.safetensors: cannot open"));
}

TEST(Weights, SaveRejectsBadArguments) {
  ModelConfig c = Tiny();
  ModelWeights w = AllocateWeights(c);
  EXPECT_THAT(std::string(SaveCheckpoint(c, w, FreshDir("i32"), DType::kI32).message()),
              HasSubstr("dtype must be f32 or bf16"));
  ModelConfig bigger = c;
  bigger.vocab_size = 128;
  EXPECT_THAT(std::string(SaveCheckpoint(bigger, w, FreshDir("mismatch"), DType::kF32).message()),
              HasSubstr("parameters but the config describes"));
}

}  // namespace
}  // namespace tandem::model
