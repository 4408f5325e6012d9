// WeightsReceiver: header checks, chunk placement and per-tensor checksums.
#include "rollout/server/weights_receiver.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kernels/core/status_macros.h"
#include "model/weights_hash.h"

namespace tandem::rollout {
namespace {

std::string ShapeText(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

absl::StatusOr<std::unique_ptr<WeightsReceiver>> WeightsReceiver::Create(
    const v1::WeightsHeader& header, const model::ModelConfig& config,
    const std::vector<std::pair<std::string, Shape>>& signature) {
  TANDEM_CHECK_ARG(header.tensors_size() == static_cast<int>(signature.size()),
                   "header.tensors: ", header.tensors_size(), " tensors, this model has ",
                   signature.size());
  int64_t total = 0;
  for (int i = 0; i < header.tensors_size(); ++i) {
    const v1::TensorSpec& spec = header.tensors(i);
    const auto& [name, shape] = signature[i];
    TANDEM_CHECK_ARG(spec.name() == name, "header.tensors[", i, "].name: '", spec.name(),
                     "', expected '", name, "' (ForEachParameter order)");
    TANDEM_CHECK_ARG(spec.dtype() == v1::DTYPE_F32, "header.tensors[", i, "].dtype: ",
                     v1::DType_Name(spec.dtype()).empty() ? std::to_string(spec.dtype())
                                                          : v1::DType_Name(spec.dtype()),
                     " for '", name,
                     "'; only DTYPE_F32 is accepted (the worker serves the "
                     "trainer's fp32 bits)");
    TANDEM_CHECK_ARG(
        std::equal(spec.shape().begin(), spec.shape().end(), shape.begin(), shape.end()),
        "header.tensors[", i, "].shape: ", ShapeText(spec.shape()), " for '", name, "', expected ",
        ShapeString(shape));
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    total += numel * 4;
  }
  TANDEM_CHECK_ARG(header.total_bytes() == total, "header.total_bytes: ", header.total_bytes(),
                   ", the tensors hold ", total);

  std::unique_ptr<WeightsReceiver> r(new WeightsReceiver());
  try {
    r->weights_ = model::AllocateWeights(config);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("UpdateWeights: cannot allocate ", total, " bytes for the new weights"));
  }
  r->weights_.ForEachParameter([&](const std::string& name, Tensor& t) {
    const size_t i = r->slots_.size();
    r->index_[name] = i;
    r->slots_.push_back(Slot{name, t, 0, header.tensors(static_cast<int>(i)).checksum()});
  });
  return r;
}

absl::Status WeightsReceiver::Add(const v1::WeightsChunk& chunk) {
  auto it = index_.find(chunk.tensor());
  TANDEM_CHECK_ARG(it != index_.end(), "chunk.tensor: '", chunk.tensor(),
                   "' is not a tensor of the header");
  Slot& slot = slots_[it->second];
  const auto size = static_cast<int64_t>(chunk.data().size());
  const auto nbytes = static_cast<int64_t>(slot.view.nbytes());
  TANDEM_CHECK_ARG(size > 0, "chunk.data: empty chunk for '", slot.name, "'");
  TANDEM_CHECK_ARG(chunk.offset() == slot.received, "chunk.offset: ", chunk.offset(), " for '",
                   slot.name, "', expected ", slot.received,
                   " (a tensor's chunks arrive in order, without gaps or overlaps)");
  TANDEM_CHECK_ARG(slot.received + size <= nbytes, "chunk.data: ", size, " bytes at offset ",
                   chunk.offset(), " overrun '", slot.name, "' of ", nbytes, " bytes");
  std::memcpy(static_cast<char*>(slot.view.raw_data()) + slot.received, chunk.data().data(), size);
  slot.received += size;
  received_bytes_ += size;
  if (slot.received == nbytes) {
    const uint64_t got = model::HashBytes(slot.view.raw_data(), nbytes);
    if (got != slot.checksum) {
      return absl::DataLossError(absl::StrFormat(
          "tensor '%s': checksum of the received bytes is %016x, the header says %016x; the "
          "transfer is corrupt and was not applied",
          slot.name, got, slot.checksum));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<model::ModelWeights> WeightsReceiver::Finish() {
  int64_t incomplete = 0;
  const Slot* first = nullptr;
  for (const Slot& slot : slots_) {
    if (slot.received != static_cast<int64_t>(slot.view.nbytes())) {
      if (first == nullptr) first = &slot;
      ++incomplete;
    }
  }
  if (first != nullptr) {
    return absl::DataLossError(absl::StrCat("UpdateWeights: the stream ended early: tensor '",
                                            first->name, "' has ", first->received, " of ",
                                            first->view.nbytes(), " bytes (", incomplete,
                                            " tensors incomplete); the transfer was not applied"));
  }
  return std::move(weights_);
}

}  // namespace tandem::rollout
