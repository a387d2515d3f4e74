// Pieces both flash-attention kernels share (flash_attn.cu with mma.sync, flash_attn_sm90.cu with
// wgmma): the block's place in the grid, and the online softmax over one 16-row tile of scores held
// in the m16n8 accumulator layout (thread lane: rows g = lane / 4 and g + 8, columns 2 (lane % 4)
// and + 1 of every n8 tile), which both MMA kinds produce.
// Kernels: none.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

__device__ __forceinline__ uint32_t sp_pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

// 2^x on the special-function unit (flushes results below 2^-126 to zero, which no softmax
// weight rounded to bf16 and summed in f32 would notice).
__device__ __forceinline__ float sp_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// The block of the attention grid (x: query blocks of `bm` rows, causal ones heaviest first so the
// last wave is short; y: heads; z: batch x key splits) and the element offsets of its batch row
// and (key) head in q, k, v and o.
struct SpAttnBlock {
    int m0, h, b, split, warp, lane, g, tig;
    long long q_off, k_off, v_off, o_off;
};

__device__ __forceinline__ SpAttnBlock sp_attn_block(int bm, int causal, int heads, int kv_heads, int splits,
                                                     long long q_bs, long long q_hs, long long k_bs, long long k_hs,
                                                     long long v_bs, long long v_hs, long long o_bs, long long o_hs) {
    SpAttnBlock blk;
    blk.m0 = (causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x) * bm;
    blk.h = blockIdx.y;
    blk.b = blockIdx.z / splits;
    blk.split = blockIdx.z % splits;
    blk.warp = threadIdx.x / 32;
    blk.lane = threadIdx.x % 32;
    blk.g = blk.lane / 4;
    blk.tig = blk.lane % 4;
    const int kvh = blk.h / (heads / kv_heads);
    blk.q_off = blk.b * q_bs + blk.h * q_hs;
    blk.k_off = blk.b * k_bs + kvh * k_hs;
    blk.v_off = blk.b * v_bs + kvh * v_hs;
    blk.o_off = blk.b * o_bs + blk.h * o_hs;
    return blk;
}

// One online-softmax step on a 16-row tile: the scores s (NT n8 tiles of keys n0, n0 + 8, ..., raw
// q.k) of rows row0 and row0 + 8 are masked past kv_end (and, causal, past row + past) when EDGE,
// the running maxima mx (raw units) and sums move on, s becomes P = exp(scale (s - max)) in place
// (sl2 = scale / ln 2), and alpha[r] is the factor the row's output so far must be scaled by.
// EDGE is a template argument, and sp_softmax_step branches between the two instances: with a
// runtime flag the compiler predicated the mask's compares and selects and issued them on every
// tile (ncu, H100: ~200 of the ~650 instructions a thread spent on a vision tile).
template <int NT, bool EDGE>
__device__ __forceinline__ void sp_softmax_tile(float (*s)[4], float *mx, float *sum, float *alpha, int row0, int n0,
                                                int kv_end, int causal, int past, float sl2, int tig) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int row = row0 + 8 * r;
        float tile_max = -INFINITY;
#pragma unroll
        for (int n = 0; n < NT; ++n) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                float x = s[n][2 * r + e];
                if (EDGE) {
                    const int j = n0 + n * 8 + tig * 2 + e;
                    if (j >= kv_end || (causal && j > row + past)) x = -INFINITY;
                }
                s[n][2 * r + e] = x;
                tile_max = fmaxf(tile_max, x);
            }
        }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
        const float m_new = fmaxf(mx[r], tile_max);
        const float base = m_new == -INFINITY ? 0.f : m_new * sl2;
        alpha[r] = sp_ex2(mx[r] * sl2 - base);
        mx[r] = m_new;
        float part = 0.f;
#pragma unroll
        for (int n = 0; n < NT; ++n) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const float p = sp_ex2(fmaf(s[n][2 * r + e], sl2, -base));
                s[n][2 * r + e] = p;
                part += p;
            }
        }
        sum[r] = sum[r] * alpha[r] + part;
    }
}

// sp_softmax_tile with the mask only on the tiles that need it (a warp-uniform branch).
template <int NT>
__device__ __forceinline__ void sp_softmax_step(float (*s)[4], float *mx, float *sum, float *alpha, int row0, int n0,
                                                int kv_end, int causal, int past, float sl2, bool edge, int tig) {
    if (edge)
        sp_softmax_tile<NT, true>(s, mx, sum, alpha, row0, n0, kv_end, causal, past, sl2, tig);
    else
        sp_softmax_tile<NT, false>(s, mx, sum, alpha, row0, n0, kv_end, causal, past, sl2, tig);
}
