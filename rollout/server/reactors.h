// The streaming RPCs of RolloutService as gRPC callback-API reactors: Generate (a write reactor
// fed by the engine thread through a GenerationSink) and UpdateWeights (a read reactor that
// assembles a WeightsReceiver and hands the weights to the engine loop). Internal to the server.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>

#include "rollout/server/engine_loop.h"

namespace tandem::rollout {

struct ReactorLimits {
  int64_t max_tokens_limit = 0;  // sampling.max_tokens above this is INVALID_ARGUMENT
};

// Both reactors delete themselves when gRPC is done with them (OnDone).
grpc::ServerWriteReactor<grpc::ByteBuffer>* NewGenerateReactor(grpc::CallbackServerContext* context,
                                                               const grpc::ByteBuffer* request,
                                                               EngineLoop* loop,
                                                               const ReactorLimits& limits);
grpc::ServerReadReactor<grpc::ByteBuffer>* NewUpdateWeightsReactor(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* response, EngineLoop* loop);

}  // namespace tandem::rollout
