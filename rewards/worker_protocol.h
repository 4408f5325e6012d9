// The wire protocol between IsolatedPlugin and tandem_reward_worker, over one AF_UNIX stream
// socket. Grammar (integers little-endian, as on every host we build for):
//
//   frame    := u32 length, payload[length]               (length <= kMaxFrameBytes)
//   session  := host:config  worker:hello  (host:input  worker:outcome)*
//   config   := string                                    the plugin's JSON configuration
//   hello    := status, string                            OK + plugin name, or the load error
//   input    := string x5                                 prompt, response, ground_truth,
//                                                         data_source, extra_json
//   outcome  := status, [f64 score, u32 n, (string name, f64 value) x n]   (fields only when OK)
//   status   := u32 code, string message                  absl::StatusCode, 0 = OK
//   string   := u64 size, bytes[size]
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "rewards/reward.h"

namespace tandem::rewards::worker {

inline constexpr uint32_t kMaxFrameBytes = 1u << 30;

// Writes one frame; never raises SIGPIPE (a dead peer is an Unavailable error).
absl::Status WriteFrame(int fd, absl::string_view payload);

// Reads one frame, waiting until `deadline` (absl::InfiniteFuture() to wait forever).
// DeadlineExceeded on timeout; Unavailable when the peer closed the socket (it exited or died).
absl::StatusOr<std::string> ReadFrame(int fd, absl::Time deadline);

std::string EncodeHello(const absl::StatusOr<std::string>& plugin_name);
absl::StatusOr<absl::StatusOr<std::string>> DecodeHello(absl::string_view payload);

std::string EncodeInput(const RewardInput& input);
absl::StatusOr<RewardInput> DecodeInput(absl::string_view payload);

std::string EncodeOutcome(const RewardOutcome& outcome);
// The outer status is a malformed payload; the inner one is the sample's own outcome.
absl::StatusOr<RewardOutcome> DecodeOutcome(absl::string_view payload);

}  // namespace tandem::rewards::worker
