// Decode attention (bf16): one new token per sequence over its cached keys, grouped-query heads
// sharing each key load, f32 scores and softmax, keys split over blocks (the partial results in
// flash_attn.cu's layout, merged by its sp_attn_combine). Part of the fused module (fused.cu
// includes this file). SP_DEC_WARPS, SP_DEC_UNROLL, SP_MAX_BATCH and SpKvTable: abi.h.
// Kernels:
//   sp_decode_attn_bf16_d{64,128}_r{1,2,4}      one token per sequence over given cached keys
//   sp_decode_attn_norm_bf16_d128_r{1,2,4}      one decode step of a batch: QK-norm + rope of the
//                                               new token, its KV row written into each sequence's
//                                               cache (KV table), attention (what the runtime runs)
//   sp_decode_attn_batched_bf16_d128_r{1,2,4}   the same without the norm (tools/check_kernels.py)
#include "common.cuh"

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
