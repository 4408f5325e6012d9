// CUDA routed experts: not implemented yet (the API in moe_experts_cuda.h is fixed).
#include "absl/status/status.h"
#include "kernels/moe_experts/moe_experts_cuda.h"

namespace tandem::kernels::cuda {

absl::Status MoeExpertsFwd(const Context&, const Tensor&, const Tensor&, const Tensor&,
                           const MoeExpertsWeights&, Tensor&, MoeExpertsActivations*) {
  return absl::UnimplementedError("cuda::MoeExpertsFwd: not implemented yet");
}

absl::Status MoeExpertsBwd(const Context&, const Tensor&, const Tensor&, const Tensor&,
                           const MoeExpertsWeights&, const MoeExpertsActivations&, const Tensor&,
                           Tensor&, Tensor&, MoeExpertsWeights&) {
  return absl::UnimplementedError("cuda::MoeExpertsBwd: not implemented yet");
}

}  // namespace tandem::kernels::cuda
