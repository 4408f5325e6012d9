// Collective: the data-parallel communication the trainer needs (all-reduce, broadcast, barrier)
// behind one interface, with a single-process implementation, an MPI one (Open MPI, host memory)
// and an NCCL one for GPU ranks (device memory through NCCL, host memory through MPI).
// The float all-reduce is deterministic by construction, whatever algorithm the library picks:
// every element is summed in rank order 0..P−1 by exactly one rank, so every rank ends with the
// same bits and the result is the rank-ordered fp32 sum — the same bits from MPI and from NCCL.
// Only collectives_mpi.cc includes mpi.h; only collectives_nccl.cc includes nccl.h.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/weights.h"

namespace tandem::trainer {

class Collective {
 public:
  virtual ~Collective() = default;

  virtual int Rank() const = 0;
  virtual int Size() const = 0;

  // In place: data[i] = ((x_0[i] + x_1[i]) + x_2[i]) + … + x_{P−1}[i], fp32 adds in rank order,
  // identical bits on every rank. REQUIRES: every rank passes the same n.
  virtual absl::Status AllReduceSum(float* data, int64_t n) = 0;
  // Exact integer sum (e.g. per-expert token counts); order does not matter for integers.
  virtual absl::Status AllReduceSum(int64_t* data, int64_t n) = 0;
  // Copies `bytes` bytes from `root`'s buffer into everyone's.
  virtual absl::Status Broadcast(void* data, int64_t bytes, int root) = 0;
  virtual absl::Status Barrier() = 0;
  // True when buffers may live in GPU memory (the NCCL collective); the others take host memory.
  virtual bool AcceptsDeviceMemory() const { return false; }
};

// A collective call: `local` (this rank's outcome of a step every rank took) when every rank
// succeeded, else an error on every rank — this rank's own, or "another rank failed" — so that no
// rank goes on to a collective the failed ones will never join.
absl::Status AllRanksOk(Collective& collective, const absl::Status& local);

// Rank 0 of 1: every operation is the identity.
std::unique_ptr<Collective> MakeLocalCollective();

struct MpiCollectiveOptions {
  // Elements per all-reduce round; bounds the scratch memory to about 3 × chunk floats.
  int64_t chunk_elements = int64_t{1} << 22;
};

// Initialises MPI (MPI_THREAD_FUNNELED) unless already initialised, and works on a duplicate of
// MPI_COMM_WORLD with errors returned, not fatal. Finalises MPI on destruction if it initialised
// it. Unimplemented when built without MPI (TANDEM_MPI=OFF).
// Thread-safety: call from one thread (the one that created it).
absl::StatusOr<std::unique_ptr<Collective>> MakeMpiCollective(
    const MpiCollectiveOptions& options = {});

// True when this binary was built with MPI support.
bool HaveMpi();

// This rank's index among the ranks on its host (ranks are grouped by host name through
// `host`), e.g. for picking its GPU. A collective call.
absl::StatusOr<int> LocalRank(Collective& host);

// The GPU data-parallel collective of one rank: buffers in device memory go through an NCCL
// communicator on `cuda_stream` (a cudaStream_t, null = the default stream; results are complete
// when a call returns), host buffers, Barrier and the communicator's bootstrap (rank 0's
// ncclUniqueId) through `host`, which must outlive it and have the same ranks. The caller has
// made this rank's GPU current (cudaSetDevice); two ranks on one GPU are refused by NCCL.
// Unimplemented when built without NCCL. A collective call.
struct NcclCollectiveOptions {
  // Elements per all-reduce round; bounds the device scratch to about 3 × chunk floats.
  int64_t chunk_elements = int64_t{1} << 22;
};
absl::StatusOr<std::unique_ptr<Collective>> MakeNcclCollective(
    Collective& host, void* cuda_stream, const NcclCollectiveOptions& options = {});

// True when this binary was built with NCCL support.
bool HaveNccl();

// One all-reduce call's run of floats.
struct ReductionRange {
  float* data;
  int64_t n;
};
// How AllReduceGradients reduces gradients in device memory: views that tile one allocation
// back to back (a layer's per-expert views of its expert stacks) as one range covering them all,
// every other tensor as its own range. Ranges come in the order their first tensor has in
// `tensors` (ForEachParameter order), so every rank makes the same calls. REQUIRES: f32 tensors.
std::vector<ReductionRange> ReductionRanges(const std::vector<Tensor>& tensors);

// Sums every gradient tensor over the ranks, in ForEachParameter order, through flat buckets of
// at most bucket_elements floats (elementwise sums do not depend on the bucketing). The result is
// the SUM: with a token-mean loss normalised by the global token count it is the batch gradient.
// Gradients in device memory are reduced in place, one call per ReductionRange (the NCCL
// collective).
absl::Status AllReduceGradients(Collective& collective, model::ModelWeights& grads,
                                int64_t bucket_elements = int64_t{1} << 22);

}  // namespace tandem::trainer
