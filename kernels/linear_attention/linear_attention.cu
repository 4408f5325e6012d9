// CUDA chunked linear attention: argument checks, the chunk list, the decay-power tables, and
// dispatch. bf16 q, k, v run the tensor-core forward: at D = 128 without chunk_states on sm_90a,
// one fused launch that keeps the state on chip (linear_fwd_fused.cuh); otherwise two launches —
// the state scan (linear_fwd_scan.cuh) writing bf16 chunk-start states to per-context scratch or
// chunk_states, then the output kernel (linear_fwd_output.cuh) — and decode
// (linear_fwd_decode.cuh); f32 inputs run the CUDA-core
// kernels (linear_attention_f32.cuh). Forward and decode of one input dtype share their device
// pieces, so chunked prefill followed by decode returns the one-pass forward's bits. No reduction
// is split across threads, so the packing, the batch and the launch shape never change a bit.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_device.cuh"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/linear_attention/linear_attention_cuda.h"
#include "kernels/linear_attention/linear_attention_f32.cuh"
#include "kernels/linear_attention/linear_chunk_list.h"
#include "kernels/linear_attention/linear_fwd_decode.cuh"
#include "kernels/linear_attention/linear_fwd_fused.cuh"
#include "kernels/linear_attention/linear_fwd_output.cuh"
#include "kernels/linear_attention/linear_fwd_scan.cuh"
#include "kernels/linear_attention/linear_fwd_timing.cuh"

namespace tandem::kernels::cuda {
namespace linear {

namespace {
FwdPhaseEvents* g_phase_events = nullptr;
bool g_fused_enabled = true;
std::atomic<int64_t> g_fused_launches{0};
}  // namespace

FwdPhaseEvents* ForwardPhaseEvents() { return g_phase_events; }
void SetForwardPhaseEvents(FwdPhaseEvents* events) { g_phase_events = events; }
void SetForwardFusedEnabled(bool enabled) { g_fused_enabled = enabled; }

#if defined(TANDEM_LINEAR_FUSED)
namespace {
const FusedSupport& Support() {
  static const FusedSupport support = FusedForwardSupport();
  return support;
}
}  // namespace
#endif

bool ForwardIsFused(int64_t head_dim) {
#if defined(TANDEM_LINEAR_FUSED)
  return head_dim == FusedDefault::kD && g_fused_enabled && Support().fits;
#else
  return false;
#endif
}

bool FusedOneWave(int batch, int heads) {
#if defined(TANDEM_LINEAR_FUSED)
  return int64_t{batch} * heads * FusedDefault::kCtas <= Support().sms;
#else
  return false;
#endif
}

int64_t FusedLaunches() { return g_fused_launches.load(); }

}  // namespace linear

namespace {

using linear::ChunkItem;
using linear::kC;
using linear::kThreads;
using bf16 = __nv_bfloat16;

bool IsFloat(const Tensor& t) { return t.dtype() == DType::kF32 || t.dtype() == DType::kBF16; }

absl::Status ExpectFloat(const Tensor& t, const char* name, std::initializer_list<int64_t> shape) {
  return ExpectTensor(t, name, IsFloat(t) ? t.dtype() : DType::kF32, shape, Device::kCUDA);
}

absl::Status ExpectStateOrUndefined(const Tensor& t, const char* name, int64_t n, int64_t h,
                                    int64_t d) {
  if (!t.defined()) return absl::OkStatus();
  return ExpectTensor(t, name, DType::kF32, {n, h, d, d}, Device::kCUDA);
}

// Device copies of decay-power tables, keyed by device and decay values: a model has one decay
// vector per layer, and decode would otherwise pay a pageable host-to-device copy every step.
// Entries live for the process.
struct PowerCache {
  struct Entry {
    int device;
    std::vector<float> x;
    float* table;
  };
  static constexpr size_t kMaxEntries = 256;
  std::mutex mu;
  std::vector<Entry> entries;
};

PowerCache& Powers() {
  static PowerCache* cache = new PowerCache();
  return *cache;
}

bool AllBf16(const Tensor& q, const Tensor& k, const Tensor& v) {
  return q.dtype() == DType::kBF16 && k.dtype() == DType::kBF16 && v.dtype() == DType::kBF16;
}

// The tensor-core kernels load bf16 rows 16 bytes at a time (cp.async, tensor maps, vectors).
absl::Status CheckBf16Aligned(const Tensor& t, const char* name) {
  return ExpectAligned16(t, name, "bf16 data must be 16-byte aligned");
}

// Checks p, q, k, v and decay (host), and returns the decay powers [H, C + 1] on the device: a
// cached table, or (cache full or stream capturing) a stream-ordered upload, which the caller
// frees when *owned.
absl::Status CheckAndUploadPowers(const Context& ctx, const LinearAttentionParams& p,
                                  const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& decay, float** pow, bool* owned) {
  TANDEM_CHECK_ARG(p.num_heads > 0, "p.num_heads: must be > 0, got ", p.num_heads);
  TANDEM_CHECK_ARG(LinearAttentionHeadDimSupported(p.head_dim),
                   "p.head_dim: the CUDA kernels take 32, 64 or 128, got ", p.head_dim);
  TANDEM_CHECK_ARG(std::isfinite(p.scale), "p.scale: must be finite, got ", p.scale);
  const int64_t h = p.num_heads, d = p.head_dim;
  TANDEM_RETURN_IF_ERROR(ExpectFloat(q, "q", {-1, h, d}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(k, "k", {q.dim(0), h, d}));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(v, "v", {q.dim(0), h, d}));
  if (AllBf16(q, k, v)) {
    for (const auto& [t, name] : {std::pair{&q, "q"}, std::pair{&k, "k"}, std::pair{&v, "v"}}) {
      TANDEM_RETURN_IF_ERROR(CheckBf16Aligned(*t, name));
    }
  }
  TANDEM_RETURN_IF_ERROR(ExpectTensor(decay, "decay", DType::kF32, {h}));
  const float* x = decay.data<float>();
  for (int64_t i = 0; i < h; ++i) {
    TANDEM_CHECK_ARG(std::isfinite(x[i]) && x[i] > 0.0f, "decay[", i,
                     "]: must be finite and > 0, got ", x[i]);
  }
  int device = 0;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  const cudaStream_t stream = StreamOf(ctx);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(stream, &capture));
  PowerCache& cache = Powers();
  std::lock_guard<std::mutex> lock(cache.mu);
  for (const PowerCache::Entry& e : cache.entries) {
    if (e.device == device && e.x.size() == static_cast<size_t>(h) &&
        std::memcmp(e.x.data(), x, h * sizeof(float)) == 0) {
      *pow = e.table, *owned = false;
      return absl::OkStatus();
    }
  }
  std::vector<float> table(h * (kC + 1));
  for (int64_t i = 0; i < h; ++i) LinearAttentionDecayPowers(x[i], table.data() + i * (kC + 1));
  const size_t bytes = table.size() * sizeof(float);
  if (capture == cudaStreamCaptureStatusNone && cache.entries.size() < PowerCache::kMaxEntries) {
    // Synchronous, once per table: later calls on any stream see it.
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMalloc(reinterpret_cast<void**>(pow), bytes));
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpy(*pow, table.data(), bytes, cudaMemcpyHostToDevice));
    cache.entries.push_back({device, std::vector<float>(x, x + h), *pow});
    *owned = false;
    return absl::OkStatus();
  }
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMallocAsync(reinterpret_cast<void**>(pow), bytes, stream));
  *owned = true;
  TANDEM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(*pow, table.data(), bytes, cudaMemcpyHostToDevice, stream));
  return absl::OkStatus();
}

template <typename Fn>
cudaError_t ForHeadDim(int64_t d, Fn&& fn) {
  if (d == 32) return fn(std::integral_constant<int, 32>());
  if (d == 64) return fn(std::integral_constant<int, 64>());
  return fn(std::integral_constant<int, 128>());
}

const bf16* Bf16Data(const Tensor& t) { return static_cast<const bf16*>(t.raw_data()); }

// Per-context device scratch: one buffer that only grows (stream-ordered), so a forward allocates
// nothing once warm, holding the chunk list (uploaded only when it differs from the one the buffer
// holds) and the kernels' work space after it. Calls on one context come from one thread at a time.
struct Scratch {
  void* data = nullptr;
  size_t bytes = 0;
  std::vector<char> uploaded;  // the chunk-list bytes at the start of data
  ~Scratch() {
    if (data != nullptr) cudaFree(data);
  }
};

size_t Align256(size_t n) { return (n + 255) / 256 * 256; }

struct ScratchView {
  ChunkItem* items;  // [NC]
  int* seq_chunk;    // [B + 1]
  void* work;        // `work_bytes` bytes
};

absl::StatusOr<ScratchView> PrepareScratch(const Context& ctx, const std::vector<ChunkItem>& items,
                                           const std::vector<int>& seq_chunk, size_t work_bytes) {
  auto slot = ctx.Resource("linear_attention.scratch", [] {
    return std::static_pointer_cast<void>(std::make_shared<Scratch>());
  });
  Scratch& s = *static_cast<Scratch*>(slot.get());
  const cudaStream_t stream = StreamOf(ctx);
  const size_t items_bytes = Align256(items.size() * sizeof(ChunkItem));
  const size_t list_bytes = items_bytes + Align256(seq_chunk.size() * sizeof(int));
  const size_t need = list_bytes + Align256(work_bytes);
  if (need > s.bytes) {
    if (s.data != nullptr) TANDEM_CUDA_RETURN_IF_ERROR(cudaFreeAsync(s.data, stream));
    s.data = nullptr, s.bytes = 0, s.uploaded.clear();
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMallocAsync(&s.data, need, stream));
    s.bytes = need;
  }
  std::vector<char> list(list_bytes, 0);
  std::memcpy(list.data(), items.data(), items.size() * sizeof(ChunkItem));
  std::memcpy(list.data() + items_bytes, seq_chunk.data(), seq_chunk.size() * sizeof(int));
  if (list != s.uploaded) {
    TANDEM_RETURN_IF_ERROR(UploadAsync(s.data, list.data(), list_bytes, stream));
    s.uploaded = std::move(list);
  }
  char* base = static_cast<char*>(s.data);
  return ScratchView{reinterpret_cast<ChunkItem*>(base), reinterpret_cast<int*>(base + items_bytes),
                     base + list_bytes};
}

// A decay-power table uploaded for this call only, freed stream-ordered.
struct OwnedPowers {
  cudaStream_t stream;
  float* p = nullptr;
  ~OwnedPowers() {
    if (p != nullptr) cudaFreeAsync(p, stream);
  }
};

absl::Status ForwardTc(const Context& ctx, const LinearAttentionParams& p, const Tensor& q,
                       const Tensor& k, const Tensor& v, const float* pow,
                       const std::vector<ChunkItem>& items, const std::vector<int>& seq_chunk,
                       const Tensor& initial_state, Tensor& o, Tensor& chunk_states,
                       Tensor& boundary_state) {
  const int64_t h = p.num_heads, d = p.head_dim, nc = items.size();
  linear::TcFwdArgs a{static_cast<int>(h), p.scale,       Bf16Data(q), Bf16Data(k),
                      Bf16Data(v),         ToFloatPtr(o), pow};
  // Without chunk_states the fused kernel keeps the states on chip where it can, when its CTAs
  // fit the GPU in one wave (the shape measured: one long sequence; many short ones would pay its
  // pipeline start-up per wave) and the driver builds its tensor maps. The two-launch forward
  // hands its bf16 chunk-start states from the scan to the output kernel: straight through
  // chunk_states when the caller keeps them in bf16 (for the backward), else through work space.
  const int batch = static_cast<int>(seq_chunk.size()) - 1;
  linear::FusedMaps maps;
  const bool fused = !chunk_states.defined() && linear::ForwardIsFused(d) &&
                     linear::FusedOneWave(batch, static_cast<int>(h)) &&
                     linear::BuildFusedMaps(a, q.dim(0), &maps);
  const bool bf16_states = chunk_states.defined() && chunk_states.dtype() == DType::kBF16;
  TANDEM_ASSIGN_OR_RETURN(const ScratchView view,
                          PrepareScratch(ctx, items, seq_chunk,
                                         bf16_states || fused ? 0 : nc * h * d * d * sizeof(bf16)));
  a.items = view.items;
  a.seq_chunk = view.seq_chunk;
  a.init = initial_state.defined() ? initial_state.data<float>() : nullptr;
  a.boundary = boundary_state.defined() ? boundary_state.data<float>() : nullptr;
  a.states = chunk_states.defined() && !bf16_states ? chunk_states.data<float>() : nullptr;
  a.sb = bf16_states ? static_cast<bf16*>(chunk_states.raw_data()) : static_cast<bf16*>(view.work);
  const cudaStream_t stream = StreamOf(ctx);
  if (fused) {
    linear::FwdPhaseEvents* ev = linear::ForwardPhaseEvents();
    if (ev != nullptr) cudaEventRecord(ev->start, stream);
    if (ev != nullptr) cudaEventRecord(ev->scanned, stream);
    TANDEM_CUDA_RETURN_IF_ERROR(linear::LaunchForwardFused(stream, a, batch, maps));
    ++linear::g_fused_launches;
    if (ev != nullptr) cudaEventRecord(ev->done, stream);
    return absl::OkStatus();
  }
  TANDEM_CUDA_RETURN_IF_ERROR(ForHeadDim(d, [&](auto dim) {
    return linear::LaunchForwardTc<decltype(dim)::value>(stream, a, batch, static_cast<int>(nc));
  }));
  return absl::OkStatus();
}

absl::Status ForwardF32(const Context& ctx, const LinearAttentionParams& p, const Tensor& q,
                        const Tensor& k, const Tensor& v, const float* pow,
                        const std::vector<ChunkItem>& items, const std::vector<int>& seq_chunk,
                        const Tensor& initial_state, Tensor& o, Tensor& chunk_states,
                        Tensor& boundary_state) {
  const int64_t h = p.num_heads, d = p.head_dim, nc = items.size();
  linear::FwdArgs a{static_cast<int>(h), p.scale, ToFloatPtr(q), ToFloatPtr(k), ToFloatPtr(v),
                    ToFloatPtr(o),       pow};
  a.init = initial_state.defined() ? initial_state.data<float>() : nullptr;
  a.boundary = boundary_state.defined() ? boundary_state.data<float>() : nullptr;
  const size_t state_floats = nc * h * d * d;
  const bool own_states = !chunk_states.defined();
  TANDEM_ASSIGN_OR_RETURN(
      const ScratchView view,
      PrepareScratch(ctx, items, seq_chunk, (own_states ? 2 : 1) * state_floats * sizeof(float)));
  a.items = view.items, a.seq_chunk = view.seq_chunk;
  a.sums = static_cast<float*>(view.work);
  a.states = own_states ? a.sums + state_floats : chunk_states.data<float>();
  const int batch = static_cast<int>(seq_chunk.size()) - 1;
  TANDEM_CUDA_RETURN_IF_ERROR(ForHeadDim(d, [&](auto dim) {
    return linear::LaunchForward<decltype(dim)::value>(StreamOf(ctx), a, static_cast<int>(nc),
                                                       batch);
  }));
  return absl::OkStatus();
}

}  // namespace

absl::Status LinearAttentionFwd(const Context& ctx, const LinearAttentionParams& p, const Tensor& q,
                                const Tensor& k, const Tensor& v, const Tensor& decay,
                                const Tensor& cu_seqlens, const Tensor& initial_state, Tensor& o,
                                Tensor& chunk_states, Tensor& boundary_state) {
  OwnedPowers owned_pow{StreamOf(ctx)};
  float* pow = nullptr;
  bool owned = false;
  const absl::Status checked = CheckAndUploadPowers(ctx, p, q, k, v, decay, &pow, &owned);
  if (owned) owned_pow.p = pow;
  TANDEM_RETURN_IF_ERROR(checked);
  const int64_t t = q.dim(0), h = p.num_heads, d = p.head_dim;
  std::vector<ChunkItem> items;
  std::vector<int> seq_chunk;
  TANDEM_RETURN_IF_ERROR(MakeChunks(ctx, cu_seqlens, t, &items, &seq_chunk));
  const int64_t b = static_cast<int64_t>(seq_chunk.size()) - 1, nc = items.size();
  TANDEM_RETURN_IF_ERROR(ExpectFloat(o, "o", {t, h, d}));
  TANDEM_RETURN_IF_ERROR(ExpectStateOrUndefined(initial_state, "initial_state", b, h, d));
  if (chunk_states.defined() && chunk_states.dtype() == DType::kBF16 && AllBf16(q, k, v)) {
    TANDEM_RETURN_IF_ERROR(
        ExpectTensor(chunk_states, "chunk_states", DType::kBF16, {nc, h, d, d}, Device::kCUDA));
  } else {
    TANDEM_RETURN_IF_ERROR(ExpectStateOrUndefined(chunk_states, "chunk_states", nc, h, d));
  }
  TANDEM_RETURN_IF_ERROR(ExpectStateOrUndefined(boundary_state, "boundary_state", b, h, d));
  if (nc == 0) {
    // Only empty sequences: the boundary state is the initial state.
    if (boundary_state.defined()) {
      if (initial_state.defined()) return CopyTensor(ctx, initial_state, boundary_state);
      TANDEM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(
          boundary_state.raw_data(), 0, boundary_state.numel() * sizeof(float), StreamOf(ctx)));
    }
    return absl::OkStatus();
  }
  if (AllBf16(q, k, v)) {
    return ForwardTc(ctx, p, q, k, v, pow, items, seq_chunk, initial_state, o, chunk_states,
                     boundary_state);
  }
  return ForwardF32(ctx, p, q, k, v, pow, items, seq_chunk, initial_state, o, chunk_states,
                    boundary_state);
}

absl::Status LinearAttentionDecode(const Context& ctx, const LinearAttentionParams& p,
                                   const Tensor& q, const Tensor& k, const Tensor& v,
                                   const Tensor& decay, Tensor& state, Tensor& open_k,
                                   Tensor& open_v, Tensor& open_len, Tensor& o) {
  OwnedPowers owned_pow{StreamOf(ctx)};
  float* pow = nullptr;
  bool owned = false;
  const absl::Status checked = CheckAndUploadPowers(ctx, p, q, k, v, decay, &pow, &owned);
  if (owned) owned_pow.p = pow;
  TANDEM_RETURN_IF_ERROR(checked);
  const int64_t b = q.dim(0), h = p.num_heads, d = p.head_dim;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(state, "state", DType::kF32, {b, h, d, d}, Device::kCUDA));
  const bool tc = AllBf16(q, k, v);
  // With bf16 q, k, v the open rows may be kept in bf16: the same values, half the bytes a step
  // reads. f32 q, k, v need f32 rows (their values are not bf16).
  const DType open_dtype = open_k.dtype() == DType::kBF16 ? DType::kBF16 : DType::kF32;
  TANDEM_CHECK_ARG(tc || open_dtype == DType::kF32,
                   "open_k: bf16 open rows need bf16 q, k and v; f32 q, k, v keep them in f32");
  TANDEM_RETURN_IF_ERROR(ExpectTensor(open_k, "open_k", open_dtype, {b, kC, h, d}, Device::kCUDA));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(open_v, "open_v", open_dtype, {b, kC, h, d}, Device::kCUDA));
  if (open_dtype == DType::kBF16) {
    TANDEM_RETURN_IF_ERROR(CheckBf16Aligned(open_k, "open_k"));
    TANDEM_RETURN_IF_ERROR(CheckBf16Aligned(open_v, "open_v"));
  }
  TANDEM_RETURN_IF_ERROR(ExpectTensor(open_len, "open_len", DType::kI32, {b}, Device::kCUDA));
  TANDEM_RETURN_IF_ERROR(ExpectFloat(o, "o", {b, h, d}));
  if (b == 0) return absl::OkStatus();
  const cudaError_t launched = ForHeadDim(d, [&](auto dim) {
    constexpr int kD = decltype(dim)::value;
    if (tc) {
      const auto launch = [&](auto* open_k_data, auto* open_v_data) {
        using Open = std::remove_pointer_t<decltype(open_k_data)>;
        const linear::TcDecodeArgs<Open> a{static_cast<int>(h),
                                           p.scale,
                                           Bf16Data(q),
                                           Bf16Data(k),
                                           Bf16Data(v),
                                           ToFloatPtr(o),
                                           pow,
                                           state.data<float>(),
                                           open_k_data,
                                           open_v_data,
                                           open_len.data<int32_t>(),
                                           static_cast<int>(b * h)};
        return linear::LaunchDecodeTc<kD>(StreamOf(ctx), a);
      };
      if (open_dtype == DType::kBF16) {
        return launch(static_cast<bf16*>(open_k.raw_data()), static_cast<bf16*>(open_v.raw_data()));
      }
      return launch(open_k.data<float>(), open_v.data<float>());
    }
    const linear::DecodeArgs a{static_cast<int>(h),
                               p.scale,
                               ToFloatPtr(q),
                               ToFloatPtr(k),
                               ToFloatPtr(v),
                               ToFloatPtr(o),
                               pow,
                               state.data<float>(),
                               open_k.data<float>(),
                               open_v.data<float>(),
                               open_len.data<int32_t>()};
    return linear::LaunchDecode<kD>(StreamOf(ctx), a, static_cast<int>(b));
  });
  TANDEM_CUDA_RETURN_IF_ERROR(launched);
  return absl::OkStatus();
}

}  // namespace tandem::kernels::cuda
