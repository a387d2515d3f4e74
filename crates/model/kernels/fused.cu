// Small fused kernels for the text decoder on CUDA (bf16), each replacing a chain of candle ops
// while rounding where that chain (and the reference) rounds:
//   sp_norm_rope   QK-norm (RMSNorm over head_dim, f32 statistics) + rotary embedding + the
//                  (b, s, heads, d) -> (b, heads, s, d) transpose, read in place from the qkv output
//   sp_add_rmsnorm residual add + the RMSNorm that follows it
//   sp_swiglu      silu(gate) * up on the stacked gate_up output
//   sp_decode_attn attention of one new token per sequence over its cached keys (grouped-query
//                  heads share each key load), f32 scores and softmax, keys split over blocks
#include <cuda_bf16.h>
#include <stdint.h>

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

// 8 bf16 of x plus 8 of y, each sum rounded like a bf16 add (y null: x itself), as floats in v;
// the sums are also stored to `sum` unless it is null. All pointers 16-byte aligned.
__device__ __forceinline__ void sp_add8(const bf16 *x, const bf16 *y, bf16 *sum, float *v) {
    const uint4 xa = *reinterpret_cast<const uint4 *>(x);
    const uint4 ya = y ? *reinterpret_cast<const uint4 *>(y) : make_uint4(0, 0, 0, 0);
    const __nv_bfloat162 *xp = reinterpret_cast<const __nv_bfloat162 *>(&xa);
    const __nv_bfloat162 *yp = reinterpret_cast<const __nv_bfloat162 *>(&ya);
    __align__(16) __nv_bfloat162 sv[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        const float2 a = __bfloat1622float2(xp[e]), b = __bfloat1622float2(yp[e]);
        sv[e] = y ? __floats2bfloat162_rn(a.x + b.x, a.y + b.y) : xp[e];
        const float2 f = __bfloat1622float2(sv[e]);
        v[2 * e] = f.x;
        v[2 * e + 1] = f.y;
    }
    if (sum) *reinterpret_cast<uint4 *>(sum) = *reinterpret_cast<const uint4 *>(sv);
}

// The sum of every thread's `x` over the block (each warp's sum, then the warps' in order),
// returned to every thread. `partial`: 32 floats of shared memory, free again on return.
__device__ __forceinline__ float sp_block_sum(float x, float *partial) {
    x = sp_warp_sum(x);
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = x;
    __syncthreads();
    float total = 0.f;
    for (int k = 0; k < (int)(blockDim.x + 31) / 32; ++k) total += partial[k];
    __syncthreads();
    return total;
}

// grid (rows), block 256. out[0] = x + y (rounded like a bf16 add), out[1] = RMSNorm of that sum
// with weight w (f32 statistics, one rounding, like candle's rmsnorm): the residual add and the
// next norm in one pass. x, y, out[i]: (rows, n) contiguous. Rows of n % 8 == 0 and n <= 8 * 4 *
// blockDim.x go 16 bytes at a time and keep the sum in registers; others one element a thread.
extern "C" __global__ void sp_add_rmsnorm_bf16(const bf16 *x, const bf16 *y, const bf16 *w, bf16 *out, int rows,
                                               int n, float eps) {
    __shared__ float partial[32];
    const long long r = blockIdx.x;
    const bf16 *xr = x + r * n, *yr = y + r * n;
    bf16 *sum = out + r * n, *normed = out + (long long)rows * n + r * n;
    const int chunks = n / 8;
    const bool wide = n % 8 == 0 && chunks <= 4 * (int)blockDim.x;
    float v[4][8];
    float ss = 0.f;
    if (wide) {
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const int c = threadIdx.x + u * blockDim.x;
            if (c >= chunks) continue;
            sp_add8(xr + c * 8, yr + c * 8, sum + c * 8, v[u]);
#pragma unroll
            for (int e = 0; e < 4; ++e) ss += v[u][2 * e] * v[u][2 * e] + v[u][2 * e + 1] * v[u][2 * e + 1];
        }
    } else {
        for (int c = threadIdx.x; c < n; c += blockDim.x) {
            const float val = sp_round(__bfloat162float(xr[c]) + __bfloat162float(yr[c]));
            sum[c] = __float2bfloat16_rn(val);
            ss += val * val;
        }
    }
    const float scale = rsqrtf(sp_block_sum(ss, partial) / n + eps);
    if (wide) {
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const int c = threadIdx.x + u * blockDim.x;
            if (c >= chunks) continue;
            const uint4 wa = reinterpret_cast<const uint4 *>(w)[c];
            const __nv_bfloat162 *wp = reinterpret_cast<const __nv_bfloat162 *>(&wa);
            __align__(16) __nv_bfloat162 o[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float2 wf = __bfloat1622float2(wp[e]);
                o[e] = __floats2bfloat162_rn(scale * v[u][2 * e] * wf.x, scale * v[u][2 * e + 1] * wf.y);
            }
            reinterpret_cast<uint4 *>(normed)[c] = *reinterpret_cast<const uint4 *>(o);
        }
    } else {
        for (int c = threadIdx.x; c < n; c += blockDim.x)
            normed[c] = __float2bfloat16_rn(scale * __bfloat162float(sum[c]) * __bfloat162float(w[c]));
    }
}

// gu: (rows, 2n) = [gate | up] per row; out: (rows, n) = round(round(silu(gate)) * up).
// grid (x: column blocks, y: rows, striding), block 256; 8 columns a thread (16-byte loads) when
// n % 8 == 0, else one.
__device__ __forceinline__ float sp_swiglu1(float g, float u) { return sp_round(g / (1.0f + expf(-g))) * u; }

extern "C" __global__ void sp_swiglu_bf16(const bf16 *gu, bf16 *out, int rows, int n) {
    const bool wide = n % 8 == 0;
    const int per = wide ? n / 8 : n;
    for (int r = blockIdx.y; r < rows; r += gridDim.y) {
        const bf16 *g = gu + (long long)r * 2 * n, *u = g + n;
        bf16 *o = out + (long long)r * n;
        for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < per; c += gridDim.x * blockDim.x) {
            if (!wide) {
                o[c] = __float2bfloat16_rn(sp_swiglu1(__bfloat162float(g[c]), __bfloat162float(u[c])));
                continue;
            }
            const uint4 ga = reinterpret_cast<const uint4 *>(g)[c], ua = reinterpret_cast<const uint4 *>(u)[c];
            const __nv_bfloat162 *gp = reinterpret_cast<const __nv_bfloat162 *>(&ga);
            const __nv_bfloat162 *up = reinterpret_cast<const __nv_bfloat162 *>(&ua);
            __align__(16) __nv_bfloat162 res[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float2 gf = __bfloat1622float2(gp[e]), uf = __bfloat1622float2(up[e]);
                res[e] = __floats2bfloat162_rn(sp_swiglu1(gf.x, uf.x), sp_swiglu1(gf.y, uf.y));
            }
            reinterpret_cast<uint4 *>(o)[c] = *reinterpret_cast<const uint4 *>(res);
        }
    }
}

// E consecutive bf16 (E = 2 or 4, 4- or 8-byte aligned) as floats, in one load.
template <int E>
__device__ __forceinline__ void sp_load_row(const bf16 *p, float *f) {
    if constexpr (E == 4) {
        const uint2 raw = *reinterpret_cast<const uint2 *>(p);
        const __nv_bfloat162 a = *reinterpret_cast<const __nv_bfloat162 *>(&raw.x);
        const __nv_bfloat162 b = *reinterpret_cast<const __nv_bfloat162 *>(&raw.y);
        f[0] = __low2float(a); f[1] = __high2float(a); f[2] = __low2float(b); f[3] = __high2float(b);
    } else {
        const __nv_bfloat162 a = *reinterpret_cast<const __nv_bfloat162 *>(p);
        f[0] = __low2float(a); f[1] = __high2float(a);
    }
}

#define SP_DEC_WARPS 4
#define SP_DEC_UNROLL 8

// Attention of the REP query heads of one key head (q: REP rows of D, contiguous) over keys
// [split * chunk, min(len, (split + 1) * chunk)) of k/v (rows of D with strides k_rs, v_rs).
// Output rows out_row0 .. out_row0 + REP: written to `out` when there is one split, else as
// partial results (flash_attn.cu's layout) for sp_attn_combine. Block of 32 * SP_DEC_WARPS; each
// lane holds D/32 dims; each key and value row is read once for all REP heads.
template <int D, int REP>
__device__ void sp_decode_core(const bf16 *q, const bf16 *k, const bf16 *v, long long k_rs, long long v_rs,
                               int len, float scale, int chunk, int split, int splits, long long out_row0,
                               bf16 *out, float *part_o, float *part_ml) {
    constexpr int E = D / 32;  // dims per lane: 4 for D = 128
    __shared__ float sm_m[SP_DEC_WARPS][REP], sm_l[SP_DEC_WARPS][REP];
    __shared__ float sm_acc[SP_DEC_WARPS][REP][D];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int j_end = min(len, (split + 1) * chunk);
    const float sl2 = scale * 1.4426950408889634f;
    k += lane * E;
    v += lane * E;

    float qr[REP][E], acc[REP][E], m[REP], l[REP];
#pragma unroll
    for (int r = 0; r < REP; ++r) {
        const bf16 *qp = q + r * D + lane * E;
#pragma unroll
        for (int e = 0; e < E; ++e) {
            qr[r][e] = __bfloat162float(qp[e]) * sl2;
            acc[r][e] = 0.f;
        }
        m[r] = -INFINITY;
        l[r] = 0.f;
    }
    for (int base = split * chunk + warp * SP_DEC_UNROLL; base < j_end; base += SP_DEC_WARPS * SP_DEC_UNROLL) {
        float kf[SP_DEC_UNROLL][E], vf[SP_DEC_UNROLL][E];
#pragma unroll
        for (int u = 0; u < SP_DEC_UNROLL; ++u) {
            const int j = base + u;
            if (j < j_end) {
                sp_load_row<E>(k + j * k_rs, kf[u]);
                sp_load_row<E>(v + j * v_rs, vf[u]);
            } else {
#pragma unroll
                for (int e = 0; e < E; ++e) kf[u][e] = vf[u][e] = 0.f;
            }
        }
#pragma unroll
        for (int r = 0; r < REP; ++r) {
            float sc[SP_DEC_UNROLL];
            float tile_max = -INFINITY;
#pragma unroll
            for (int u = 0; u < SP_DEC_UNROLL; ++u) {
                float dot = 0.f;
#pragma unroll
                for (int e = 0; e < E; ++e) dot += qr[r][e] * kf[u][e];
                dot = sp_warp_sum(dot);
                sc[u] = base + u < j_end ? dot : -INFINITY;
                tile_max = fmaxf(tile_max, sc[u]);
            }
            const float m_new = fmaxf(m[r], tile_max);
            const float alpha = exp2f(m[r] - m_new);  // m_new is finite: key `base` < j_end exists
            m[r] = m_new;
            l[r] *= alpha;
#pragma unroll
            for (int e = 0; e < E; ++e) acc[r][e] *= alpha;
#pragma unroll
            for (int u = 0; u < SP_DEC_UNROLL; ++u) {
                const float p = exp2f(sc[u] - m_new);
                l[r] += p;
#pragma unroll
                for (int e = 0; e < E; ++e) acc[r][e] += p * vf[u][e];
            }
        }
    }

#pragma unroll
    for (int r = 0; r < REP; ++r) {
        if (lane == 0) {
            sm_m[warp][r] = m[r];
            sm_l[warp][r] = l[r];
        }
#pragma unroll
        for (int e = 0; e < E; ++e) sm_acc[warp][r][lane * E + e] = acc[r][e];
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < REP * D; idx += blockDim.x) {
        const int r = idx / D, c = idx % D;
        float mx = -INFINITY;
        for (int w = 0; w < SP_DEC_WARPS; ++w) mx = fmaxf(mx, sm_m[w][r]);
        float num = 0.f, den = 0.f;
        for (int w = 0; w < SP_DEC_WARPS; ++w) {
            if (sm_m[w][r] == -INFINITY) continue;  // a warp that saw no key
            const float f = exp2f(sm_m[w][r] - mx);
            num += sm_acc[w][r][c] * f;
            den += sm_l[w][r] * f;
        }
        const long long row = out_row0 + r;
        if (splits == 1) {
            out[row * D + c] = __float2bfloat16_rn(num / den);
        } else {
            const long long pr = row * splits + split;
            part_o[pr * D + c] = num;
            if (c == 0) {
                part_ml[pr * 2] = mx;
                part_ml[pr * 2 + 1] = den;
            }
        }
    }
}


// grid (kv_heads, splits, b), block 32 * SP_DEC_WARPS. q: (b, heads, 1, D) contiguous; k, v: (b,
// kv_heads, len, D) with strides (bs, hs, rs); out: (b, heads * D). Split s handles keys
// [s * chunk, (s + 1) * chunk): spreading a long cache over many SMs is what makes this fast (one
// block per key head would leave most of the GPU idle).
template <int D, int REP>
__device__ void sp_decode_attn(const bf16 *q, const bf16 *k, const bf16 *v, bf16 *out, int len, float scale,
                               long long k_bs, long long k_hs, long long k_rs, long long v_bs, long long v_hs,
                               long long v_rs, int chunk, float *part_o, float *part_ml) {
    const int kvh = blockIdx.x, b = blockIdx.z, heads = gridDim.x * REP;
    sp_decode_core<D, REP>(q + ((long long)b * heads + kvh * REP) * D, k + b * k_bs + kvh * k_hs,
                           v + b * v_bs + kvh * v_hs, k_rs, v_rs, len, scale, chunk, blockIdx.y, gridDim.y,
                           (long long)b * heads + kvh * REP, out, part_o, part_ml);
}

// Up to SP_MAX_BATCH sequences with separate KV buffers (1, kv_heads, capacity, D) each: buffer
// addresses and head stride (capacity * D), read from device memory like the tokens each holds
// (`lens`), so that a captured launch serves any caches of the same batch size.
#define SP_MAX_BATCH 16
struct SpKvTable {
    unsigned long long k[SP_MAX_BATCH], v[SP_MAX_BATCH];
    long long head_stride[SP_MAX_BATCH];
};

// Keys per split when `len` keys are spread over `splits` blocks, in whole unrolled tiles.
__device__ __forceinline__ int sp_split_chunk(int len, int splits) {
    const int step = SP_DEC_WARPS * SP_DEC_UNROLL;
    return ((len + splits - 1) / splits + step - 1) / step * step;
}

// One decode step of a batch: grid (kv_heads, splits, b). qk: (b, heads + kv_heads, 1, D)
// contiguous = normed and rotated q and k heads of the new tokens; vnew: their values (strides
// v_bs, v_hs); lens: the tokens each sequence holds (b ints). The block whose split holds row
// pos = lens[b] first writes the new key and value into the sequence's buffers (it is the only
// block that reads that row), then every block attends over its share of keys 0..=pos (splits
// past the end see none).
template <int D, int REP>
__device__ void sp_decode_attn_batched(const bf16 *qk, long long qk_bs, const bf16 *vnew, long long v_bs,
                                       long long v_hs, bf16 *out, float scale, const int *lens, float *part_o,
                                       float *part_ml, const SpKvTable *table) {
    const SpKvTable &t = *table;
    const int kvh = blockIdx.x, split = blockIdx.y, b = blockIdx.z, heads = gridDim.x * REP;
    const int pos = lens[b];
    const int chunk = sp_split_chunk(pos + 1, gridDim.y);
    bf16 *kb = reinterpret_cast<bf16 *>(t.k[b]) + kvh * t.head_stride[b];
    bf16 *vb = reinterpret_cast<bf16 *>(t.v[b]) + kvh * t.head_stride[b];
    const bf16 *q = qk + b * qk_bs;
    if (pos >= split * chunk && pos < (split + 1) * chunk) {
        for (int c = threadIdx.x; c < D; c += blockDim.x) {
            kb[(long long)pos * D + c] = q[(heads + kvh) * D + c];
            vb[(long long)pos * D + c] = vnew[b * v_bs + kvh * v_hs + c];
        }
        __syncthreads();
    }
    sp_decode_core<D, REP>(q + kvh * REP * D, kb, vb, D, D, pos + 1, scale, chunk, split, gridDim.y,
                           (long long)b * heads + kvh * REP, out, part_o, part_ml);
}

// sp_decode_attn_batched with QK-norm + rope done by the block itself (one launch fewer a layer):
// qkv is the raw projection (b, heads + 2 kv_heads, D) with batch stride qkv_bs; each block norms
// and rotates its REP query heads and its key head exactly as sp_norm_rope_bf16 does (same
// arithmetic, same rounding; w: (2, D) = [q_norm | k_norm], cs: table of positions 0.., pos[b]:
// the position), keeps them in shared memory and writes the key and value rows like the unfused
// kernel. Block of 128 threads: two heads at a time, D/2 threads each.
template <int D, int REP>
__device__ void sp_decode_attn_norm(const bf16 *qkv, long long qkv_bs, const bf16 *w, const bf16 *cs,
                                    const int *pos_of, float eps, bf16 *out, float scale, const int *lens,
                                    float *part_o, float *part_ml, const SpKvTable *table) {
    constexpr int HALF = D / 2, GROUPS = 128 / HALF;
    __shared__ __align__(16) bf16 heads_sm[(REP + 1) * D];
    __shared__ float partial[GROUPS][(HALF + 31) / 32];
    const SpKvTable &t = *table;
    const int kvh = blockIdx.x, split = blockIdx.y, b = blockIdx.z, heads = gridDim.x * REP;
    const bf16 *row0 = qkv + b * qkv_bs;
    const bf16 *tab = cs + (long long)pos_of[b] * D;
    const int g = threadIdx.x / HALF, i = threadIdx.x % HALF;
    for (int first = 0; first < REP + 1; first += GROUPS) {
        const int j = first + g;  // 0..REP-1: query heads, REP: the key head
        const bool active = j < REP + 1;
        const int head = j < REP ? kvh * REP + j : heads + kvh;
        float x1 = 0.f, x2 = 0.f;
        if (active) {
            x1 = __bfloat162float(row0[head * D + i]);
            x2 = __bfloat162float(row0[head * D + i + HALF]);
        }
        float ss = sp_warp_sum(x1 * x1 + x2 * x2);
        if (i % 32 == 0) partial[g][i / 32] = ss;
        __syncthreads();
        ss = 0.f;
        for (int k = 0; k < (HALF + 31) / 32; ++k) ss += partial[g][k];
        __syncthreads();
        if (active) {
            const float sc = rsqrtf(ss / D + eps);
            const bf16 *wr = w + (j < REP ? 0 : D);
            const float n1 = sp_round(sc * x1 * __bfloat162float(wr[i]));
            const float n2 = sp_round(sc * x2 * __bfloat162float(wr[i + HALF]));
            const float c = __bfloat162float(tab[i]), sn = __bfloat162float(tab[HALF + i]);
            heads_sm[j * D + i] = __float2bfloat16_rn(sp_round(n1 * c) - sp_round(n2 * sn));
            heads_sm[j * D + i + HALF] = __float2bfloat16_rn(sp_round(n1 * sn) + sp_round(n2 * c));
        }
    }
    __syncthreads();
    const int pos = lens[b];
    const int chunk = sp_split_chunk(pos + 1, gridDim.y);
    bf16 *kb = reinterpret_cast<bf16 *>(t.k[b]) + kvh * t.head_stride[b];
    bf16 *vb = reinterpret_cast<bf16 *>(t.v[b]) + kvh * t.head_stride[b];
    if (pos >= split * chunk && pos < (split + 1) * chunk) {
        const bf16 *vnew = row0 + (long long)(heads + gridDim.x + kvh) * D;
        for (int c = threadIdx.x; c < D; c += blockDim.x) {
            kb[(long long)pos * D + c] = heads_sm[REP * D + c];
            vb[(long long)pos * D + c] = vnew[c];
        }
        __syncthreads();
    }
    sp_decode_core<D, REP>(heads_sm, kb, vb, D, D, pos + 1, scale, chunk, split, gridDim.y,
                           (long long)b * heads + kvh * REP, out, part_o, part_ml);
}

#define SP_DECODE_NORM_ENTRY(D, REP)                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * SP_DEC_WARPS) sp_decode_attn_norm_bf16_d##D##_r##REP(     \
        const bf16 *qkv, long long qkv_bs, const bf16 *w, const bf16 *cs, const int *pos, float eps, bf16 *out, \
        float scale, const int *lens, float *part_o, float *part_ml, const SpKvTable *table) {                  \
        sp_decode_attn_norm<D, REP>(qkv, qkv_bs, w, cs, pos, eps, out, scale, lens, part_o, part_ml, table);    \
    }

SP_DECODE_NORM_ENTRY(128, 1)
SP_DECODE_NORM_ENTRY(128, 2)
SP_DECODE_NORM_ENTRY(128, 4)

#define SP_DECODE_ENTRY(D, REP)                                                                                  \
    extern "C" __global__ void __launch_bounds__(32 * SP_DEC_WARPS) sp_decode_attn_bf16_d##D##_r##REP(          \
        const bf16 *q, const bf16 *k, const bf16 *v, bf16 *out, int len, float scale, long long k_bs,           \
        long long k_hs, long long k_rs, long long v_bs, long long v_hs, long long v_rs, int chunk,               \
        float *part_o, float *part_ml) {                                                                         \
        sp_decode_attn<D, REP>(q, k, v, out, len, scale, k_bs, k_hs, k_rs, v_bs, v_hs, v_rs, chunk, part_o,     \
                               part_ml);                                                                         \
    }

// The batched kernel without the norm: not launched by the runtime (the normed kernel above
// replaces it); tools/check_kernels.py checks it against PyTorch and then the normed kernel
// bit-identical against norm_rope (device positions) followed by it.
#define SP_DECODE_BATCHED_ENTRY(D, REP)                                                                          \
    extern "C" __global__ void __launch_bounds__(32 * SP_DEC_WARPS) sp_decode_attn_batched_bf16_d##D##_r##REP(  \
        const bf16 *qk, long long qk_bs, const bf16 *vnew, long long v_bs, long long v_hs, bf16 *out,           \
        float scale, const int *lens, float *part_o, float *part_ml, const SpKvTable *table) {                  \
        sp_decode_attn_batched<D, REP>(qk, qk_bs, vnew, v_bs, v_hs, out, scale, lens, part_o, part_ml, table);  \
    }

SP_DECODE_BATCHED_ENTRY(128, 1)
SP_DECODE_BATCHED_ENTRY(128, 2)
SP_DECODE_BATCHED_ENTRY(128, 4)

SP_DECODE_ENTRY(128, 1)
SP_DECODE_ENTRY(128, 2)
SP_DECODE_ENTRY(128, 4)
SP_DECODE_ENTRY(64, 1)
SP_DECODE_ENTRY(64, 2)
SP_DECODE_ENTRY(64, 4)

// ---- vision tower ----

// out = act(round(x + bias)) per row of (rows, n), act computed in f32 and rounded once like the
// reference's bf16 activations: 0 none, 1 tanh-approximated GELU, 2 erf GELU. Replaces the
// broadcast bias add (slow in candle for wide rows) and the activation kernel after a matmul.
extern "C" __global__ void sp_bias_act_bf16(const bf16 *x, const bf16 *bias, bf16 *out, int rows, int n, int act) {
    const long long total = (long long)rows * n;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        float v = sp_round(__bfloat162float(x[idx]) + __bfloat162float(bias[idx % n]));
        if (act == 1) {
            const float inner = 0.7978845608028654f * (v + 0.044715f * v * v * v);
            v = 0.5f * v * (1.f + tanhf(inner));
        } else if (act == 2) {
            v = 0.5f * v * (1.f + erff(v * 0.7071067811865476f));
        }
        out[idx] = __float2bfloat16_rn(v);
    }
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

// LayerNorm of each row of x (+ y), like the reference's bf16 ops: sum = round(x + y) (a bf16
// add), then mean and variance of the row in f32 (two passes over registers), out = round((sum -
// mean) * rstd * w + b). wb: (2, n) = [weight; bias]. With y, out[0] = sum and out[1] = the norm
// (the residual add and the norm after it in one pass); without (y null), out = the norm. Rows
// (rows, n) contiguous, n % 8 == 0 and n <= 8 * 4 * blockDim.x. grid (rows; a warp a row when
// SP_NORM_WARP_ROWS(n, 4), the 2B/4B vision towers' 1024), block 128.
// A warp a row when n = 256 U, U <= 4 (the 2B/4B vision towers' 1024): no block barriers, the
// statistics reduced by warp shuffles; the launch then covers rows / (blockDim.x / 32) blocks
// (kernels.rs's norm_blocks applies the same rule). Measured on an H100: the vision tower's 48
// norms 0.666 -> 0.565 ms. (The same for the text model's RMSNorm, n = 2048, was slower: 0.59 ->
// 0.65 ms a prefill, and twice as slow for one decode row.)
#define SP_NORM_WARP_ROWS(n, max_u) ((n) % 256 == 0 && (n) / 256 >= 1 && (n) / 256 <= (max_u))
template <int U>
__device__ __forceinline__ void sp_add_layernorm_warp(const bf16 *x, const bf16 *y, const bf16 *wb, bf16 *out, int rows,
                                                      int n, float eps) {
    const int lane = threadIdx.x % 32;
    const long long r = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (r >= rows) return;
    float v[U][8];
    float acc = 0.f;
#pragma unroll
    for (int u = 0; u < U; ++u) {
        const int c = lane + 32 * u;
        sp_add8(x + r * n + c * 8, y ? y + r * n + c * 8 : nullptr, y ? out + r * n + c * 8 : nullptr, v[u]);
#pragma unroll
        for (int e = 0; e < 4; ++e) acc += v[u][2 * e] + v[u][2 * e + 1];
    }
    const float mean = sp_warp_sum(acc) / n;
    acc = 0.f;
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            const float dv = v[u][e] - mean;
            acc += dv * dv;
        }
    const float rstd = rsqrtf(sp_warp_sum(acc) / n + eps);
    bf16 *normed = out + (y ? (long long)rows * n : 0) + r * n;
#pragma unroll
    for (int u = 0; u < U; ++u) {
        const int c = lane + 32 * u;
        const uint4 wa = *reinterpret_cast<const uint4 *>(wb + c * 8);
        const uint4 ba = *reinterpret_cast<const uint4 *>(wb + n + c * 8);
        const __nv_bfloat162 *wp = reinterpret_cast<const __nv_bfloat162 *>(&wa);
        const __nv_bfloat162 *bp = reinterpret_cast<const __nv_bfloat162 *>(&ba);
        __align__(16) __nv_bfloat162 o[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const float2 w = __bfloat1622float2(wp[e]), b = __bfloat1622float2(bp[e]);
            o[e] = __floats2bfloat162_rn((v[u][2 * e] - mean) * rstd * w.x + b.x,
                                         (v[u][2 * e + 1] - mean) * rstd * w.y + b.y);
        }
        *reinterpret_cast<uint4 *>(normed + c * 8) = *reinterpret_cast<const uint4 *>(o);
    }
}

extern "C" __global__ void sp_add_layernorm_bf16(const bf16 *x, const bf16 *y, const bf16 *wb, bf16 *out,
                                                 int rows, int n, float eps) {
    if (SP_NORM_WARP_ROWS(n, 4)) {
        switch (n / 256) {
            case 1: sp_add_layernorm_warp<1>(x, y, wb, out, rows, n, eps); return;
            case 2: sp_add_layernorm_warp<2>(x, y, wb, out, rows, n, eps); return;
            case 3: sp_add_layernorm_warp<3>(x, y, wb, out, rows, n, eps); return;
            case 4: sp_add_layernorm_warp<4>(x, y, wb, out, rows, n, eps); return;
            default: break;
        }
    }
    __shared__ float partial[32];
    const long long r = blockIdx.x;
    const int chunks = n / 8;
    float v[4][8];
    float acc = 0.f;
#pragma unroll
    for (int u = 0; u < 4; ++u) {
        const int c = threadIdx.x + u * blockDim.x;
        if (c >= chunks) continue;
        sp_add8(x + r * n + c * 8, y ? y + r * n + c * 8 : nullptr, y ? out + r * n + c * 8 : nullptr, v[u]);
#pragma unroll
        for (int e = 0; e < 4; ++e) acc += v[u][2 * e] + v[u][2 * e + 1];
    }
    const float mean = sp_block_sum(acc, partial) / n;
    acc = 0.f;
#pragma unroll
    for (int u = 0; u < 4; ++u) {
        if (threadIdx.x + u * blockDim.x >= chunks) continue;
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            const float dv = v[u][e] - mean;
            acc += dv * dv;
        }
    }
    const float rstd = rsqrtf(sp_block_sum(acc, partial) / n + eps);
    bf16 *normed = out + (y ? (long long)rows * n : 0) + r * n;
#pragma unroll
    for (int u = 0; u < 4; ++u) {
        const int c = threadIdx.x + u * blockDim.x;
        if (c >= chunks) continue;
        const uint4 wa = *reinterpret_cast<const uint4 *>(wb + c * 8);
        const uint4 ba = *reinterpret_cast<const uint4 *>(wb + n + c * 8);
        const __nv_bfloat162 *wp = reinterpret_cast<const __nv_bfloat162 *>(&wa);
        const __nv_bfloat162 *bp = reinterpret_cast<const __nv_bfloat162 *>(&ba);
        __align__(16) __nv_bfloat162 o[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const float2 w = __bfloat1622float2(wp[e]), b = __bfloat1622float2(bp[e]);
            o[e] = __floats2bfloat162_rn((v[u][2 * e] - mean) * rstd * w.x + b.x,
                                         (v[u][2 * e + 1] - mean) * rstd * w.y + b.y);
        }
        *reinterpret_cast<uint4 *>(normed + c * 8) = *reinterpret_cast<const uint4 *>(o);
    }
}

// DeepStack injection: out[rows[k]] = round(out[rows[k]] + feat[k]) (a bf16 add, like the
// reference's `h[mask] = h[mask] + visual`), in place on out (total_rows, n); feat (n_rows, n);
// rows past total_rows are skipped. n even. Any grid, block 256.
extern "C" __global__ void sp_rows_add_bf16(bf16 *out, const unsigned *rows, const bf16 *feat, int n_rows, int n,
                                            int total_rows) {
    const int pairs = n / 2;
    const long long total = (long long)n_rows * pairs;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const int k = (int)(idx / pairs), c = 2 * (int)(idx % pairs);
        const unsigned r = rows[k];
        if (r >= (unsigned)total_rows) continue;
        __nv_bfloat162 *o = reinterpret_cast<__nv_bfloat162 *>(out + (long long)r * n + c);
        const float2 a = __bfloat1622float2(*o);
        const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(feat + (long long)k * n + c));
        *o = __floats2bfloat162_rn(a.x + b.x, a.y + b.y);
    }
}

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

// The vision tower's input rows, cut from the uploaded 8-bit image in one pass: rgb (gh p, gw p, 3)
// bytes, lut (3, 256) f32 (each channel's normalised value of every byte); out (gh gw, 3 t p p)
// bf16: patches in m x m merge windows (windows row-major, row-major inside one), a row channel
// by channel, each channel's p x p values repeated over the t frames. The values of
// PreprocessedImage::pixels (HF's pixel_values) rounded to bf16 like a cast. grid (gh gw), block 256.
// The row order (n -> y0, x0 below) is crates/model/src/patch_layout.rs's patch_at; change both together.
extern "C" __global__ void sp_patch_rows_bf16(const unsigned char *rgb, const float *lut, bf16 *out, int gh, int gw,
                                              int p, int m, int t) {
    const int n = blockIdx.x, window = n / (m * m), inner = n % (m * m), per_row = gw / m;
    const int y0 = ((window / per_row) * m + inner / m) * p, x0 = ((window % per_row) * m + inner % m) * p;
    const int width = gw * p, pp = p * p;
    bf16 *o = out + (long long)n * 3 * t * pp;
    for (int e = threadIdx.x; e < 3 * pp; e += blockDim.x) {
        const int c = e / pp, py = (e % pp) / p, px = e % p;
        const bf16 v = __float2bfloat16_rn(lut[c * 256 + rgb[((long long)(y0 + py) * width + x0 + px) * 3 + c]]);
        for (int f = 0; f < t; ++f) o[(c * t + f) * pp + py * p + px] = v;
    }
}
