// ModelConfig parsing, validation and serialisation (HF config.json, MODEL.md §1), the per-layer
// linear-attention decay (ALiBi slopes × layer factor, MODEL.md §2.2) and parameter counting.
// Every error names the file and the field, and says what was expected.
#include "model/config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"

namespace tandem::model {
namespace {

using json = nlohmann::json;

absl::Status FieldError(const std::string& source, const std::string& field,
                        const std::string& expected, const std::string& got) {
  return absl::InvalidArgumentError(
      absl::StrCat(source, ": field '", field, "': expected ", expected, ", got ", got));
}

// Reads j[field] (absent or null: *out unchanged, or an error when `required`).
class FieldReader {
 public:
  FieldReader(const json& j, const std::string& source) : j_(j), source_(source) {}

  absl::Status Int(const std::string& field, int64_t min, int64_t* out, bool required = false) {
    const std::string expected = min >= 1   ? "a positive integer"
                                 : min == 0 ? "a non-negative integer"
                                            : "an integer";
    const json* v = Find(field);
    if (v == nullptr) return Missing(field, expected, required);
    if (!v->is_number_integer() || (v->is_number_unsigned() && v->get<uint64_t>() > INT64_MAX) ||
        v->get<int64_t>() < min) {
      return FieldError(source_, field, expected, v->dump());
    }
    *out = v->get<int64_t>();
    return absl::OkStatus();
  }

  absl::Status PositiveDouble(const std::string& field, double* out) {
    const json* v = Find(field);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_number() || !(v->get<double>() > 0) || !std::isfinite(v->get<double>())) {
      return FieldError(source_, field, "a positive number", v->dump());
    }
    *out = v->get<double>();
    return absl::OkStatus();
  }

  absl::Status Bool(const std::string& field, bool* out) {
    const json* v = Find(field);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_boolean()) return FieldError(source_, field, "true or false", v->dump());
    *out = v->get<bool>();
    return absl::OkStatus();
  }

  absl::Status String(const std::string& field, std::string* out) {
    const json* v = Find(field);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_string()) return FieldError(source_, field, "a string", v->dump());
    *out = v->get<std::string>();
    return absl::OkStatus();
  }

  // A token id, or a list of them (HF allows several eos ids): the first is kept.
  absl::Status TokenId(const std::string& field, int64_t* out) {
    const json* v = Find(field);
    if (v == nullptr) return absl::OkStatus();
    const json& id = (v->is_array() && !v->empty()) ? v->front() : *v;
    if (!id.is_number_integer() || id.get<int64_t>() < 0) {
      return FieldError(source_, field, "a token id or a list of token ids", v->dump());
    }
    *out = id.get<int64_t>();
    return absl::OkStatus();
  }

  const json* Find(const std::string& field) const {
    auto it = j_.find(field);
    return (it == j_.end() || it->is_null()) ? nullptr : &*it;
  }

 private:
  absl::Status Missing(const std::string& field, const std::string& expected, bool required) {
    if (!required) return absl::OkStatus();
    return FieldError(source_, field, expected, "nothing (the field is missing)");
  }

  const json& j_;
  const std::string& source_;
};

// HF rule (MODEL.md §1.3): softmax iff (i+1) % G == 0, and tail layers that do not fill a group.
std::vector<LayerType> LayerTypesFromGroupSize(int64_t num_layers, int64_t group_size) {
  std::vector<LayerType> types(num_layers);
  for (int64_t i = 0; i < num_layers; ++i) {
    bool softmax = (i + 1) % group_size == 0 || i >= (num_layers / group_size) * group_size;
    types[i] = softmax ? LayerType::kSoftmax : LayerType::kLinear;
  }
  return types;
}

absl::Status ReadLayerTypes(const json& list, const std::string& source, ModelConfig& c) {
  const std::string expected = absl::StrCat(
      "a list of ", c.num_hidden_layers,
      " entries, each \"linear_attention\" or \"full_attention\" (also \"linear\", \"softmax\", "
      "\"attention\")");
  if (!list.is_array() || static_cast<int64_t>(list.size()) != c.num_hidden_layers) {
    return FieldError(source, "layer_types", expected, list.dump());
  }
  c.layer_types.clear();
  for (const json& t : list) {
    std::string s = t.is_string() ? t.get<std::string>() : "";
    if (s == "linear_attention" || s == "linear") {
      c.layer_types.push_back(LayerType::kLinear);
    } else if (s == "full_attention" || s == "softmax" || s == "attention") {
      c.layer_types.push_back(LayerType::kSoftmax);
    } else {
      return FieldError(source, "layer_types", expected, absl::StrCat("an entry ", t.dump()));
    }
  }
  return absl::OkStatus();
}

absl::Status ReadFields(const json& j, const std::string& source, ModelConfig& c) {
  FieldReader r(j, source);
  TANDEM_RETURN_IF_ERROR(r.String("model_type", &c.model_type));
  TANDEM_RETURN_IF_ERROR(r.Int("vocab_size", 1, &c.vocab_size, true));
  TANDEM_RETURN_IF_ERROR(r.Int("hidden_size", 1, &c.hidden_size, true));
  TANDEM_RETURN_IF_ERROR(r.Int("num_hidden_layers", 1, &c.num_hidden_layers, true));
  TANDEM_RETURN_IF_ERROR(r.Int("num_attention_heads", 1, &c.num_attention_heads, true));
  c.num_key_value_heads = c.num_attention_heads;
  TANDEM_RETURN_IF_ERROR(r.Int("num_key_value_heads", 1, &c.num_key_value_heads));
  TANDEM_RETURN_IF_ERROR(r.Int("head_dim", 1, &c.head_dim));
  TANDEM_RETURN_IF_ERROR(r.Int("intermediate_size", 0, &c.intermediate_size));
  TANDEM_RETURN_IF_ERROR(r.Int("first_k_dense_replace", 0, &c.first_k_dense_replace));
  TANDEM_RETURN_IF_ERROR(r.Int("num_experts", 0, &c.num_experts));
  TANDEM_RETURN_IF_ERROR(r.Int("num_experts_per_tok", 0, &c.num_experts_per_tok));
  TANDEM_RETURN_IF_ERROR(r.Int("num_shared_experts", 0, &c.num_shared_experts));
  TANDEM_RETURN_IF_ERROR(r.Int("moe_intermediate_size", 0, &c.moe_intermediate_size));
  c.moe_shared_expert_intermediate_size = c.moe_intermediate_size;
  TANDEM_RETURN_IF_ERROR(
      r.Int("moe_shared_expert_intermediate_size", 0, &c.moe_shared_expert_intermediate_size));
  TANDEM_RETURN_IF_ERROR(r.Int("n_group", 1, &c.n_group));
  TANDEM_RETURN_IF_ERROR(r.Int("topk_group", 1, &c.topk_group));
  TANDEM_RETURN_IF_ERROR(r.PositiveDouble("routed_scaling_factor", &c.routed_scaling_factor));
  TANDEM_RETURN_IF_ERROR(r.Bool("norm_topk_prob", &c.norm_topk_prob));
  TANDEM_RETURN_IF_ERROR(r.String("score_function", &c.score_function));
  TANDEM_RETURN_IF_ERROR(r.Int("group_norm_size", 1, &c.group_norm_size));
  TANDEM_RETURN_IF_ERROR(r.Int("layer_group_size", 1, &c.layer_group_size));
  TANDEM_RETURN_IF_ERROR(r.PositiveDouble("partial_rotary_factor", &c.partial_rotary_factor));
  TANDEM_RETURN_IF_ERROR(r.PositiveDouble("rope_theta", &c.rope_theta));
  TANDEM_RETURN_IF_ERROR(r.PositiveDouble("rms_norm_eps", &c.rms_norm_eps));
  TANDEM_RETURN_IF_ERROR(r.Int("max_position_embeddings", 0, &c.max_position_embeddings));
  TANDEM_RETURN_IF_ERROR(r.Bool("use_qk_norm", &c.use_qk_norm));
  TANDEM_RETURN_IF_ERROR(r.Bool("tie_word_embeddings", &c.tie_word_embeddings));
  TANDEM_RETURN_IF_ERROR(r.TokenId("eos_token_id", &c.eos_token_id));
  TANDEM_RETURN_IF_ERROR(r.TokenId("pad_token_id", &c.pad_token_id));
  // Newer transformers write "dtype" where older files have "torch_dtype".
  TANDEM_RETURN_IF_ERROR(r.String("torch_dtype", &c.dtype));
  TANDEM_RETURN_IF_ERROR(r.String("dtype", &c.dtype));
  std::string convention = "engine";
  TANDEM_RETURN_IF_ERROR(r.String("tandem_decay_convention", &convention));
  if (convention != "engine" && convention != "hf_remote") {
    return FieldError(source, "tandem_decay_convention", "\"engine\" or \"hf_remote\"",
                      json(convention).dump());
  }
  c.decay_convention =
      convention == "engine" ? DecayConvention::kEngine : DecayConvention::kHfRemote;
  if (const json* types = r.Find("layer_types")) {
    return ReadLayerTypes(*types, source, c);
  }
  c.layer_types = LayerTypesFromGroupSize(c.num_hidden_layers, c.layer_group_size);
  return absl::OkStatus();
}

absl::Status ValidateAttention(const std::string& source, ModelConfig& c) {
  const int64_t heads = c.num_attention_heads;
  if (c.head_dim == 0) {
    if (c.hidden_size % heads != 0) {
      return FieldError(source, "head_dim",
                        absl::StrCat("a value, since hidden_size (", c.hidden_size,
                                     ") is not a multiple of num_attention_heads (", heads, ")"),
                        "nothing");
    }
    c.head_dim = c.hidden_size / heads;
  }
  if (heads % c.num_key_value_heads != 0) {
    return FieldError(source, "num_key_value_heads",
                      absl::StrCat("a divisor of num_attention_heads (", heads, ")"),
                      absl::StrCat(c.num_key_value_heads));
  }
  if ((heads * c.head_dim) % c.group_norm_size != 0) {
    return FieldError(
        source, "group_norm_size",
        absl::StrCat("a divisor of num_attention_heads·head_dim (", heads * c.head_dim, ")"),
        absl::StrCat(c.group_norm_size));
  }
  const double rotary = static_cast<double>(c.head_dim) * c.partial_rotary_factor;
  if (!c.use_qk_norm) {  // the engine always applies QK-norm (MODEL.md §2.3, §3)
    return FieldError(source, "use_qk_norm", "true (the only form Tandem implements)", "false");
  }
  if (c.partial_rotary_factor > 1.0 || rotary != std::floor(rotary) ||
      static_cast<int64_t>(rotary) % 2 != 0 || rotary < 2) {
    return FieldError(source, "partial_rotary_factor",
                      absl::StrCat("a factor in (0, 1] making head_dim (", c.head_dim,
                                   ")·factor an even integer"),
                      json(c.partial_rotary_factor).dump());
  }
  return absl::OkStatus();
}

absl::Status ValidateMlp(const std::string& source, const ModelConfig& c) {
  if (c.first_k_dense_replace > c.num_hidden_layers) {
    return FieldError(source, "first_k_dense_replace",
                      absl::StrCat("at most num_hidden_layers (", c.num_hidden_layers, ")"),
                      absl::StrCat(c.first_k_dense_replace));
  }
  const bool any_dense = c.num_experts == 0 || c.first_k_dense_replace > 0;
  if (any_dense && c.intermediate_size <= 0) {
    return FieldError(source, "intermediate_size", "a positive integer (there are dense layers)",
                      absl::StrCat(c.intermediate_size));
  }
  if (c.num_experts == 0) return absl::OkStatus();
  const int64_t e = c.num_experts;
  if (c.num_experts_per_tok < 1 || c.num_experts_per_tok > e) {
    return FieldError(source, "num_experts_per_tok",
                      absl::StrCat("an integer in [1, num_experts = ", e, "]"),
                      absl::StrCat(c.num_experts_per_tok));
  }
  if (c.moe_intermediate_size < 1) {
    return FieldError(source, "moe_intermediate_size", "a positive integer",
                      absl::StrCat(c.moe_intermediate_size));
  }
  if (e % c.n_group != 0) {
    return FieldError(source, "n_group", absl::StrCat("a divisor of num_experts (", e, ")"),
                      absl::StrCat(c.n_group));
  }
  if (c.topk_group > c.n_group) {
    return FieldError(source, "topk_group", absl::StrCat("at most n_group (", c.n_group, ")"),
                      absl::StrCat(c.topk_group));
  }
  if (c.num_experts_per_tok > c.topk_group * (e / c.n_group)) {
    return FieldError(source, "num_experts_per_tok",
                      absl::StrCat("at most topk_group·num_experts/n_group (",
                                   c.topk_group * (e / c.n_group), ")"),
                      absl::StrCat(c.num_experts_per_tok));
  }
  if (c.score_function != "sigmoid") {
    return FieldError(source, "score_function", "\"sigmoid\"", json(c.score_function).dump());
  }
  return absl::OkStatus();
}

// ALiBi slopes of OpenNLPLab lightning attention (MODEL.md §2.2), in double.
std::vector<double> PowerOfTwoSlopes(int64_t n) {
  const double start = std::pow(2.0, -std::pow(2.0, -(std::log2(static_cast<double>(n)) - 3)));
  std::vector<double> slopes(n);
  for (int64_t h = 0; h < n; ++h) slopes[h] = std::pow(start, static_cast<double>(h + 1));
  return slopes;
}

std::vector<double> AlibiSlopes(int64_t n) {
  int64_t p = 1;
  while (p * 2 <= n) p *= 2;
  std::vector<double> slopes = PowerOfTwoSlopes(p);
  if (p == n) return slopes;
  // Not a power of 2: append every other slope of the 2p table, the first n − p of them.
  std::vector<double> finer = PowerOfTwoSlopes(2 * p);
  for (int64_t i = 0; static_cast<int64_t>(slopes.size()) < n; i += 2) slopes.push_back(finer[i]);
  return slopes;
}

}  // namespace

int64_t ModelConfig::rotary_dim() const {
  return static_cast<int64_t>(std::llround(static_cast<double>(head_dim) * partial_rotary_factor));
}

std::vector<float> ModelConfig::LinearDecay(int64_t layer) const {
  const int64_t n = num_hidden_layers;
  double f = 1.0 + 1e-5;
  if (n > 1) {
    const double shift = decay_convention == DecayConvention::kEngine ? 0.0 : 1.0;
    f = 1.0 - (static_cast<double>(layer) - shift) / static_cast<double>(n - 1) + 1e-5;
  }
  std::vector<double> slopes = AlibiSlopes(num_attention_heads);
  std::vector<float> decay(slopes.size());
  for (size_t h = 0; h < slopes.size(); ++h) decay[h] = static_cast<float>(slopes[h] * f);
  return decay;
}

absl::StatusOr<ModelConfig> ParseModelConfig(const json& j, const std::string& source) {
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": expected a JSON object (an HF config.json), got ", j.type_name()));
  }
  ModelConfig c;
  c.model_type = "bailing_moe_linear";
  TANDEM_RETURN_IF_ERROR(ReadFields(j, source, c));
  TANDEM_RETURN_IF_ERROR(ValidateAttention(source, c));
  TANDEM_RETURN_IF_ERROR(ValidateMlp(source, c));
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  std::error_code ec;
  const std::string file = std::filesystem::is_directory(path, ec) ? path + "/config.json" : path;
  std::ifstream f(file);
  if (!f.good()) return absl::NotFoundError(absl::StrCat(file, ": cannot open the model config"));
  std::stringstream text;
  text << f.rdbuf();
  json j;
  try {
    j = json::parse(text.str());
  } catch (const json::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": not valid JSON: ", e.what()));
  }
  return ParseModelConfig(j, file);
}

json ModelConfigToJson(const ModelConfig& c) {
  json j;
  j["architectures"] = {"BailingMoeLinearV2ForCausalLM"};
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["intermediate_size"] = c.intermediate_size;
  j["first_k_dense_replace"] = c.first_k_dense_replace;
  j["num_experts"] = c.num_experts;
  j["num_experts_per_tok"] = c.num_experts_per_tok;
  j["num_shared_experts"] = c.num_shared_experts;
  j["moe_intermediate_size"] = c.moe_intermediate_size;
  j["moe_shared_expert_intermediate_size"] = c.moe_shared_expert_intermediate_size;
  j["n_group"] = c.n_group;
  j["topk_group"] = c.topk_group;
  j["routed_scaling_factor"] = c.routed_scaling_factor;
  j["norm_topk_prob"] = c.norm_topk_prob;
  j["score_function"] = c.score_function;
  j["moe_router_enable_expert_bias"] = true;
  j["group_norm_size"] = c.group_norm_size;
  j["layer_group_size"] = c.layer_group_size;
  if (c.layer_types != LayerTypesFromGroupSize(c.num_hidden_layers, c.layer_group_size)) {
    json types = json::array();
    for (LayerType t : c.layer_types) {
      types.push_back(t == LayerType::kLinear ? "linear_attention" : "full_attention");
    }
    j["layer_types"] = types;
  }
  j["partial_rotary_factor"] = c.partial_rotary_factor;
  j["rope_theta"] = c.rope_theta;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["use_qk_norm"] = c.use_qk_norm;
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  if (c.eos_token_id >= 0) j["eos_token_id"] = c.eos_token_id;
  if (c.pad_token_id >= 0) j["pad_token_id"] = c.pad_token_id;
  j["torch_dtype"] = c.dtype;
  if (c.decay_convention == DecayConvention::kHfRemote) j["tandem_decay_convention"] = "hf_remote";
  return j;
}

ParameterCounts CountParameters(const ModelConfig& c) {
  const int64_t dm = c.hidden_size, hd = c.num_attention_heads * c.head_dim;
  ParameterCounts n;
  n.embedding = c.vocab_size * dm * (c.tie_word_embeddings ? 1 : 2);
  int64_t inactive = 0;  // routed experts a token does not use
  int64_t layers = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    layers += 2 * dm;  // the two RMSNorm weights
    layers +=
        (c.num_attention_heads + 2 * c.kv_heads(l)) * c.head_dim * dm + dm * hd;  // qkv, dense
    layers += 2 * c.head_dim;                                            // query/key layernorm
    if (c.layer_types[l] == LayerType::kLinear) layers += hd * dm + hd;  // g_proj, g_norm
    if (!c.IsMoeLayer(l)) {
      layers += 3 * c.intermediate_size * dm;
      continue;
    }
    const int64_t expert = 3 * c.moe_intermediate_size * dm;
    // Router weight and the fp32 expert-bias buffer (tiny; counted since it is in the checkpoint).
    layers += c.num_experts * dm + c.num_experts;
    layers += c.num_experts * expert + 3 * c.shared_intermediate_size() * dm;
    inactive += (c.num_experts - c.num_experts_per_tok) * expert;
  }
  n.total = n.embedding + layers + dm;  // + final norm
  n.active = n.total - inactive;
  n.active_non_embedding = n.active - n.embedding;
  return n;
}

}  // namespace tandem::model
