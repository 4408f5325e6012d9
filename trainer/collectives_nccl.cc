// The NCCL Collective for GPU ranks. Device buffers: the float all-reduce is the MPI collective's
// reduce-scatter by hand on the GPU — per chunk, grouped ncclSend/ncclRecv hand rank r slice r
// of every rank's buffer, SumInRankOrder adds the P contributions in rank order, and
// ncclAllGather returns the summed slices to everyone — so the sums never depend on NCCL's
// algorithms or topology and equal the MPI collective's bits. Integer sums (exact) and broadcasts
// go to NCCL directly. Host buffers, Barrier and the bootstrap go through the host collective.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "trainer/collectives.h"
#include "trainer/rank_ordered_sum.h"

namespace tandem::trainer {
namespace {

absl::Status NcclError(ncclResult_t rc, ncclComm_t comm, const char* call, const char* file,
                       int line) {
  std::string detail = ncclGetErrorString(rc);
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && last[0] != '\0') absl::StrAppend(&detail, " (", last, ")");
  return absl::InternalError(absl::StrCat(file, ":", line, ": ", call, " failed: ", detail));
}

// Turns an NCCL return code into an Internal status naming the call, its file:line and NCCL's
// last error message for communicator `comm_`.
#define TANDEM_NCCL_CALL(expr)                                             \
  do {                                                                     \
    const ncclResult_t tandem_nccl_rc_ = (expr);                           \
    if (tandem_nccl_rc_ != ncclSuccess)                                    \
      return NcclError(tandem_nccl_rc_, comm_, #expr, __FILE__, __LINE__); \
  } while (0)

// True for device (or managed) memory; host memory of any kind is false.
bool IsDeviceMemory(const void* p) {
  cudaPointerAttributes attributes;
  if (cudaPointerGetAttributes(&attributes, p) != cudaSuccess) {
    (void)cudaGetLastError();  // an unregistered host pointer on old runtimes
    return false;
  }
  return attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged;
}

class NcclCollective final : public Collective {
 public:
  NcclCollective(Collective& host, ncclComm_t comm, cudaStream_t stream,
                 const NcclCollectiveOptions& options)
      : host_(host), comm_(comm), stream_(stream), options_(options) {}
  ~NcclCollective() override {
    cudaFree(scratch_);
    if (!aborted_) ncclCommDestroy(comm_);  // an aborted communicator is already gone
  }

  int Rank() const override { return host_.Rank(); }
  int Size() const override { return host_.Size(); }

  absl::Status AllReduceSum(float* data, int64_t n) override {
    TANDEM_CHECK_ARG(n >= 0, "n: expected >= 0, got ", n);
    if (n == 0 || !IsDeviceMemory(data)) return host_.AllReduceSum(data, n);
    for (int64_t begin = 0; begin < n; begin += options_.chunk_elements) {
      TANDEM_RETURN_IF_ERROR(
          AllReduceChunk(data + begin, std::min(options_.chunk_elements, n - begin)));
    }
    return Finish();
  }

  absl::Status AllReduceSum(int64_t* data, int64_t n) override {
    TANDEM_CHECK_ARG(n >= 0, "n: expected >= 0, got ", n);
    if (n == 0 || !IsDeviceMemory(data)) return host_.AllReduceSum(data, n);
    TANDEM_NCCL_CALL(
        ncclAllReduce(data, data, static_cast<size_t>(n), ncclInt64, ncclSum, comm_, stream_));
    return Finish();
  }

  absl::Status Broadcast(void* data, int64_t bytes, int root) override {
    TANDEM_CHECK_ARG(root >= 0 && root < Size(), "root: expected in [0, ", Size(), "), got ", root);
    TANDEM_CHECK_ARG(bytes >= 0, "bytes: expected >= 0, got ", bytes);
    if (bytes == 0 || !IsDeviceMemory(data)) return host_.Broadcast(data, bytes, root);
    TANDEM_NCCL_CALL(
        ncclBroadcast(data, data, static_cast<size_t>(bytes), ncclUint8, root, comm_, stream_));
    return Finish();
  }

  absl::Status Barrier() override { return host_.Barrier(); }
  bool AcceptsDeviceMemory() const override { return true; }

  // gathered [P, s] + summed [s] + all-gathered [P, s] floats.
  absl::Status AllocateScratch() {
    const int64_t s = SliceElements();
    TANDEM_CUDA_RETURN_IF_ERROR(
        cudaMalloc(&scratch_, static_cast<size_t>((2 * Size() + 1) * s) * sizeof(float)));
    return absl::OkStatus();
  }
  // Ends the communicator after a failure (so no rank is left inside an NCCL call).
  void Abort() {
    if (!aborted_) ncclCommAbort(comm_);
    aborted_ = true;
  }

 private:
  // Slice length of a full chunk: every rank owns ceil(chunk / P) elements of it.
  int64_t SliceElements() const { return (options_.chunk_elements + Size() - 1) / Size(); }

  // One chunk of c elements: slice r = [r·s, r·s + count(r)) with s = ceil(c / P) is summed by
  // rank r; the all-gathered [P, s] buffer then holds the chunk's c sums at their own offsets.
  absl::Status AllReduceChunk(float* data, int64_t c) {
    const int p = Size(), me = Rank();
    const int64_t s = (c + p - 1) / p;
    auto count = [&](int r) { return std::clamp<int64_t>(c - r * s, 0, s); };
    const int64_t mine = count(me);
    float* gathered = scratch_;                      // [P, s]: slice `me` of every rank
    float* summed = gathered + p * SliceElements();  // [s]
    float* all = summed + SliceElements();           // [P, s]
    TANDEM_RETURN_IF_ERROR(ExchangeSlices(data, gathered, s, mine, count));
    if (mine > 0) {
      TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(gathered + me * s, data + me * s,
                                                  mine * sizeof(float), cudaMemcpyDeviceToDevice,
                                                  stream_));
    }
    TANDEM_RETURN_IF_ERROR(SumInRankOrder(gathered, p, s, mine, summed, stream_));
    TANDEM_NCCL_CALL(ncclAllGather(summed, all, static_cast<size_t>(s), ncclFloat, comm_, stream_));
    TANDEM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(data, all, c * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
    return absl::OkStatus();
  }

  // The all-to-all of slices as one NCCL group of point-to-point calls (the group is always
  // closed, also after a failed call inside it).
  template <class Count>
  absl::Status ExchangeSlices(const float* data, float* gathered, int64_t s, int64_t mine,
                              Count count) {
    TANDEM_NCCL_CALL(ncclGroupStart());
    ncclResult_t first = ncclSuccess;
    for (int r = 0; r < Size() && first == ncclSuccess; ++r) {
      if (r == Rank()) continue;
      if (count(r) > 0) {
        first = ncclSend(data + r * s, static_cast<size_t>(count(r)), ncclFloat, r, comm_, stream_);
      }
      if (first == ncclSuccess && mine > 0) {
        first = ncclRecv(gathered + r * s, static_cast<size_t>(mine), ncclFloat, r, comm_, stream_);
      }
    }
    const ncclResult_t end = ncclGroupEnd();
    TANDEM_NCCL_CALL(first);
    TANDEM_NCCL_CALL(end);
    return absl::OkStatus();
  }

  // Device results are complete when a call returns. The stream is polled rather than waited
  // on, so that an NCCL error (a peer gone, a network failure) ends the wait: the communicator is
  // then aborted and the error returned instead of blocking forever.
  absl::Status Finish() {
    for (;;) {
      const cudaError_t done = cudaStreamQuery(stream_);
      if (done == cudaSuccess) break;
      if (done != cudaErrorNotReady) TANDEM_CUDA_RETURN_IF_ERROR(done);
      ncclResult_t async = ncclSuccess;
      const ncclResult_t queried = ncclCommGetAsyncError(comm_, &async);
      if (queried != ncclSuccess || (async != ncclSuccess && async != ncclInProgress)) {
        absl::Status error = NcclError(queried != ncclSuccess ? queried : async, comm_,
                                       "NCCL operation", __FILE__, __LINE__);
        Abort();
        return error;
      }
      std::this_thread::yield();
    }
    return absl::OkStatus();
  }

  Collective& host_;
  ncclComm_t comm_;
  cudaStream_t stream_;
  NcclCollectiveOptions options_;
  float* scratch_ = nullptr;
  bool aborted_ = false;
};

// What rank 0 sends to everyone before the communicator exists: its unique id, or that it has
// none (so no rank waits forever in ncclCommInitRank for a rank 0 that failed).
struct Bootstrap {
  int32_t ok = 0;
  ncclUniqueId id;
};

}  // namespace

bool HaveNccl() { return true; }

absl::StatusOr<std::unique_ptr<Collective>> MakeNcclCollective(
    Collective& host, void* cuda_stream, const NcclCollectiveOptions& options) {
  TANDEM_CHECK_ARG(options.chunk_elements > 0, "chunk_elements: expected > 0, got ",
                   options.chunk_elements);
  Bootstrap boot;
  std::memset(&boot.id, 0, sizeof(boot.id));
  ncclResult_t rc = ncclSuccess;
  if (host.Rank() == 0) {
    rc = ncclGetUniqueId(&boot.id);
    boot.ok = rc == ncclSuccess;
  }
  TANDEM_RETURN_IF_ERROR(host.Broadcast(&boot, sizeof(boot), 0));
  if (!boot.ok) {
    return absl::InternalError(absl::StrCat(
        "NCCL collective: rank 0 could not create the communicator id",
        host.Rank() == 0 ? absl::StrCat(": ", ncclGetErrorString(rc)) : std::string()));
  }
  ncclComm_t comm = nullptr;
  rc = ncclCommInitRank(&comm, host.Size(), boot.id, host.Rank());
  std::unique_ptr<NcclCollective> nccl;
  absl::Status local;
  if (rc == ncclSuccess) {
    nccl.reset(new NcclCollective(host, comm, static_cast<cudaStream_t>(cuda_stream), options));
    local = nccl->AllocateScratch();  // now, not inside a later collective the others wait in
  } else {
    int device = -1;
    cudaGetDevice(&device);
    local = absl::InternalError(absl::StrCat(
        "NCCL collective: ncclCommInitRank failed on rank ", host.Rank(), " of ", host.Size(),
        " (CUDA device ", device, "): ", ncclGetErrorString(rc), " (", ncclGetLastError(nullptr),
        "); every rank needs its own GPU (one process per GPU, see docs/gpu.md)"));
  }
  // Every rank learns whether every rank has a communicator and its scratch.
  const absl::Status all = AllRanksOk(host, local);
  if (!all.ok()) {
    if (nccl != nullptr) nccl->Abort();
    return all;
  }
  return std::unique_ptr<Collective>(std::move(nccl));
}

}  // namespace tandem::trainer
