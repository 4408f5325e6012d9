// RolloutServer: service registration (every method takes raw bytes, see wire.h), the unary
// methods, health, reflection, the metrics endpoint and its Prometheus text.
#include "rollout/server/rollout_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/core/logging.h"
#include "model/weights_hash.h"
#include "proto/grpc_status.h"
#include "rollout/server/metrics_http.h"
#include "rollout/server/reactors.h"
#include "rollout/server/wire.h"
#include "tandem/v1/rollout.grpc.pb.h"

namespace tandem::rollout {
namespace {

constexpr char kServiceName[] = "tandem.v1.RolloutService";

using RawService = v1::RolloutService::WithRawCallbackMethod_Generate<
    v1::RolloutService::WithRawCallbackMethod_Cancel<
        v1::RolloutService::WithRawCallbackMethod_UpdateWeights<
            v1::RolloutService::WithRawCallbackMethod_GetStatus<
                v1::RolloutService::WithRawCallbackMethod_Pause<
                    v1::RolloutService::WithRawCallbackMethod_Resume<
                        v1::RolloutService::Service>>>>>>;

v1::RolloutStatus ToProto(const LoopStatus& s, int64_t vocab_size) {
  v1::RolloutStatus out;
  out.set_weight_version(s.weight_version);
  out.set_weights_hash(s.weights_hash);
  out.set_queued_requests(s.queued_requests);
  out.set_running_requests(s.running_requests);
  out.set_running_sequences(s.running_sequences);
  out.set_max_queued_requests(s.max_queued);
  out.set_max_sequences(s.max_sequences);
  out.set_kv_blocks_used(s.memory.used_blocks);
  out.set_kv_blocks_total(s.memory.num_blocks);
  out.set_slots_used(s.memory.used_slots);
  out.set_generated_tokens(s.generated_tokens);
  out.set_tokens_per_second(s.tokens_per_second);
  out.set_paused(s.paused);
  out.set_vocab_size(vocab_size);
  return out;
}

// One metric in exposition format 0.0.4: HELP, TYPE, one sample.
void AppendMetric(std::string& out, const char* name, const char* type, const char* help,
                  double value) {
  absl::StrAppendFormat(&out, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type,
                        name, value);
}

}  // namespace

class RolloutServer::Service : public RawService {
 public:
  Service(EngineLoop* loop, ReactorLimits limits, grpc::HealthCheckServiceInterface** health)
      : loop_(loop), limits_(limits), health_(health) {}

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request) override {
    return NewGenerateReactor(context, request, loop_, limits_);
  }
  grpc::ServerReadReactor<grpc::ByteBuffer>* UpdateWeights(grpc::CallbackServerContext* context,
                                                           grpc::ByteBuffer* response) override {
    return NewUpdateWeightsReactor(context, response, loop_);
  }
  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* context,
                                   const grpc::ByteBuffer* request,
                                   grpc::ByteBuffer* response) override {
    v1::CancelRequest proto;
    absl::Status s = ParseMessage(BufferBytes(*request), &proto);
    if (s.ok()) s = loop_->Cancel(proto.request_id());
    if (s.ok()) *response = SerializeToBuffer(v1::CancelResponse());
    return Answer(context, s);
  }
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override {
    return StatusReply<v1::GetStatusRequest>(context, request, response, [] {});
  }
  grpc::ServerUnaryReactor* Pause(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override {
    return StatusReply<v1::PauseRequest>(context, request, response, [this] {
      loop_->Pause();
      if (*health_ != nullptr) (*health_)->SetServingStatus(kServiceName, false);
    });
  }
  grpc::ServerUnaryReactor* Resume(grpc::CallbackServerContext* context,
                                   const grpc::ByteBuffer* request,
                                   grpc::ByteBuffer* response) override {
    return StatusReply<v1::ResumeRequest>(context, request, response, [this] {
      loop_->Resume();
      if (*health_ != nullptr) (*health_)->SetServingStatus(kServiceName, true);
    });
  }

 private:
  static grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* context,
                                          const absl::Status& status) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(proto::ToGrpcStatus(status));
    return reactor;
  }
  // Parses the (empty) request, runs `action`, answers with the status after it.
  template <typename Request, typename Action>
  grpc::ServerUnaryReactor* StatusReply(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request, grpc::ByteBuffer* response,
                                        Action action) {
    Request proto;
    absl::Status s = ParseMessage(BufferBytes(*request), &proto);
    if (s.ok()) {
      action();
      *response = SerializeToBuffer(ToProto(loop_->status(), loop_->config().vocab_size));
    }
    return Answer(context, s);
  }

  EngineLoop* const loop_;
  const ReactorLimits limits_;
  grpc::HealthCheckServiceInterface** const health_;  // set once the server is built
};

absl::StatusOr<std::unique_ptr<RolloutServer>> RolloutServer::Start(
    std::unique_ptr<Engine> engine, const RolloutServerOptions& options) {
  if (engine == nullptr) return absl::InvalidArgumentError("engine: null");
  const uint64_t hash = model::WeightsHash(engine->model().weights());
  std::unique_ptr<RolloutServer> server(new RolloutServer());
  server->loop_ = std::make_unique<EngineLoop>(std::move(engine), hash, options.loop);
  server->service_ = std::make_unique<Service>(
      server->loop_.get(), ReactorLimits{options.max_tokens_limit}, &server->health_);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(options.host, ":", options.port),
                           grpc::InsecureServerCredentials(), &server->port_);
  builder.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    server->loop_->Stop();
    return absl::UnavailableError(
        absl::StrCat("rollout server: cannot listen on ", options.host, ":", options.port));
  }
  server->health_ = server->server_->GetHealthCheckService();
  if (server->health_ != nullptr) {
    server->health_->SetServingStatus("", true);
    server->health_->SetServingStatus(kServiceName, true);
  }
  if (options.metrics_port >= 0) {
    RolloutServer* self = server.get();
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> metrics = MetricsHttpServer::Start(
        options.host, options.metrics_port, [self] { return self->MetricsText(); });
    if (!metrics.ok()) return metrics.status();  // the destructor shuts the rest down
    server->metrics_ = *std::move(metrics);
  }
  return server;
}

RolloutServer::~RolloutServer() { Shutdown(); }

int RolloutServer::metrics_port() const { return metrics_ == nullptr ? -1 : metrics_->port(); }

void RolloutServer::Shutdown(absl::Duration grace) {
  std::call_once(shutdown_once_, [&] {
    if (health_ != nullptr) health_->Shutdown();  // every service NOT_SERVING from here on
    if (loop_ != nullptr) loop_->Stop();          // open requests end UNAVAILABLE
    if (server_ != nullptr) server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
    metrics_.reset();
  });
}

void RolloutServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

std::string RolloutServer::MetricsText() const {
  const LoopStatus s = loop_->status();
  const MemoryReport& m = s.memory;
  std::string out;
  AppendMetric(out, "tandem_rollout_queued_requests", "gauge",
               "Accepted requests that have not produced a token yet.", s.queued_requests);
  AppendMetric(out, "tandem_rollout_max_queued_requests", "gauge",
               "Queued requests above which Generate answers RESOURCE_EXHAUSTED.", s.max_queued);
  AppendMetric(out, "tandem_rollout_running_requests", "gauge",
               "Accepted requests that have not finished (queued ones included).",
               s.running_requests);
  AppendMetric(out, "tandem_rollout_running_sequences", "gauge",
               "Sequences in the last engine step's batch.", s.running_sequences);
  AppendMetric(out, "tandem_rollout_generated_tokens_total", "counter",
               "Tokens generated since the server started.", s.generated_tokens);
  AppendMetric(out, "tandem_rollout_tokens_per_second", "gauge",
               "Generated tokens per second over the last 10 s.", s.tokens_per_second);
  AppendMetric(out, "tandem_rollout_kv_blocks_used", "gauge",
               "KV-cache blocks in use (softmax layers, 64 positions each).", m.used_blocks);
  AppendMetric(out, "tandem_rollout_kv_blocks_total", "gauge", "KV-cache blocks in the budget.",
               m.num_blocks);
  AppendMetric(out, "tandem_rollout_kv_cache_usage_ratio", "gauge",
               "Fraction of the KV-cache blocks in use.",
               m.num_blocks > 0 ? static_cast<double>(m.used_blocks) / m.num_blocks : 0.0);
  AppendMetric(out, "tandem_rollout_linear_state_slots_used", "gauge",
               "Linear-attention state slots in use (one per running sequence).", m.used_slots);
  AppendMetric(out, "tandem_rollout_linear_state_slots_total", "gauge",
               "Linear-attention state slots (max_sequences).", m.num_slots);
  AppendMetric(out, "tandem_rollout_cache_used_bytes", "gauge",
               "Inference-cache bytes in use (KV blocks + linear-attention slots).",
               static_cast<double>(m.kv_bytes() + m.linear_state_bytes()));
  AppendMetric(out, "tandem_rollout_cache_budget_bytes", "gauge", "Inference-cache budget.",
               m.budget_bytes);
  AppendMetric(out, "tandem_rollout_weight_version", "gauge", "Weight version being served.",
               s.weight_version);
  AppendMetric(out, "tandem_rollout_weight_updates_total", "counter",
               "Weight versions swapped in since the server started.", s.weight_updates);
  AppendMetric(out, "tandem_rollout_requests_finished_total", "counter",
               "Requests that ended (any reason).", s.finished_requests);
  AppendMetric(out, "tandem_rollout_requests_cancelled_total", "counter",
               "Finished requests with a sample that did not end by stop or length.",
               s.cancelled_requests);
  AppendMetric(out, "tandem_rollout_requests_rejected_total", "counter",
               "Generate calls refused (bad request, duplicate id, paused, overloaded, too big).",
               s.rejected_requests);
  AppendMetric(out, "tandem_rollout_requests_overloaded_total", "counter",
               "Generate calls refused with RESOURCE_EXHAUSTED.", s.overloaded_requests);
  AppendMetric(out, "tandem_rollout_paused", "gauge", "1 while paused (Pause), else 0.",
               s.paused ? 1 : 0);
  return out;
}

}  // namespace tandem::rollout
