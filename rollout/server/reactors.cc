// Generate and UpdateWeights reactors. Each reactor's Finish is called exactly once, guarded by a
// `finished` flag under a mutex, because the engine thread, gRPC's reactions and OnCancel may
// race to end a call; calls into gRPC happen outside the mutex.
#include "rollout/server/reactors.h"

#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/logging.h"
#include "kernels/core/status_macros.h"
#include "model/weights_hash.h"
#include "proto/grpc_status.h"
#include "rollout/server/weights_receiver.h"
#include "rollout/server/wire.h"

namespace tandem::rollout {
namespace {

// Responses are split so that none comes near the client's 4 MiB receive limit (a replayed
// result holds whole samples).
constexpr size_t kMaxResponseBytes = size_t{1} << 20;

bool HasDeadline(const grpc::CallbackServerContext* context) {
  return context->deadline() != std::chrono::system_clock::time_point::max();
}

// The outbound side of one Generate call. The engine thread pushes messages; write completions
// pull the next one. At most one write is in flight; Finish follows the last write.
class GenerateStream : public GenerationSink {
 public:
  explicit GenerateStream(grpc::ServerWriteReactor<grpc::ByteBuffer>* reactor)
      : reactor_(reactor) {}

  void OnDeltas(std::vector<SampleDelta> deltas, bool replayed) override {
    std::vector<grpc::ByteBuffer> messages;
    v1::GenerateResponse response;
    for (const SampleDelta& d : deltas) {
      ToProto(d, response.add_deltas());
      if (response.ByteSizeLong() >= kMaxResponseBytes) {
        response.set_replayed(replayed);
        messages.push_back(SerializeToBuffer(response));
        response.Clear();
      }
    }
    if (response.deltas_size() > 0) {
      response.set_replayed(replayed);
      messages.push_back(SerializeToBuffer(response));
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (end_) return;
    for (grpc::ByteBuffer& m : messages) queue_.push_back(std::move(m));
    Pump(std::move(lock));
  }
  void OnEnd(const absl::Status& status) override { End(proto::ToGrpcStatus(status)); }

  // Ends the call after the queued messages (or at once when the client is gone).
  void End(const grpc::Status& status) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!end_) end_ = status;
    Pump(std::move(lock));
  }

  void WriteDone(bool ok) {
    std::unique_lock<std::mutex> lock(mu_);
    writing_ = false;
    queue_.pop_front();
    if (!ok) {  // the call is over (cancelled, deadline, broken connection)
      queue_.clear();
      if (!end_) end_ = grpc::Status(grpc::StatusCode::CANCELLED, "Generate: client gone");
    }
    Pump(std::move(lock));
  }

 private:
  void Pump(std::unique_lock<std::mutex> lock) {
    if (writing_ || finished_) return;
    grpc::ServerWriteReactor<grpc::ByteBuffer>* reactor = reactor_;
    if (!queue_.empty()) {
      writing_ = true;
      const grpc::ByteBuffer* next = &queue_.front();  // stays put until WriteDone pops it
      lock.unlock();
      reactor->StartWrite(next);
    } else if (end_) {
      finished_ = true;
      const grpc::Status status = *end_;
      lock.unlock();
      reactor->Finish(status);
    }
  }

  std::mutex mu_;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* const reactor_;
  std::deque<grpc::ByteBuffer> queue_;
  bool writing_ = false, finished_ = false;
  std::optional<grpc::Status> end_;
};

class GenerateReactor : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  GenerateReactor(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                  EngineLoop* loop, const ReactorLimits& limits)
      : loop_(loop), stream_(std::make_shared<GenerateStream>(this)) {
    absl::Status s = Start(context, *request, limits);
    if (!s.ok()) stream_->End(proto::ToGrpcStatus(s));
  }

  void OnWriteDone(bool ok) override { stream_->WriteDone(ok); }
  void OnCancel() override {
    if (serial_ != 0) loop_->Abandon(client_id_, serial_);
    stream_->End(grpc::Status(grpc::StatusCode::CANCELLED,
                              "Generate: cancelled by the client or its deadline"));
  }
  void OnDone() override { delete this; }

 private:
  absl::Status Start(grpc::CallbackServerContext* context, const grpc::ByteBuffer& request,
                     const ReactorLimits& limits) {
    TANDEM_CHECK_ARG(HasDeadline(context),
                     "deadline: Generate needs a client deadline (ClientContext::set_deadline); "
                     "without one a vanished client would hold engine memory indefinitely");
    const std::string bytes = BufferBytes(request);
    v1::GenerateRequest proto;
    TANDEM_RETURN_IF_ERROR(ParseMessage(bytes, &proto));
    TANDEM_ASSIGN_OR_RETURN(
        GenerateRequest engine_request,
        ToEngineRequest(proto, loop_->config().vocab_size, limits.max_tokens_limit));
    TANDEM_ASSIGN_OR_RETURN(serial_, loop_->Submit(proto.request_id(), std::move(engine_request),
                                                   model::HashBytes(bytes.data(), bytes.size()),
                                                   absl::FromChrono(context->deadline()), stream_));
    client_id_ = proto.request_id();
    return absl::OkStatus();
  }

  EngineLoop* const loop_;
  std::shared_ptr<GenerateStream> stream_;
  std::string client_id_;
  uint64_t serial_ = 0;  // the loop's id of the accepted request; 0 = none (or replayed)
};

// Ends an UpdateWeights call once: whoever sets `finished` first calls Finish.
struct FinishOnce {
  std::mutex mu;
  bool finished = false;
  bool began = false;       // BeginUpdate succeeded
  bool handed_off = false;  // SwapWeights called: the loop owns the update now
};

class UpdateWeightsReactor : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  UpdateWeightsReactor(grpc::CallbackServerContext* context, grpc::ByteBuffer* response,
                       EngineLoop* loop)
      : response_(response), loop_(loop), state_(std::make_shared<FinishOnce>()) {
    if (!HasDeadline(context)) {
      Fail(absl::InvalidArgumentError(
          "deadline: UpdateWeights needs a client deadline (ClientContext::set_deadline)"));
      return;
    }
    StartRead(&buffer_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Complete();
      return;
    }
    absl::Status s = Receive();
    if (!s.ok()) {
      Fail(s);
      return;
    }
    StartRead(&buffer_);
  }
  void OnCancel() override {
    Fail(absl::CancelledError(
        "UpdateWeights: cancelled by the client or its deadline; the serving version is kept"));
  }
  void OnDone() override { delete this; }

 private:
  absl::Status Receive() {
    v1::UpdateWeightsMessage message;
    TANDEM_RETURN_IF_ERROR(ParseMessage(BufferBytes(buffer_), &message));
    if (receiver_ == nullptr) {
      TANDEM_CHECK_ARG(message.has_header(),
                       "UpdateWeights: the first message must be a header (WeightsHeader)");
      const v1::WeightsHeader& header = message.header();
      TANDEM_ASSIGN_OR_RETURN(mode_, FromProto(header.mode()));
      {
        // Under the state's lock, so that a cancel arriving meanwhile either sees `began` and
        // releases the slot, or has finished the call and the slot is never taken.
        std::lock_guard<std::mutex> lock(state_->mu);
        if (state_->finished) return absl::CancelledError("UpdateWeights: the call has ended");
        TANDEM_RETURN_IF_ERROR(loop_->BeginUpdate(header.version()));
        state_->began = true;
      }
      version_ = header.version();
      TANDEM_ASSIGN_OR_RETURN(receiver_,
                              WeightsReceiver::Create(header, loop_->config(), loop_->signature()));
      return absl::OkStatus();
    }
    TANDEM_CHECK_ARG(!message.has_header(), "UpdateWeights: a second header (version ",
                     message.header().version(), ") in one stream");
    TANDEM_CHECK_ARG(message.has_chunk(), "UpdateWeights: a message with neither header nor chunk");
    return receiver_->Add(message.chunk());
  }

  // The client finished writing: verify, hash, hand the weights to the engine loop, and answer
  // when the engine serves them.
  void Complete() {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      if (state_->finished) return;
    }
    if (receiver_ == nullptr) {
      Fail(absl::InvalidArgumentError("UpdateWeights: the stream ended before a header"));
      return;
    }
    absl::StatusOr<model::ModelWeights> weights = receiver_->Finish();
    if (!weights.ok()) {
      Fail(weights.status());
      return;
    }
    const absl::Time received = absl::Now();
    const uint64_t hash = model::WeightsHash(*weights);
    const absl::Time hashed = absl::Now();
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      if (state_->finished) return;  // cancelled meanwhile (Fail released the update)
      state_->handed_off = true;
    }
    auto done = [state = state_, reactor = this, response = response_, version = version_, hash,
                 receive_s = absl::ToDoubleSeconds(received - start_),
                 hash_s = absl::ToDoubleSeconds(hashed - received), hashed](const absl::Status& s) {
      {
        std::lock_guard<std::mutex> lock(state->mu);
        if (state->finished) return;
        state->finished = true;
      }
      if (s.ok()) {
        v1::UpdateWeightsResponse r;
        r.set_version(version);
        r.set_weights_hash(hash);
        r.set_receive_seconds(receive_s);
        r.set_hash_seconds(hash_s);
        r.set_swap_seconds(absl::ToDoubleSeconds(absl::Now() - hashed));
        *response = SerializeToBuffer(r);
        spdlog::info("rollout server: serving weights v{} (hash {:016x})", version, hash);
      }
      reactor->Finish(proto::ToGrpcStatus(s));
    };
    loop_->SwapWeights(version_, *std::move(weights), hash, mode_, std::move(done));
  }

  void Fail(const absl::Status& status) {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      if (state_->finished) return;
      state_->finished = true;
      if (state_->began && !state_->handed_off) loop_->AbandonUpdate();
    }
    spdlog::warn("rollout server: UpdateWeights failed: {}", status.ToString());
    Finish(proto::ToGrpcStatus(status));
  }

  grpc::ByteBuffer* const response_;
  EngineLoop* const loop_;
  std::shared_ptr<FinishOnce> state_;
  const absl::Time start_ = absl::Now();
  grpc::ByteBuffer buffer_;
  std::unique_ptr<WeightsReceiver> receiver_;
  int64_t version_ = 0;
  WeightUpdateMode mode_ = WeightUpdateMode::kDrain;
};

}  // namespace

grpc::ServerWriteReactor<grpc::ByteBuffer>* NewGenerateReactor(grpc::CallbackServerContext* context,
                                                               const grpc::ByteBuffer* request,
                                                               EngineLoop* loop,
                                                               const ReactorLimits& limits) {
  return new GenerateReactor(context, request, loop, limits);
}

grpc::ServerReadReactor<grpc::ByteBuffer>* NewUpdateWeightsReactor(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* response, EngineLoop* loop) {
  return new UpdateWeightsReactor(context, response, loop);
}

}  // namespace tandem::rollout
