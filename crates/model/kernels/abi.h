// What the kernels and the Rust side that launches them (crates/model/src/kernels/) must agree on,
// written once: launch shapes the Rust side computes grids and key splits from, values it passes,
// and the layout of the KV table it packs into device memory. The Rust mirror is
// src/kernels/abi.rs, whose unit test reads this file and fails when a value here and there
// differ (or when a #define here has no Rust counterpart): change both sides together.
// Kernels: none. Plain C++ (the kernels' translation units and tools/check_kernels.py's host
// launchers include it); every #define is a decimal literal, which the Rust test parses.
#pragma once
#include <stddef.h>

// ---- decode attention (decode_attn.cu; src/kernels/cuda/attention.rs) ----

// Warps of a decode attention block: the launch's block is 32 * SP_DEC_WARPS threads.
#define SP_DEC_WARPS 4
// Keys a warp takes per step (unrolled): splits of the keys are multiples of
// SP_DEC_WARPS * SP_DEC_UNROLL keys.
#define SP_DEC_UNROLL 8
// Most sequences one batched decode launch takes (the grid's z, the KV table's entries).
#define SP_MAX_BATCH 16

// The KV table of one layer for the batched decode kernels (sp_decode_attn_norm_bf16_*): up to
// SP_MAX_BATCH sequences with separate KV buffers (1, kv_heads, capacity, D) each: the buffers'
// device addresses and their head stride (capacity * D elements), read from device memory like
// the tokens each sequence holds (`lens`), so that a captured launch serves any caches of the same
// batch size. The Rust side packs it as SP_KV_TABLE_WORDS u32 words (little-endian halves of each
// 8-byte field, fields in this order).
struct SpKvTable {
    unsigned long long k[SP_MAX_BATCH], v[SP_MAX_BATCH];
    long long head_stride[SP_MAX_BATCH];
};
#define SP_KV_TABLE_WORDS 96
static_assert(sizeof(SpKvTable) == SP_KV_TABLE_WORDS * 4, "SP_KV_TABLE_WORDS is sizeof(SpKvTable) / 4");
static_assert(offsetof(SpKvTable, k) == 0 && offsetof(SpKvTable, v) == SP_MAX_BATCH * 8 &&
                  offsetof(SpKvTable, head_stride) == 2 * SP_MAX_BATCH * 8,
              "SpKvTable: k, v, head_stride, SP_MAX_BATCH 8-byte entries each, no padding");

// A decode step's inputs are one u32 buffer (src/graph.rs): [token ids | lens | positions],
// padded to a multiple of SP_STEP_ALIGN_WORDS words, then each layer's KV table. The padding keeps
// every table (and so its 8-byte fields) aligned.
#define SP_STEP_ALIGN_WORDS 4
static_assert(SP_STEP_ALIGN_WORDS * 4 % alignof(SpKvTable) == 0 && sizeof(SpKvTable) % alignof(SpKvTable) == 0,
              "the KV tables after the step header start aligned");

// ---- LayerNorm (norm.cu's sp_add_layernorm_bf16; src/kernels/cuda/norm.rs) ----

// 16-byte chunks (8 bf16) of a row each thread keeps in registers: rows of n <= 8 * SP_LN_CHUNKS *
// threads a block, and a warp a row when n = 256 u, 1 <= u <= SP_LN_CHUNKS (SP_NORM_WARP_ROWS; the
// launch then has a block per blockDim / 32 rows).
#define SP_LN_CHUNKS 4

// ---- bias + activation (elementwise.cu's sp_bias_act_bf16; the Rust enum kernels::Act) ----

#define SP_ACT_NONE 0
#define SP_ACT_GELU_TANH 1
#define SP_ACT_GELU_ERF 2
