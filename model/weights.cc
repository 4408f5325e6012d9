// ModelWeights: allocation with the shapes of MODEL.md §1.4, the HF-named parameter walk, seeded
// initialisation from a counter-based generator, and checkpoint load/save through safetensors.
#include "model/weights.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/core/status_macros.h"
#include "model/safetensors.h"

namespace tandem::model {
namespace {

// Zero tensors for one device: on the GPU the projection matrices (not the router) are bf16, as
// UploadWeights casts them (device_weights.h); norms, router and expert bias stay f32.
struct Alloc {
  Device device = Device::kCPU;
  Tensor Vec(Shape shape) const { return Tensor::Zeros(std::move(shape), DType::kF32, device); }
  Tensor Mat(Shape shape) const {
    const DType dtype = device == Device::kCUDA ? DType::kBF16 : DType::kF32;
    return Tensor::Zeros(std::move(shape), dtype, device);
  }
};

LayerWeights AllocateLayer(const ModelConfig& c, int64_t l, const Alloc& z) {
  const int64_t dm = c.hidden_size, d = c.head_dim, hd = c.num_attention_heads * c.head_dim;
  LayerWeights w;
  w.input_layernorm = z.Vec({dm});
  w.post_attention_layernorm = z.Vec({dm});
  w.qkv = z.Mat({(c.num_attention_heads + 2 * c.kv_heads(l)) * d, dm});
  w.dense = z.Mat({dm, hd});
  w.query_layernorm = z.Vec({d});
  w.key_layernorm = z.Vec({d});
  if (c.layer_types[l] == LayerType::kLinear) {
    w.g_proj = z.Mat({hd, dm});
    w.g_norm = z.Vec({hd});
  }
  if (!c.IsMoeLayer(l)) {
    w.mlp_gate = z.Mat({c.intermediate_size, dm});
    w.mlp_up = z.Mat({c.intermediate_size, dm});
    w.mlp_down = z.Mat({dm, c.intermediate_size});
    return w;
  }
  const int64_t e = c.num_experts, ie = c.moe_intermediate_size, is = c.shared_intermediate_size();
  w.router = z.Vec({e, dm});  // fp32 router (contract rule 4)
  w.expert_bias = z.Vec({e});
  w.experts.gate = z.Mat({e, ie, dm});
  w.experts.up = z.Mat({e, ie, dm});
  w.experts.down = z.Mat({e, dm, ie});
  if (is > 0) {
    w.shared_gate = z.Mat({is, dm});
    w.shared_up = z.Mat({is, dm});
    w.shared_down = z.Mat({dm, is});
  }
  return w;
}

// Expert e's [rows, cols] slice of a stacked [E, rows, cols] tensor, as a view.
Tensor ExpertView(const Tensor& stack, int64_t e) {
  // Rows keeps the stack's storage, so the experts' views are known to share it.
  return stack.Rows(e, e + 1).Reshape({stack.dim(1), stack.dim(2)}).value();
}

// The one parameter walk behind both ForEachParameter overloads. Tensors that were not allocated
// (layer kinds without them) are skipped, so the walk follows the config the weights came from.
template <typename Weights, typename Fn>
void VisitParameters(Weights& w, const Fn& fn) {
  fn("model.word_embeddings.weight", w.embed);
  for (size_t i = 0; i < w.layers.size(); ++i) {
    auto& l = w.layers[i];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    fn(p + "input_layernorm.weight", l.input_layernorm);
    fn(p + "attention.query_key_value.weight", l.qkv);
    fn(p + "attention.query_layernorm.weight", l.query_layernorm);
    fn(p + "attention.key_layernorm.weight", l.key_layernorm);
    if (l.g_proj.defined()) {
      fn(p + "attention.g_proj.weight", l.g_proj);
      fn(p + "attention.g_norm.weight", l.g_norm);
    }
    fn(p + "attention.dense.weight", l.dense);
    fn(p + "post_attention_layernorm.weight", l.post_attention_layernorm);
    if (l.mlp_gate.defined()) {
      fn(p + "mlp.gate_proj.weight", l.mlp_gate);
      fn(p + "mlp.up_proj.weight", l.mlp_up);
      fn(p + "mlp.down_proj.weight", l.mlp_down);
    }
    if (l.router.defined()) {
      fn(p + "mlp.gate.weight", l.router);
      fn(p + "mlp.gate.expert_bias", l.expert_bias);
      for (int64_t e = 0; e < l.experts.gate.dim(0); ++e) {
        const std::string x = absl::StrCat(p, "mlp.experts.", e, ".");
        Tensor gate = ExpertView(l.experts.gate, e), up = ExpertView(l.experts.up, e),
               down = ExpertView(l.experts.down, e);
        fn(x + "gate_proj.weight", gate);
        fn(x + "up_proj.weight", up);
        fn(x + "down_proj.weight", down);
      }
    }
    if (l.shared_gate.defined()) {
      fn(p + "mlp.shared_experts.gate_proj.weight", l.shared_gate);
      fn(p + "mlp.shared_experts.up_proj.weight", l.shared_up);
      fn(p + "mlp.shared_experts.down_proj.weight", l.shared_down);
    }
  }
  fn("model.norm.weight", w.final_norm);
  if (w.lm_head.defined() && w.lm_head.raw_data() != w.embed.raw_data()) {
    fn("lm_head.weight", w.lm_head);
  }
}

// splitmix64's output function; mixing key + n·γ gives element n of the stream seeded with key.
uint64_t Mix(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
constexpr uint64_t kGamma = 0x9e3779b97f4a7c15ULL;

uint64_t NameKey(uint64_t seed, const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a of the name
  for (unsigned char ch : name) h = (h ^ ch) * 0x100000001b3ULL;
  return Mix(seed * kGamma + Mix(h + kGamma));
}

// Elements [begin, end) of N(0, std²) for tensor key `key`: Box–Muller on the pair (i/2), cos for
// even i and sin for odd i, in double, rounded once to float.
void FillNormal(uint64_t key, double std, int64_t begin, int64_t end, float* out) {
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  for (int64_t i = begin; i < end; ++i) {
    const uint64_t pair = static_cast<uint64_t>(i) / 2;
    const uint64_t a = Mix(key + (2 * pair + 1) * kGamma), b = Mix(key + (2 * pair + 2) * kGamma);
    const double u1 = static_cast<double>((a >> 11) + 1) * 0x1p-53;  // (0, 1]
    const double u2 = static_cast<double>(b >> 11) * 0x1p-53;        // [0, 1)
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double z = (i % 2 == 0) ? r * std::cos(kTwoPi * u2) : r * std::sin(kTwoPi * u2);
    out[i] = static_cast<float>(std * z);
  }
}

// Every element depends only on (key, index), so splitting over threads cannot change the bits.
void FillNormalParallel(uint64_t key, double std, Tensor& t) {
  const int64_t n = t.numel();
  const int64_t threads =
      std::clamp<int64_t>(n >> 20, 1, std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (int64_t k = 1; k < threads; ++k) {
    pool.emplace_back(FillNormal, key, std, n * k / threads, n * (k + 1) / threads,
                      t.data<float>());
  }
  FillNormal(key, std, 0, n / threads, t.data<float>());
  for (std::thread& th : pool) th.join();
}

}  // namespace

void ModelWeights::ForEachParameter(const std::function<void(const std::string&, Tensor&)>& fn) {
  VisitParameters(*this, fn);
}

void ModelWeights::ForEachParameter(
    const std::function<void(const std::string&, const Tensor&)>& fn) const {
  VisitParameters(*this, fn);
}

ModelWeights AllocateWeights(const ModelConfig& config, Device device) {
  const Alloc z{device};
  ModelWeights w;
  w.embed = z.Mat({config.vocab_size, config.hidden_size});
  w.final_norm = z.Vec({config.hidden_size});
  w.lm_head = config.tie_word_embeddings ? w.embed : z.Mat({config.vocab_size, config.hidden_size});
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    w.layers.push_back(AllocateLayer(config, l, z));
  }
  return w;
}

void InitWeights(const ModelConfig& config, uint64_t seed, ModelWeights& weights) {
  weights.ForEachParameter([&](const std::string& name, Tensor& t) {
    if (absl::EndsWith(name, "expert_bias")) {
      std::fill_n(t.data<float>(), t.numel(), 0.0f);
    } else if (t.rank() == 1) {  // RMSNorm weights
      std::fill_n(t.data<float>(), t.numel(), 1.0f);
    } else {
      FillNormalParallel(NameKey(seed, name), 0.02, t);
    }
  });
}

absl::StatusOr<ModelWeights> LoadWeights(const ModelConfig& config, const std::string& dir) {
  TANDEM_ASSIGN_OR_RETURN(SafetensorsCheckpoint ckpt, SafetensorsCheckpoint::Open(dir));
  ModelWeights w = AllocateWeights(config);
  std::vector<std::string> missing;
  absl::Status status;
  w.ForEachParameter([&](const std::string& name, Tensor& t) {
    if (!status.ok()) return;
    const SafetensorsFile* file = ckpt.FileOf(name);
    if (file == nullptr) {
      missing.push_back(name);
      return;
    }
    const SafetensorsEntry* e = file->Find(name);
    if (e->shape != t.shape()) {
      status = absl::InvalidArgumentError(absl::StrCat(file->path(), ": tensor '", name,
                                                       "': expected shape ", ShapeString(t.shape()),
                                                       ", got ", ShapeString(e->shape)));
      return;
    }
    status = file->ReadAsF32(name, t.data<float>());
  });
  TANDEM_RETURN_IF_ERROR(status);
  if (!missing.empty()) {
    const size_t shown = std::min<size_t>(missing.size(), 8);
    return absl::NotFoundError(
        absl::StrCat(dir, ": ", missing.size(), " tensor(s) missing from the checkpoint: ",
                     absl::StrJoin(missing.begin(), missing.begin() + shown, ", "),
                     missing.size() > shown ? ", ..." : ""));
  }
  return w;
}

absl::Status SaveCheckpoint(const ModelConfig& config, const ModelWeights& weights,
                            const std::string& dir, DType dtype, int64_t max_shard_bytes) {
  if (dtype != DType::kF32 && dtype != DType::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("SaveCheckpoint: dtype must be f32 or bf16, got ", DTypeName(dtype)));
  }
  std::vector<TensorToWrite> tensors;
  int64_t params = 0;
  weights.ForEachParameter([&](const std::string& name, const Tensor& t) {
    // The router and its bias stay fp32 as in the released checkpoints (the router runs in fp32).
    const bool keep_f32 = absl::StrContains(name, "mlp.gate.");
    tensors.push_back({name, t, keep_f32 ? DType::kF32 : dtype});
    params += t.numel();
  });
  if (params != CountParameters(config).total) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": the weights hold ", params,
                                                   " parameters but the config describes ",
                                                   CountParameters(config).total));
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": cannot create: ", ec.message()));
  nlohmann::json j = ModelConfigToJson(config);
  j["torch_dtype"] = dtype == DType::kF32 ? "float32" : "bfloat16";
  TANDEM_RETURN_IF_ERROR(WriteFileAtomically(dir + "/config.json", j.dump(2) + "\n"));
  return WriteSafetensorsCheckpoint(dir, tensors, max_shard_bytes);
}

}  // namespace tandem::model
