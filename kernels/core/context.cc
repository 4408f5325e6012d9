// Context factories and the per-context resource slots GPU libraries keep their state in.
#include "kernels/core/context.h"

#include <map>
#include <mutex>

namespace tandem {

struct Context::Resources {
  std::mutex mu;
  std::map<std::string, std::shared_ptr<void>> slots;
};

Context Context::Cpu(int num_threads) {
  Context ctx;
  ctx.device_ = Device::kCPU;
  ctx.pool_ = std::make_shared<ThreadPool>(num_threads);
  ctx.resources_ = std::make_shared<Resources>();
  return ctx;
}

Context Context::Cuda(int device, void* stream, int num_threads) {
  Context ctx = Cpu(num_threads);
  ctx.device_ = Device::kCUDA;
  ctx.cuda_device_ = device;
  ctx.cuda_stream_ = stream;
  return ctx;
}

std::shared_ptr<void> Context::Resource(const std::string& key,
                                        const std::function<std::shared_ptr<void>()>& make) const {
  if (resources_ == nullptr) return make();  // a default-constructed context keeps nothing
  std::lock_guard<std::mutex> lock(resources_->mu);
  std::shared_ptr<void>& slot = resources_->slots[key];
  if (slot == nullptr) slot = make();
  return slot;
}

}  // namespace tandem
