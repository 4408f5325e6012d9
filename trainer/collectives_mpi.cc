// The MPI Collective (Open MPI). The float all-reduce is a reduce-scatter done by hand: per chunk,
// MPI_Alltoallv hands rank r slice r of every rank's buffer, rank r sums the P contributions in
// rank order, and MPI_Allgatherv returns the summed slices to everyone. Alltoallv and Allgatherv
// only move bytes, so the sums never depend on the MPI library's reduction algorithm.
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "trainer/collectives.h"

// Turns an MPI return code into an Internal status naming the call and its file:line.
#define TANDEM_MPI_CALL(expr)                                                        \
  do {                                                                               \
    const int tandem_mpi_rc_ = (expr);                                               \
    if (tandem_mpi_rc_ != MPI_SUCCESS)                                               \
      return ::tandem::trainer::MpiError(tandem_mpi_rc_, #expr, __FILE__, __LINE__); \
  } while (0)

namespace tandem::trainer {

absl::Status MpiError(int rc, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  return absl::InternalError(absl::StrCat(file, ":", line, ": ", call, " failed (code ", rc,
                                          "): ", std::string(text, len)));
}

namespace {

class MpiCollective final : public Collective {
 public:
  MpiCollective(MPI_Comm comm, bool owns_mpi, const MpiCollectiveOptions& options)
      : comm_(comm), owns_mpi_(owns_mpi), options_(options) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiCollective() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    MPI_Comm_free(&comm_);
    if (owns_mpi_) MPI_Finalize();
  }

  int Rank() const override { return rank_; }
  int Size() const override { return size_; }

  absl::Status AllReduceSum(float* data, int64_t n) override {
    TANDEM_CHECK_ARG(n >= 0, "n: expected >= 0, got ", n);
    const int64_t chunk = options_.chunk_elements;
    for (int64_t begin = 0; begin < n; begin += chunk) {
      TANDEM_RETURN_IF_ERROR(
          AllReduceChunk(data + begin, static_cast<int>(std::min(chunk, n - begin))));
    }
    return absl::OkStatus();
  }

  absl::Status AllReduceSum(int64_t* data, int64_t n) override {
    TANDEM_CHECK_ARG(n >= 0, "n: expected >= 0, got ", n);
    for (int64_t begin = 0; begin < n; begin += options_.chunk_elements) {
      const int count = static_cast<int>(std::min(options_.chunk_elements, n - begin));
      TANDEM_MPI_CALL(
          MPI_Allreduce(MPI_IN_PLACE, data + begin, count, MPI_INT64_T, MPI_SUM, comm_));
    }
    return absl::OkStatus();
  }

  absl::Status Broadcast(void* data, int64_t bytes, int root) override {
    TANDEM_CHECK_ARG(root >= 0 && root < size_, "root: expected in [0, ", size_, "), got ", root);
    TANDEM_CHECK_ARG(bytes >= 0, "bytes: expected >= 0, got ", bytes);
    constexpr int64_t kMaxBytes = int64_t{1} << 30;
    char* p = static_cast<char*>(data);
    for (int64_t begin = 0; begin < bytes; begin += kMaxBytes) {
      const int count = static_cast<int>(std::min(kMaxBytes, bytes - begin));
      TANDEM_MPI_CALL(MPI_Bcast(p + begin, count, MPI_BYTE, root, comm_));
    }
    return absl::OkStatus();
  }

  absl::Status Barrier() override {
    TANDEM_MPI_CALL(MPI_Barrier(comm_));
    return absl::OkStatus();
  }

 private:
  // One chunk of c elements: slice r = [c·r/P, c·(r+1)/P) is summed by rank r.
  absl::Status AllReduceChunk(float* data, int c) {
    const int p = size_;
    std::vector<int> counts(p), displs(p);
    for (int r = 0; r < p; ++r) {
      displs[r] = static_cast<int>(int64_t{c} * r / p);
      counts[r] = static_cast<int>(int64_t{c} * (r + 1) / p) - displs[r];
    }
    const int mine = counts[rank_];
    std::vector<int> recv_counts(p, mine), recv_displs(p);
    for (int r = 0; r < p; ++r) recv_displs[r] = r * mine;
    gathered_.resize(static_cast<size_t>(p) * mine);  // [P, mine]: slice `rank_` of every rank
    TANDEM_MPI_CALL(MPI_Alltoallv(data, counts.data(), displs.data(), MPI_FLOAT, gathered_.data(),
                                  recv_counts.data(), recv_displs.data(), MPI_FLOAT, comm_));
    summed_.assign(gathered_.begin(), gathered_.begin() + mine);
    for (int r = 1; r < p; ++r) {
      const float* x = gathered_.data() + static_cast<size_t>(r) * mine;
      for (int i = 0; i < mine; ++i) summed_[i] += x[i];
    }
    TANDEM_MPI_CALL(MPI_Allgatherv(summed_.data(), mine, MPI_FLOAT, data, counts.data(),
                                   displs.data(), MPI_FLOAT, comm_));
    return absl::OkStatus();
  }

  MPI_Comm comm_;
  bool owns_mpi_;
  MpiCollectiveOptions options_;
  int rank_ = 0;
  int size_ = 1;
  std::vector<float> gathered_;
  std::vector<float> summed_;
};

}  // namespace

bool HaveMpi() { return true; }

absl::StatusOr<std::unique_ptr<Collective>> MakeMpiCollective(const MpiCollectiveOptions& options) {
  TANDEM_CHECK_ARG(options.chunk_elements > 0 && options.chunk_elements <= INT_MAX,
                   "chunk_elements: expected in [1, INT_MAX], got ", options.chunk_elements);
  int initialized = 0;
  TANDEM_MPI_CALL(MPI_Initialized(&initialized));
  bool owns_mpi = false;
  if (!initialized) {
    int provided = 0;
    TANDEM_MPI_CALL(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
    owns_mpi = true;
  }
  MPI_Comm comm;
  TANDEM_MPI_CALL(MPI_Comm_dup(MPI_COMM_WORLD, &comm));
  TANDEM_MPI_CALL(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
  return std::unique_ptr<Collective>(new MpiCollective(comm, owns_mpi, options));
}

}  // namespace tandem::trainer
