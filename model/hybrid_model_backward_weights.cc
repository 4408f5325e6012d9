// Gradients, master copies and the master → compute cast (hybrid_model_backward_weights.h). The
// weights are walked by their storage (expert stacks whole, a tied lm_head once through embed),
// so every copy and cast is one call per stored tensor.
#include "model/hybrid_model_backward_weights.h"

#include <cstring>
#include <functional>
#include <new>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "model/device_ops.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/core/cuda_util.h"
#endif

namespace tandem::model {
namespace {

bool Tied(const ModelWeights& w) {
  return w.lm_head.defined() && w.lm_head.raw_data() == w.embed.raw_data();
}

// fn(name, a, b) for every stored tensor of `a` and the same field of `b` (a tied lm_head is
// visited through embed only). Fields undefined in `a` are skipped.
absl::Status ForEachStoragePair(
    const ModelWeights& a, ModelWeights& b,
    const std::function<absl::Status(const std::string&, const Tensor&, Tensor&)>& fn) {
  TANDEM_CHECK_ARG(a.layers.size() == b.layers.size(), "weights: ", a.layers.size(), " vs ",
                   b.layers.size(), " layers");
  const auto visit = [&](const std::string& name, const Tensor& x, Tensor& y) {
    return x.defined() ? fn(name, x, y) : absl::OkStatus();
  };
  TANDEM_RETURN_IF_ERROR(visit("embed", a.embed, b.embed));
  for (size_t l = 0; l < a.layers.size(); ++l) {
    const LayerWeights& x = a.layers[l];
    LayerWeights& y = b.layers[l];
    const std::string p = absl::StrCat("layer ", l, " ");
    const std::pair<const Tensor*, Tensor*> fields[] = {
        {&x.input_layernorm, &y.input_layernorm},
        {&x.post_attention_layernorm, &y.post_attention_layernorm},
        {&x.qkv, &y.qkv},
        {&x.dense, &y.dense},
        {&x.query_layernorm, &y.query_layernorm},
        {&x.key_layernorm, &y.key_layernorm},
        {&x.g_proj, &y.g_proj},
        {&x.g_norm, &y.g_norm},
        {&x.mlp_gate, &y.mlp_gate},
        {&x.mlp_up, &y.mlp_up},
        {&x.mlp_down, &y.mlp_down},
        {&x.router, &y.router},
        {&x.expert_bias, &y.expert_bias},
        {&x.experts.gate, &y.experts.gate},
        {&x.experts.up, &y.experts.up},
        {&x.experts.down, &y.experts.down},
        {&x.shared_gate, &y.shared_gate},
        {&x.shared_up, &y.shared_up},
        {&x.shared_down, &y.shared_down},
    };
    for (size_t f = 0; f < std::size(fields); ++f) {
      TANDEM_RETURN_IF_ERROR(
          visit(absl::StrCat(p, "field ", f), *fields[f].first, *fields[f].second));
    }
  }
  TANDEM_RETURN_IF_ERROR(visit("final_norm", a.final_norm, b.final_norm));
  if (!Tied(a)) TANDEM_RETURN_IF_ERROR(visit("lm_head", a.lm_head, b.lm_head));
  return absl::OkStatus();
}

// dst = src (f32, same shape, any devices).
absl::Status CopyF32(const Context& ctx, const Tensor& src, Tensor& dst) {
  if (src.device() == Device::kCPU && dst.device() == Device::kCPU) {
    std::memcpy(dst.raw_data(), src.raw_data(), src.nbytes());
    return absl::OkStatus();
  }
#ifdef TANDEM_HAVE_CUDA
  return kernels::cuda::CopyTensor(ctx, src, dst);
#else
  return absl::FailedPreconditionError(
      "weights: a GPU copy, but Tandem was built without CUDA (TANDEM_CUDA=OFF)");
#endif
}

// An empty ModelWeights with `like`'s layer count.
ModelWeights WithLayersOf(const ModelWeights& like) {
  ModelWeights w;
  w.layers.resize(like.layers.size());
  return w;
}

}  // namespace

absl::StatusOr<ModelWeights> CopyWeightsF32(const Context& ctx, const ModelConfig& config,
                                            const ModelWeights& weights, Device device) {
  TANDEM_CHECK_ARG(static_cast<int64_t>(weights.layers.size()) == config.num_hidden_layers,
                   "weights: ", weights.layers.size(), " layers for a config of ",
                   config.num_hidden_layers);
  ModelWeights out = WithLayersOf(weights);
  try {
    TANDEM_RETURN_IF_ERROR(ForEachStoragePair(
        weights, out, [&](const std::string& name, const Tensor& src, Tensor& dst) {
          TANDEM_CHECK_ARG(src.dtype() == DType::kF32, "weights: ", name, " must be f32, got ",
                           DTypeName(src.dtype()));
          dst = Tensor::Empty(src.shape(), DType::kF32, device);
          return CopyF32(ctx, src, dst);
        }));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("weights: not enough ", DeviceName(device), " memory for an f32 copy"));
  }
  out.lm_head = Tied(weights) ? out.embed : out.lm_head;
#ifdef TANDEM_HAVE_CUDA
  if (device == Device::kCUDA || weights.embed.device() == Device::kCUDA) {
    TANDEM_RETURN_IF_ERROR(kernels::cuda::Synchronize(ctx));
  }
#endif
  return out;
}

absl::StatusOr<ModelWeights> AllocateGradients(const Context& ctx, const ModelConfig& config) {
  ModelWeights host = AllocateWeights(config);  // zeros: the shapes and the tying
  if (ctx.device() == Device::kCPU) return host;
  return CopyWeightsF32(ctx, config, host, ctx.device());
}

absl::Status CastMasterInto(const Context& ctx, const ModelWeights& master, ModelWeights& compute) {
  return ForEachStoragePair(
      master, compute, [&](const std::string& name, const Tensor& src, Tensor& dst) {
        TANDEM_CHECK_ARG(dst.defined() && src.shape() == dst.shape() &&
                             src.device() == ctx.device() && dst.device() == ctx.device(),
                         "weights: ", name, ": master ", ShapeString(src.shape()), " on ",
                         DeviceName(src.device()), ", compute ", ShapeString(dst.shape()), " on ",
                         DeviceName(dst.device()), ", context on ", DeviceName(ctx.device()));
        return internal::CastInto(ctx, src, dst);
      });
}

}  // namespace tandem::model
