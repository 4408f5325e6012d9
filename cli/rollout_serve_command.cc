// `tandem rollout ...`: a rollout worker and the tools that talk to one (docs/serving.md).
//   serve         the engine behind gRPC (RolloutService, health, reflection) + /metrics
//   push-weights  stream a checkpoint's weights to a worker as a new version (times the push)
//   status        print a worker's GetStatus as JSON
// serve prints one JSON line {"port": P, "metrics_port": M} on stdout once it listens, and shuts
// down cleanly on SIGTERM / SIGINT. Without TANDEM_SERVICES the command only says so.
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"

#ifdef TANDEM_HAVE_ROLLOUT_SERVICE
#include <pthread.h>

#include "absl/strings/str_format.h"
#include "google/protobuf/util/json_util.h"
#include "kernels/core/context.h"
#include "kernels/core/logging.h"
#include "model/config.h"
#include "model/hybrid_model.h"
#include "model/weights.h"
#include "proto/rollout_client.h"
#include "rollout/engine.h"
#include "rollout/server/rollout_server.h"
#endif

namespace tandem::cli {
namespace {

constexpr char kCommand[] = "rollout";

[[noreturn]] void RolloutFail(const std::string& message) { Fail(kCommand, message); }

#ifdef TANDEM_HAVE_ROLLOUT_SERVICE

struct ServeOptions {
  std::string model_dir;
  std::string host = "127.0.0.1";
  int port = 50061;
  int metrics_port = -1;
  int threads = 1;
  int64_t memory_bytes = int64_t{1} << 30;
  int64_t max_sequences = 64;
  int64_t max_step_tokens = 256;
  int64_t max_queue = 256;
  int64_t max_tokens = 0;  // 0: the config's max_position_embeddings
  int64_t weight_version = 0;
};

struct PushOptions {
  std::string target;
  std::string model_dir;
  int64_t version = 1;
  std::string mode = "drain";
  double timeout_s = 600;
  int repeats = 1;
  int64_t chunk_kib = 2048;
};

model::HybridModel LoadModel(const std::string& dir) {
  absl::StatusOr<model::ModelConfig> config = model::LoadModelConfig(dir);
  if (!config.ok()) RolloutFail(absl::StrCat("--model: ", config.status().message()));
  absl::StatusOr<model::ModelWeights> weights = model::LoadWeights(*config, dir);
  if (!weights.ok()) RolloutFail(absl::StrCat("--model: ", weights.status().message()));
  return model::HybridModel(*std::move(config), *std::move(weights));
}

void RunServe(const ServeOptions& opt) {
  if (opt.threads < 1) RolloutFail(absl::StrCat("--threads: must be >= 1, got ", opt.threads));
  if (opt.max_queue < 1) {
    RolloutFail(absl::StrCat("--max-queue: must be >= 1, got ", opt.max_queue));
  }
  model::HybridModel model = LoadModel(opt.model_dir);
  rollout::RolloutServerOptions so;
  so.host = opt.host;
  so.port = opt.port;
  so.metrics_port = opt.metrics_port;
  so.loop.max_queued = opt.max_queue;
  so.max_tokens_limit = opt.max_tokens > 0 ? opt.max_tokens
                        : model.config().max_position_embeddings > 0
                            ? model.config().max_position_embeddings
                            : so.max_tokens_limit;
  rollout::EngineOptions eo;
  eo.memory_budget_bytes = opt.memory_bytes;
  eo.max_sequences = opt.max_sequences;
  eo.max_step_tokens = opt.max_step_tokens;
  absl::StatusOr<std::unique_ptr<rollout::Engine>> engine =
      rollout::Engine::Create(Context::Cpu(opt.threads), std::move(model), opt.weight_version, eo);
  if (!engine.ok()) RolloutFail(std::string(engine.status().message()));

  // Signals are taken by sigwait on this thread only: block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<std::unique_ptr<rollout::RolloutServer>> server =
      rollout::RolloutServer::Start(*std::move(engine), so);
  if (!server.ok()) RolloutFail(std::string(server.status().message()));
  spdlog::info("tandem rollout serve: listening on {}:{}, metrics on port {}", opt.host,
               (*server)->port(), (*server)->metrics_port());
  std::fprintf(stderr, "tandem rollout serve: listening on %s:%d\n", opt.host.c_str(),
               (*server)->port());
  std::printf("{\"port\": %d, \"metrics_port\": %d}\n", (*server)->port(),
              (*server)->metrics_port());
  std::fflush(stdout);
  int signal = 0;
  sigwait(&signals, &signal);
  std::fprintf(stderr, "tandem rollout serve: %s, shutting down\n", strsignal(signal));
  (*server)->Shutdown();
}

absl::StatusOr<std::unique_ptr<proto::RolloutClient>> Connect(const std::string& target) {
  proto::RolloutClientOptions options;
  options.wait_for_ready = true;
  return proto::RolloutClient::Create(target, options);
}

void RunPush(const PushOptions& opt) {
  v1::WeightUpdateMode mode;
  if (opt.mode == "drain") {
    mode = v1::WEIGHT_UPDATE_MODE_DRAIN;
  } else if (opt.mode == "in-flight") {
    mode = v1::WEIGHT_UPDATE_MODE_IN_FLIGHT;
  } else if (opt.mode == "in-flight-recompute") {
    mode = v1::WEIGHT_UPDATE_MODE_IN_FLIGHT_RECOMPUTE;
  } else {
    RolloutFail(absl::StrCat("--mode: '", opt.mode,
                             "' is not one of drain, in-flight, in-flight-recompute"));
  }
  const model::HybridModel model = LoadModel(opt.model_dir);
  proto::RolloutClientOptions options;
  options.wait_for_ready = true;
  options.chunk_bytes = opt.chunk_kib << 10;
  auto client = proto::RolloutClient::Create(opt.target, options);
  if (!client.ok()) RolloutFail(std::string(client.status().message()));
  for (int i = 0; i < opt.repeats; ++i) {
    absl::StatusOr<proto::PushResult> r = (*client)->UpdateWeights(
        model.weights(), opt.version + i, mode, absl::Seconds(opt.timeout_s));
    if (!r.ok()) RolloutFail(std::string(r.status().message()));
    std::printf(
        "{\"version\": %ld, \"bytes\": %ld, \"seconds\": %.6f, \"hash_seconds\": %.6f, "
        "\"server_receive_seconds\": %.6f, \"server_hash_seconds\": %.6f, "
        "\"server_swap_seconds\": %.6f, \"weights_hash\": \"%016lx\"}\n",
        static_cast<long>(r->version), static_cast<long>(r->bytes), r->total_seconds,
        r->hash_seconds, r->server_receive_seconds, r->server_hash_seconds, r->server_swap_seconds,
        static_cast<unsigned long>(r->server_hash));
    std::fflush(stdout);
  }
}

void RunStatus(const std::string& target, double timeout_s) {
  auto client = Connect(target);
  if (!client.ok()) RolloutFail(std::string(client.status().message()));
  absl::StatusOr<v1::RolloutStatus> status = (*client)->GetStatus(absl::Seconds(timeout_s));
  if (!status.ok()) RolloutFail(std::string(status.status().message()));
  std::string json;
  google::protobuf::util::JsonPrintOptions print;
  print.always_print_primitive_fields = true;
  print.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(*status, &json, print);
  std::printf("%s\n", json.c_str());
}

void AddServe(CLI::App& parent) {
  auto opt = std::make_shared<ServeOptions>();
  CLI::App* cmd = parent.add_subcommand("serve", "Serve the rollout engine over gRPC");
  cmd->add_option("--model", opt->model_dir, "checkpoint directory (config.json + safetensors)")
      ->required();
  cmd->add_option("--host", opt->host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", opt->port, "gRPC port (0 = any free port)")->capture_default_str();
  cmd->add_option("--metrics-port", opt->metrics_port,
                  "Prometheus /metrics port (-1 = none, 0 = any free port)")
      ->capture_default_str();
  cmd->add_option("--threads", opt->threads, "CPU threads of the engine")->capture_default_str();
  cmd->add_option("--memory-bytes", opt->memory_bytes, "inference cache budget in bytes")
      ->capture_default_str();
  cmd->add_option("--max-sequences", opt->max_sequences, "sequences running at once, at most")
      ->capture_default_str();
  cmd->add_option("--max-step-tokens", opt->max_step_tokens, "tokens per engine step")
      ->capture_default_str();
  cmd->add_option("--max-queue", opt->max_queue,
                  "requests waiting for their first token before RESOURCE_EXHAUSTED")
      ->capture_default_str();
  cmd->add_option("--max-tokens", opt->max_tokens,
                  "largest sampling.max_tokens accepted (0 = max_position_embeddings)")
      ->capture_default_str();
  cmd->add_option("--weight-version", opt->weight_version, "version of the loaded weights")
      ->capture_default_str();
  cmd->callback([opt] { RunServe(*opt); });
}

void AddPush(CLI::App& parent) {
  auto opt = std::make_shared<PushOptions>();
  CLI::App* cmd = parent.add_subcommand(
      "push-weights", "Push a checkpoint's weights to a worker as a new version (JSON timing)");
  cmd->add_option("--target", opt->target, "worker, host:port")->required();
  cmd->add_option("--model", opt->model_dir, "checkpoint directory")->required();
  cmd->add_option("--version", opt->version, "version to push (repeats push version + i)")
      ->capture_default_str();
  cmd->add_option("--mode", opt->mode, "drain | in-flight | in-flight-recompute")
      ->capture_default_str();
  cmd->add_option("--timeout-s", opt->timeout_s, "deadline of each push")->capture_default_str();
  cmd->add_option("--repeats", opt->repeats, "pushes, one JSON line each")->capture_default_str();
  cmd->add_option("--chunk-kib", opt->chunk_kib, "weight bytes per message, KiB")
      ->capture_default_str();
  cmd->callback([opt] { RunPush(*opt); });
}

void AddStatus(CLI::App& parent) {
  auto target = std::make_shared<std::string>();
  auto timeout_s = std::make_shared<double>(10);
  CLI::App* cmd = parent.add_subcommand("status", "Print a worker's GetStatus as JSON");
  cmd->add_option("--target", *target, "worker, host:port")->required();
  cmd->add_option("--timeout-s", *timeout_s, "deadline")->capture_default_str();
  cmd->callback([target, timeout_s] { RunStatus(*target, *timeout_s); });
}

#endif  // TANDEM_HAVE_ROLLOUT_SERVICE

}  // namespace

void AddRolloutCommand(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      kCommand, "Rollout worker: serve the engine over gRPC, push weights to it, query it");
#ifdef TANDEM_HAVE_ROLLOUT_SERVICE
  cmd->require_subcommand(1);
  AddServe(*cmd);
  AddPush(*cmd);
  AddStatus(*cmd);
#else
  cmd->allow_extras();
  cmd->callback(
      [] { RolloutFail("this build has no gRPC services (configure with -DTANDEM_SERVICES=ON)"); });
#endif
}

}  // namespace tandem::cli
