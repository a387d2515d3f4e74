#!/usr/bin/env python3
"""Checks our CUDA kernels (crates/model/kernels/*.cu) on a GPU against PyTorch, without Rust.

Compiles them with nvcc into a small shared library (plus host launchers) and
- flash_attn.cu: runs it on the shapes Qwen3-VL uses (vision: 16 heads x 64, non-causal; text:
  16/8 heads x 128, causal with cached keys) and on awkward sizes, compares with attention
  computed in f32 by PyTorch, and times it against torch's scaled_dot_product_attention;
- fused.cu (the files it includes): QK-norm + rope against the reference's bf16 op sequence (RMSNorm in f32, rope
  rounding each product), SwiGLU against torch's bf16 silu * up (must be bit-identical), and
  decode attention (one query per sequence, grouped heads, strided cache views) against f32.

    python3 tools/check_kernels.py            # needs nvcc, torch with CUDA, a GPU
Exit status 1 when any case is off by more than bf16 rounding allows.
"""
import ctypes
import os
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join(ROOT, "crates", "model", "kernels")

LAUNCHER = r"""
#include "%s/flash_attn.cu"
#include "%s/fused.cu"
#ifdef SP_SM90
#include "%s/flash_attn_sm90.cu"
#endif
static float *scratch_o, *scratch_ml;  // split partials, allocated once (64 MB + 4 MB)
static void ensure_scratch() {
    if (!scratch_o) {
        cudaMalloc(&scratch_o, 64 << 20);
        cudaMalloc(&scratch_ml, 4 << 20);
    }
}
// Blocks for the LayerNorm kernel: as src/kernels/cuda/norm.rs's norm_blocks (a warp a row where SP_NORM_WARP_ROWS).
static int norm_blocks(int rows, int n, int threads, int max_u) {
    return SP_NORM_WARP_ROWS(n, max_u) ? (rows + threads / 32 - 1) / (threads / 32) : rows;
}
static void combine(void *o, int rows, int splits, int d) {
    sp_attn_combine<<<rows, d>>>(scratch_o, scratch_ml, (__nv_bfloat16 *)o, splits, d);
}
extern "C" int norm_rope(const void *x, const void *w, int w_split, const void *cs, void *o, int b, int seq,
                         int heads, int d, float eps, long long x_bs, long long x_rs, long long x_hs,
                         long long cs_bs, const void *pos, void *kdst, void *vdst, int cap, int offset) {
    sp_norm_rope_bf16<<<dim3(seq, 1, b), dim3(32, 8)>>>((const bf16 *)x, (const bf16 *)w, w_split, (const bf16 *)cs,
        (bf16 *)o, seq, heads, d, eps, x_bs, x_rs, x_hs, cs_bs, (const int *)pos, (bf16 *)kdst, (bf16 *)vdst, cap, offset);
    return (int)cudaGetLastError();
}
// The KV table of b sequences (kv[2i], kv[2i+1]: key and value buffers of capacity caps[i]), copied
// to device memory, where the decode kernels read it.
static const SpKvTable *upload_table(int b, const unsigned long long *kv, const long long *caps) {
    static SpKvTable *table;
    if (!table) cudaMalloc(&table, sizeof(SpKvTable));
    SpKvTable t;
    for (int i = 0; i < b; ++i) {
        t.k[i] = kv[2 * i];
        t.v[i] = kv[2 * i + 1];
        t.head_stride[i] = caps[i] * 128;
    }
    cudaMemcpy(table, &t, sizeof(SpKvTable), cudaMemcpyHostToDevice);
    return table;
}
// One batched decode step (d 128): kv[i] = (k, v) buffer addresses of sequence i, (1, kv_heads, cap_i, 128)
// each; lens: device ints; splits fixed by the caller, as in a recorded graph.
extern "C" int decode_batched(const void *qk, const void *vnew, void *o, int b, int kv_heads, int rep,
                              const unsigned long long *kv, const long long *caps, const void *lens, float scale,
                              int splits, int iters) {
    ensure_scratch();
    const SpKvTable *table = upload_table(b, kv, caps);
    const long long qk_bs = (long long)kv_heads * (rep + 1) * 128, v_bs = (long long)kv_heads * 128;
    float *po = splits > 1 ? scratch_o : 0, *pml = splits > 1 ? scratch_ml : 0;
    dim3 grid(kv_heads, splits, b), block(32 * SP_DEC_WARPS);
    typedef const bf16 *P;
#define SP_GO_B(F) F<<<grid, block>>>((P)qk, qk_bs, (P)vnew, v_bs, 128, (bf16 *)o, scale, (const int *)lens, po, pml, table)
    for (int it = 0; it < iters; ++it) {
        if (rep == 1) SP_GO_B(sp_decode_attn_batched_bf16_d128_r1);
        else if (rep == 2) SP_GO_B(sp_decode_attn_batched_bf16_d128_r2);
        else SP_GO_B(sp_decode_attn_batched_bf16_d128_r4);
        if (splits > 1) combine(o, b * kv_heads * rep, splits, 128);
    }
    return (int)cudaGetLastError();
}
extern "C" int decode_norm(const void *qkv, const void *w, const void *cs, const void *pos, void *o, int b,
                           int kv_heads, int rep, const unsigned long long *kv, const long long *caps,
                           const void *lens, float eps, float scale, int splits, int iters) {
    ensure_scratch();
    const SpKvTable *table = upload_table(b, kv, caps);
    const long long qkv_bs = (long long)kv_heads * (rep + 2) * 128;
    float *po = splits > 1 ? scratch_o : 0, *pml = splits > 1 ? scratch_ml : 0;
    dim3 grid(kv_heads, splits, b), block(32 * SP_DEC_WARPS);
    typedef const bf16 *P;
#define SP_GO_N(F) F<<<grid, block>>>((P)qkv, qkv_bs, (P)w, (P)cs, (const int *)pos, eps, (bf16 *)o, scale, (const int *)lens, po, pml, table)
    for (int it = 0; it < iters; ++it) {
        if (rep == 1) SP_GO_N(sp_decode_attn_norm_bf16_d128_r1);
        else if (rep == 2) SP_GO_N(sp_decode_attn_norm_bf16_d128_r2);
        else SP_GO_N(sp_decode_attn_norm_bf16_d128_r4);
        if (splits > 1) combine(o, b * kv_heads * rep, splits, 128);
    }
    return (int)cudaGetLastError();
}
extern "C" int add_rmsnorm(const void *x, const void *y, const void *w, void *o, int rows, int n, float eps) {
    sp_add_rmsnorm_bf16<<<rows, 256>>>((const bf16 *)x, (const bf16 *)y, (const bf16 *)w, (bf16 *)o, rows, n, eps);
    return (int)cudaGetLastError();
}
extern "C" int bias_act(const void *x, const void *b, void *o, int rows, int n, int act) {
    sp_bias_act_bf16<<<1024, 256>>>((const bf16 *)x, (const bf16 *)b, (bf16 *)o, rows, n, act);
    return (int)cudaGetLastError();
}
extern "C" int vision_rope(const void *qkv, const void *c, const void *s, void *o, int seq, int heads, int d,
                           float q_scale) {
    sp_vision_rope_bf16<<<(seq * 2 * heads * d / (d %% 16 == 0 ? 16 : 4) + 255) / 256, 256>>>((const bf16 *)qkv, (const float *)c, (const float *)s,
        (bf16 *)o, seq, heads, d, q_scale);
    return (int)cudaGetLastError();
}
extern "C" int layernorm(const void *x, const void *y, const void *wb, void *o, int rows, int n, float eps) {
    sp_add_layernorm_bf16<<<norm_blocks(rows, n, 128, 4), 128>>>((const bf16 *)x, (const bf16 *)y, (const bf16 *)wb, (bf16 *)o, rows, n, eps);
    return (int)cudaGetLastError();
}
extern "C" int rows_add(void *x, const void *rows, const void *feat, int n_rows, int n, int total) {
    sp_rows_add_bf16<<<(n_rows * n / 2 + 255) / 256, 256>>>((bf16 *)x, (const unsigned *)rows, (const bf16 *)feat, n_rows, n, total);
    return (int)cudaGetLastError();
}
extern "C" int swiglu(const void *gu, void *o, int rows, int n) {
    const int per = n %% 8 == 0 ? n / 8 : n;
    sp_swiglu_bf16<<<dim3((per + 255) / 256, rows < 65535 ? rows : 65535), 256>>>((const bf16 *)gu, (bf16 *)o, rows, n);
    return (int)cudaGetLastError();
}
extern "C" int decode_attn(const void *q, const void *k, const void *v, void *o, int b, int kv_heads, int rep,
                           int len, float scale, long long k_bs, long long k_hs, long long k_rs, long long v_bs,
                           long long v_hs, long long v_rs, int splits, int iters) {
    ensure_scratch();
    const int step = 8 * SP_DEC_WARPS;
    int chunk = ((len + splits - 1) / splits + step - 1) / step * step;
    splits = (len + chunk - 1) / chunk;
    dim3 grid(kv_heads, splits, b), block(32 * SP_DEC_WARPS);
    typedef const bf16 *P;
    for (int it = 0; it < iters; ++it) {
        if (rep == 1) sp_decode_attn_bf16_d128_r1<<<grid, block>>>((P)q, (P)k, (P)v, (bf16 *)o, len, scale, k_bs, k_hs, k_rs, v_bs, v_hs, v_rs, chunk, scratch_o, scratch_ml);
        else if (rep == 2) sp_decode_attn_bf16_d128_r2<<<grid, block>>>((P)q, (P)k, (P)v, (bf16 *)o, len, scale, k_bs, k_hs, k_rs, v_bs, v_hs, v_rs, chunk, scratch_o, scratch_ml);
        else sp_decode_attn_bf16_d128_r4<<<grid, block>>>((P)q, (P)k, (P)v, (bf16 *)o, len, scale, k_bs, k_hs, k_rs, v_bs, v_hs, v_rs, chunk, scratch_o, scratch_ml);
        if (splits > 1) combine(o, b * kv_heads * rep, splits, 128);
    }
    return (int)cudaGetLastError();
}
// Every compiled flash-attention variant (flash_attn.cu's SP_FLASH_ENTRY list), by index.
typedef void (*FlashFn)(const bf16 *, const bf16 *, const bf16 *, bf16 *, int, int, int, int, int, int, float,
                        long long, long long, long long, long long, long long, long long, long long, long long,
                        long long, long long, long long, long long, int, int, float *, float *);
struct FlashVariant { const char *name; int d, warps, rows; FlashFn f; int smem; };
#define SP_V(D, W, MT, BN, S) {"d" #D "_w" #W "_m" #MT "_n" #BN "_s" #S, D, W, 16 * W * MT, sp_flash_attn_bf16_d##D##_w##W##_m##MT##_n##BN##_s##S}
static const FlashVariant VARIANTS[] = {
    SP_V(64, 4, 2, 64, 2), SP_V(64, 4, 1, 64, 2),
    SP_V(72, 4, 2, 64, 2), SP_V(72, 4, 1, 64, 2),
    SP_V(128, 4, 1, 64, 1), SP_V(128, 4, 1, 32, 2),
#ifdef SP_SM90
    // flash_attn_sm90.cu: dynamic shared memory, 2 or 3 stages of D / 4 KB (as src/kernels/cuda/attention.rs).
    {"wg_d64", 64, 8, 128, sp_flash_attn_wg_bf16_d64, 3 * 64 * 256},
    {"wg_d128", 128, 8, 128, sp_flash_attn_wg_bf16_d128, 2 * 128 * 256},
    {"wg1_d128", 128, 4, 64, sp_flash_attn_wg1_bf16_d128, 2 * 128 * 256},
#endif
};
extern "C" int n_variants() { return sizeof(VARIANTS) / sizeof(VARIANTS[0]); }
extern "C" const char *variant_name(int i) { return VARIANTS[i].name; }
extern "C" int variant_d(int i) { return VARIANTS[i].d; }
extern "C" int launch(int variant, const void *q, const void *k, const void *v, void *o, int b, int sq, int skv,
                      int heads, int kv_heads, int causal, int past, float scale, long long q_bs,
                      long long q_hs, long long q_rs, long long k_bs, long long k_hs, long long k_rs,
                      long long v_bs, long long v_hs, long long v_rs, long long o_bs, long long o_rs,
                      long long o_hs, int splits, int iters) {
    ensure_scratch();
    const FlashVariant &fv = VARIANTS[variant];
    int chunk = ((skv + splits - 1) / splits + 63) / 64 * 64;
    splits = (skv + chunk - 1) / chunk;
    dim3 grid((sq + fv.rows - 1) / fv.rows, heads, b * splits), block(fv.warps * 32);
    typedef const __nv_bfloat16 *P;
    cudaFuncSetAttribute(fv.f, cudaFuncAttributeMaxDynamicSharedMemorySize, fv.smem);
    for (int it = 0; it < iters; ++it) {
        fv.f<<<grid, block, fv.smem>>>((P)q, (P)k, (P)v, (__nv_bfloat16 *)o, sq, skv, heads, kv_heads, causal, past, scale,
            q_bs, q_hs, q_rs, k_bs, k_hs, k_rs, v_bs, v_hs, v_rs, o_bs, o_rs, o_hs, splits, chunk, scratch_o,
            scratch_ml);
        if (splits > 1) combine(o, b * sq * heads, splits, fv.d);
    }
    return (int)cudaGetLastError();
}
"""


def build():
    tmp = tempfile.mkdtemp()
    src = os.path.join(tmp, "launch.cu")
    with open(src, "w") as f:
        f.write(LAUNCHER % (KERNELS, KERNELS, KERNELS))
    lib = os.path.join(tmp, "libflash.so")
    major, minor = torch.cuda.get_device_capability()
    # Hopper also gets the wgmma kernel (flash_attn_sm90.cu), which needs the sm_90a target.
    hopper = (major, minor) == (9, 0)
    target = ["-gencode", "arch=compute_90a,code=sm_90a", "-DSP_SM90"] if hopper else [f"-arch=sm_{major}{minor}"]
    subprocess.run(["nvcc", "-O3", "-shared", "-Xcompiler", "-fPIC", "-o", lib, src] + target, check=True)
    # Also the PTX the Rust build embeds (crates/model/build.rs), to catch errors there.
    for name, target in (("flash_attn", "compute_80"), ("fused", "compute_80"), ("flash_attn_sm90", "compute_90a")):
        subprocess.run(["nvcc", "-O3", "--ptx", f"-arch={target}", "-o", os.path.join(tmp, name + ".ptx"),
                        os.path.join(KERNELS, name + ".cu")], check=True)
    return ctypes.CDLL(lib)


# The variant crates/model/src/kernels/cuda/attention.rs launches for each head dim (keep in step with it).
USED = {64: "d64_w4_m2_n64_s2", 72: "d72_w4_m2_n64_s2", 128: "d128_w4_m1_n64_s1"}
if torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0):
    USED[64], USED[128] = "wg_d64", "wg1_d128"  # flash_attn_sm90.cu on Hopper


def variants(lib):
    """{name: (index, head dim)} of every compiled flash-attention variant."""
    lib.variant_name.restype = ctypes.c_char_p
    return {lib.variant_name(i).decode(): (i, lib.variant_d(i)) for i in range(lib.n_variants())}


def run(lib, q, k, v, causal, past, scale, splits=1, iters=1, variant=None):
    """q (b, h, sq, d), k/v (b, hkv, skv, d), any strides with a contiguous last dim."""
    b, h, sq, d = q.shape
    hkv, skv = k.shape[1], k.shape[2]
    o = torch.empty(b, sq, h, d, dtype=torch.bfloat16, device=q.device)
    L = ctypes.c_longlong
    index = variants(lib)[variant or USED[d]][0]
    rc = lib.launch(index, ctypes.c_void_p(q.data_ptr()), ctypes.c_void_p(k.data_ptr()), ctypes.c_void_p(v.data_ptr()),
                    ctypes.c_void_p(o.data_ptr()), b, sq, skv, h, hkv, int(causal), past, ctypes.c_float(scale),
                    L(q.stride(0)), L(q.stride(1)), L(q.stride(2)), L(k.stride(0)), L(k.stride(1)), L(k.stride(2)),
                    L(v.stride(0)), L(v.stride(1)), L(v.stride(2)), L(o.stride(0)), L(o.stride(1)), L(o.stride(2)),
                    splits, iters)
    assert rc == 0, f"launch failed: {rc}"
    return o


def reference(q, k, v, causal, past, scale):
    rep = q.shape[1] // k.shape[1]
    kf = k.float().repeat_interleave(rep, 1)
    vf = v.float().repeat_interleave(rep, 1)
    s = q.float() @ kf.transpose(-1, -2) * scale
    if causal:
        sq, skv = q.shape[2], k.shape[2]
        i = torch.arange(sq, device=q.device)[:, None]
        j = torch.arange(skv, device=q.device)[None, :]
        s = s.masked_fill(j > i + past, float("-inf"))
    return (s.softmax(-1) @ vf).transpose(1, 2)  # (b, sq, h, d)


def timed(fn, reps=20):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def main():
    torch.manual_seed(0)
    lib = build()
    dev = "cuda"
    bad = 0
    cases = [
        # name, b, h, hkv, sq, skv, d, causal, key splits
        ("vision 4096", 1, 16, 16, 4096, 4096, 64, False, 1),
        ("vision odd 1000", 1, 16, 16, 1000, 1000, 64, False, 1),
        ("vision tiny 4", 1, 2, 2, 4, 4, 64, False, 1),
        ("8B vision 4096, head dim 72", 1, 16, 16, 4096, 4096, 72, False, 1),
        ("head dim 72, odd 77, 2 splits", 1, 2, 2, 77, 200, 72, False, 2),
        ("prefill 1546", 1, 16, 8, 1546, 1546, 128, True, 1),
        ("follow-up 30 after 1546", 1, 16, 8, 30, 1576, 128, True, 1),
        ("same, 13 key splits", 1, 16, 8, 30, 1576, 128, True, 13),
        ("prefill odd 77, batch 2", 2, 4, 2, 77, 77, 128, True, 1),
        ("odd 77, batch 2, 3 splits", 2, 4, 2, 77, 200, 128, True, 3),
        ("causal 1 row", 1, 16, 8, 1, 300, 128, True, 1),
    ]
    names = variants(lib)
    for name, b, h, hkv, sq, skv, d, causal, splits in cases:
        q = torch.randn(b, h, sq, d, device=dev, dtype=torch.bfloat16)
        k = torch.randn(b, hkv, skv, d, device=dev, dtype=torch.bfloat16)
        v = torch.randn(b, hkv, skv, d, device=dev, dtype=torch.bfloat16)
        past = skv - sq
        scale = d ** -0.5
        ref = reference(q, k, v, causal, past, scale)
        # Every variant of this head dim must be right; the one in use is timed in full.
        errs = {}
        for var, (_, vd) in names.items():
            if vd == d:
                out = run(lib, q, k, v, causal, past, scale, splits, variant=var).float()
                errs[var] = (out - ref).abs().max().item() if torch.isfinite(out).all().item() else float("inf")
        # Output magnitude ~1; bf16 P and output rounding give errors around 1e-2 at worst.
        wrong = [var for var, e in errs.items() if not e < 2e-2]
        bad += len(wrong)
        line = f"{name:28s} max|err| {errs[USED[d]]:.2e} {'ok' if not wrong else 'FAIL ' + ' '.join(wrong)}"
        if sq < 1000 and skv >= 1000:
            line += f"   {timed(lambda: run(lib, q, k, v, causal, past, scale, splits, 100), 5) * 10:.1f} us"
        if sq >= 1000:
            ours = timed(lambda: run(lib, q, k, v, causal, past, scale))
            kr = k.repeat_interleave(h // hkv, 1)
            vr = v.repeat_interleave(h // hkv, 1)
            if causal and past > 0:
                i = torch.arange(sq, device=dev)[:, None]
                j = torch.arange(skv, device=dev)[None, :]
                mask = j <= i + past
                theirs = timed(lambda: F.scaled_dot_product_attention(q, kr, vr, attn_mask=mask))
            else:
                theirs = timed(lambda: F.scaled_dot_product_attention(q, kr, vr, is_causal=causal))
            flops = 4 * b * h * sq * skv * d / (2 if causal else 1)
            line += f"   ours {ours:.3f} ms ({flops / ours / 1e9:.0f} TFLOP/s), torch sdpa {theirs:.3f} ms"
            others = {var: timed(lambda: run(lib, q, k, v, causal, past, scale, variant=var)) for var in errs if var != USED[d]}
            line += "\n" + " " * 30 + "  ".join(f"{var} {t:.3f}" for var, t in others.items())
        print(line, flush=True)
    # Strided inputs as the vision tower passes them: v read straight from the fused qkv output.
    seq, h, d = 512, 16, 64
    qkv = torch.randn(seq, 3, h, d, device=dev, dtype=torch.bfloat16)
    q = qkv[:, 0].transpose(0, 1).unsqueeze(0)
    k = qkv[:, 1].transpose(0, 1).unsqueeze(0)
    v = qkv[:, 2].transpose(0, 1).unsqueeze(0)
    err = (run(lib, q, k, v, False, 0, d ** -0.5).float() - reference(q, k, v, False, 0, d ** -0.5)).abs().max().item()
    ok = err < 2e-2
    bad += not ok
    print(f"{'strided qkv view':28s} max|err| {err:.2e} {'ok' if ok else 'FAIL'}")
    bad += check_fused(lib)
    print("check_kernels:", "FAILED" if bad else "all cases ok")
    sys.exit(1 if bad else 0)


def bf(x):
    return x.to(torch.bfloat16).float()


def check_fused(lib):
    dev, bad, L, ptr = "cuda", 0, ctypes.c_longlong, lambda t: ctypes.c_void_p(t.data_ptr())
    # QK-norm + rope, reading q and k heads (16 + 8, weights split at 16) in place from a
    # (b, s, (16 + 2 * 8) * 128) qkv output.
    for b, seq, heads, d, shared in [(1, 1546, 24, 128, True), (1, 1, 24, 128, True), (3, 1, 24, 128, False)]:
        qkv = torch.randn(b, seq, (heads + 8) * d, device=dev, dtype=torch.bfloat16) * 3
        x = qkv[..., : heads * d].view(b, seq, heads, d)
        w2 = (torch.rand(2, d, device=dev) + 0.5).to(torch.bfloat16)
        w = torch.cat([w2[0:1].expand(16, d), w2[1:2].expand(heads - 16, d)])  # per head
        cs = torch.rand(b if not shared else 1, seq, d // 2, device=dev) * 6.28
        cos, sin = cs.cos().to(torch.bfloat16).contiguous(), cs.sin().to(torch.bfloat16).contiguous()
        out = torch.empty(b, heads, seq, d, device=dev, dtype=torch.bfloat16)
        table = torch.cat([cos, sin], -1).contiguous()
        rc = lib.norm_rope(ptr(x), ptr(w2), 16, ptr(table), ptr(out), b, seq, heads, d, ctypes.c_float(1e-6),
                           L(x.stride(0)), L(x.stride(1)), L(x.stride(2)), L(0 if shared else seq * d), None, None, None, 0, 0)
        assert rc == 0
        if seq == 1 and not shared:
            # The same rows read from a table of positions through device positions (decode
            # steps): must give exactly the same output.
            pos = torch.tensor([5, 0, 9][:b], device=dev, dtype=torch.int32)
            big = torch.rand(10, d, device=dev).to(torch.bfloat16)
            big[pos.long()] = table[:, 0]
            out2 = torch.empty_like(out)
            rc = lib.norm_rope(ptr(x), ptr(w2), 16, ptr(big), ptr(out2), b, seq, heads, d, ctypes.c_float(1e-6),
                               L(x.stride(0)), L(x.stride(1)), L(x.stride(2)), L(0), ptr(pos), None, None, 0, 0)
            assert rc == 0
            same = torch.equal(out, out2)
            bad += not same
            print(f"{'norm_rope via positions':28s} {'bit-identical ok' if same else 'FAIL'}")
        if seq > 1:
            # Straight into a KV cache (rows [7, 7 + seq) of a capacity of seq + 40): the key heads
            # and the value heads that follow them in qkv; the query heads alone in out.
            cap, off = seq + 40, 7
            kc = torch.full((b, heads - 16, cap, d), float("nan"), device=dev, dtype=torch.bfloat16)
            vc = kc.clone()
            qo = torch.empty(b, 16, seq, d, device=dev, dtype=torch.bfloat16)
            rc = lib.norm_rope(ptr(x), ptr(w2), 16, ptr(table), ptr(qo), b, seq, heads, d, ctypes.c_float(1e-6),
                               L(x.stride(0)), L(x.stride(1)), L(x.stride(2)), L(0 if shared else seq * d), None,
                               ptr(kc), ptr(vc), cap, off)
            assert rc == 0
            vsrc = qkv[..., heads * d:].reshape(b, seq, heads - 16, d).transpose(1, 2)
            same = (torch.equal(qo, out[:, :16]) and torch.equal(kc[:, :, off:off + seq], out[:, 16:])
                    and torch.equal(vc[:, :, off:off + seq], vsrc) and kc[:, :, :off].isnan().all().item()
                    and vc[:, :, off + seq:].isnan().all().item())
            bad += not same
            print(f"{'norm_rope into a KV cache':28s} {'bit-identical ok' if same else 'FAIL'}")
        xf = x.float()
        n = bf(xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6) * w.float()).transpose(1, 2)
        c = cos.float().unsqueeze(1)
        sn = sin.float().unsqueeze(1)
        n1, n2 = n[..., : d // 2], n[..., d // 2:]
        ref = torch.cat([bf(bf(n1 * c) - bf(n2 * sn)), bf(bf(n1 * sn) + bf(n2 * c))], -1)
        diff = (out.float() - ref).abs()
        # The sum of squares adds in another order than candle's kernel: a normalised value can
        # land one bf16 ulp away, which rope carries on (more where its products cancel). Allow
        # rare flips of at most two ulps of the normalised magnitude.
        frac = (diff > 0).float().mean().item()
        ok = diff.max().item() <= 2 ** -6 * n.abs().max().item() and frac < 1e-3
        bad += not ok
        print(f"{'norm_rope b%d s%d' % (b, seq):28s} differing {frac:.1e}, max {diff.max().item():.1e} {'ok' if ok else 'FAIL'}")
    for rows, n in [(1, 2048), (1546, 2048), (13, 768), (3, 100)]:
        x = torch.randn(rows, n, device=dev, dtype=torch.bfloat16) * 2
        y = torch.randn(rows, n, device=dev, dtype=torch.bfloat16)
        w = (torch.rand(n, device=dev) + 0.5).to(torch.bfloat16)
        out = torch.empty(2, rows, n, device=dev, dtype=torch.bfloat16)
        assert lib.add_rmsnorm(ptr(x), ptr(y), ptr(w), ptr(out), rows, n, ctypes.c_float(1e-6)) == 0
        sm = x + y
        sf = sm.float()
        ref = (sf * torch.rsqrt(sf.pow(2).mean(-1, keepdim=True) + 1e-6) * w.float()).to(torch.bfloat16)
        same_sum = torch.equal(out[0], sm)
        frac = (out[1] != ref).float().mean().item()
        ok = same_sum and frac < 1e-3 and (out[1].float() - ref.float()).abs().max().item() <= 2 ** -6 * ref.float().abs().max().item()
        bad += not ok
        print(f"{'add_rmsnorm %dx%d' % (rows, n):28s} sum {'identical' if same_sum else 'DIFFERS'}, norm differing {frac:.1e} {'ok' if ok else 'FAIL'}")
    # LayerNorm (+ the residual add before it) against torch's bf16 add and F.layer_norm.
    for rows, n, add in [(4096, 1024, True), (4096, 1024, False), (1024, 4096, False), (5, 512, True), (3, 1152, True), (5, 8, True)]:
        x = torch.randn(rows, n, device=dev, dtype=torch.bfloat16) * 3 + 1
        y = torch.randn(rows, n, device=dev, dtype=torch.bfloat16)
        wb = torch.stack([torch.rand(n, device=dev) + 0.5, torch.randn(n, device=dev)]).to(torch.bfloat16)
        out = torch.empty(2 if add else 1, rows, n, device=dev, dtype=torch.bfloat16)
        assert lib.layernorm(ptr(x), ptr(y) if add else None, ptr(wb), ptr(out), rows, n, ctypes.c_float(1e-6)) == 0
        sm = x + y if add else x
        ref = F.layer_norm(sm, (n,), wb[0], wb[1], 1e-6)
        same_sum = not add or torch.equal(out[0], sm)
        frac = (out[-1] != ref).float().mean().item()
        ok = same_sum and frac < 1e-2 and (out[-1].float() - ref.float()).abs().max().item() <= 2 ** -6 * ref.float().abs().max().item()
        bad += not ok
        print(f"{'layernorm %dx%d%s' % (rows, n, ' + add' if add else ''):28s} sum {'identical' if same_sum else 'DIFFERS'}, norm differing {frac:.1e} {'ok' if ok else 'FAIL'}")
    # DeepStack injection: h[rows] += feat in bf16, in place; a row index past the end is skipped.
    h = torch.randn(1546, 2048, device=dev, dtype=torch.bfloat16)
    rows = torch.cat([torch.arange(15, 1039, device=dev), torch.tensor([5000], device=dev)]).to(torch.int32)
    feat = torch.randn(rows.numel(), 2048, device=dev, dtype=torch.bfloat16)
    ref = h.clone()
    ref[rows[:-1].long()] = ref[rows[:-1].long()] + feat[:-1]
    assert lib.rows_add(ptr(h), ptr(rows), ptr(feat), rows.numel(), 2048, 1546) == 0
    same = torch.equal(h, ref)
    bad += not same
    print(f"{'deepstack rows add':28s} {'bit-identical ok' if same else 'FAIL'}")
    # Bias + activation after a matmul: torch adds in bf16 and runs GELU in f32 (one rounding).
    for act, name in [(0, "none"), (1, "gelu tanh"), (2, "gelu erf")]:
        x = torch.randn(4096, 4096, device=dev, dtype=torch.bfloat16) * 2
        bias = torch.randn(4096, device=dev, dtype=torch.bfloat16)
        out = torch.empty_like(x)
        assert lib.bias_act(ptr(x), ptr(bias), ptr(out), 4096, 4096, act) == 0
        ref = x + bias
        ref = {0: ref, 1: F.gelu(ref, approximate="tanh"), 2: F.gelu(ref)}[act]
        frac = (out != ref).float().mean().item()
        ok = frac < 1e-3 and (out.float() - ref.float()).abs().max().item() <= 2 ** -6 * ref.float().abs().max().item()
        bad += not ok
        print(f"{'bias + ' + name:28s} differing {frac:.1e} {'ok' if ok else 'FAIL'}")
    # Vision rope from the fused qkv output, f32 tables, q scaled by 1/8.
    seq, heads, d = 4096, 16, 64
    qkv = torch.randn(seq, 3, heads, d, device=dev, dtype=torch.bfloat16)
    ang = torch.rand(seq, d // 2, device=dev) * 40
    cos, sin = ang.cos().contiguous(), ang.sin().contiguous()
    out = torch.empty(2, heads, seq, d, device=dev, dtype=torch.bfloat16)
    assert lib.vision_rope(ptr(qkv), ptr(cos), ptr(sin), ptr(out), seq, heads, d, ctypes.c_float(0.125)) == 0
    c2, s2 = torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)
    refs = []
    for part, sc in [(0, 0.125), (1, 1.0)]:
        x = qkv[:, part].transpose(0, 1).float()
        rot = torch.cat([-x[..., d // 2:], x[..., : d // 2]], -1)
        refs.append(((x * c2 + rot * s2) * sc).to(torch.bfloat16))
    ref = torch.stack(refs)
    frac = (out != ref).float().mean().item()
    ok = frac < 1e-3 and (out.float() - ref.float()).abs().max().item() < 0.05
    bad += not ok
    print(f"{'vision rope 4096x16x64':28s} differing {frac:.1e} {'ok' if ok else 'FAIL'}")
    for rows, n in [(1, 6144), (1546, 6144), (7, 5)]:
        gu = torch.randn(rows, 2 * n, device=dev, dtype=torch.bfloat16) * 4
        out = torch.empty(rows, n, device=dev, dtype=torch.bfloat16)
        assert lib.swiglu(ptr(gu), ptr(out), rows, n) == 0
        ref = F.silu(gu[:, :n]) * gu[:, n:]
        same = torch.equal(out, ref)
        bad += not same
        print(f"{'swiglu %dx%d' % (rows, n):28s} {'bit-identical ok' if same else 'FAIL: differs from torch'}")
    # Decode attention over strided cache views (capacity > length), 1..4 query heads per key head.
    for b, hkv, rep, length, splits in [(1, 8, 2, 1547, 1), (1, 8, 2, 1547, 25), (1, 8, 2, 1, 1), (2, 8, 4, 300, 5),
                                        (1, 2, 1, 77, 2)]:
        cap = length + 100
        kbuf = torch.randn(b, hkv, cap, 128, device=dev, dtype=torch.bfloat16)
        vbuf = torch.randn(b, hkv, cap, 128, device=dev, dtype=torch.bfloat16)
        k, v = kbuf[:, :, :length], vbuf[:, :, :length]
        q = torch.randn(b, hkv * rep, 1, 128, device=dev, dtype=torch.bfloat16)
        out = torch.empty(b, hkv * rep * 128, device=dev, dtype=torch.bfloat16)
        call = lambda iters=1: lib.decode_attn(ptr(q), ptr(k), ptr(v), ptr(out), b, hkv, rep, length,
                                               ctypes.c_float(128 ** -0.5), L(k.stride(0)), L(k.stride(1)),
                                               L(k.stride(2)), L(v.stride(0)), L(v.stride(1)), L(v.stride(2)), splits,
                                               iters)
        assert call() == 0
        ref = reference(q, k, v, False, 0, 128 ** -0.5).reshape(b, -1)
        err = (out.float() - ref).abs().max().item()
        ok = err < 1e-2
        bad += not ok
        line = f"{'decode b%d kv%d rep%d len%d /%d' % (b, hkv, rep, length, splits):28s} max|err| {err:.2e} {'ok' if ok else 'FAIL'}"
        if length > 1000:
            # Launched 100 times from C: Python's call overhead would dominate a single launch.
            line += f"   {timed(lambda: call(100), 5) * 10:.1f} us"
        print(line)
    # Batched decode: each sequence its own buffers and length (read from the device), the new
    # key and value written at row len; a fixed number of splits, so short sequences leave
    # splits empty (as a graph recorded at a longer length does).
    cases = [(2, [5, 1546, 300], 8), (2, [1, 64, 65], 1), (4, [700, 3], 25), (1, [33], 4)]
    cases += [(2, [1546], s) for s in (2, 4, 8, 16, 32)] + [(2, [1600 + i for i in range(8)], s) for s in (1, 2, 4, 8)]
    for rep, lens, splits in cases:
        b, hkv = len(lens), 8
        caps = [n + 40 for n in lens]
        kbufs = [torch.randn(1, hkv, c, 128, device=dev, dtype=torch.bfloat16) for c in caps]
        vbufs = [torch.randn(1, hkv, c, 128, device=dev, dtype=torch.bfloat16) for c in caps]
        qk = torch.randn(b, hkv * (rep + 1), 1, 128, device=dev, dtype=torch.bfloat16)
        vnew = torch.randn(b, hkv, 1, 128, device=dev, dtype=torch.bfloat16)
        out = torch.empty(b, hkv * rep * 128, device=dev, dtype=torch.bfloat16)
        addrs = (ctypes.c_ulonglong * (2 * b))(*[p for kb, vb in zip(kbufs, vbufs) for p in (kb.data_ptr(), vb.data_ptr())])
        capv = (ctypes.c_longlong * b)(*caps)
        lens_dev = torch.tensor(lens, device=dev, dtype=torch.int32)
        call = lambda iters=1: lib.decode_batched(ptr(qk), ptr(vnew), ptr(out), b, hkv, rep, addrs, capv,
                                                  ptr(lens_dev), ctypes.c_float(128 ** -0.5), splits, iters)
        assert call() == 0
        torch.cuda.synchronize()
        err, written = 0.0, True
        for i, n in enumerate(lens):
            written &= torch.equal(kbufs[i][0, :, n], qk[i, hkv * rep:, 0]) and torch.equal(vbufs[i][0, :, n], vnew[i, :, 0])
            ref = reference(qk[i:i + 1, :hkv * rep], kbufs[i][:, :, :n + 1], vbufs[i][:, :, :n + 1], False, 0, 128 ** -0.5)
            err = max(err, (out[i].float() - ref.reshape(-1)).abs().max().item())
        ok = err < 1e-2 and written
        bad += not ok
        name = 'batched rep%d lens%s /%d' % (rep, lens if b < 4 else '8x~1600', splits)
        line = f"{name:40s} max|err| {err:.2e} rows {'written' if written else 'NOT written'} {'ok' if ok else 'FAIL'}"
        if max(lens) > 1000:
            line += f"   {timed(lambda: call(100), 5) * 10:.1f} us"
        print(line)
    # QK-norm + rope inside the decode kernel: must equal norm_rope followed by the batched kernel,
    # bit for bit (output and the key/value rows written).
    for rep, lens, splits in [(2, [1546], 16), (2, [5, 700, 1600], 8), (4, [33, 1], 2), (1, [200], 4)]:
        b, hkv, d = len(lens), 8, 128
        h = hkv * rep
        qkv = torch.randn(b, (h + 2 * hkv) * d, device=dev, dtype=torch.bfloat16) * 3
        w2 = (torch.rand(2, d, device=dev) + 0.5).to(torch.bfloat16)
        table = torch.rand(2000, d, device=dev).to(torch.bfloat16)
        pos = torch.tensor([n + 3 for n in lens], device=dev, dtype=torch.int32)
        lens_dev = torch.tensor(lens, device=dev, dtype=torch.int32)
        caps = [n + 40 for n in lens]
        bufs = [(torch.randn(1, hkv, c, d, device=dev, dtype=torch.bfloat16), torch.randn(1, hkv, c, d, device=dev, dtype=torch.bfloat16)) for c in caps]
        copies = [(k.clone(), v.clone()) for k, v in bufs]
        addrs = lambda bs: (ctypes.c_ulonglong * (2 * b))(*[p for k, v in bs for p in (k.data_ptr(), v.data_ptr())])
        capv = (ctypes.c_longlong * b)(*caps)
        # unfused: norm_rope into qk, then the batched kernel
        x = qkv.view(b, 1, h + 2 * hkv, d)[:, :, : h + hkv]
        qk = torch.empty(b, h + hkv, 1, d, device=dev, dtype=torch.bfloat16)
        rc = lib.norm_rope(ptr(x), ptr(w2), h, ptr(table), ptr(qk), b, 1, h + hkv, d, ctypes.c_float(1e-6),
                           L(x.stride(0)), L(x.stride(1)), L(x.stride(2)), L(0), ptr(pos), None, None, 0, 0)
        assert rc == 0
        vnew = qkv[:, (h + hkv) * d:].contiguous()
        out1 = torch.empty(b, h * d, device=dev, dtype=torch.bfloat16)
        two = lambda iters=1: (lib.norm_rope(ptr(x), ptr(w2), h, ptr(table), ptr(qk), b, 1, h + hkv, d, ctypes.c_float(1e-6),
                                             L(x.stride(0)), L(x.stride(1)), L(x.stride(2)), L(0), ptr(pos), None, None, 0, 0),
                               lib.decode_batched(ptr(qk), ptr(vnew), ptr(out1), b, hkv, rep, addrs(bufs), capv,
                                                  ptr(lens_dev), ctypes.c_float(d ** -0.5), splits, iters))
        assert two() == (0, 0)
        out2 = torch.empty_like(out1)
        one = lambda iters=1: lib.decode_norm(ptr(qkv), ptr(w2), ptr(table), ptr(pos), ptr(out2), b, hkv, rep,
                                              addrs(copies), capv, ptr(lens_dev), ctypes.c_float(1e-6),
                                              ctypes.c_float(d ** -0.5), splits, iters)
        assert one() == 0
        torch.cuda.synchronize()
        same = torch.equal(out1, out2) and all(torch.equal(k1, k2) and torch.equal(v1, v2) for (k1, v1), (k2, v2) in zip(bufs, copies))
        bad += not same
        line = f"{'decode+norm rep%d lens%s /%d' % (rep, lens, splits):40s} {'bit-identical ok' if same else 'FAIL'}"
        if max(lens) > 1000:
            line += f"   {timed(lambda: one(100), 5) * 10:.1f} us"
        print(line)
    return bad


if __name__ == "__main__":
    main()
