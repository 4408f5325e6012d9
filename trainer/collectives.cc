// The single-process Collective, and the bucketed gradient all-reduce shared by every backend.
#include "trainer/collectives.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"

namespace tandem::trainer {
namespace {

class LocalCollective final : public Collective {
 public:
  int Rank() const override { return 0; }
  int Size() const override { return 1; }
  absl::Status AllReduceSum(float*, int64_t n) override { return CheckN(n); }
  absl::Status AllReduceSum(int64_t*, int64_t n) override { return CheckN(n); }
  absl::Status Broadcast(void*, int64_t bytes, int root) override {
    TANDEM_CHECK_ARG(root == 0, "root: expected 0 with one process, got ", root);
    return CheckN(bytes);
  }
  absl::Status Barrier() override { return absl::OkStatus(); }

 private:
  static absl::Status CheckN(int64_t n) {
    TANDEM_CHECK_ARG(n >= 0, "n: expected >= 0, got ", n);
    return absl::OkStatus();
  }
};

// Copies the gathered tensors into `flat`, reduces it, and copies the sums back.
absl::Status ReduceBucket(Collective& collective, std::vector<Tensor*>& bucket,
                          std::vector<float>& flat) {
  if (bucket.empty()) return absl::OkStatus();
  int64_t offset = 0;
  for (const Tensor* t : bucket) {
    std::memcpy(flat.data() + offset, t->data<float>(), t->nbytes());
    offset += t->numel();
  }
  TANDEM_RETURN_IF_ERROR(collective.AllReduceSum(flat.data(), offset));
  offset = 0;
  for (Tensor* t : bucket) {
    std::memcpy(t->data<float>(), flat.data() + offset, t->nbytes());
    offset += t->numel();
  }
  bucket.clear();
  return absl::OkStatus();
}

// Device gradients: reduced where they lie (no host round trip), a range per call.
absl::Status AllReduceInPlace(Collective& collective, const std::vector<Tensor>& tensors) {
  for (const ReductionRange& r : ReductionRanges(tensors)) {
    TANDEM_RETURN_IF_ERROR(collective.AllReduceSum(r.data, r.n));
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<ReductionRange> ReductionRanges(const std::vector<Tensor>& tensors) {
  // Tensors grouped by allocation, groups in order of first appearance.
  std::vector<std::vector<const Tensor*>> groups;
  for (const Tensor& t : tensors) {
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const auto& g) { return g.front()->SharesStorage(t); });
    if (it == groups.end()) {
      groups.push_back({&t});
    } else {
      it->push_back(&t);
    }
  }
  std::vector<ReductionRange> ranges;
  for (std::vector<const Tensor*>& g : groups) {
    // Offsets inside one allocation are the same on every rank, so this order is too.
    std::sort(g.begin(), g.end(), [](const Tensor* a, const Tensor* b) {
      return std::less<const void*>()(a->raw_data(), b->raw_data());
    });
    bool tiled = true;
    int64_t n = g.front()->numel();
    for (size_t i = 1; i < g.size(); ++i) {
      tiled = tiled && g[i - 1]->data<float>() + g[i - 1]->numel() == g[i]->data<float>();
      n += g[i]->numel();
    }
    if (tiled) {
      ranges.push_back({const_cast<float*>(g.front()->data<float>()), n});
      continue;
    }
    for (const Tensor* t : g) ranges.push_back({const_cast<float*>(t->data<float>()), t->numel()});
  }
  return ranges;
}

std::unique_ptr<Collective> MakeLocalCollective() { return std::make_unique<LocalCollective>(); }

#ifndef TANDEM_HAVE_NCCL
bool HaveNccl() { return false; }
absl::StatusOr<std::unique_ptr<Collective>> MakeNcclCollective(Collective&, void*,
                                                               const NcclCollectiveOptions&) {
  return absl::UnimplementedError(
      "NCCL collective: this build has no NCCL (it needs CUDA and NCCL's nccl.h / libnccl)");
}
#endif

absl::Status AllRanksOk(Collective& collective, const absl::Status& local) {
  int64_t failed = local.ok() ? 0 : 1;
  TANDEM_RETURN_IF_ERROR(collective.AllReduceSum(&failed, 1));
  if (!local.ok()) return local;
  if (failed == 0) return absl::OkStatus();
  return absl::AbortedError(absl::StrCat(failed, " other rank(s) failed at the same step (their ",
                                         "messages say why); rank ", collective.Rank(),
                                         " stops with them"));
}

absl::StatusOr<int> LocalRank(Collective& host) {
  char name[HOST_NAME_MAX + 1] = {};
  const bool named = gethostname(name, sizeof(name) - 1) == 0;
  const int error = errno;
  uint64_t hash = 1469598103934665603ull;  // FNV-1a of the host name
  for (const char* c = name; *c != '\0'; ++c) {
    hash = (hash ^ static_cast<unsigned char>(*c)) * 1099511628211ull;
  }
  // Every rank's hash in its own slot; the others are 0, so the integer sum is exact. A rank
  // without a name still joins the sum (so no rank waits for it), then fails below.
  std::vector<int64_t> hashes(host.Size(), 0);
  hashes[host.Rank()] = named ? static_cast<int64_t>(hash) : 0;
  TANDEM_RETURN_IF_ERROR(host.AllReduceSum(hashes.data(), host.Size()));
  TANDEM_RETURN_IF_ERROR(
      AllRanksOk(host, named ? absl::OkStatus()
                             : absl::InternalError(absl::StrCat("LocalRank: gethostname failed: ",
                                                                strerror(error)))));
  int local = 0;
  for (int r = 0; r < host.Rank(); ++r) local += hashes[r] == hashes[host.Rank()];
  return local;
}

#ifndef TANDEM_HAVE_MPI
bool HaveMpi() { return false; }
absl::StatusOr<std::unique_ptr<Collective>> MakeMpiCollective(const MpiCollectiveOptions&) {
  return absl::UnimplementedError("MPI collective: this build has TANDEM_MPI=OFF");
}
#endif

absl::Status AllReduceGradients(Collective& collective, model::ModelWeights& grads,
                                int64_t bucket_elements) {
  TANDEM_CHECK_ARG(bucket_elements > 0, "bucket_elements: expected > 0, got ", bucket_elements);
  std::vector<Tensor> tensors;  // views, in ForEachParameter order
  absl::Status status;
  grads.ForEachParameter([&](const std::string& name, Tensor& t) {
    if (status.ok() && t.dtype() != DType::kF32) {
      status = absl::InvalidArgumentError(
          absl::StrCat("gradient ", name, ": expected f32, got ", DTypeName(t.dtype())));
    }
    if (status.ok() && !tensors.empty() && t.device() != tensors.front().device()) {
      status = absl::InvalidArgumentError(
          absl::StrCat("gradient ", name, ": expected on ", DeviceName(tensors.front().device()),
                       " like the gradients before it, got ", DeviceName(t.device())));
    }
    tensors.push_back(t);
  });
  TANDEM_RETURN_IF_ERROR(status);
  if (collective.Size() == 1 || tensors.empty()) return absl::OkStatus();
  if (tensors.front().device() == Device::kCUDA) {
    if (!collective.AcceptsDeviceMemory()) {
      return absl::InvalidArgumentError(
          "gradients: on the GPU, but this collective takes host memory only (GPU ranks reduce "
          "through the NCCL collective: MakeNcclCollective)");
    }
    return AllReduceInPlace(collective, tensors);
  }
  std::vector<float> flat(bucket_elements);
  std::vector<Tensor*> bucket;
  int64_t filled = 0;
  for (Tensor& t : tensors) {
    if (t.numel() >= bucket_elements) {  // large tensors are reduced in place
      TANDEM_RETURN_IF_ERROR(ReduceBucket(collective, bucket, flat));
      filled = 0;
      TANDEM_RETURN_IF_ERROR(collective.AllReduceSum(t.data<float>(), t.numel()));
      continue;
    }
    if (filled + t.numel() > bucket_elements) {
      TANDEM_RETURN_IF_ERROR(ReduceBucket(collective, bucket, flat));
      filled = 0;
    }
    bucket.push_back(&t);
    filled += t.numel();
  }
  return ReduceBucket(collective, bucket, flat);
}

}  // namespace tandem::trainer
