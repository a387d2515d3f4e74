// Residual add + norm (bf16, f32 statistics), part of the fused module (fused.cu includes this
// file).
// Kernels:
//   sp_add_rmsnorm_bf16    residual add + the RMSNorm that follows it (text decoder)
//   sp_add_layernorm_bf16  LayerNorm, or residual add + LayerNorm (vision tower)
#include "common.cuh"

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

// LayerNorm of each row of x (+ y), like the reference's bf16 ops: sum = round(x + y) (a bf16
// add), then mean and variance of the row in f32 (two passes over registers), out = round((sum -
// mean) * rstd * w + b). wb: (2, n) = [weight; bias]. With y, out[0] = sum and out[1] = the norm
// (the residual add and the norm after it in one pass); without (y null), out = the norm. Rows
// (rows, n) contiguous, n % 8 == 0 and n <= 8 * SP_LN_CHUNKS * blockDim.x. grid (rows; a warp a
// row when SP_NORM_WARP_ROWS(n, SP_LN_CHUNKS), the 2B/4B vision towers' 1024), block 128.
// A warp a row when n = 256 U, U <= SP_LN_CHUNKS (the 2B/4B vision towers' 1024): no block
// barriers, the statistics reduced by warp shuffles; the launch then covers rows / (blockDim.x /
// 32) blocks (src/kernels/cuda/norm.rs's norm_blocks applies the same rule). Measured on an H100:
// the vision tower's 48 norms 0.666 -> 0.565 ms. (The same for the text model's RMSNorm, n = 2048,
// was slower: 0.59 -> 0.65 ms a prefill, and twice as slow for one decode row.)
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
    static_assert(SP_LN_CHUNKS == 4, "a case below for each warp-row width 256 u, u <= SP_LN_CHUNKS");
    if (SP_NORM_WARP_ROWS(n, SP_LN_CHUNKS)) {
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
    float v[SP_LN_CHUNKS][8];
    float acc = 0.f;
#pragma unroll
    for (int u = 0; u < SP_LN_CHUNKS; ++u) {
        const int c = threadIdx.x + u * blockDim.x;
        if (c >= chunks) continue;
        sp_add8(x + r * n + c * 8, y ? y + r * n + c * 8 : nullptr, y ? out + r * n + c * 8 : nullptr, v[u]);
#pragma unroll
        for (int e = 0; e < 4; ++e) acc += v[u][2 * e] + v[u][2 * e + 1];
    }
    const float mean = sp_block_sum(acc, partial) / n;
    acc = 0.f;
#pragma unroll
    for (int u = 0; u < SP_LN_CHUNKS; ++u) {
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
    for (int u = 0; u < SP_LN_CHUNKS; ++u) {
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
