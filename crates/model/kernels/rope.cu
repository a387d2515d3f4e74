// Rotary embeddings (bf16), part of the fused module (fused.cu includes this file).
// Kernels:
//   sp_norm_rope_bf16    QK-norm (RMSNorm over head_dim, f32 statistics) + rotary embedding + the
//                        (b, s, heads, d) -> (b, heads, s, d) transpose, read in place from the qkv
//                        output; optionally writes a prefill's keys and values into the KV cache
//   sp_vision_rope_bf16  the vision tower's rope of q and k, in f32, read from its qkv output
#include "common.cuh"

// grid (s, 1, b), block (32, 8): the 8 warps of a block share one token's heads, SP_NR_ROWS
// heads a warp at a time (d = 64 or 128).
// x: (b, s, heads, d) with strides x_bs, x_rs, x_hs; w: (d) for heads < w_split, the next d values
// for the others (q and k heads of one qkv output in one launch); cs: (s, d) = [cos | sin] of each
// position's d/2 frequencies, plus cs_bs per batch row (0 when all rows share the table); out:
// (b, heads, s, d). With `pos` (b ints in device memory) cs is instead a table of positions 0..
// and row t of batch row b uses its row pos[b] + t: the positions of a decode step need no upload
// of tables (and a captured CUDA graph reads the current ones).
// Lane l owns the pairs (i, i + d/2) that rotary embedding mixes for i = l (and l + 32 when d =
// 128); the sum of squares adds each 32-pair half with one warp reduction and then the halves, the
// order of the decode kernel's norm (sp_decode_attn_norm), so both round alike. A warp loads its
// heads' rows, the two norm weights and the token's table before it reduces anything (one warp a
// head, with each load waiting on the last, took ~18 us a 2B prefill layer on an H100).
// With kdst (a prefill writing the KV cache): the heads from w_split on (the keys) go to rows
// [offset, offset + s) of kdst (b, heads - w_split, cap, d) instead of out, which then holds the
// w_split query heads only, and the value heads that follow the normed ones in x (as many as the
// keys) are copied unchanged to the same rows of vdst: the cache write of the layer in this pass.
#define SP_NR_ROWS 3
template <int D>
__device__ __forceinline__ void sp_norm_rope(const bf16 *x, const bf16 *w, int w_split, const bf16 *cs, bf16 *out, int s,
                                             int heads, float eps, long long x_bs, long long x_rs, long long x_hs,
                                             long long cs_bs, const int *pos, bf16 *kdst, bf16 *vdst, int cap,
                                             int offset) {
    constexpr int d = D, half = D / 2, groups = half / 32;  // 1 or 2 pairs a lane
    const int t = blockIdx.x, b = blockIdx.z, lane = threadIdx.x;
    const bf16 *tab = pos ? cs + ((long long)pos[b] + t) * d : cs + b * cs_bs + (long long)t * d;
    float c[groups], sn[groups], wq[groups][2], wk[groups][2];  // weights [group][first / second of the pair]
#pragma unroll
    for (int k = 0; k < groups; ++k) {
        const int i = lane + 32 * k;
        c[k] = __bfloat162float(tab[i]);
        sn[k] = __bfloat162float(tab[half + i]);
        wq[k][0] = __bfloat162float(w[i]);
        wq[k][1] = __bfloat162float(w[i + half]);
        wk[k][0] = __bfloat162float(w[d + i]);
        wk[k][1] = __bfloat162float(w[d + i + half]);
    }
    for (int h0 = threadIdx.y * SP_NR_ROWS; h0 < heads; h0 += blockDim.y * SP_NR_ROWS) {
        float x1[SP_NR_ROWS][groups], x2[SP_NR_ROWS][groups];
#pragma unroll
        for (int r = 0; r < SP_NR_ROWS; ++r) {
            const bf16 *row = x + b * x_bs + t * x_rs + (h0 + r) * x_hs;
#pragma unroll
            for (int k = 0; k < groups; ++k) {
                const int i = lane + 32 * k;
                x1[r][k] = h0 + r < heads ? __bfloat162float(row[i]) : 0.f;
                x2[r][k] = h0 + r < heads ? __bfloat162float(row[i + half]) : 0.f;
            }
        }
#pragma unroll
        for (int r = 0; r < SP_NR_ROWS; ++r) {
            const int h = h0 + r;
            if (h >= heads) break;
            float ss = 0.f;
#pragma unroll
            for (int k = 0; k < groups; ++k) ss += sp_warp_sum(x1[r][k] * x1[r][k] + x2[r][k] * x2[r][k]);
            const float scale = rsqrtf(ss / d + eps);
            bf16 *o = kdst && h >= w_split ? kdst + (((long long)b * (heads - w_split) + h - w_split) * cap + offset + t) * d
                                           : out + (((long long)b * (kdst ? w_split : heads) + h) * s + t) * d;
#pragma unroll
            for (int k = 0; k < groups; ++k) {
                const int i = lane + 32 * k;
                const float w1 = h >= w_split ? wk[k][0] : wq[k][0], w2 = h >= w_split ? wk[k][1] : wq[k][1];
                // RMSNorm rounds once (candle's fused kernel), rope rounds each product and the sum (bf16 ops).
                const float n1 = sp_round(scale * x1[r][k] * w1);
                const float n2 = sp_round(scale * x2[r][k] * w2);
                o[i] = __float2bfloat16_rn(sp_round(n1 * c[k]) - sp_round(n2 * sn[k]));
                o[i + half] = __float2bfloat16_rn(sp_round(n1 * sn[k]) + sp_round(n2 * c[k]));
            }
        }
    }
    if (vdst)
        for (int j = threadIdx.y; j < heads - w_split; j += blockDim.y) {
            const __nv_bfloat162 *row = reinterpret_cast<const __nv_bfloat162 *>(x + b * x_bs + t * x_rs + (heads + j) * x_hs);
            __nv_bfloat162 *o = reinterpret_cast<__nv_bfloat162 *>(vdst + (((long long)b * (heads - w_split) + j) * cap + offset + t) * d);
            for (int i = lane; i < d / 2; i += 32) o[i] = row[i];
        }
}

extern "C" __global__ void sp_norm_rope_bf16(const bf16 *x, const bf16 *w, int w_split, const bf16 *cs, bf16 *out,
                                             int s, int heads, int d, float eps, long long x_bs, long long x_rs,
                                             long long x_hs, long long cs_bs, const int *pos, bf16 *kdst, bf16 *vdst,
                                             int cap, int offset) {
    if (d == 128)
        sp_norm_rope<128>(x, w, w_split, cs, out, s, heads, eps, x_bs, x_rs, x_hs, cs_bs, pos, kdst, vdst, cap, offset);
    else
        sp_norm_rope<64>(x, w, w_split, cs, out, s, heads, eps, x_bs, x_rs, x_hs, cs_bs, pos, kdst, vdst, cap, offset);
}

// Rotary embedding of the vision tower's q and k, read from the fused qkv output (seq, 3, heads,
// d), computed in f32 with f32 tables cos/sin (seq, d/2) like the reference, q then multiplied by
// q_scale (a power of two: exact), written as out (2, heads, seq, d) = [q, k]. One thread per two
// adjacent pairs (i, i + d/2), (i + 1, i + 1 + d/2) (d % 4 == 0), 4-byte loads; consecutive
// threads walk a row of qkv. When d % 16 == 0 and the pointers are 16-byte aligned, one thread
// per 8 adjacent pairs instead, 16-byte loads and stores (same arithmetic; H100, 2B tower: 17.7
// -> ~12 us a layer). Any grid, block 256.
extern "C" __global__ void sp_vision_rope_bf16(const bf16 *qkv, const float *cos, const float *sin, bf16 *out,
                                               int seq, int heads, int d, float q_scale) {
    const int half = d / 2, pairs = half / 2;
    if (d % 16 == 0 && (((unsigned long long)qkv | (unsigned long long)cos | (unsigned long long)sin | (unsigned long long)out) & 15) == 0) {
        const int chunks = half / 8;
        const unsigned total = (unsigned)seq * 2 * heads * chunks;
        for (unsigned idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
            const int j = idx % chunks, h = (idx / chunks) % heads, part = (idx / chunks / heads) % 2;
            const int t = idx / chunks / heads / 2, i = 8 * j;
            const bf16 *x = qkv + ((long long)t * 3 + part) * heads * d + (long long)h * d;
            const uint4 a = *reinterpret_cast<const uint4 *>(x + i), b = *reinterpret_cast<const uint4 *>(x + i + half);
            const float4 *cp = reinterpret_cast<const float4 *>(cos + (long long)t * half + i);
            const float4 *sp = reinterpret_cast<const float4 *>(sin + (long long)t * half + i);
            const float4 c4[2] = {cp[0], cp[1]}, s4[2] = {sp[0], sp[1]};
            const float *cf = reinterpret_cast<const float *>(c4), *sf = reinterpret_cast<const float *>(s4);
            const __nv_bfloat162 *a2 = reinterpret_cast<const __nv_bfloat162 *>(&a), *b2 = reinterpret_cast<const __nv_bfloat162 *>(&b);
            const float scale = part == 0 ? q_scale : 1.f;
            __align__(16) __nv_bfloat162 lo[4], hi[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float2 x1 = __bfloat1622float2(a2[e]), x2 = __bfloat1622float2(b2[e]);
                const float2 c = make_float2(cf[2 * e], cf[2 * e + 1]), sn = make_float2(sf[2 * e], sf[2 * e + 1]);
                lo[e] = __floats2bfloat162_rn((x1.x * c.x - x2.x * sn.x) * scale, (x1.y * c.y - x2.y * sn.y) * scale);
                hi[e] = __floats2bfloat162_rn((x1.x * sn.x + x2.x * c.x) * scale, (x1.y * sn.y + x2.y * c.y) * scale);
            }
            bf16 *o = out + (((long long)part * heads + h) * seq + t) * d;
            *reinterpret_cast<uint4 *>(o + i) = *reinterpret_cast<const uint4 *>(lo);
            *reinterpret_cast<uint4 *>(o + i + half) = *reinterpret_cast<const uint4 *>(hi);
        }
        return;
    }
    const unsigned total = (unsigned)seq * 2 * heads * pairs;
    for (unsigned idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
        const int j = idx % pairs, h = (idx / pairs) % heads, part = (idx / pairs / heads) % 2;
        const int t = idx / pairs / heads / 2, i = 2 * j;
        const bf16 *x = qkv + ((long long)t * 3 + part) * heads * d + (long long)h * d;
        const float2 x1 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(x + i));
        const float2 x2 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(x + i + half));
        const float2 c = *reinterpret_cast<const float2 *>(cos + (long long)t * half + i);
        const float2 s = *reinterpret_cast<const float2 *>(sin + (long long)t * half + i);
        const float scale = part == 0 ? q_scale : 1.f;
        bf16 *o = out + (((long long)part * heads + h) * seq + t) * d;
        *reinterpret_cast<__nv_bfloat162 *>(o + i) =
            __floats2bfloat162_rn((x1.x * c.x - x2.x * s.x) * scale, (x1.y * c.y - x2.y * s.y) * scale);
        *reinterpret_cast<__nv_bfloat162 *>(o + i + half) =
            __floats2bfloat162_rn((x1.x * s.x + x2.x * c.x) * scale, (x1.y * s.y + x2.y * c.y) * scale);
    }
}
