#include "kernels/core/context.h"

namespace tandem {

Context Context::Cpu(int num_threads) {
  Context ctx;
  ctx.device_ = Device::kCPU;
  ctx.pool_ = std::make_shared<ThreadPool>(num_threads);
  return ctx;
}

}  // namespace tandem
