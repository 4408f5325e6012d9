// ForwardStep: the rollout engine's incremental forward. The new rows of every sequence in the step
// are packed into one residual stream and run through the same blocks as HybridModel::Forward;
// only the attention cores differ, and they read the cache with the training forward's routines:
// softmax layers through SoftmaxAttentionDecode (one query row per new token, rule 2; on the GPU a
// multi-token piece goes through the paged prefill, which gives its rows the same bits), linear
// layers through LinearAttentionFwd from the slot's boundary state or LinearAttentionDecode on the
// open chunk (rule 3). Row order inside the step is free, because every other op is row-local.
// On a CUDA context the cache, the weights and every buffer live on the GPU (bf16 K/V blocks);
// token ids, positions and offsets stay on the host, where the kernels read them.
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
#include "model/device_ops.h"
#include "model/device_weights.h"
#include "model/hybrid_model_blocks.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/softmax_attention/softmax_attention_cuda.h"
#endif

namespace tandem::model {
namespace {

using internal::Buffer;
using internal::CopyRows;
using internal::FeedForwardHalf;
using internal::LinearAttentionOutput;
using internal::LinearParams;
using internal::OnCuda;
using internal::ProjectQkv;
using internal::Qkv;
using internal::ResidualStream;
using internal::SoftmaxAttentionOutput;
using internal::SoftmaxParams;

Tensor F32(const Context& ctx, Shape shape) { return Buffer(ctx, std::move(shape)); }

std::vector<int64_t> Iota(int64_t begin, int64_t end) {
  std::vector<int64_t> v;
  for (int64_t i = begin; i < end; ++i) v.push_back(i);
  return v;
}

// The rows of one step. Multi-token pieces are packed first (rows [0, prefill_rows)), then the
// single-token ones, so the linear layers hand one contiguous range to each kernel. On the GPU the
// single-token rows are sorted by slot, so runs of consecutive slots decode in one launch.
struct StepLayout {
  std::vector<int64_t> order;      // batch index of each packed sequence
  std::vector<int64_t> row_begin;  // [B + 1] first packed row of each packed sequence
  int64_t num_prefill = 0;         // order[0, num_prefill) have more than one new token
  Tensor tokens;                   // [T] i32 (host)
  Tensor positions;                // [T] i32 (host), position of each row in its own sequence
  Tensor prefill_cu;               // [Bp + 1] i32 (host), cu_seqlens of the multi-token pieces
  // On the GPU, multi-token pieces go through the paged prefill, which needs one block-table row
  // per piece: block_tables then holds piece i's table in row i and single-token row r's in row
  // num_prefill + r − prefill rows. Elsewhere every row is decoded and has its own table row r.
  bool piece_tables = false;
  Tensor block_tables;  // [rows, max_blocks] i32 (ctx's device), as above
  Tensor seq_lens;      // [T] i32 (ctx's device), position + 1: the keys a row sees
  int64_t TableRowOfPiece(int64_t i) const { return piece_tables ? i : row_begin[i]; }
  // Table row of packed row r (a single-token row when piece_tables).
  int64_t TableRowOfRow(int64_t r) const {
    return piece_tables ? num_prefill + r - row_begin[num_prefill] : r;
  }
  std::vector<int64_t> kv_row;  // [T] destination row (block · tile + offset) in the cache
};

// open_len: the slots' open-chunk lengths (host copy of one linear layer's), null without linear
// layers.
absl::Status ValidateSequence(const ModelConfig& config, const StepSequence& s, int64_t b,
                              const InferenceCache& cache, const int32_t* open_len,
                              std::unordered_set<int64_t>& slots) {
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
  if (open_len != nullptr) {
    const int32_t open = open_len[s.slot];
    TANDEM_CHECK_ARG(open == s.start_position % kLinearAttentionChunk, "batch[", b, "].slot ",
                     s.slot, ": holds an open chunk of ", open, " tokens, but start_position ",
                     s.start_position, " needs ", s.start_position % kLinearAttentionChunk);
  }
  return absl::OkStatus();
}

// A host copy of the open-chunk lengths of the first linear layer (all linear layers advance
// together); undefined without linear layers.
absl::StatusOr<Tensor> OpenLengths(const Context& ctx, const ModelConfig& config,
                                   InferenceCache& cache) {
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    if (config.layer_types[l] == LayerType::kLinear) {
      return internal::ToHost(ctx, cache.linear_layer(l).open_len);
    }
  }
  return Tensor();
}

// The packed order: multi-token pieces in input order, then single tokens (by slot on the GPU).
void PackOrder(const Context& ctx, const std::vector<StepSequence>& batch, StepLayout& L) {
  for (size_t b = 0; b < batch.size(); ++b) {
    if (batch[b].tokens.size() > 1) L.order.push_back(static_cast<int64_t>(b));
  }
  L.num_prefill = static_cast<int64_t>(L.order.size());
  for (size_t b = 0; b < batch.size(); ++b) {
    if (batch[b].tokens.size() == 1) L.order.push_back(static_cast<int64_t>(b));
  }
  if (OnCuda(ctx)) {
    std::stable_sort(L.order.begin() + L.num_prefill, L.order.end(),
                     [&](int64_t a, int64_t b) { return batch[a].slot < batch[b].slot; });
  }
  L.row_begin.push_back(0);
  for (int64_t b : L.order) L.row_begin.push_back(L.row_begin.back() + batch[b].tokens.size());
}

absl::StatusOr<StepLayout> MakeLayout(const Context& ctx, const ModelConfig& config,
                                      const std::vector<StepSequence>& batch,
                                      InferenceCache& cache) {
  TANDEM_CHECK_ARG(!batch.empty(), "batch: must hold at least one sequence");
  TANDEM_ASSIGN_OR_RETURN(Tensor open_len, OpenLengths(ctx, config, cache));
  std::unordered_set<int64_t> slots;
  StepLayout L;
  size_t max_blocks = 1;
  for (size_t b = 0; b < batch.size(); ++b) {
    TANDEM_RETURN_IF_ERROR(ValidateSequence(config, batch[b], b, cache,
                                            open_len.defined() ? open_len.data<int32_t>() : nullptr,
                                            slots));
    max_blocks = std::max(max_blocks, batch[b].block_table.size());
  }
  PackOrder(ctx, batch, L);
  const int64_t T = L.row_begin.back(), M = static_cast<int64_t>(max_blocks);
  L.tokens = Tensor::Empty({T}, DType::kI32);
  L.positions = Tensor::Empty({T}, DType::kI32);
  // (A [T, M] table of a 4096-token prefill at 128K context is 32 MB to fill and upload.)
  L.piece_tables = OnCuda(ctx) && KvCacheDType(Device::kCUDA) == DType::kBF16;
  const int64_t table_rows = L.piece_tables ? L.num_prefill + T - L.row_begin[L.num_prefill] : T;
  Tensor block_tables = Tensor::Zeros({table_rows, M}, DType::kI32);  // [rows, M]
  Tensor seq_lens = Tensor::Empty({T}, DType::kI32);                  // [T]
  L.kv_row.resize(T);
  const auto set_table = [&](int64_t row, const StepSequence& s) {
    std::copy(s.block_table.begin(), s.block_table.end(), block_tables.data<int32_t>() + row * M);
  };
  for (size_t i = 0; i < L.order.size(); ++i) {
    const StepSequence& s = batch[L.order[i]];
    const bool piece = L.piece_tables && static_cast<int64_t>(i) < L.num_prefill;
    if (piece) set_table(L.TableRowOfPiece(static_cast<int64_t>(i)), s);
    for (int64_t r = L.row_begin[i]; r < L.row_begin[i + 1]; ++r) {
      const int64_t pos = s.start_position + (r - L.row_begin[i]);
      L.tokens.data<int32_t>()[r] = s.tokens[r - L.row_begin[i]];
      L.positions.data<int32_t>()[r] = static_cast<int32_t>(pos);
      seq_lens.data<int32_t>()[r] = static_cast<int32_t>(pos + 1);
      if (!piece) set_table(L.TableRowOfRow(r), s);
      L.kv_row[r] =
          s.block_table[pos / kAttentionKvTile] * kAttentionKvTile + pos % kAttentionKvTile;
    }
  }
  L.prefill_cu = Tensor::Empty({L.num_prefill + 1}, DType::kI32);
  for (int64_t i = 0; i <= L.num_prefill; ++i) {
    L.prefill_cu.data<int32_t>()[i] = static_cast<int32_t>(L.row_begin[i]);
  }
  TANDEM_ASSIGN_OR_RETURN(L.block_tables, internal::ToContextDevice(ctx, block_tables));
  TANDEM_ASSIGN_OR_RETURN(L.seq_lens, internal::ToContextDevice(ctx, seq_lens));
  return L;
}

absl::Status SoftmaxStep(const Context& ctx, const ModelConfig& config, const LayerWeights& w,
                         const StepLayout& L, InferenceCache::SoftmaxLayer& layer, const Tensor& h,
                         Tensor& out) {
  TANDEM_ASSIGN_OR_RETURN(Qkv qkv,
                          ProjectQkv(ctx, config, config.num_key_value_heads, w, L.positions, h));
  // Each new row's k, v into its cache block row.
  const int64_t T = h.dim(0), H = config.num_attention_heads, D = config.head_dim;
  const int64_t kv_width = config.num_key_value_heads * D;
  TANDEM_RETURN_IF_ERROR(CopyRows(ctx, qkv.k, Iota(0, T), layer.k, L.kv_row, kv_width));
  TANDEM_RETURN_IF_ERROR(CopyRows(ctx, qkv.v, Iota(0, T), layer.v, L.kv_row, kv_width));
  Tensor o = Buffer(ctx, {T, H, D}, internal::GemmInputDType(ctx));  // [T, H, D]
  int64_t decode_from = 0;  // rows [decode_from, T) go through the decode
#ifdef TANDEM_HAVE_CUDA
  // Multi-token pieces on the GPU: the paged prefill reads each key tile once per 128 query rows,
  // where the decode reads a sequence's keys once per row; each row's bits are the same.
  if (L.piece_tables && L.num_prefill > 0) {
    std::vector<kernels::cuda::SoftmaxPrefillPiece> pieces(L.num_prefill);
    for (int64_t i = 0; i < L.num_prefill; ++i) {
      const int64_t r = L.row_begin[i];
      pieces[i] = {r, L.row_begin[i + 1] - r, L.positions.data<int32_t>()[r], L.TableRowOfPiece(i)};
    }
    TANDEM_RETURN_IF_ERROR(kernels::cuda::SoftmaxAttentionPrefillPaged(
        ctx, SoftmaxParams(config), qkv.q, layer.k, layer.v, L.block_tables, pieces, o));
    decode_from = L.row_begin[L.num_prefill];
  }
#endif
  if (decode_from < T) {
    Tensor o_rows = o.Rows(decode_from, T);
    TANDEM_RETURN_IF_ERROR(kernels::SoftmaxAttentionDecode(
        ctx, SoftmaxParams(config), qkv.q.Rows(decode_from, T), layer.k, layer.v,
        L.block_tables.Rows(L.TableRowOfRow(decode_from), L.TableRowOfRow(T)),
        L.seq_lens.Rows(decode_from, T), o_rows));
  }
  return SoftmaxAttentionOutput(ctx, config, w, o, out);
}

// Multi-token pieces: the chunked forward from each slot's boundary state; the new boundary state
// and the trailing partial chunk's k, v go back into the slot.
absl::Status LinearPrefill(const Context& ctx, const ModelConfig& config, const Tensor& decay,
                           const std::vector<StepSequence>& batch, const StepLayout& L,
                           const Qkv& qkv, InferenceCache::LinearLayer& layer, Tensor& o) {
  const int64_t Bp = L.num_prefill, Tp = L.row_begin[Bp];
  const int64_t H = config.num_attention_heads, D = config.head_dim, C = kLinearAttentionChunk;
  std::vector<int64_t> slots(Bp);
  for (int64_t i = 0; i < Bp; ++i) slots[i] = batch[L.order[i]].slot;
  Tensor initial = F32(ctx, {Bp, H, D, D});   // [Bp, H, D, D]
  Tensor boundary = F32(ctx, {Bp, H, D, D});  // [Bp, H, D, D]
  TANDEM_RETURN_IF_ERROR(CopyRows(ctx, layer.state, slots, initial, Iota(0, Bp), H * D * D));
  Tensor no_chunk_states;
  Tensor o_rows = o.Rows(0, Tp);  // [Tp, H, D]
  TANDEM_RETURN_IF_ERROR(kernels::LinearAttentionFwd(
      ctx, LinearParams(config), qkv.q.Rows(0, Tp), qkv.k.Rows(0, Tp), qkv.v.Rows(0, Tp), decay,
      L.prefill_cu, initial, o_rows, no_chunk_states, boundary));
  TANDEM_RETURN_IF_ERROR(CopyRows(ctx, boundary, Iota(0, Bp), layer.state, slots, H * D * D));
  // The trailing partial chunk of each piece becomes its slot's open chunk.
  std::vector<int64_t> src_rows, dst_rows;
  Tensor open = Tensor::Empty({Bp}, DType::kI32);  // [Bp] new open_len per piece
  for (int64_t i = 0; i < Bp; ++i) {
    const int64_t n = L.row_begin[i + 1] - L.row_begin[i], len = n % C;
    const int64_t first = L.row_begin[i + 1] - len;  // first row of the trailing partial chunk
    for (int64_t j = 0; j < len; ++j) {
      src_rows.push_back(first + j);
      dst_rows.push_back(slots[i] * C + j);
    }
    open.data<int32_t>()[i] = static_cast<int32_t>(len);
  }
  TANDEM_RETURN_IF_ERROR(CopyRows(ctx, qkv.k, src_rows, layer.open_k, dst_rows, H * D));
  TANDEM_RETURN_IF_ERROR(CopyRows(ctx, qkv.v, src_rows, layer.open_v, dst_rows, H * D));
  TANDEM_ASSIGN_OR_RETURN(Tensor open_dev, internal::ToContextDevice(ctx, open));
  return CopyRows(ctx, open_dev, Iota(0, Bp), layer.open_len, slots, 1);
}

// Single tokens on the CPU: decode on each slot itself (views, no copies of the state).
absl::Status LinearDecodeCpu(const Context& ctx, const ModelConfig& config, const Tensor& decay,
                             const std::vector<StepSequence>& batch, const StepLayout& L,
                             const Qkv& qkv, InferenceCache::LinearLayer& layer, Tensor& o) {
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
    return absl::OkStatus();
  }
  // Threads split the sequences (the kernel's own ParallelFor runs inline inside a worker),
  // one hand-off per layer instead of one per sequence. Each sequence's bits are the same.
  std::vector<absl::Status> status(num_decode);
  ctx.ParallelFor(num_decode, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) status[i] = decode(i);
  });
  for (const absl::Status& st : status) TANDEM_RETURN_IF_ERROR(st);
  return absl::OkStatus();
}

// Single tokens on the GPU: the rows are sorted by slot, so every run of consecutive slots is one
// decode launch over views of those slots. A row's bits do not depend on the run it is in.
absl::Status LinearDecodeCuda(const Context& ctx, const ModelConfig& config, const Tensor& decay,
                              const std::vector<StepSequence>& batch, const StepLayout& L,
                              const Qkv& qkv, InferenceCache::LinearLayer& layer, Tensor& o) {
  const int64_t first = L.num_prefill, end = static_cast<int64_t>(L.order.size());
  for (int64_t i = first; i < end;) {
    int64_t j = i + 1;
    const int64_t s0 = batch[L.order[i]].slot;
    while (j < end && batch[L.order[j]].slot == s0 + (j - i)) ++j;
    const int64_t r0 = L.row_begin[i], n = j - i;
    Tensor state = layer.state.Rows(s0, s0 + n);        // [n, H, D, D]
    Tensor open_k = layer.open_k.Rows(s0, s0 + n);      // [n, C, H, D]
    Tensor open_v = layer.open_v.Rows(s0, s0 + n);      // [n, C, H, D]
    Tensor open_len = layer.open_len.Rows(s0, s0 + n);  // [n]
    Tensor o_rows = o.Rows(r0, r0 + n);                 // [n, H, D]
    TANDEM_RETURN_IF_ERROR(kernels::LinearAttentionDecode(
        ctx, LinearParams(config), qkv.q.Rows(r0, r0 + n), qkv.k.Rows(r0, r0 + n),
        qkv.v.Rows(r0, r0 + n), decay, state, open_k, open_v, open_len, o_rows));
    i = j;
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
  Tensor decay = Tensor::FromVector(config.LinearDecay(layer_index), {H});  // [H] (host)
  Tensor o = F32(ctx, {T, H, D});                                           // [T, H, D]
  if (L.num_prefill > 0) {
    TANDEM_RETURN_IF_ERROR(LinearPrefill(ctx, config, decay, batch, L, qkv, layer, o));
  }
  TANDEM_RETURN_IF_ERROR(OnCuda(ctx)
                             ? LinearDecodeCuda(ctx, config, decay, batch, L, qkv, layer, o)
                             : LinearDecodeCpu(ctx, config, decay, batch, L, qkv, layer, o));
  return LinearAttentionOutput(ctx, config, w, h, o, out);
}

// logits [B, V] in input order from the last row of each sequence: the final norm (with the last
// block's pending residual add) and the LM head, on those rows only; both are row-local.
absl::StatusOr<Tensor> LastRowLogits(const Context& ctx, const HybridModel& model,
                                     const StepLayout& L, const ResidualStream& stream) {
  const ModelConfig& config = model.config();
  const int64_t B = static_cast<int64_t>(L.order.size()), Dm = config.hidden_size;
  ResidualStream last = ResidualStream::Allocate(ctx, B, Dm);
  last.delta_pending = stream.delta_pending;
  std::vector<int64_t> src(B), dst(B);
  for (int64_t i = 0; i < B; ++i) {
    src[i] = L.row_begin[i + 1] - 1;
    dst[i] = L.order[i];
  }
  TANDEM_RETURN_IF_ERROR(CopyRows(ctx, stream.x, src, last.x, dst, Dm));
  if (stream.delta_pending) {
    TANDEM_RETURN_IF_ERROR(CopyRows(ctx, stream.delta, src, last.delta, dst, Dm));
  }
  TANDEM_RETURN_IF_ERROR(
      last.Norm(ctx, model.weights().final_norm, static_cast<float>(config.rms_norm_eps)));
  Tensor logits = F32(ctx, {B, config.vocab_size});  // [B, V]
  TANDEM_RETURN_IF_ERROR(kernels::GemmNT(ctx, last.h, model.weights().lm_head, logits));
  return logits;
}

absl::Status CheckDevices(const Context& ctx, const HybridModel& model,
                          const InferenceCache& cache) {
  if (WeightsDevice(model.weights()) != ctx.device() || cache.device() != ctx.device()) {
    return absl::FailedPreconditionError(
        absl::StrCat("ForwardStep: the context is ", DeviceName(ctx.device()),
                     " but the weights are on ", DeviceName(WeightsDevice(model.weights())),
                     " and the cache on ", DeviceName(cache.device())));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Tensor> ForwardStep(const Context& ctx, const HybridModel& model,
                                   const std::vector<StepSequence>& batch, InferenceCache& cache) {
  const ModelConfig& config = model.config();
  if (!config.use_qk_norm) {
    return absl::UnimplementedError("config: use_qk_norm = false is not supported");
  }
  TANDEM_RETURN_IF_ERROR(CheckDevices(ctx, model, cache));
  TANDEM_ASSIGN_OR_RETURN(StepLayout L, MakeLayout(ctx, config, batch, cache));
  const int64_t T = L.row_begin.back(), Dm = config.hidden_size;
  ResidualStream stream = ResidualStream::Allocate(ctx, T, Dm);
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
