// Fused attention (FlashAttention-2 style) for the shapes Qwen3-VL needs: bf16 inputs, f32
// accumulation and softmax, head dim 64 (vision tower) or 128 (text decoder), non-causal (one
// image's patches) or causal with `past` cached keys before the queries, grouped-query heads.
// Scores never leave registers: each warp keeps 16 query rows, walks the keys 64 at a time with
// an online softmax, and writes the normalised output once.
//
// Layouts (element strides; the last dimension is contiguous):
//   q: (batch, heads, sq, D)      k, v: (batch, kv_heads, skv, D)      o: (batch, sq, heads, D)
// Query row i (0-based) may see key j when j < skv and, if causal, j <= i + past.
// Tensor cores: mma.sync m16n8k16 bf16 -> f32 (sm_80 and newer).
//
// Split keys: when there are few query blocks (a short follow-up question over a long cache),
// grid.z = batch * splits and split s handles keys [s * chunk, (s + 1) * chunk); each writes its
// unnormalised output with its running max and sum to part_o / part_ml, and sp_attn_combine
// merges the splits. The decode kernel (fused.cu) uses the same partial layout: output row r =
// (b * sq + i) * heads + h, part_o[r][split][d], part_ml[r][split] = {max (log2 units), sum}.

#include <cuda_bf16.h>
#include <stdint.h>

#define SP_BLOCK_N 64

__device__ __forceinline__ void sp_mma(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t sp_pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

// Four 8x8 bf16 matrices from shared memory, transposed: the B operands of two n8 tiles.
__device__ __forceinline__ void sp_ldmatrix_x4_trans(uint32_t *r, const __nv_bfloat16 *p) {
    uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// Copies rows [row0, row0 + SP_BLOCK_N) of a (rows, D) matrix into shared memory with cp.async
// (16 bytes at a time, zero-filled past `rows`); the caller commits and waits.
template <int D, int DP, int THREADS>
__device__ __forceinline__ void sp_load_tile(__nv_bfloat16 (*dst)[DP + 8], const __nv_bfloat16 *src,
                                             long long row_stride, int row0, int rows) {
    constexpr int CHUNKS = D / 8;  // 16-byte pieces per row
    for (int c = threadIdx.x; c < SP_BLOCK_N * CHUNKS; c += THREADS) {
        const int r = c / CHUNKS, col = (c % CHUNKS) * 8;
        const bool in = row0 + r < rows;
        const __nv_bfloat16 *g = src + (long long)(in ? row0 + r : 0) * row_stride + col;
        const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(&dst[r][col]));
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(g), "r"(in ? 16 : 0));
    }
}

__device__ __forceinline__ void sp_cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N>
__device__ __forceinline__ void sp_cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// W warps (16 query rows each) per block; STAGES = 2 double-buffers the key/value tiles so the
// next tile's copy overlaps this tile's math. A head dim that is not a multiple of 16 (72 in the 8B
// vision tower) is padded to DP with zero columns in q, k and v (they add nothing to the scores,
// and the output's padded columns are not written).
template <int D, int W, int STAGES>
__device__ void sp_flash_attn(const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ k,
                              const __nv_bfloat16 *__restrict__ v, __nv_bfloat16 *__restrict__ o, int sq,
                              int skv, int heads, int kv_heads, int causal, int past, float scale,
                              long long q_bs, long long q_hs, long long q_rs, long long k_bs, long long k_hs,
                              long long k_rs, long long v_bs, long long v_hs, long long v_rs, long long o_bs,
                              long long o_rs, long long o_hs, int splits, int chunk, float *part_o,
                              float *part_ml) {
    constexpr int DP = (D + 15) / 16 * 16;
    __shared__ __align__(16) __nv_bfloat16 ks_all[STAGES][SP_BLOCK_N][DP + 8];
    __shared__ __align__(16) __nv_bfloat16 vs_all[STAGES][SP_BLOCK_N][DP + 8];
    constexpr int BM = 16 * W;
    if (DP > D) {  // zero the padding columns once; tile copies never touch them
        for (int c = threadIdx.x; c < STAGES * SP_BLOCK_N * (DP - D) / 8; c += W * 32) {
            const int st = c / (SP_BLOCK_N * (DP - D) / 8), rem = c % (SP_BLOCK_N * (DP - D) / 8);
            const int r = rem / ((DP - D) / 8), col = D + (rem % ((DP - D) / 8)) * 8;
            *reinterpret_cast<uint4 *>(&ks_all[st][r][col]) = make_uint4(0, 0, 0, 0);
            *reinterpret_cast<uint4 *>(&vs_all[st][r][col]) = make_uint4(0, 0, 0, 0);
        }
    }

    const int m0 = blockIdx.x * BM;
    const int h = blockIdx.y, b = blockIdx.z / splits, split = blockIdx.z % splits;
    const int kvh = h / (heads / kv_heads);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, tig = lane % 4;
    q += b * q_bs + h * q_hs;
    k += b * k_bs + kvh * k_hs;
    v += b * v_bs + kvh * v_hs;
    o += b * o_bs + h * o_hs;

    // This thread's query rows: r[0] = g, r[1] = g + 8 within the warp's 16.
    const int row0 = m0 + warp * 16 + g, row1 = row0 + 8;
    uint32_t qf[DP / 16][4];
#pragma unroll
    for (int kk = 0; kk < DP / 16; ++kk) {
        int c = kk * 16 + tig * 2;
        const uint32_t *p0 = reinterpret_cast<const uint32_t *>(q + (long long)row0 * q_rs + c);
        const uint32_t *p1 = reinterpret_cast<const uint32_t *>(q + (long long)row1 * q_rs + c);
        const bool lo = c < D, hi = c + 8 < D;
        qf[kk][0] = row0 < sq && lo ? p0[0] : 0u;
        qf[kk][1] = row1 < sq && lo ? p1[0] : 0u;
        qf[kk][2] = row0 < sq && hi ? p0[4] : 0u;
        qf[kk][3] = row1 < sq && hi ? p1[4] : 0u;
    }

    float acc[DP / 8][4];
#pragma unroll
    for (int n = 0; n < DP / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
    float mx[2] = {-INFINITY, -INFINITY}, sum[2] = {0.f, 0.f};
    const float sl2 = scale * 1.4426950408889634f;  // scores in log2 units

    int kv_end = skv;
    if (causal) kv_end = min(skv, min(m0 + BM, sq) - 1 + past + 1);
    kv_end = min(kv_end, (split + 1) * chunk);
    const int n_start = split * chunk;
    if (n_start < kv_end) {
        sp_load_tile<D, DP, W * 32>(ks_all[0], k, k_rs, n_start, skv);
        sp_load_tile<D, DP, W * 32>(vs_all[0], v, v_rs, n_start, skv);
        sp_cp_commit();
    }
    for (int n0 = n_start, it = 0; n0 < kv_end; n0 += SP_BLOCK_N, ++it) {
        if (STAGES == 2 && n0 + SP_BLOCK_N < kv_end) {
            // The buffer written here was last read in the previous iteration (synced below).
            sp_load_tile<D, DP, W * 32>(ks_all[(it + 1) % STAGES], k, k_rs, n0 + SP_BLOCK_N, skv);
            sp_load_tile<D, DP, W * 32>(vs_all[(it + 1) % STAGES], v, v_rs, n0 + SP_BLOCK_N, skv);
            sp_cp_commit();
            sp_cp_wait<1>();
        } else {
            sp_cp_wait<0>();
        }
        __syncthreads();
        __nv_bfloat16 (*ks)[DP + 8] = ks_all[it % STAGES];
        __nv_bfloat16 (*vs)[DP + 8] = vs_all[it % STAGES];

        float s[SP_BLOCK_N / 8][4];
#pragma unroll
        for (int n = 0; n < SP_BLOCK_N / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < DP / 16; ++kk) {
#pragma unroll
            for (int n = 0; n < SP_BLOCK_N / 8; ++n) {
                const __nv_bfloat16 *kr = &ks[n * 8 + g][kk * 16 + tig * 2];
                sp_mma(s[n], qf[kk], *reinterpret_cast<const uint32_t *>(kr),
                       *reinterpret_cast<const uint32_t *>(kr + 8));
            }
        }

        const bool edge = n0 + SP_BLOCK_N > skv || (causal && n0 + SP_BLOCK_N - 1 > m0 + warp * 16 + past);
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int row = r == 0 ? row0 : row1;
            float tile_max = -INFINITY;
#pragma unroll
            for (int n = 0; n < SP_BLOCK_N / 8; ++n) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float x = s[n][2 * r + e] * sl2;
                    if (edge) {
                        int j = n0 + n * 8 + tig * 2 + e;
                        if (j >= skv || (causal && j > row + past)) x = -INFINITY;
                    }
                    s[n][2 * r + e] = x;
                    tile_max = fmaxf(tile_max, x);
                }
            }
            tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
            tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
            const float m_new = fmaxf(mx[r], tile_max);
            const float base = m_new == -INFINITY ? 0.f : m_new;
            const float alpha = exp2f(mx[r] - base);
            mx[r] = m_new;
            float part = 0.f;
#pragma unroll
            for (int n = 0; n < SP_BLOCK_N / 8; ++n) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float p = exp2f(s[n][2 * r + e] - base);
                    s[n][2 * r + e] = p;
                    part += p;
                }
            }
            sum[r] = sum[r] * alpha + part;
#pragma unroll
            for (int n = 0; n < DP / 8; ++n) {
                acc[n][2 * r] *= alpha;
                acc[n][2 * r + 1] *= alpha;
            }
        }

        // O += P V, with P (16 x 64) taken straight from the score registers.
#pragma unroll
        for (int kc = 0; kc < SP_BLOCK_N / 16; ++kc) {
            uint32_t pa[4];
            pa[0] = sp_pack_bf16(s[2 * kc][0], s[2 * kc][1]);
            pa[1] = sp_pack_bf16(s[2 * kc][2], s[2 * kc][3]);
            pa[2] = sp_pack_bf16(s[2 * kc + 1][0], s[2 * kc + 1][1]);
            pa[3] = sp_pack_bf16(s[2 * kc + 1][2], s[2 * kc + 1][3]);
#pragma unroll
            for (int n = 0; n < DP / 8; n += 2) {
                uint32_t vb[4];
                const int key = kc * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
                const int col = n * 8 + (lane / 16) * 8;
                sp_ldmatrix_x4_trans(vb, &vs[key][col]);
                sp_mma(acc[n], pa, vb[0], vb[1]);
                sp_mma(acc[n + 1], pa, vb[2], vb[3]);
            }
        }
        __syncthreads();  // every warp is done with this tile's buffers
        if (STAGES == 1 && n0 + SP_BLOCK_N < kv_end) {
            sp_load_tile<D, DP, W * 32>(ks_all[0], k, k_rs, n0 + SP_BLOCK_N, skv);
            sp_load_tile<D, DP, W * 32>(vs_all[0], v, v_rs, n0 + SP_BLOCK_N, skv);
            sp_cp_commit();
        }
    }

#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float t = sum[r];
        t += __shfl_xor_sync(0xffffffffu, t, 1);
        t += __shfl_xor_sync(0xffffffffu, t, 2);
        sum[r] = t;
    }
    if (splits > 1) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int row = r == 0 ? row0 : row1;
            if (row >= sq) continue;
            const long long pr = ((long long)(b * sq + row) * heads + h) * splits + split;
            if (tig == 0) {
                part_ml[pr * 2] = mx[r];
                part_ml[pr * 2 + 1] = sum[r];
            }
#pragma unroll
            for (int n = 0; n < DP / 8; ++n) {
                const int c = n * 8 + tig * 2;
                if (c >= D) continue;
                part_o[pr * D + c] = acc[n][2 * r];
                part_o[pr * D + c + 1] = acc[n][2 * r + 1];
            }
        }
        return;
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) sum[r] = sum[r] > 0.f ? 1.f / sum[r] : 0.f;
#pragma unroll
    for (int n = 0; n < DP / 8; ++n) {
        const int c = n * 8 + tig * 2;
        if (c >= D) continue;
        if (row0 < sq)
            *reinterpret_cast<uint32_t *>(o + (long long)row0 * o_rs + c) = sp_pack_bf16(acc[n][0] * sum[0], acc[n][1] * sum[0]);
        if (row1 < sq)
            *reinterpret_cast<uint32_t *>(o + (long long)row1 * o_rs + c) = sp_pack_bf16(acc[n][2] * sum[1], acc[n][3] * sum[1]);
    }
}

#define SP_FLASH_ENTRY(D, W, STAGES)                                                                            \
    extern "C" __global__ void __launch_bounds__(W * 32) sp_flash_attn_bf16_d##D##_w##W##_s##STAGES(               \
        const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v, __nv_bfloat16 *o, int sq,       \
        int skv, int heads, int kv_heads, int causal, int past, float scale, long long q_bs, long long q_hs,     \
        long long q_rs, long long k_bs, long long k_hs, long long k_rs, long long v_bs, long long v_hs,         \
        long long v_rs, long long o_bs, long long o_rs, long long o_hs, int splits, int chunk, float *part_o,   \
        float *part_ml) {                                                                                       \
        sp_flash_attn<D, W, STAGES>(q, k, v, o, sq, skv, heads, kv_heads, causal, past, scale, q_bs, q_hs,      \
                                    q_rs, k_bs, k_hs, k_rs, v_bs, v_hs, v_rs, o_bs, o_rs, o_hs, splits, chunk, \
                                    part_o, part_ml);                                                           \
    }

// Head dim 64 (2B/4B vision) and 72 (8B vision): double-buffered; 128 (text): one stage (two would pass 48 KB of static
// shared memory). 4 warps = 64 query rows a block (8 warps measured no faster for 64, slower for 128).
SP_FLASH_ENTRY(64, 4, 2)
SP_FLASH_ENTRY(72, 4, 2)
SP_FLASH_ENTRY(128, 4, 1)

// Merges the key splits of each output row: grid (rows), block d threads; out (rows, d) bf16.
extern "C" __global__ void sp_attn_combine(const float *part_o, const float *part_ml, __nv_bfloat16 *out,
                                           int splits, int d) {
    const long long row = blockIdx.x;
    const int c = threadIdx.x;
    const float *ml = part_ml + row * splits * 2;
    float mx = -INFINITY;
    for (int s = 0; s < splits; ++s) mx = fmaxf(mx, ml[2 * s]);
    float num = 0.f, den = 0.f;
    for (int s = 0; s < splits; ++s) {
        if (ml[2 * s] == -INFINITY) continue;  // a split with no visible key
        const float f = exp2f(ml[2 * s] - mx);
        num += part_o[(row * splits + s) * d + c] * f;
        den += ml[2 * s + 1] * f;
    }
    out[row * d + c] = __float2bfloat16_rn(den > 0.f ? num / den : 0.f);
}
