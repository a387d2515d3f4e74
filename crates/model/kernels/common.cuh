// Helpers every kernel of the fused module shares (norm.cu, rope.cu, elementwise.cu,
// decode_attn.cu, kv_write.cu, patch.cu): the bf16 type, bf16 rounding of an f32, warp reductions.
// Kernels: none.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

#include "abi.h"

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float sp_round(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

__device__ __forceinline__ float sp_warp_sum(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

__device__ __forceinline__ float sp_warp_max(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}
