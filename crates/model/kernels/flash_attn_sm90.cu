// Fused attention for Hopper (sm_90a): the same contract as flash_attn.cu's sp_flash_attn (read
// that file's header for the layouts, masking and key splits), with warpgroup MMAs (wgmma) in
// place of mma.sync. Head dims 64 (the 2B/4B vision towers) and 128 (the text prefill).
// Kernels (the PTX module screenpilot_flash_attn_sm90): sp_flash_attn_wg_bf16_d64,
// sp_flash_attn_wg_bf16_d128, sp_flash_attn_wg1_bf16_d128 (SP9_ENTRY at the end of the file).
//
// A block is two warpgroups (8 warps) of 64 query rows each (head dim 128 in the prefill: one);
// they read the same key/value tiles, 64 keys at a time, copied by cp.async into shared memory in
// the 128-byte-swizzled layout wgmma reads (a 64-element row is one 128-byte line; its 16-byte
// pieces are XORed with row % 8). Per tile, each warpgroup issues S = Q K^T as four m64n64k16
// wgmmas (Q from registers, keys K-major from shared memory), runs the online softmax on the
// scores in registers (the accumulator layout is mma.sync's, so the softmax is flash_attn.cu's),
// and issues O += P V as four m64n64k16 wgmmas (P from registers, values MN-major: transposed
// B). The vision kernel (d 64) keeps three tiles in flight with a "full" and an "empty" mbarrier
// each, so a warp waits only for the tile it needs and, before refilling a buffer, for warps a
// tile behind; the prefill kernel (d 128) uses two buffers and a block barrier a tile. Compiled to
// PTX for compute_90a only; src/kernels/cuda loads it on devices of compute capability 9.0.
//
// Measured on an H100 (2026-11-26, ncu and tools/check_kernels.py; the vision shape, 16 heads x
// 4096 x 64): cuDNN's kernel (torch's sdpa) takes 0.153 ms and issues 69 M instructions; this one
// took 0.302 ms and issued 156 M. Two causes: the key mask's compares and selects were predicated
// and issued on every tile (now a compile-time branch, sp_softmax_step), and each cp.async
// recomputed its row, swizzle and 64-bit address (now Sp9Copy, once a kernel): 93 M instructions,
// 0.199 ms (prefill layer 0.078 -> 0.050; torch 0.044). Then a quarter of the warps' time went to
// the block barrier (ncu's stall sampling: warpgroups drift apart within a tile and the barrier
// re-aligns them); the mbarriers took the vision layer to 0.181 ms (3, 4 or 5 stages alike; the
// prefill's one-warpgroup block gained nothing, 0.051 against 0.052).
// Tried and not kept: O += P(t-1) V(t-1) issued right after S(t), under the softmax
// (FlashAttention-3's overlap inside a warpgroup): with a wgmma under a branch of its own ptxas
// serializes every wgmma of the kernel (C7520, "wgmma serialized due to ... WG.AR in divergent
// path"; the 2026-11-25 attempt at this and at the ping-pong between warpgroups likely measured
// that), and without that, 0.203 ms at 128 registers (two blocks an SM, some spills) and 0.233-
// 0.247 at 155-173 (one block an SM), against 0.199 then. What cuDNN does beyond this: producer
// warps with TMA and setmaxnreg, 128-key tiles, one block an SM.

#include "attn_common.cuh"

#define SP9_BN 64

// wgmma shared-memory matrix descriptor: 128-byte swizzle, both byte offsets (between 8-row
// groups; the layouts here never need the other direction) 1024.
__device__ __forceinline__ uint64_t sp9_desc(const void *smem) {
    const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    uint64_t d = (uint64_t)((addr & 0x3FFFF) >> 4);
    d |= (uint64_t)(1024 >> 4) << 16;
    d |= (uint64_t)(1024 >> 4) << 32;
    d |= (uint64_t)1 << 62;
    return d;
}

__device__ __forceinline__ void sp9_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void sp9_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void sp9_wait() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }

// d (64 x 64 f32, 32 registers a thread) (+)= a (64 x 16 bf16, 4 registers) * b (16 x 64 from
// shared memory by descriptor). TRANS_B: b is MN-major (values), else K-major (keys).
template <int TRANS_B>
__device__ __forceinline__ void sp9_wgmma(float (*d)[4], const uint32_t *a, uint64_t b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %38, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
        "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, "
        "{%32,%33,%34,%35}, %36, p, 1, 1, %37;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
          "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
          "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),
          "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),
          "+f"(d[7][2]), "+f"(d[7][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(TRANS_B), "r"(accumulate));
}

// A thread's share of copying successive 64-row tiles of a (rows, D) bf16 matrix into D / 64
// swizzled 64 x 64 tiles, one per 64 columns, 8 KB apart (zero past `rows`), 16 bytes per
// cp.async by THREADS threads. The thread's row, column piece, shared-memory offset and source
// pointer are computed once and the pointer moves on 64 rows a tile (done per copy, with
// blockDim.x and a 64-bit multiply each, they cost ~70 instructions a tile).
template <int D, int THREADS>
struct Sp9Copy {
    static constexpr int CHUNKS = D / 8, PASSES = SP9_BN * CHUNKS / THREADS, ROWS_PER_PASS = THREADS / CHUNKS;
    // ROWS_PER_PASS a multiple of 8: a thread's swizzle (row % 8) is the same every pass.
    static_assert(SP9_BN * CHUNKS % THREADS == 0 && ROWS_PER_PASS % 8 == 0, "whole passes of whole 8-row groups");
    const __nv_bfloat16 *src, *g;  // the matrix; this thread's piece of the next tile's first row
    long long pass_step, tile_step;
    int row;  // the row g points at
    uint32_t soff;
    __device__ __forceinline__ Sp9Copy(const __nv_bfloat16 *src_, long long row_stride, int row0) {
        const int chunk = threadIdx.x % CHUNKS, r = threadIdx.x / CHUNKS;
        soff = (chunk / 8) * (SP9_BN * 128) + r * 128 + (((chunk % 8) ^ (r & 7)) << 4);
        src = src_;
        row = row0 + r;
        g = src_ + (long long)row * row_stride + chunk * 8;
        pass_step = ROWS_PER_PASS * row_stride;
        tile_step = SP9_BN * row_stride;
    }
    // The next 64 rows into the tile at shared-memory address `tile`; the caller commits and waits.
    __device__ __forceinline__ void load_next(uint32_t tile, int rows) {
#pragma unroll
        for (int pass = 0; pass < PASSES; ++pass) {
            const bool in = row + pass * ROWS_PER_PASS < rows;
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(tile + soff + pass * ROWS_PER_PASS * 128),
                         "l"(in ? g + pass * pass_step : src), "r"(in ? 16 : 0));
        }
        g += tile_step;
        row += SP9_BN;
    }
};

// Shared-memory mbarriers (sm_90): initialised by one thread, then arrived on and waited for.
__device__ __forceinline__ void sp9_mbar_init(uint32_t bar, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// Arrives (counting as one of the expected arrivals) once this thread's cp.asyncs so far have landed.
__device__ __forceinline__ void sp9_mbar_arrive_copies(uint32_t bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void sp9_mbar_arrive(uint32_t bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Until the barrier's phase of this parity has completed.
__device__ __forceinline__ void sp9_mbar_wait(uint32_t bar, uint32_t parity) {
    uint32_t done;
    do {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(bar), "r"(parity)
                     : "memory");
    } while (!done);
}

// A descriptor `bytes` further on in shared memory (the 14-bit address field, in 16-byte units,
// never carries: shared memory ends below 256 KB).
__device__ __forceinline__ uint64_t sp9_desc_at(uint64_t desc, uint32_t bytes) {
    return ((desc >> 32) << 32) | (uint32_t)((uint32_t)desc + (bytes >> 4));
}

// Head dim D (64 or 128: a tile is D / 64 column halves of 64 x 64), WGS warpgroups of 64 query
// rows a block; STAGES key/value tile buffers in dynamic shared memory (D / 4 KB each: the launch
// passes STAGES * D * 256 bytes); AHEAD_MB: 0 for a block barrier a tile, else the mbarriers with
// tiles fetched that many ahead (see below).
template <int D, int WGS, int STAGES, int AHEAD_MB>
__device__ __forceinline__ void sp9_flash_attn(
    const __nv_bfloat16 *__restrict__ q, const __nv_bfloat16 *__restrict__ k, const __nv_bfloat16 *__restrict__ v,
    __nv_bfloat16 *__restrict__ o, int sq, int skv, int heads, int kv_heads, int causal, int past, float scale,
    long long q_bs, long long q_hs, long long q_rs, long long k_bs, long long k_hs, long long k_rs, long long v_bs,
    long long v_hs, long long v_rs, long long o_bs, long long o_rs, long long o_hs, int splits, int chunk,
    float *part_o, float *part_ml) {
    constexpr int BM = 64 * WGS, TILE = SP9_BN * D, HALF = SP9_BN * 64, HALVES = D / 64;
    extern __shared__ __align__(1024) unsigned char sp9_smem[];
    __nv_bfloat16 *const tiles_base = reinterpret_cast<__nv_bfloat16 *>(sp9_smem);

    const SpAttnBlock blk = sp_attn_block(BM, causal, heads, kv_heads, splits, q_bs, q_hs, k_bs, k_hs, v_bs, v_hs, o_bs, o_hs);
    const int m0 = blk.m0, h = blk.h, b = blk.b, split = blk.split, warp = blk.warp, g = blk.g, tig = blk.tig;
    q += blk.q_off;
    k += blk.k_off;
    v += blk.v_off;
    o += blk.o_off;

    // This warpgroup's 64 rows start at grow; this warp's 16 at wrow (rows wrow + g, + 8).
    const int grow = m0 + (warp / 4) * 64, wrow = grow + (warp % 4) * 16;
    const int glast = min(grow + 64, sq) - 1;
    const int row0 = wrow + g, row1 = row0 + 8;
    uint32_t qf[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        const int c = kk * 16 + tig * 2;
        const uint32_t *p0 = reinterpret_cast<const uint32_t *>(q + (long long)row0 * q_rs + c);
        const uint32_t *p1 = reinterpret_cast<const uint32_t *>(q + (long long)row1 * q_rs + c);
        qf[kk][0] = row0 < sq ? p0[0] : 0u;
        qf[kk][1] = row1 < sq ? p1[0] : 0u;
        qf[kk][2] = row0 < sq ? p0[4] : 0u;
        qf[kk][3] = row1 < sq ? p1[4] : 0u;
    }

    float acc[HALVES][8][4];  // output columns 64 hf + 8 n + ...
#pragma unroll
    for (int hf = 0; hf < HALVES; ++hf)
#pragma unroll
        for (int n = 0; n < 8; ++n) acc[hf][n][0] = acc[hf][n][1] = acc[hf][n][2] = acc[hf][n][3] = 0.f;
    float mx[2] = {-INFINITY, -INFINITY}, sum[2] = {0.f, 0.f};
    const float sl2 = scale * 1.4426950408889634f;

    int kv_end = skv;
    if (causal) kv_end = min(skv, min(m0 + BM, sq) - 1 + past + 1);
    kv_end = min(kv_end, (split + 1) * chunk);
    const int n_start = split * chunk;
    const int tiles = kv_end > n_start ? (kv_end - n_start + SP9_BN - 1) / SP9_BN : 0;
    // Tile t's keys and values in buffer t % STAGES.
    Sp9Copy<D, WGS * 128> kcopy(k, k_rs, n_start), vcopy(v, v_rs, n_start);
    const uint32_t smem0 = static_cast<uint32_t>(__cvta_generic_to_shared(tiles_base));
    const uint64_t desc0 = sp9_desc(tiles_base);
    // AHEAD_MB == 0: one cp.async group per tile (empty past the end, so that the group counts
    // stay fixed), fetched STAGES - 1 ahead, a block-wide barrier per tile. AHEAD_MB > 0: tiles
    // fetched AHEAD_MB ahead; a buffer's "full" mbarrier completes when every thread's copies into
    // it have landed, its "empty" one when every warp is done with it; a warp only waits for the
    // tile it needs and, before refilling a buffer, for the warps STAGES - AHEAD_MB - 1 tiles behind.
    constexpr bool MB = AHEAD_MB > 0;
    static_assert(!MB || STAGES >= AHEAD_MB + 2, "a warp may run at least a tile ahead of the others");
    __shared__ __align__(8) uint64_t sp9_bars[MB ? 2 * STAGES : 1];
    const uint32_t full0 = static_cast<uint32_t>(__cvta_generic_to_shared(sp9_bars)), empty0 = full0 + STAGES * 8;
    if (MB) {
        if (threadIdx.x == 0)
            for (int i = 0; i < STAGES; ++i) {
                sp9_mbar_init(full0 + i * 8, WGS * 128);
                sp9_mbar_init(empty0 + i * 8, WGS * 4);
            }
        __syncthreads();
    }
    auto fetch = [&](int t) {  // called for t = 0, 1, 2, ... in order
        if (t < tiles) {
            if (MB && t >= STAGES) sp9_mbar_wait(empty0 + (t % STAGES) * 8, ((t / STAGES) - 1) & 1);
            const uint32_t buf = smem0 + (t % STAGES) * 2 * TILE * 2;
            kcopy.load_next(buf, skv);
            vcopy.load_next(buf + TILE * 2, skv);
            if (MB) sp9_mbar_arrive_copies(full0 + (t % STAGES) * 8);
        }
        if (!MB) asm volatile("cp.async.commit_group;\n" ::);
    };
    constexpr int AHEAD = MB ? AHEAD_MB : STAGES - 1;
#pragma unroll
    for (int t = 0; t < AHEAD; ++t) fetch(t);
    for (int it = 0; it < tiles; ++it) {
        const int n0 = n_start + it * SP9_BN;
        if (MB) {
            fetch(it + AHEAD);
            sp9_mbar_wait(full0 + (it % STAGES) * 8, (it / STAGES) & 1);  // tile `it` is in
        } else {
            asm volatile("cp.async.wait_group %0;\n" ::"n"(STAGES - 2));  // tile `it` is in
            // Everyone is past tile it - 1, whose buffer the next fetch reuses.
            __syncthreads();
        }
        // The tile was written through the generic proxy; wgmma reads through the async one.
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        if (!MB) fetch(it + AHEAD);
        // Byte offsets of this tile's keys and values from the first tile.
        const uint32_t kt = (it % STAGES) * 2 * TILE * 2, vt = kt + TILE * 2;

        // Warpgroup-uniform: a warpgroup whose rows all end before this tile (causal) or lie
        // past the queries skips it (wgmma needs all four warps).
        if (grow < sq && !(causal && n0 > glast + past)) {
            float s[SP9_BN / 8][4];
            sp9_fence();
#pragma unroll
            for (int kk = 0; kk < D / 16; ++kk)
                sp9_wgmma<0>(s, qf[kk], sp9_desc_at(desc0, kt + (kk / 4) * HALF * 2 + (kk % 4) * 32), kk > 0);
            sp9_commit();
            sp9_wait();

            const bool edge = n0 + SP9_BN > kv_end || (causal && n0 + SP9_BN - 1 > wrow + past);
            float alphas[2];
            sp_softmax_step<SP9_BN / 8>(s, mx, sum, alphas, row0, n0, kv_end, causal, past, sl2, edge, tig);
            // Once the row maxima settle, alpha is 1 for every row of the warp: skip the rescale.
            if (__any_sync(0xffffffffu, alphas[0] != 1.f || alphas[1] != 1.f)) {
#pragma unroll
                for (int hf = 0; hf < HALVES; ++hf)
#pragma unroll
                    for (int n = 0; n < 8; ++n) {
                        acc[hf][n][0] *= alphas[0];
                        acc[hf][n][1] *= alphas[0];
                        acc[hf][n][2] *= alphas[1];
                        acc[hf][n][3] *= alphas[1];
                    }
            }

            uint32_t pa[SP9_BN / 16][4];
#pragma unroll
            for (int kc = 0; kc < SP9_BN / 16; ++kc) {
                pa[kc][0] = sp_pack_bf16(s[2 * kc][0], s[2 * kc][1]);
                pa[kc][1] = sp_pack_bf16(s[2 * kc][2], s[2 * kc][3]);
                pa[kc][2] = sp_pack_bf16(s[2 * kc + 1][0], s[2 * kc + 1][1]);
                pa[kc][3] = sp_pack_bf16(s[2 * kc + 1][2], s[2 * kc + 1][3]);
            }
            sp9_fence();
#pragma unroll
            for (int kc = 0; kc < SP9_BN / 16; ++kc)
#pragma unroll
                for (int hf = 0; hf < HALVES; ++hf) sp9_wgmma<1>(acc[hf], pa[kc], sp9_desc_at(desc0, vt + hf * HALF * 2 + kc * 16 * 128), 1);
            sp9_commit();
            sp9_wait();
        }
        if (MB) {  // this warp is done with the tile's buffer
            __syncwarp();
            if (blk.lane == 0) sp9_mbar_arrive(empty0 + (it % STAGES) * 8);
        }
    }
    if (!MB) asm volatile("cp.async.wait_group 0;\n" ::);

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
                part_ml[pr * 2] = mx[r] * sl2;
                part_ml[pr * 2 + 1] = sum[r];
            }
#pragma unroll
            for (int n = 0; n < D / 8; ++n) {
                const int c = n * 8 + tig * 2;
                part_o[pr * D + c] = acc[n / 8][n % 8][2 * r];
                part_o[pr * D + c + 1] = acc[n / 8][n % 8][2 * r + 1];
            }
        }
        return;
    }
    const float inv0 = sum[0] > 0.f ? 1.f / sum[0] : 0.f, inv1 = sum[1] > 0.f ? 1.f / sum[1] : 0.f;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
        const int c = n * 8 + tig * 2;
        const float *a = acc[n / 8][n % 8];
        if (row0 < sq)
            *reinterpret_cast<uint32_t *>(o + (long long)row0 * o_rs + c) = sp_pack_bf16(a[0] * inv0, a[1] * inv0);
        if (row1 < sq)
            *reinterpret_cast<uint32_t *>(o + (long long)row1 * o_rs + c) = sp_pack_bf16(a[2] * inv1, a[3] * inv1);
    }
}

#define SP9_ENTRY(NAME, D, WGS, STAGES, AHEAD_MB, MINB)                                                                   \
    extern "C" __global__ void __launch_bounds__(WGS * 128, MINB) NAME(                                                 \
        const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v, __nv_bfloat16 *o, int sq, int skv, \
        int heads, int kv_heads, int causal, int past, float scale, long long q_bs, long long q_hs, long long q_rs, \
        long long k_bs, long long k_hs, long long k_rs, long long v_bs, long long v_hs, long long v_rs,             \
        long long o_bs, long long o_rs, long long o_hs, int splits, int chunk, float *part_o, float *part_ml) {     \
        sp9_flash_attn<D, WGS, STAGES, AHEAD_MB>(q, k, v, o, sq, skv, heads, kv_heads, causal, past, scale, q_bs, q_hs, q_rs, k_bs,     \
                            k_hs, k_rs, v_bs, v_hs, v_rs, o_bs, o_rs, o_hs, splits, chunk, part_o, part_ml);       \
    }

// Vision (d 64): mbarriers, three stages (49 KB of shared memory a block with the barriers: two
// blocks an SM, 128 registers). Prefill (d 128): one warpgroup a block, the block barrier (mbarriers measured
// the same there: 0.051 against 0.052 ms a layer), registers capped for three blocks an SM (168,
// a few spilled: 0.046 against 0.053 ms a layer at 192 registers and two blocks).
SP9_ENTRY(sp_flash_attn_wg_bf16_d64, 64, 2, 3, 1, 2)
SP9_ENTRY(sp_flash_attn_wg_bf16_d128, 128, 2, 2, 0, 1)
SP9_ENTRY(sp_flash_attn_wg1_bf16_d128, 128, 1, 2, 0, 3)
