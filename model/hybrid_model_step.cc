// ForwardStep: the rollout engine's incremental forward. The new rows of every sequence in the step
// are packed into one residual stream and run through the same blocks as HybridModel::Forward;
// only the attention cores differ, and they read the cache with the training forward's routines:
// softmax layers through SoftmaxAttentionDecode (one query row per new token, rule 2), linear
// layers through LinearAttentionFwd from the slot's boundary state or LinearAttentionDecode on the
// open chunk (rule 3). Row order inside the step is free, because every other op is row-local.
#include "model/hybrid_model_step.h"

#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "kernels/core/contract.h"
#include "kernels/core/status_macros.h"
#include "kernels/embedding/embedding.h"
#include "kernels/gemm/gemm.h"
#include "kernels/linear_attention/linear_attention.h"
#include "kernels/softmax_attention/softmax_attention.h"
#include "model/hybrid_model_blocks.h"

namespace tandem::model {
namespace {

using internal::FeedForwardHalf;
using internal::LinearAttentionOutput;
using internal::LinearParams;
using internal::ProjectQkv;
using internal::Qkv;
using internal::ResidualStream;
using internal::SoftmaxAttentionOutput;
using internal::SoftmaxParams;

Tensor F32(Shape shape) { return Tensor::Empty(std::move(shape), DType::kF32); }

// The rows of one step. Multi-token pieces are packed first (rows [0, prefill_rows)), then the
// single-token ones, so the linear layers hand one contiguous range to each kernel.
struct StepLayout {
  std::vector<int64_t> order;      // batch index of each packed sequence
  std::vector<int64_t> row_begin;  // [B + 1] first packed row of each packed sequence
  int64_t num_prefill = 0;         // order[0, num_prefill) have more than one new token
  Tensor tokens;                   // [T] i32
  Tensor positions;                // [T] i32, position of each row in its own sequence
  Tensor prefill_cu;               // [Bp + 1] i32, cu_seqlens of the multi-token pieces
  Tensor block_tables;             // [T, max_blocks] i32, the table of each row's sequence
  Tensor seq_lens;                 // [T] i32, position + 1: the keys a row attends to
  std::vector<int64_t> kv_row;     // [T] destination row (block · tile + offset) in the cache
};

absl::Status ValidateSequence(const ModelConfig& config, const StepSequence& s, int64_t b,
                              InferenceCache& cache, std::unordered_set<int64_t>& slots) {
  const int64_t n = static_cast<int64_t>(s.tokens.size());
  TANDEM_CHECK_ARG(n >= 1, "batch[", b, "].tokens: must hold at least one new token");
  for (int64_t i = 0; i < n; ++i) {
    TANDEM_CHECK_ARG(s.tokens[i] >= 0 && s.tokens[i] < config.vocab_size, "batch[", b,
                     "].tokens: id ", s.tokens[i], " at index ", i,
                     " is outside the vocabulary [0, ", config.vocab_size, ")");
  }
  TANDEM_CHECK_ARG(s.start_position >= 0, "batch[", b, "].start_position: must be >= 0, got ",
                   s.start_position);
  TANDEM_CHECK_ARG(n == 1 || s.start_position % kLinearAttentionChunk == 0, "batch[", b, "]: ", n,
                   " new tokens must start at a chunk boundary (multiple of ",
                   kLinearAttentionChunk, "), start_position = ", s.start_position);
  TANDEM_CHECK_ARG(s.slot >= 0 && s.slot < cache.num_slots(), "batch[", b, "].slot: ", s.slot,
                   " is outside [0, ", cache.num_slots(), ")");
  TANDEM_CHECK_ARG(slots.insert(s.slot).second, "batch[", b, "].slot: ", s.slot,
                   " appears twice in the batch");
  const int64_t need = (s.start_position + n + kAttentionKvTile - 1) / kAttentionKvTile;
  TANDEM_CHECK_ARG(static_cast<int64_t>(s.block_table.size()) >= need, "batch[", b,
                   "].block_table: ", s.block_table.size(), " blocks cannot hold ",
                   s.start_position + n, " positions (need ", need, ")");
  for (int64_t j = 0; j < need; ++j) {
    TANDEM_CHECK_ARG(s.block_table[j] >= 0 && s.block_table[j] < cache.num_blocks(), "batch[", b,
                     "].block_table[", j, "]: ", s.block_table[j], " is outside [0, ",
                     cache.num_blocks(), ")");
  }
  // The slot must continue exactly where start_position says it is (rule 3).
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    if (config.layer_types[l] != LayerType::kLinear) continue;
    const int32_t open = cache.linear_layer(l).open_len.data<int32_t>()[s.slot];
    TANDEM_CHECK_ARG(open == s.start_position % kLinearAttentionChunk, "batch[", b, "].slot ",
                     s.slot, ": holds an open chunk of ", open, " tokens, but start_position ",
                     s.start_position, " needs ", s.start_position % kLinearAttentionChunk);
    break;
  }
  return absl::OkStatus();
}

absl::StatusOr<StepLayout> MakeLayout(const ModelConfig& config,
                                      const std::vector<StepSequence>& batch,
                                      InferenceCache& cache) {
  TANDEM_CHECK_ARG(!batch.empty(), "batch: must hold at least one sequence");
  std::unordered_set<int64_t> slots;
  StepLayout L;
  size_t max_blocks = 1;
  for (size_t b = 0; b < batch.size(); ++b) {
    TANDEM_RETURN_IF_ERROR(ValidateSequence(config, batch[b], b, cache, slots));
    if (batch[b].tokens.size() > 1) L.order.push_back(static_cast<int64_t>(b));
    max_blocks = std::max(max_blocks, batch[b].block_table.size());
  }
  L.num_prefill = static_cast<int64_t>(L.order.size());
  for (size_t b = 0; b < batch.size(); ++b) {
    if (batch[b].tokens.size() == 1) L.order.push_back(static_cast<int64_t>(b));
  }
  L.row_begin.push_back(0);
  for (int64_t b : L.order) L.row_begin.push_back(L.row_begin.back() + batch[b].tokens.size());
  const int64_t T = L.row_begin.back(), M = static_cast<int64_t>(max_blocks);
  L.tokens = Tensor::Empty({T}, DType::kI32);
  L.positions = Tensor::Empty({T}, DType::kI32);
  L.block_tables = Tensor::Zeros({T, M}, DType::kI32);
  L.seq_lens = Tensor::Empty({T}, DType::kI32);
  L.kv_row.resize(T);
  for (size_t i = 0; i < L.order.size(); ++i) {
    const StepSequence& s = batch[L.order[i]];
    for (int64_t r = L.row_begin[i]; r < L.row_begin[i + 1]; ++r) {
      const int64_t pos = s.start_position + (r - L.row_begin[i]);
      L.tokens.data<int32_t>()[r] = s.tokens[r - L.row_begin[i]];
      L.positions.data<int32_t>()[r] = static_cast<int32_t>(pos);
      L.seq_lens.data<int32_t>()[r] = static_cast<int32_t>(pos + 1);
      std::copy(s.block_table.begin(), s.block_table.end(), L.block_tables.data<int32_t>() + r * M);
      L.kv_row[r] =
          s.block_table[pos / kAttentionKvTile] * kAttentionKvTile + pos % kAttentionKvTile;
    }
  }
  L.prefill_cu = Tensor::Empty({L.num_prefill + 1}, DType::kI32);
  for (int64_t i = 0; i <= L.num_prefill; ++i) {
    L.prefill_cu.data<int32_t>()[i] = static_cast<int32_t>(L.row_begin[i]);
  }
  return L;
}

// Copies each new row's k, v [T, Hkv, D] into its cache block row.
void WriteKv(const Context& ctx, const StepLayout& L, const Tensor& k, const Tensor& v,
             InferenceCache::SoftmaxLayer& layer) {
  const int64_t width = k.numel() / std::max<int64_t>(k.dim(0), 1);
  ctx.ParallelFor(k.dim(0), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      std::memcpy(layer.k.data<float>() + L.kv_row[r] * width, k.data<float>() + r * width,
                  width * sizeof(float));
      std::memcpy(layer.v.data<float>() + L.kv_row[r] * width, v.data<float>() + r * width,
                  width * sizeof(float));
    }
  });
}

absl::Status SoftmaxStep(const Context& ctx, const ModelConfig& config, const LayerWeights& w,
                         const StepLayout& L, InferenceCache::SoftmaxLayer& layer, const Tensor& h,
                         Tensor& out) {
  TANDEM_ASSIGN_OR_RETURN(Qkv qkv,
                          ProjectQkv(ctx, config, config.num_key_value_heads, w, L.positions, h));
  WriteKv(ctx, L, qkv.k, qkv.v, layer);
  const int64_t T = h.dim(0), H = config.num_attention_heads, D = config.head_dim;
  Tensor o = F32({T, H, D});  // [T, H, D]
  TANDEM_RETURN_IF_ERROR(kernels::SoftmaxAttentionDecode(ctx, SoftmaxParams(config), qkv.q, layer.k,
                                                         layer.v, L.block_tables, L.seq_lens, o));
  return SoftmaxAttentionOutput(ctx, config, w, o, out);
}

// Multi-token pieces: the chunked forward from each slot's boundary state; the new boundary state
// and the trailing partial chunk's k, v go back into the slot.
absl::Status LinearPrefill(const Context& ctx, const ModelConfig& config, const Tensor& decay,
                           const std::vector<StepSequence>& batch, const StepLayout& L,
                           const Qkv& qkv, InferenceCache::LinearLayer& layer, Tensor& o) {
  const int64_t Bp = L.num_prefill, Tp = L.row_begin[Bp];
  const int64_t H = config.num_attention_heads, D = config.head_dim, C = kLinearAttentionChunk;
  const size_t state_bytes = H * D * D * sizeof(float), row_bytes = H * D * sizeof(float);
  Tensor initial = F32({Bp, H, D, D});   // [Bp, H, D, D]
  Tensor boundary = F32({Bp, H, D, D});  // [Bp, H, D, D]
  for (int64_t i = 0; i < Bp; ++i) {
    std::memcpy(initial.data<float>() + i * H * D * D,
                layer.state.data<float>() + batch[L.order[i]].slot * H * D * D, state_bytes);
  }
  Tensor no_chunk_states;
  Tensor o_rows = o.Rows(0, Tp);  // [Tp, H, D]
  TANDEM_RETURN_IF_ERROR(kernels::LinearAttentionFwd(
      ctx, LinearParams(config), qkv.q.Rows(0, Tp), qkv.k.Rows(0, Tp), qkv.v.Rows(0, Tp), decay,
      L.prefill_cu, initial, o_rows, no_chunk_states, boundary));
  for (int64_t i = 0; i < Bp; ++i) {
    const int64_t slot = batch[L.order[i]].slot;
    const int64_t n = L.row_begin[i + 1] - L.row_begin[i], open = n % C;
    std::memcpy(layer.state.data<float>() + slot * H * D * D,
                boundary.data<float>() + i * H * D * D, state_bytes);
    const int64_t first = L.row_begin[i + 1] - open;  // first row of the trailing partial chunk
    std::memcpy(layer.open_k.data<float>() + slot * C * H * D, qkv.k.data<float>() + first * H * D,
                open * row_bytes);
    std::memcpy(layer.open_v.data<float>() + slot * C * H * D, qkv.v.data<float>() + first * H * D,
                open * row_bytes);
    layer.open_len.data<int32_t>()[slot] = static_cast<int32_t>(open);
  }
  return absl::OkStatus();
}

absl::Status LinearStep(const Context& ctx, const ModelConfig& config, int64_t layer_index,
                        const LayerWeights& w, const std::vector<StepSequence>& batch,
                        const StepLayout& L, InferenceCache::LinearLayer& layer, const Tensor& h,
                        Tensor& out) {
  TANDEM_ASSIGN_OR_RETURN(Qkv qkv,
                          ProjectQkv(ctx, config, config.num_attention_heads, w, L.positions, h));
  const int64_t T = h.dim(0), H = config.num_attention_heads, D = config.head_dim;
  Tensor decay = Tensor::FromVector(config.LinearDecay(layer_index), {H});  // [H]
  Tensor o = F32({T, H, D});                                                // [T, H, D]
  if (L.num_prefill > 0) {
    TANDEM_RETURN_IF_ERROR(LinearPrefill(ctx, config, decay, batch, L, qkv, layer, o));
  }
  // Single tokens: decode on the slot itself (views, no copies of the state).
  const int64_t first = L.num_prefill, num_decode = static_cast<int64_t>(L.order.size()) - first;
  auto decode = [&](int64_t i) {
    const int64_t r = L.row_begin[first + i], slot = batch[L.order[first + i]].slot;
    Tensor state = layer.state.Rows(slot, slot + 1);        // [1, H, D, D]
    Tensor open_k = layer.open_k.Rows(slot, slot + 1);      // [1, C, H, D]
    Tensor open_v = layer.open_v.Rows(slot, slot + 1);      // [1, C, H, D]
    Tensor open_len = layer.open_len.Rows(slot, slot + 1);  // [1]
    Tensor o_row = o.Rows(r, r + 1);                        // [1, H, D]
    return kernels::LinearAttentionDecode(ctx, LinearParams(config), qkv.q.Rows(r, r + 1),
                                          qkv.k.Rows(r, r + 1), qkv.v.Rows(r, r + 1), decay, state,
                                          open_k, open_v, open_len, o_row);
  };
  if (num_decode < ctx.num_threads()) {
    for (int64_t i = 0; i < num_decode; ++i) TANDEM_RETURN_IF_ERROR(decode(i));  // threads: heads
  } else {
    // Threads split the sequences (the kernel's own ParallelFor runs inline inside a worker),
    // one hand-off per layer instead of one per sequence. Each sequence's bits are the same.
    std::vector<absl::Status> status(num_decode);
    ctx.ParallelFor(num_decode, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) status[i] = decode(i);
    });
    for (const absl::Status& st : status) TANDEM_RETURN_IF_ERROR(st);
  }
  return LinearAttentionOutput(ctx, config, w, h, o, out);
}

// logits [B, V] in input order from the last row of each sequence: the final norm (with the last
// block's pending residual add) and the LM head, on those rows only; both are row-local.
absl::StatusOr<Tensor> LastRowLogits(const Context& ctx, const HybridModel& model,
                                     const StepLayout& L, const ResidualStream& stream) {
  const ModelConfig& config = model.config();
  const int64_t B = static_cast<int64_t>(L.order.size()), Dm = config.hidden_size;
  ResidualStream last{F32({B, Dm}), F32({B, Dm}), F32({B, Dm}), F32({B})};
  last.delta_pending = stream.delta_pending;
  for (int64_t i = 0; i < B; ++i) {
    const int64_t src = L.row_begin[i + 1] - 1, dst = L.order[i];
    std::memcpy(last.x.data<float>() + dst * Dm, stream.x.data<float>() + src * Dm,
                Dm * sizeof(float));
    if (stream.delta_pending) {
      std::memcpy(last.delta.data<float>() + dst * Dm, stream.delta.data<float>() + src * Dm,
                  Dm * sizeof(float));
    }
  }
  TANDEM_RETURN_IF_ERROR(
      last.Norm(ctx, model.weights().final_norm, static_cast<float>(config.rms_norm_eps)));
  Tensor logits = F32({B, config.vocab_size});  // [B, V]
  TANDEM_RETURN_IF_ERROR(kernels::GemmNT(ctx, last.h, model.weights().lm_head, logits));
  return logits;
}

}  // namespace

absl::StatusOr<Tensor> ForwardStep(const Context& ctx, const HybridModel& model,
                                   const std::vector<StepSequence>& batch, InferenceCache& cache) {
  const ModelConfig& config = model.config();
  if (!config.use_qk_norm) {
    return absl::UnimplementedError("config: use_qk_norm = false is not supported");
  }
  TANDEM_ASSIGN_OR_RETURN(StepLayout L, MakeLayout(config, batch, cache));
  const int64_t T = L.row_begin.back(), Dm = config.hidden_size;
  ResidualStream stream{F32({T, Dm}), F32({T, Dm}), F32({T, Dm}), F32({T})};
  TANDEM_RETURN_IF_ERROR(kernels::EmbeddingFwd(ctx, model.weights().embed, L.tokens, stream.x));
  const float eps = static_cast<float>(config.rms_norm_eps);
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    const LayerWeights& w = model.weights().layers[l];
    TANDEM_RETURN_IF_ERROR(stream.Norm(ctx, w.input_layernorm, eps));
    if (config.layer_types[l] == LayerType::kLinear) {
      TANDEM_RETURN_IF_ERROR(
          LinearStep(ctx, config, l, w, batch, L, cache.linear_layer(l), stream.h, stream.delta));
    } else {
      TANDEM_RETURN_IF_ERROR(
          SoftmaxStep(ctx, config, w, L, cache.softmax_layer(l), stream.h, stream.delta));
    }
    stream.delta_pending = true;
    TANDEM_RETURN_IF_ERROR(FeedForwardHalf(ctx, config, l, w, stream));
  }
  return LastRowLogits(ctx, model, L, stream);
}

}  // namespace tandem::model
