// The single-process Collective, and the bucketed gradient all-reduce shared by every backend.
#include "trainer/collectives.h"

#include <cstring>
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

}  // namespace

std::unique_ptr<Collective> MakeLocalCollective() { return std::make_unique<LocalCollective>(); }

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
    tensors.push_back(t);
  });
  TANDEM_RETURN_IF_ERROR(status);
  if (collective.Size() == 1) return absl::OkStatus();
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
