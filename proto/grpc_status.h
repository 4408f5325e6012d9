// The one conversion between absl::Status and grpc::Status (STYLE.md "Errors"). The two code sets
// are the same numbers by design (absl::StatusCode mirrors google.rpc.Code), so a code crosses the
// wire unchanged: a bad request stays INVALID_ARGUMENT, overload RESOURCE_EXHAUSTED, and so on.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace tandem::proto {

grpc::Status ToGrpcStatus(const absl::Status& status);

// `call` (e.g. "RolloutService.Generate on localhost:5000") prefixes the message, so that an error
// read far from the call site still says which call and which server failed.
absl::Status FromGrpcStatus(const grpc::Status& status, absl::string_view call);

}  // namespace tandem::proto
