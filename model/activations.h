// What the training forward pass keeps for the backward pass (llm.c style: plain structs of
// tensors, no autograd graph). The forward fills them when handed a non-null pointer; the backward
// in hybrid_model_backward*.cc reads them in reverse order. Every field is written by exactly one
// kernel call of the forward, so recomputing a layer from its input residual reproduces it bitwise.
#pragma once

#include <vector>

#include "kernels/core/tensor.h"
#include "kernels/moe_experts/moe_experts.h"

namespace tandem::model {

// One attention block (MODEL.md §2.3 linear, §3 softmax).
struct AttentionActivations {
  Tensor q_raw;         // [T, H, D]   q columns of the qkv projection, before norm + RoPE
  Tensor k_raw;         // [T, Hkv, D]
  Tensor q_rstd;        // [T, H]      per-head RMS factors of QkNormRopeFwd
  Tensor k_rstd;        // [T, Hkv]
  Tensor q, k, v;       // [T, H, D], [T, Hkv, D], [T, Hkv, D]: the attention kernel's inputs
  Tensor o;             // [T, H, D]   attention output
  Tensor lse;           // [T, H]      softmax layers: log-sum-exp per query and head
  Tensor chunk_states;  // [NC, H, D, D] linear layers: state at the start of every chunk
  Tensor gate;          // [T, H·D]    linear layers: g_proj(h), before the sigmoid
  Tensor y;             // [T, H·D]    linear layers: GroupRmsNormGate output (the dense input)
  Tensor y_rstd;        // [T, groups] linear layers
};

// A SwiGLU MLP down(silu(gate(h)) · up(h)): the dense MLP, or the shared expert of an MoE layer.
struct SwigluActivations {
  Tensor gate;  // [T, I] gate projection before silu
  Tensor up;    // [T, I]
  Tensor act;   // [T, I] silu(gate) · up, the down projection's input
};

// One FFN block (MODEL.md §3b): `mlp` is the dense MLP on dense layers and the shared expert on
// MoE layers (undefined when there is none).
struct FfnActivations {
  SwigluActivations mlp;
  Tensor scores;       // [T, E] sigmoid(router logits)
  Tensor topk_idx;     // [T, K] i32, rank order
  Tensor topk_weight;  // [T, K]
  kernels::MoeExpertsActivations experts;
};

// One pre-norm decoder layer: x_mid = x + Attn(RmsNorm(x)); x_out = x_mid + FFN(RmsNorm(x_mid)).
struct LayerActivations {
  Tensor x;          // [T, Dm] the residual stream entering the layer
  Tensor h_attn;     // [T, Dm] input_layernorm output
  Tensor rstd_attn;  // [T]
  Tensor x_mid;      // [T, Dm] the residual stream after the attention add
  Tensor h_ffn;      // [T, Dm] post_attention_layernorm output
  Tensor rstd_ffn;   // [T]
  AttentionActivations attn;
  FfnActivations ffn;
};

// The whole forward pass. With keep_layers = false only layers[l].x is kept (per-layer
// checkpointing: the backward recomputes the rest of layer l from it).
struct ForwardActivations {
  bool keep_layers = true;
  Tensor positions;  // [T] i32, position within the sequence
  std::vector<LayerActivations> layers;
  Tensor x_final;     // [T, Dm] the residual stream after the last layer
  Tensor h_final;     // [T, Dm] model.norm output, the LM head's input
  Tensor rstd_final;  // [T]
  Tensor logprob;     // [T] the log-probs Forward returns (set by TrainingForward)
};

}  // namespace tandem::model
