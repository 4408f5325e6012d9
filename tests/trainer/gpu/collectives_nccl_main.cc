// Run under `mpirun -np P` with P GPUs (ctest: collectives_nccl_test, P = 2, label gpu): the checks
// of collectives_checks.h on the NCCL collective with every buffer in device memory — the same
// rank-ordered bits as the MPI collective's — plus host buffers through it (they go to MPI) and
// LocalRank. Exits 77 (ctest: skipped) when the machine has fewer GPUs than ranks.
#include <cuda_runtime_api.h>

#include <cstdio>

#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "model/hybrid_model_backward_weights.h"
#include "tests/trainer/collectives_checks.h"
#include "trainer/collectives.h"

namespace tandem::trainer::testing {
namespace {

constexpr int kSkipped = 77;

// Buffers in device memory: copied there, reduced there, copied back.
struct DevicePlace {
  template <class T>
  absl::Status AllReduceSum(Collective& c, std::vector<T>& x) const {
    T* d = nullptr;
    const size_t bytes = x.size() * sizeof(T);
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMalloc(reinterpret_cast<void**>(&d), bytes + 1));
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpy(d, x.data(), bytes, cudaMemcpyHostToDevice));
    absl::Status s = c.AllReduceSum(d, static_cast<int64_t>(x.size()));
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpy(x.data(), d, bytes, cudaMemcpyDeviceToHost));
    TANDEM_CUDA_RETURN_IF_ERROR(cudaFree(d));
    return s;
  }
  absl::Status Broadcast(Collective& c, std::string& bytes, int root) const {
    char* d = nullptr;
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMalloc(reinterpret_cast<void**>(&d), bytes.size()));
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpy(d, bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
    absl::Status s = c.Broadcast(d, static_cast<int64_t>(bytes.size()), root);
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpy(bytes.data(), d, bytes.size(), cudaMemcpyDeviceToHost));
    TANDEM_CUDA_RETURN_IF_ERROR(cudaFree(d));
    return s;
  }
  // Every gradient uploaded, reduced on the device (tensor by tensor), downloaded.
  absl::Status AllReduceGradients(Collective& c, const model::ModelConfig& config,
                                  model::ModelWeights& grads, int64_t bucket_elements) const {
    const Context ctx = Context::Cuda();
    TANDEM_ASSIGN_OR_RETURN(model::ModelWeights on_device,
                            model::CopyWeightsF32(ctx, config, grads, Device::kCUDA));
    TANDEM_RETURN_IF_ERROR(trainer::AllReduceGradients(c, on_device, bucket_elements));
    TANDEM_ASSIGN_OR_RETURN(grads, model::CopyWeightsF32(ctx, config, on_device, Device::kCPU));
    return absl::OkStatus();
  }
};

void CheckHostBuffersAndLocalRank(Collective& nccl) {
  std::vector<float> x = Input(2503, nccl.Rank());
  Check(nccl.AllReduceSum(x.data(), static_cast<int64_t>(x.size())).ok(), nccl.Rank(),
        "host buffer through the NCCL collective");
  Check(static_cast<bool>(BitwiseEqual(x, Expected(2503, nccl.Size()))), nccl.Rank(),
        "host buffer: rank-ordered sum");
  absl::StatusOr<int> local = LocalRank(nccl);
  Check(local.ok() && *local == nccl.Rank(), nccl.Rank(), "LocalRank on one host == rank");
}

int Run(Collective& mpi) {
  int gpus = 0;
  if (cudaGetDeviceCount(&gpus) != cudaSuccess || gpus < mpi.Size()) {
    if (mpi.Rank() == 0) std::printf("skipped: %d GPUs for %d ranks\n", gpus, mpi.Size());
    return kSkipped;
  }
  absl::StatusOr<int> local = LocalRank(mpi);
  Check(local.ok(), mpi.Rank(), "LocalRank");
  if (!local.ok() || cudaSetDevice(*local) != cudaSuccess) return 1;
  const DevicePlace device;
  for (int64_t chunk : {int64_t{1000}, int64_t{1} << 22}) {  // many rounds, then one
    auto nccl = MakeNcclCollective(mpi, nullptr, {.chunk_elements = chunk});
    Check(nccl.ok(), mpi.Rank(), "MakeNcclCollective: " + nccl.status().ToString());
    if (!nccl.ok()) return 1;
    CheckFloatSums(**nccl, device);
    CheckIntsBroadcastBarrier(**nccl, device);
    CheckGradients(**nccl, device);
    CheckHostBuffersAndLocalRank(**nccl);
  }
  return failures ? 1 : 0;
}

}  // namespace
}  // namespace tandem::trainer::testing

int main() {
  using namespace tandem::trainer;
  auto mpi = MakeMpiCollective();
  if (!mpi.ok()) {
    std::fprintf(stderr, "MakeMpiCollective: %s\n", mpi.status().ToString().c_str());
    return 1;
  }
  const int rc = tandem::trainer::testing::Run(**mpi);
  std::printf("rank %d of %d: %s\n", (*mpi)->Rank(), (*mpi)->Size(),
              rc == 0 ? "ok" : (rc == 77 ? "skipped" : "FAILED"));
  return rc;
}
