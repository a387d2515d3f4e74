// Vision input (bf16), part of the fused module (fused.cu includes this file).
// Kernels:
//   sp_patch_rows_bf16  the vision tower's input rows from the uploaded 8-bit image
#include "common.cuh"

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
