// The "fused" PTX module (screenpilot_fused): small kernels for the text decoder and the vision
// tower on CUDA (bf16), each replacing a chain of candle ops while rounding where that chain (and
// the reference) rounds. build.rs compiles this file only; the kernels live in the files included
// below, by family (each file's header describes its kernels; common.cuh and abi.h are shared).
// Kernels (entry points the Rust side loads by name, src/kernels/cuda/):
//   rope.cu         sp_norm_rope_bf16, sp_vision_rope_bf16
//   norm.cu         sp_add_rmsnorm_bf16, sp_add_layernorm_bf16
//   elementwise.cu  sp_swiglu_bf16, sp_bias_act_bf16, sp_rows_add_bf16
//   decode_attn.cu  sp_decode_attn_bf16_d{64,128}_r{1,2,4}, sp_decode_attn_norm_bf16_d128_r{1,2,4},
//                   sp_decode_attn_batched_bf16_d128_r{1,2,4}
//   kv_write.cu     sp_kv_write_bf16
//   patch.cu        sp_patch_rows_bf16
#include "rope.cu"
#include "norm.cu"
#include "elementwise.cu"
#include "decode_attn.cu"
#include "kv_write.cu"
#include "patch.cu"
