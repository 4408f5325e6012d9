// The rollout server's edge between wire bytes and engine types: parsing request bytes with an
// error that names the field that did not parse, checking a GenerateRequest field by field, and
// converting deltas and enums. The service's methods take raw bytes (grpc::ByteBuffer) because
// gRPC answers an unparsable typed request with a bare UNIMPLEMENTED; here it is
// INVALID_ARGUMENT saying what was wrong.
#pragma once

#include <grpcpp/support/byte_buffer.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "rollout/engine.h"
#include "rollout/server/engine_loop.h"
#include "tandem/v1/rollout.pb.h"

namespace tandem::rollout {

// The bytes of a message, in one string.
std::string BufferBytes(const grpc::ByteBuffer& buffer);
grpc::ByteBuffer SerializeToBuffer(const google::protobuf::Message& message);

// Parses `bytes` into `message`. InvalidArgument naming the first field that fails (e.g.
// "GenerateRequest.request_id: not valid UTF-8 (byte 0xff at offset 3)") or saying that the bytes
// are not a protobuf encoding at all.
absl::Status ParseMessage(const std::string& bytes, google::protobuf::Message* message);

// Checks a GenerateRequest (InvalidArgument naming the proto field and what was expected) and
// converts it. Unset temperature / top_p default to 1. `max_tokens_limit` bounds
// sampling.max_tokens.
absl::StatusOr<GenerateRequest> ToEngineRequest(const v1::GenerateRequest& proto,
                                                int64_t vocab_size, int64_t max_tokens_limit);

void ToProto(const SampleDelta& delta, v1::SampleDelta* out);
v1::FinishReason ToProto(FinishReason reason);
absl::StatusOr<WeightUpdateMode> FromProto(v1::WeightUpdateMode mode);

}  // namespace tandem::rollout
