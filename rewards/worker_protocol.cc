// Framing and encoding for the plugin worker socket (grammar in worker_protocol.h).
#include "rewards/worker_protocol.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace tandem::rewards::worker {
namespace {

class Writer {
 public:
  template <typename T>
  void Put(T v) {
    out_.append(reinterpret_cast<const char*>(&v), sizeof(v));
  }
  void PutString(absl::string_view s) {
    Put<uint64_t>(s.size());
    out_.append(s.data(), s.size());
  }
  void PutStatus(const absl::Status& s) {
    Put<uint32_t>(static_cast<uint32_t>(s.code()));
    PutString(s.message());
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(absl::string_view in) : in_(in) {}
  template <typename T>
  bool Get(T* v) {
    if (in_.size() < sizeof(T)) return false;
    std::memcpy(v, in_.data(), sizeof(T));
    in_.remove_prefix(sizeof(T));
    return true;
  }
  bool GetString(std::string* s) {
    uint64_t n;
    if (!Get(&n) || n > in_.size()) return false;
    s->assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool GetStatus(absl::Status* s) {
    uint32_t code;
    std::string message;
    if (!Get(&code) || !GetString(&message)) return false;
    *s = absl::Status(static_cast<absl::StatusCode>(code), message);
    return true;
  }
  bool done() const { return in_.empty(); }

 private:
  absl::string_view in_;
};

absl::Status Malformed(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("reward worker protocol: malformed ", what));
}

// Reads exactly n bytes before the deadline.
absl::Status ReadExact(int fd, char* buf, size_t n, absl::Time deadline) {
  while (n > 0) {
    const absl::Duration left = deadline - absl::Now();
    int timeout_ms = -1;
    if (deadline != absl::InfiniteFuture()) {
      if (left <= absl::ZeroDuration()) return absl::DeadlineExceededError("timed out");
      timeout_ms = static_cast<int>(absl::ToInt64Milliseconds(left)) + 1;
    }
    pollfd p{fd, POLLIN, 0};
    const int ready = poll(&p, 1, timeout_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return absl::InternalError(absl::StrCat("poll: ", std::strerror(errno)));
    if (ready == 0) continue;  // the loop re-checks the deadline
    const ssize_t got = recv(fd, buf, n, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return absl::UnavailableError(absl::StrCat("recv: ", std::strerror(errno)));
    if (got == 0) return absl::UnavailableError("connection closed");
    buf += got;
    n -= static_cast<size_t>(got);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteFrame(int fd, absl::string_view payload) {
  if (payload.size() > kMaxFrameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("reward worker frame of ", payload.size(), " bytes exceeds ", kMaxFrameBytes));
  }
  const uint32_t size = static_cast<uint32_t>(payload.size());
  std::string frame(reinterpret_cast<const char*>(&size), sizeof(size));
  frame.append(payload.data(), payload.size());
  size_t sent = 0;
  while (sent < frame.size()) {
    const ssize_t n = send(fd, frame.data() + sent, frame.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::UnavailableError(absl::StrCat("send: ", std::strerror(errno)));
    sent += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFrame(int fd, absl::Time deadline) {
  uint32_t size = 0;
  absl::Status s = ReadExact(fd, reinterpret_cast<char*>(&size), sizeof(size), deadline);
  if (!s.ok()) return s;
  if (size > kMaxFrameBytes) return Malformed("frame length");
  std::string payload(size, '\0');
  s = ReadExact(fd, payload.data(), size, deadline);
  if (!s.ok()) return s;
  return payload;
}

std::string EncodeHello(const absl::StatusOr<std::string>& plugin_name) {
  Writer w;
  w.PutStatus(plugin_name.status());
  w.PutString(plugin_name.ok() ? *plugin_name : "");
  return w.Take();
}

absl::StatusOr<absl::StatusOr<std::string>> DecodeHello(absl::string_view payload) {
  Reader r(payload);
  absl::Status status;
  std::string name;
  if (!r.GetStatus(&status) || !r.GetString(&name) || !r.done()) return Malformed("hello");
  if (!status.ok()) return absl::StatusOr<std::string>(status);
  return absl::StatusOr<std::string>(name);
}

std::string EncodeInput(const RewardInput& in) {
  Writer w;
  for (const std::string* s :
       {&in.prompt, &in.response, &in.ground_truth, &in.data_source, &in.extra_json}) {
    w.PutString(*s);
  }
  return w.Take();
}

absl::StatusOr<RewardInput> DecodeInput(absl::string_view payload) {
  Reader r(payload);
  RewardInput in;
  for (std::string* s :
       {&in.prompt, &in.response, &in.ground_truth, &in.data_source, &in.extra_json}) {
    if (!r.GetString(s)) return Malformed("input");
  }
  if (!r.done()) return Malformed("input");
  return in;
}

std::string EncodeOutcome(const RewardOutcome& outcome) {
  Writer w;
  w.PutStatus(outcome.status());
  if (outcome.ok()) {
    w.Put<double>(outcome->score);
    w.Put<uint32_t>(static_cast<uint32_t>(outcome->metrics.size()));
    for (const auto& [name, value] : outcome->metrics) {
      w.PutString(name);
      w.Put<double>(value);
    }
  }
  return w.Take();
}

absl::StatusOr<RewardOutcome> DecodeOutcome(absl::string_view payload) {
  Reader r(payload);
  absl::Status status;
  if (!r.GetStatus(&status)) return Malformed("outcome");
  if (!status.ok()) {
    if (!r.done()) return Malformed("outcome");
    return RewardOutcome(status);
  }
  RewardResult result;
  uint32_t n;
  if (!r.Get(&result.score) || !r.Get(&n)) return Malformed("outcome");
  for (uint32_t i = 0; i < n; ++i) {
    std::string name;
    double value;
    if (!r.GetString(&name) || !r.Get(&value)) return Malformed("outcome metric");
    result.metrics[name] = value;
  }
  if (!r.done()) return Malformed("outcome");
  return RewardOutcome(std::move(result));
}

}  // namespace tandem::rewards::worker
