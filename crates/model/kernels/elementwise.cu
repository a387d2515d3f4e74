// Elementwise kernels (bf16), part of the fused module (fused.cu includes this file).
// Kernels:
//   sp_swiglu_bf16    silu(gate) * up on the stacked gate_up output
//   sp_bias_act_bf16  a linear layer's bias + activation (none, tanh GELU, erf GELU)
//   sp_rows_add_bf16  DeepStack's injection: feature rows added to chosen rows of the hidden states
#include "common.cuh"

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

// out = act(round(x + bias)) per row of (rows, n), act computed in f32 and rounded once like the
// reference's bf16 activations: act = SP_ACT_NONE, SP_ACT_GELU_TANH (tanh-approximated GELU) or
// SP_ACT_GELU_ERF (abi.h). Replaces the broadcast bias add (slow in candle for wide rows) and the
// activation kernel after a matmul.
extern "C" __global__ void sp_bias_act_bf16(const bf16 *x, const bf16 *bias, bf16 *out, int rows, int n, int act) {
    const long long total = (long long)rows * n;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        float v = sp_round(__bfloat162float(x[idx]) + __bfloat162float(bias[idx % n]));
        if (act == SP_ACT_GELU_TANH) {
            const float inner = 0.7978845608028654f * (v + 0.044715f * v * v * v);
            v = 0.5f * v * (1.f + tanhf(inner));
        } else if (act == SP_ACT_GELU_ERF) {
            v = 0.5f * v * (1.f + erff(v * 0.7071067811865476f));
        }
        out[idx] = __float2bfloat16_rn(v);
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
