// Trajectory serialization for the rank-0 broadcast.
#include "trainer/rl_wire.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"

namespace tandem::trainer {
namespace {

class Writer {
 public:
  template <typename T>
  void Put(T v) {
    out_.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  template <typename T>
  void PutVector(const std::vector<T>& v) {
    Put<int64_t>(static_cast<int64_t>(v.size()));
    out_.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
  }
  void PutString(const std::string& s) {
    Put<int64_t>(static_cast<int64_t>(s.size()));
    out_ += s;
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(const std::string& in) : in_(in) {}
  template <typename T>
  bool Get(T& v) {
    if (pos_ + sizeof(T) > in_.size()) return false;
    std::memcpy(&v, in_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  template <typename T>
  bool GetVector(std::vector<T>& v) {
    int64_t n = 0;
    if (!Get(n) || n < 0 || pos_ + n * sizeof(T) > in_.size()) return false;
    v.resize(n);
    std::memcpy(v.data(), in_.data() + pos_, n * sizeof(T));
    pos_ += n * sizeof(T);
    return true;
  }
  bool GetString(std::string& s) {
    std::vector<char> v;
    if (!GetVector(v)) return false;
    s.assign(v.begin(), v.end());
    return true;
  }
  bool done() const { return pos_ == in_.size(); }

 private:
  const std::string& in_;
  size_t pos_ = 0;
};

}  // namespace

std::string EncodeTrajectories(const std::vector<Trajectory>& trajectories) {
  Writer w;
  w.Put<int64_t>(static_cast<int64_t>(trajectories.size()));
  for (const Trajectory& t : trajectories) {
    w.PutString(t.request_id);
    w.Put(t.sample_index);
    w.Put(t.group);
    w.PutVector(t.prompt);
    w.PutVector(t.response);
    w.PutVector(t.logprobs);
    w.PutVector(t.versions);
    w.PutString(t.finish_reason);
    w.Put(t.reward);
    w.Put(t.advantage);
    w.Put<uint8_t>(t.reward_error ? 1 : 0);
  }
  return w.Take();
}

absl::StatusOr<std::vector<Trajectory>> DecodeTrajectories(const std::string& bytes) {
  Reader r(bytes);
  int64_t n = 0;
  if (!r.Get(n) || n < 0) return absl::DataLossError("trajectories: bad count");
  std::vector<Trajectory> out(n);
  for (int64_t i = 0; i < n; ++i) {
    Trajectory& t = out[i];
    uint8_t error = 0;
    const bool ok = r.GetString(t.request_id) && r.Get(t.sample_index) && r.Get(t.group) &&
                    r.GetVector(t.prompt) && r.GetVector(t.response) && r.GetVector(t.logprobs) &&
                    r.GetVector(t.versions) && r.GetString(t.finish_reason) && r.Get(t.reward) &&
                    r.Get(t.advantage) && r.Get(error);
    if (!ok) return absl::DataLossError(absl::StrCat("trajectories: truncated at entry ", i));
    t.reward_error = error != 0;
  }
  if (!r.done()) return absl::DataLossError("trajectories: trailing bytes");
  return out;
}

absl::Status BroadcastTrajectories(Collective& collective, std::vector<Trajectory>& trajectories) {
  if (collective.Size() == 1) return absl::OkStatus();
  std::string bytes;
  if (collective.Rank() == 0) bytes = EncodeTrajectories(trajectories);
  int64_t size = static_cast<int64_t>(bytes.size());
  TANDEM_RETURN_IF_ERROR(collective.Broadcast(&size, sizeof(size), 0));
  bytes.resize(size);
  TANDEM_RETURN_IF_ERROR(collective.Broadcast(bytes.data(), size, 0));
  if (collective.Rank() == 0) return absl::OkStatus();
  TANDEM_ASSIGN_OR_RETURN(trajectories, DecodeTrajectories(bytes));
  return absl::OkStatus();
}

}  // namespace tandem::trainer
