// RolloutServer: a rollout worker. The engine runs on its own thread (EngineLoop) behind a
// callback-API gRPC server with tandem.v1.RolloutService (proto/tandem/v1/rollout.proto),
// grpc.health.v1.Health and server reflection, plus Prometheus text on GET /metrics on a side
// port. docs/serving.md is the user's guide.
//
// Health: "" (the process) is SERVING while the server runs; "tandem.v1.RolloutService" is
// SERVING unless paused (readiness), and both turn NOT_SERVING during shutdown.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "rollout/engine.h"
#include "rollout/server/engine_loop.h"

namespace grpc {
class Server;
class HealthCheckServiceInterface;
}  // namespace grpc

namespace tandem::rollout {

class MetricsHttpServer;

struct RolloutServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;           // 0: any free port (see port())
  int metrics_port = -1;  // -1: no metrics endpoint; 0: any free port
  // sampling.max_tokens above this is INVALID_ARGUMENT before the engine looks at memory.
  int64_t max_tokens_limit = int64_t{1} << 20;
  int max_receive_message_bytes = 4 << 20;  // gRPC's default; weight chunks stay under it
  EngineLoopOptions loop;
};

class RolloutServer {
 public:
  // Hashes the engine's weights (GetStatus reports the hash), starts the engine thread and binds
  // both ports. Unavailable when a port cannot be bound.
  static absl::StatusOr<std::unique_ptr<RolloutServer>> Start(std::unique_ptr<Engine> engine,
                                                              const RolloutServerOptions& options);
  ~RolloutServer();  // Shutdown()

  int port() const { return port_; }
  int metrics_port() const;

  // Health NOT_SERVING, every open request ends UNAVAILABLE, then the gRPC server stops
  // (cancelling calls still open after `grace`). Idempotent.
  void Shutdown(absl::Duration grace = absl::Seconds(5));
  // Blocks until Shutdown.
  void Wait();

  EngineLoop& loop() { return *loop_; }
  // The Prometheus text GET /metrics serves.
  std::string MetricsText() const;

 private:
  class Service;
  RolloutServer() = default;

  std::unique_ptr<EngineLoop> loop_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  grpc::HealthCheckServiceInterface* health_ = nullptr;  // owned by server_
  std::unique_ptr<MetricsHttpServer> metrics_;
  int port_ = 0;
  std::once_flag shutdown_once_;
};

}  // namespace tandem::rollout
