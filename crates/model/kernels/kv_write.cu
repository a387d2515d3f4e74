// KV cache writes (bf16), part of the fused module (fused.cu includes this file).
// Kernels:
//   sp_kv_write_bf16  a prefill's keys (or values) into rows of a layer's KV buffer
#include "common.cuh"

// A prefill's new keys (or values) into a KV buffer: dst (heads, cap, d) contiguous gets rows
// [offset, offset + s) of each head from src (heads, s, d) with head and row strides s_hs, s_rs
// (the last dim contiguous; the values are read in place from the qkv projection). 16 bytes a
// thread; d, the strides and offset * d multiples of 8. Grid (s * d / 8 / 256 rounded up, heads),
// block 256.
extern "C" __global__ void sp_kv_write_bf16(const bf16 *src, long long s_hs, long long s_rs, bf16 *dst, int heads,
                                            int s, int d, int cap, int offset) {
    // 32-bit index math on a (pieces of a head, heads) grid.
    const int chunks = d / 8, h = blockIdx.y;
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (h >= heads || idx >= s * chunks) return;
    const int r = idx / chunks, c = idx - r * chunks;
    *reinterpret_cast<uint4 *>(dst + ((long long)h * cap + offset + r) * d + c * 8) =
        *reinterpret_cast<const uint4 *>(src + h * s_hs + r * s_rs + c * 8);
}
