// AdamW over ModelWeights, the LR schedule and the expert-bias update.
#include "trainer/optimizer.h"

#include <cmath>
#include <numbers>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kernels/adamw/adamw.h"
#include "kernels/core/status_macros.h"
#include "model/device_ops.h"
#include "trainer/collectives.h"

namespace tandem::trainer {
namespace {

constexpr char kEmbeddingName[] = "model.word_embeddings.weight";

struct NamedTensor {
  std::string name;
  Tensor tensor;  // a view sharing the weights' memory
};

std::vector<NamedTensor> Collect(model::ModelWeights& w) {
  std::vector<NamedTensor> out;
  w.ForEachParameter([&](const std::string& name, Tensor& t) { out.push_back({name, t}); });
  return out;
}

// GlobalGradNorm for gradients on either device: on the host exactly GlobalGradNorm; on the GPU
// the sums of squares are reduced there (a fixed fp64 tree, kernels::SumOfSquaresOnDevice), one
// call per ReductionRange of the trained gradients (a stack's expert views as one), and only a
// double per range comes back, added in range order. Deterministic, and the same on every rank
// for the same gradients; not the host's bits (the trees associate differently).
absl::StatusOr<double> GradNormOnAnyDevice(const Context& ctx, const model::ModelWeights& grads) {
  if (grads.embed.device() == Device::kCPU) return GlobalGradNorm(grads);
  std::vector<Tensor> trained;
  grads.ForEachParameter([&](const std::string& name, const Tensor& g) {
    if (IsGradientTrained(name)) trained.push_back(g);
  });
  double sum = 0;
  for (const ReductionRange& r : ReductionRanges(trained)) {
    TANDEM_ASSIGN_OR_RETURN(const double squares,
                            kernels::SumOfSquaresOnDevice(
                                ctx, Tensor::View(r.data, {r.n}, DType::kF32, Device::kCUDA)));
    sum += squares;
  }
  return std::sqrt(sum);
}

}  // namespace

absl::Status ValidateLrSchedule(const LrSchedule& s) {
  TANDEM_CHECK_ARG(s.lr > 0, "lr: expected > 0, got ", s.lr);
  TANDEM_CHECK_ARG(s.min_lr >= 0 && s.min_lr <= s.lr, "min_lr: expected in [0, lr], got ",
                   s.min_lr);
  TANDEM_CHECK_ARG(s.warmup_steps >= 0, "warmup_steps: expected >= 0, got ", s.warmup_steps);
  TANDEM_CHECK_ARG(s.total_steps >= 1, "total_steps: expected >= 1, got ", s.total_steps);
  return absl::OkStatus();
}

double LearningRate(const LrSchedule& s, int64_t step) {
  if (step < s.warmup_steps) {
    return s.lr * static_cast<double>(step + 1) / static_cast<double>(s.warmup_steps);
  }
  if (s.kind == LrScheduleKind::kConstant) return s.lr;
  const double span = static_cast<double>(std::max<int64_t>(1, s.total_steps - s.warmup_steps));
  const double p = std::min(1.0, static_cast<double>(step - s.warmup_steps) / span);
  return s.min_lr + (s.lr - s.min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * p));
}

bool DecaysWeight(const std::string& name, const Tensor& t, bool decay_embeddings) {
  if (t.rank() < 2 || !IsGradientTrained(name)) return false;  // norms, expert_bias
  if (name == kEmbeddingName) return decay_embeddings;
  return true;
}

bool IsGradientTrained(const std::string& name) { return !absl::EndsWith(name, "expert_bias"); }

double GlobalGradNorm(const model::ModelWeights& grads) {
  double sum = 0;
  grads.ForEachParameter([&](const std::string& name, const Tensor& g) {
    if (IsGradientTrained(name)) sum += kernels::SumOfSquares(g);
  });
  return std::sqrt(sum);
}

AdamW::AdamW(const model::ModelConfig& config, const AdamWOptions& options,
             const LrSchedule& schedule)
    : options_(options),
      schedule_(schedule),
      state_{0, model::AllocateWeights(config), model::AllocateWeights(config)} {}

absl::StatusOr<AdamW> AdamW::Create(const model::ModelConfig& config, const AdamWOptions& o,
                                    const LrSchedule& schedule) {
  TANDEM_CHECK_ARG(o.beta1 >= 0 && o.beta1 < 1, "beta1: expected in [0, 1), got ", o.beta1);
  TANDEM_CHECK_ARG(o.beta2 >= 0 && o.beta2 < 1, "beta2: expected in [0, 1), got ", o.beta2);
  TANDEM_CHECK_ARG(o.eps > 0, "eps: expected > 0, got ", o.eps);
  TANDEM_CHECK_ARG(o.weight_decay >= 0, "weight_decay: expected >= 0, got ", o.weight_decay);
  TANDEM_CHECK_ARG(o.max_grad_norm >= 0, "max_grad_norm: expected >= 0, got ", o.max_grad_norm);
  TANDEM_RETURN_IF_ERROR(ValidateLrSchedule(schedule));
  return AdamW(config, o, schedule);
}

absl::StatusOr<StepStats> AdamW::Step(const Context& ctx, model::ModelWeights& weights,
                                      model::ModelWeights& grads) {
  std::vector<NamedTensor> p = Collect(weights), g = Collect(grads), m = Collect(state_.m),
                           v = Collect(state_.v);
  TANDEM_CHECK_ARG(p.size() == m.size() && g.size() == m.size(), "weights/grads: expected ",
                   m.size(), " parameters, got ", p.size(), " / ", g.size());
  for (size_t i = 0; i < p.size(); ++i) {
    TANDEM_CHECK_ARG(p[i].name == m[i].name && g[i].name == m[i].name, "parameter ", i,
                     ": expected ", m[i].name, ", got ", p[i].name, " / ", g[i].name);
  }
  StepStats stats;
  stats.lr = LearningRate(schedule_, state_.step);
  TANDEM_ASSIGN_OR_RETURN(stats.grad_norm, GradNormOnAnyDevice(ctx, grads));
  if (!std::isfinite(stats.grad_norm)) {
    stats.skipped = true;
    return stats;
  }
  if (options_.max_grad_norm > 0 && stats.grad_norm > options_.max_grad_norm) {
    stats.clip_scale = options_.max_grad_norm / (stats.grad_norm + 1e-6);
    const float scale = static_cast<float>(stats.clip_scale);
    for (NamedTensor& t : g) {
      TANDEM_RETURN_IF_ERROR(model::internal::ScaleInPlace(ctx, t.tensor, scale));
    }
  }
  kernels::AdamWParams params;
  params.lr = static_cast<float>(stats.lr);
  params.beta1 = static_cast<float>(options_.beta1);
  params.beta2 = static_cast<float>(options_.beta2);
  params.eps = static_cast<float>(options_.eps);
  params.step = state_.step + 1;
  for (size_t i = 0; i < p.size(); ++i) {
    if (!IsGradientTrained(p[i].name)) continue;
    const bool decay = DecaysWeight(p[i].name, p[i].tensor, options_.decay_embeddings);
    params.weight_decay = decay ? static_cast<float>(options_.weight_decay) : 0.0f;
    absl::Status s =
        kernels::AdamWStep(ctx, params, p[i].tensor, g[i].tensor, m[i].tensor, v[i].tensor);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat(p[i].name, ": ", s.message()));
  }
  ++state_.step;
  return stats;
}

absl::Status UpdateExpertBias(Tensor& bias, std::span<const int64_t> load, double rate) {
  TANDEM_RETURN_IF_ERROR(
      ExpectTensor(bias, "expert_bias", DType::kF32, {static_cast<int64_t>(load.size())}));
  TANDEM_CHECK_ARG(rate >= 0, "rate: expected >= 0, got ", rate);
  const int64_t e_count = bias.numel();
  if (e_count == 0) return absl::OkStatus();
  double mean_load = 0;
  for (int64_t l : load) mean_load += static_cast<double>(l);
  mean_load /= static_cast<double>(e_count);
  float* b = bias.data<float>();
  double mean_bias = 0;
  for (int64_t e = 0; e < e_count; ++e) {
    const double diff = mean_load - static_cast<double>(load[e]);
    const double sign = diff > 0 ? 1.0 : (diff < 0 ? -1.0 : 0.0);
    b[e] = static_cast<float>(b[e] + sign * rate);
    mean_bias += b[e];
  }
  mean_bias /= static_cast<double>(e_count);
  for (int64_t e = 0; e < e_count; ++e) b[e] = static_cast<float>(b[e] - mean_bias);
  return absl::OkStatus();
}

absl::Status UpdateExpertBiases(const model::ModelConfig& config, model::ModelWeights& weights,
                                const std::vector<std::vector<int64_t>>& load, double rate) {
  TANDEM_CHECK_ARG(static_cast<int64_t>(load.size()) == config.num_hidden_layers,
                   "load: expected one entry per layer (", config.num_hidden_layers, "), got ",
                   load.size());
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    if (!config.IsMoeLayer(l)) continue;
    absl::Status s = UpdateExpertBias(weights.layers[l].expert_bias, load[l], rate);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat("layer ", l, ": ", s.message()));
  }
  return absl::OkStatus();
}

}  // namespace tandem::trainer
