// Wire parsing with field-naming errors, GenerateRequest checks, delta and enum conversion.
#include "rollout/server/wire.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/unknown_field_set.h"
#include "kernels/core/status_macros.h"

namespace tandem::rollout {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::UnknownField;
using google::protobuf::UnknownFieldSet;

constexpr size_t kMaxRequestIdBytes = 256;

// Offset of the first byte that breaks UTF-8 (overlong forms, surrogates and code points above
// U+10FFFF included), or -1 when `s` is valid.
int64_t FirstInvalidUtf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned c = p[i];
    size_t len = 0;
    unsigned min = 0, cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2, min = 0x80, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, min = 0x800, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, min = 0x10000, cp = c & 0x07;
    } else {
      return static_cast<int64_t>(i);
    }
    if (i + len > n) return static_cast<int64_t>(i);
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) return static_cast<int64_t>(i);
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return static_cast<int64_t>(i);
    }
    i += len;
  }
  return -1;
}

// Why a field's encoded value does not parse, or "" when this check finds nothing wrong.
std::string FieldProblem(const FieldDescriptor& field, const UnknownField& value);

// The first problem among the fields of a message of type `type` encoded in `bytes`.
std::string MessageProblem(const Descriptor& type, const std::string& bytes) {
  UnknownFieldSet fields;
  if (!fields.ParseFromString(bytes)) {
    return absl::StrCat(type.name(), ": not a protobuf encoding (", bytes.size(),
                        " bytes; truncated or corrupt)");
  }
  for (int i = 0; i < fields.field_count(); ++i) {
    const FieldDescriptor* field = type.FindFieldByNumber(fields.field(i).number());
    if (field == nullptr) continue;  // unknown fields are skipped by the real parser too
    std::string problem = FieldProblem(*field, fields.field(i));
    if (!problem.empty()) return problem;
  }
  return "";
}

std::string FieldProblem(const FieldDescriptor& field, const UnknownField& value) {
  if (value.type() != UnknownField::TYPE_LENGTH_DELIMITED) return "";
  const std::string& bytes = value.length_delimited();
  // "GenerateRequest.request_id": the full name without the package.
  const std::string name = field.full_name().substr(field.file()->package().size() + 1);
  if (field.type() == FieldDescriptor::TYPE_STRING) {
    const int64_t bad = FirstInvalidUtf8(bytes);
    if (bad >= 0) {
      return absl::StrFormat("%s: not valid UTF-8 (byte 0x%02x at offset %d of %d)", name,
                             static_cast<unsigned char>(bytes[bad]), bad, bytes.size());
    }
  } else if (field.type() == FieldDescriptor::TYPE_MESSAGE) {
    std::string inner = MessageProblem(*field.message_type(), bytes);
    if (!inner.empty()) return absl::StrCat(name, " > ", inner);
  } else if (field.is_repeated()) {
    // A packed run of scalars parses when its length fits the element size, or, for varints,
    // when every varint ends within the run and within 10 bytes.
    if (field.cpp_type() == FieldDescriptor::CPPTYPE_FLOAT && bytes.size() % 4 != 0) {
      return absl::StrCat(name, ": packed floats of ", bytes.size(), " bytes");
    }
    if (field.cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE && bytes.size() % 8 != 0) {
      return absl::StrCat(name, ": packed doubles of ", bytes.size(), " bytes");
    }
    const bool fixed = field.cpp_type() == FieldDescriptor::CPPTYPE_FLOAT ||
                       field.cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE;
    for (size_t i = 0, start = 0; !fixed && i < bytes.size(); ++i) {
      if ((static_cast<unsigned char>(bytes[i]) & 0x80) == 0) {
        start = i + 1;
      } else if (i + 1 == bytes.size() || i - start >= 9) {
        return absl::StrCat(name, ": malformed packed varints");
      }
    }
  }
  return "";
}

}  // namespace

std::string BufferBytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  out.reserve(buffer.Length());
  for (const grpc::Slice& s : slices) {
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return out;
}

grpc::ByteBuffer SerializeToBuffer(const google::protobuf::Message& message) {
  grpc::Slice slice(message.SerializeAsString());
  return grpc::ByteBuffer(&slice, 1);
}

absl::Status ParseMessage(const std::string& bytes, google::protobuf::Message* message) {
  if (message->ParseFromString(bytes)) return absl::OkStatus();
  std::string problem = MessageProblem(*message->GetDescriptor(), bytes);
  if (problem.empty()) {
    problem = absl::StrCat(message->GetDescriptor()->name(), ": could not be parsed (",
                           bytes.size(), " bytes)");
  }
  return absl::InvalidArgumentError(problem);
}

absl::StatusOr<GenerateRequest> ToEngineRequest(const v1::GenerateRequest& proto,
                                                int64_t vocab_size, int64_t max_tokens_limit) {
  TANDEM_CHECK_ARG(!proto.request_id().empty() && proto.request_id().size() <= kMaxRequestIdBytes,
                   "request_id: must be 1-", kMaxRequestIdBytes, " bytes, got ",
                   proto.request_id().size());
  TANDEM_CHECK_ARG(proto.prompt_token_ids_size() > 0,
                   "prompt_token_ids: must hold at least one token id");
  for (int i = 0; i < proto.prompt_token_ids_size(); ++i) {
    const int32_t id = proto.prompt_token_ids(i);
    TANDEM_CHECK_ARG(id >= 0 && id < vocab_size, "prompt_token_ids[", i, "]: ", id,
                     " is outside the vocabulary [0, ", vocab_size, ")");
  }
  TANDEM_CHECK_ARG(proto.has_sampling(), "sampling: missing (n and max_tokens have no defaults)");
  const v1::SamplingParams& s = proto.sampling();
  TANDEM_CHECK_ARG(s.n() >= 1, "sampling.n: must be >= 1, got ", s.n());
  TANDEM_CHECK_ARG(s.max_tokens() >= 1 && s.max_tokens() <= max_tokens_limit,
                   "sampling.max_tokens: must be in [1, ", max_tokens_limit,
                   "] (this server's limit), got ", s.max_tokens());
  const float temperature = s.has_temperature() ? s.temperature() : 1.0f;
  TANDEM_CHECK_ARG(std::isfinite(temperature) && temperature >= 0.0f,
                   "sampling.temperature: must be a finite number >= 0 (0 = greedy), got ",
                   temperature);
  const float top_p = s.has_top_p() ? s.top_p() : 1.0f;
  TANDEM_CHECK_ARG(top_p > 0.0f && top_p <= 1.0f, "sampling.top_p: must be in (0, 1], got ", top_p);
  TANDEM_CHECK_ARG(s.top_k() >= 0, "sampling.top_k: must be >= 0 (0 = off), got ", s.top_k());
  for (int i = 0; i < s.stop_token_ids_size(); ++i) {
    TANDEM_CHECK_ARG(s.stop_token_ids(i) >= 0 && s.stop_token_ids(i) < vocab_size,
                     "sampling.stop_token_ids[", i, "]: ", s.stop_token_ids(i),
                     " is outside the vocabulary [0, ", vocab_size, ")");
  }
  GenerateRequest out;
  out.prompt.assign(proto.prompt_token_ids().begin(), proto.prompt_token_ids().end());
  out.sampling.n = s.n();
  out.sampling.max_new_tokens = s.max_tokens();
  out.sampling.temperature = temperature;
  out.sampling.top_p = top_p;
  out.sampling.top_k = s.top_k();
  out.sampling.stop_token_ids.assign(s.stop_token_ids().begin(), s.stop_token_ids().end());
  out.sampling.seed = s.seed();
  return out;
}

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return v1::FINISH_REASON_UNSPECIFIED;
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
    case FinishReason::kError:
      return v1::FINISH_REASON_ERROR;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void ToProto(const SampleDelta& delta, v1::SampleDelta* out) {
  out->set_sample_index(delta.sample_index);
  out->mutable_token_ids()->Add(delta.tokens.begin(), delta.tokens.end());
  out->mutable_logprobs()->Add(delta.logprobs.begin(), delta.logprobs.end());
  out->mutable_weight_versions()->Add(delta.weight_versions.begin(), delta.weight_versions.end());
  out->set_finish_reason(ToProto(delta.finish_reason));
  if (!delta.error.empty()) out->set_error(delta.error);
}

absl::StatusOr<WeightUpdateMode> FromProto(v1::WeightUpdateMode mode) {
  switch (mode) {
    case v1::WEIGHT_UPDATE_MODE_DRAIN:
      return WeightUpdateMode::kDrain;
    case v1::WEIGHT_UPDATE_MODE_IN_FLIGHT:
      return WeightUpdateMode::kInFlight;
    case v1::WEIGHT_UPDATE_MODE_IN_FLIGHT_RECOMPUTE:
      return WeightUpdateMode::kInFlightRecompute;
    default:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("header.mode: unknown WeightUpdateMode ", static_cast<int>(mode)));
}

}  // namespace tandem::rollout
