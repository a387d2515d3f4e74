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
// merges the splits. The decode kernels (decode_attn.cu) use the same partial layout: output row
// r = (b * sq + i) * heads + h, part_o[r][split][d], part_ml[r][split] = {max (log2 units), sum}.
//
// Kernels (the PTX module screenpilot_flash_attn):
//   sp_flash_attn_bf16_d{D}_w{W}_m{MT}_n{BN}_s{STAGES}  attention, one per SP_FLASH_ENTRY below
//   sp_attn_combine                                    merges the key splits' partial results

#include "attn_common.cuh"

__device__ __forceinline__ void sp_mma(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8x8 bf16 matrices from shared memory, transposed: the B operands of two n8 tiles.
__device__ __forceinline__ void sp_ldmatrix_x4_trans(uint32_t *r, const __nv_bfloat16 *p) {
    uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// Copies rows [row0, row0 + BN) of a (rows, D) matrix into shared memory with cp.async
// (16 bytes at a time, zero-filled past `rows`); the caller commits and waits.
template <int D, int DP, int BN, int THREADS>
__device__ __forceinline__ void sp_load_tile(__nv_bfloat16 (*dst)[DP + 8], const __nv_bfloat16 *src,
                                             long long row_stride, int row0, int rows) {
    constexpr int CHUNKS = D / 8;  // 16-byte pieces per row
    for (int c = threadIdx.x; c < BN * CHUNKS; c += THREADS) {
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

// Four 8x8 bf16 matrices from shared memory, not transposed: the B operands of two n8 tiles when
// the rows are keys (S = Q K^T).
__device__ __forceinline__ void sp_ldmatrix_x4(uint32_t *r, const __nv_bfloat16 *p) {
    uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// W warps per block, each with MT tiles of 16 query rows (BM = 16 MT W rows a block); keys BN at a
// time; STAGES = 2 double-buffers the key/value tiles so the next tile's copy overlaps this
// tile's math. Two row tiles a warp reuse every key/value fragment read from shared memory twice
// and halve the key/value traffic from L2 (each block reads all the keys). A head dim that is not
// a multiple of 16 (72 in the 8B vision tower) is padded to DP with zero columns in q, k and v
// (they add nothing to the scores, and the output's padded columns are not written).
template <int D, int W, int MT, int BN, int STAGES>
__device__ void sp_flash_attn(const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ k,
                              const __nv_bfloat16 *__restrict__ v, __nv_bfloat16 *__restrict__ o, int sq,
                              int skv, int heads, int kv_heads, int causal, int past, float scale,
                              long long q_bs, long long q_hs, long long q_rs, long long k_bs, long long k_hs,
                              long long k_rs, long long v_bs, long long v_hs, long long v_rs, long long o_bs,
                              long long o_rs, long long o_hs, int splits, int chunk, float *part_o,
                              float *part_ml) {
    constexpr int DP = (D + 15) / 16 * 16;
    constexpr int BM = 16 * MT * W;
    __shared__ __align__(16) __nv_bfloat16 ks_all[STAGES][BN][DP + 8];
    __shared__ __align__(16) __nv_bfloat16 vs_all[STAGES][BN][DP + 8];
    if constexpr (DP > D) {  // zero the padding columns once; tile copies never touch them
        constexpr int PAD = BN * (DP - D) / 8;
        for (int c = threadIdx.x; c < STAGES * PAD; c += W * 32) {
            const int st = c / PAD, rem = c % PAD;
            const int r = rem / ((DP - D) / 8), col = D + (rem % ((DP - D) / 8)) * 8;
            *reinterpret_cast<uint4 *>(&ks_all[st][r][col]) = make_uint4(0, 0, 0, 0);
            *reinterpret_cast<uint4 *>(&vs_all[st][r][col]) = make_uint4(0, 0, 0, 0);
        }
    }

    const SpAttnBlock blk = sp_attn_block(BM, causal, heads, kv_heads, splits, q_bs, q_hs, k_bs, k_hs, v_bs, v_hs, o_bs, o_hs);
    const int m0 = blk.m0, h = blk.h, b = blk.b, split = blk.split;
    const int warp = blk.warp, lane = blk.lane, g = blk.g, tig = blk.tig;
    q += blk.q_off;
    k += blk.k_off;
    v += blk.v_off;
    o += blk.o_off;

    // This warp's rows: wrow + 16 mt + g (+ 8) for row tile mt.
    const int wrow = m0 + warp * 16 * MT;
    const int wlast = min(wrow + 16 * MT, sq) - 1;
    uint32_t qf[MT][DP / 16][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        const int row0 = wrow + mt * 16 + g, row1 = row0 + 8;
#pragma unroll
        for (int kk = 0; kk < DP / 16; ++kk) {
            int c = kk * 16 + tig * 2;
            const uint32_t *p0 = reinterpret_cast<const uint32_t *>(q + (long long)row0 * q_rs + c);
            const uint32_t *p1 = reinterpret_cast<const uint32_t *>(q + (long long)row1 * q_rs + c);
            const bool lo = c < D, hi = c + 8 < D;
            qf[mt][kk][0] = row0 < sq && lo ? p0[0] : 0u;
            qf[mt][kk][1] = row1 < sq && lo ? p1[0] : 0u;
            qf[mt][kk][2] = row0 < sq && hi ? p0[4] : 0u;
            qf[mt][kk][3] = row1 < sq && hi ? p1[4] : 0u;
        }
    }

    float acc[MT][DP / 8][4];
    float mx[MT][2], sum[MT][2];  // running max (raw score units) and sum of each row
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int n = 0; n < DP / 8; ++n) acc[mt][n][0] = acc[mt][n][1] = acc[mt][n][2] = acc[mt][n][3] = 0.f;
        mx[mt][0] = mx[mt][1] = -INFINITY;
        sum[mt][0] = sum[mt][1] = 0.f;
    }
    const float sl2 = scale * 1.4426950408889634f;  // exp(scale x) = 2^(sl2 x)

    int kv_end = skv;
    if (causal) kv_end = min(skv, min(m0 + BM, sq) - 1 + past + 1);
    kv_end = min(kv_end, (split + 1) * chunk);
    const int n_start = split * chunk;
    if (n_start < kv_end) {
        sp_load_tile<D, DP, BN, W * 32>(ks_all[0], k, k_rs, n_start, skv);
        sp_load_tile<D, DP, BN, W * 32>(vs_all[0], v, v_rs, n_start, skv);
        sp_cp_commit();
    }
    for (int n0 = n_start, it = 0; n0 < kv_end; n0 += BN, ++it) {
        if (STAGES == 2 && n0 + BN < kv_end) {
            // The buffer written here was last read in the previous iteration (synced below).
            sp_load_tile<D, DP, BN, W * 32>(ks_all[(it + 1) % STAGES], k, k_rs, n0 + BN, skv);
            sp_load_tile<D, DP, BN, W * 32>(vs_all[(it + 1) % STAGES], v, v_rs, n0 + BN, skv);
            sp_cp_commit();
            sp_cp_wait<1>();
        } else {
            sp_cp_wait<0>();
        }
        __syncthreads();
        __nv_bfloat16 (*ks)[DP + 8] = ks_all[it % STAGES];
        __nv_bfloat16 (*vs)[DP + 8] = vs_all[it % STAGES];

        // A warp whose rows all end before this tile (causal) or lie past the queries skips it.
        if (wrow < sq && !(causal && n0 > wlast + past)) {
            float s[MT][BN / 8][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int n = 0; n < BN / 8; ++n) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < DP / 16; ++kk) {
#pragma unroll
                for (int n = 0; n < BN / 8; n += 2) {
                    uint32_t kb[4];
                    sp_ldmatrix_x4(kb, &ks[n * 8 + (lane / 16) * 8 + lane % 8][kk * 16 + ((lane / 8) % 2) * 8]);
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        sp_mma(s[mt][n], qf[mt][kk], kb[0], kb[1]);
                        sp_mma(s[mt][n + 1], qf[mt][kk], kb[2], kb[3]);
                    }
                }
            }

            const bool edge = n0 + BN > kv_end || (causal && n0 + BN - 1 > wrow + past);
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                float alpha[2];
                sp_softmax_step<BN / 8>(s[mt], mx[mt], sum[mt], alpha, wrow + mt * 16 + g, n0, kv_end, causal, past, sl2,
                                        edge, tig);
#pragma unroll
                for (int n = 0; n < DP / 8; ++n) {
                    acc[mt][n][0] *= alpha[0];
                    acc[mt][n][1] *= alpha[0];
                    acc[mt][n][2] *= alpha[1];
                    acc[mt][n][3] *= alpha[1];
                }
            }

            // O += P V, with P (16 x BN per row tile) taken straight from the score registers.
#pragma unroll
            for (int kc = 0; kc < BN / 16; ++kc) {
                uint32_t pa[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    pa[mt][0] = sp_pack_bf16(s[mt][2 * kc][0], s[mt][2 * kc][1]);
                    pa[mt][1] = sp_pack_bf16(s[mt][2 * kc][2], s[mt][2 * kc][3]);
                    pa[mt][2] = sp_pack_bf16(s[mt][2 * kc + 1][0], s[mt][2 * kc + 1][1]);
                    pa[mt][3] = sp_pack_bf16(s[mt][2 * kc + 1][2], s[mt][2 * kc + 1][3]);
                }
#pragma unroll
                for (int n = 0; n < DP / 8; n += 2) {
                    uint32_t vb[4];
                    const int key = kc * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
                    const int col = n * 8 + (lane / 16) * 8;
                    sp_ldmatrix_x4_trans(vb, &vs[key][col]);
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        sp_mma(acc[mt][n], pa[mt], vb[0], vb[1]);
                        sp_mma(acc[mt][n + 1], pa[mt], vb[2], vb[3]);
                    }
                }
            }
        }
        __syncthreads();  // every warp is done with this tile's buffers
        if (STAGES == 1 && n0 + BN < kv_end) {
            sp_load_tile<D, DP, BN, W * 32>(ks_all[0], k, k_rs, n0 + BN, skv);
            sp_load_tile<D, DP, BN, W * 32>(vs_all[0], v, v_rs, n0 + BN, skv);
            sp_cp_commit();
        }
    }

#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float t = sum[mt][r];
            t += __shfl_xor_sync(0xffffffffu, t, 1);
            t += __shfl_xor_sync(0xffffffffu, t, 2);
            sum[mt][r] = t;
        }
    }
    if (splits > 1) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int row = wrow + mt * 16 + g + r * 8;
                if (row >= sq) continue;
                const long long pr = ((long long)(b * sq + row) * heads + h) * splits + split;
                if (tig == 0) {
                    part_ml[pr * 2] = mx[mt][r] * sl2;  // the merge works in log2 units
                    part_ml[pr * 2 + 1] = sum[mt][r];
                }
#pragma unroll
                for (int n = 0; n < DP / 8; ++n) {
                    const int c = n * 8 + tig * 2;
                    if (c >= D) continue;
                    part_o[pr * D + c] = acc[mt][n][2 * r];
                    part_o[pr * D + c + 1] = acc[mt][n][2 * r + 1];
                }
            }
        }
        return;
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        const int row0 = wrow + mt * 16 + g, row1 = row0 + 8;
        const float inv0 = sum[mt][0] > 0.f ? 1.f / sum[mt][0] : 0.f;
        const float inv1 = sum[mt][1] > 0.f ? 1.f / sum[mt][1] : 0.f;
#pragma unroll
        for (int n = 0; n < DP / 8; ++n) {
            const int c = n * 8 + tig * 2;
            if (c >= D) continue;
            if (row0 < sq)
                *reinterpret_cast<uint32_t *>(o + (long long)row0 * o_rs + c) =
                    sp_pack_bf16(acc[mt][n][0] * inv0, acc[mt][n][1] * inv0);
            if (row1 < sq)
                *reinterpret_cast<uint32_t *>(o + (long long)row1 * o_rs + c) =
                    sp_pack_bf16(acc[mt][n][2] * inv1, acc[mt][n][3] * inv1);
        }
    }
}

#define SP_FLASH_ENTRY(D, W, MT, BN, STAGES)                                                                        \
    extern "C" __global__ void __launch_bounds__(W * 32) sp_flash_attn_bf16_d##D##_w##W##_m##MT##_n##BN##_s##STAGES( \
        const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v, __nv_bfloat16 *o, int sq,           \
        int skv, int heads, int kv_heads, int causal, int past, float scale, long long q_bs, long long q_hs,         \
        long long q_rs, long long k_bs, long long k_hs, long long k_rs, long long v_bs, long long v_hs,             \
        long long v_rs, long long o_bs, long long o_rs, long long o_hs, int splits, int chunk, float *part_o,       \
        float *part_ml) {                                                                                           \
        sp_flash_attn<D, W, MT, BN, STAGES>(q, k, v, o, sq, skv, heads, kv_heads, causal, past, scale, q_bs, q_hs,  \
                                            q_rs, k_bs, k_hs, k_rs, v_bs, v_hs, v_rs, o_bs, o_rs, o_hs, splits,     \
                                            chunk, part_o, part_ml);                                                \
    }

// The variants src/kernels/cuda/attention.rs launches (two 16-row tiles a warp for head dims 64
// and 72; one for 128, whose accumulators leave no registers for a second) and one alternative
// each, which tools/check_kernels.py checks and times next to them. Measured on an H100 and dropped
// (see BENCHMARKS.md, change 15): 8 warps a block, 32- and 48-key tiles for head dim 64.
SP_FLASH_ENTRY(64, 4, 2, 64, 2)
SP_FLASH_ENTRY(64, 4, 1, 64, 2)
SP_FLASH_ENTRY(72, 4, 2, 64, 2)
SP_FLASH_ENTRY(72, 4, 1, 64, 2)
SP_FLASH_ENTRY(128, 4, 1, 64, 1)
SP_FLASH_ENTRY(128, 4, 1, 32, 2)

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
