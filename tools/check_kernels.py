#!/usr/bin/env python3
"""Checks our CUDA kernels (crates/model/kernels/*.cu) on a GPU against PyTorch, without Rust.

Compiles them with nvcc into a small shared library (plus host launchers) and
- flash_attn.cu: runs it on the shapes Qwen3-VL uses (vision: 16 heads x 64, non-causal; text:
  16/8 heads x 128, causal with cached keys) and on awkward sizes, compares with attention
  computed in f32 by PyTorch, and times it against torch's scaled_dot_product_attention;
- fused.cu: QK-norm + rope against the reference's bf16 op sequence (RMSNorm in f32, rope
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
extern "C" int norm_rope(const void *x, const void *w, const void *cs, void *o, int b, int seq,
                         int heads, int d, float eps, long long x_bs, long long x_rs, long long x_hs,
                         long long cs_bs) {
    sp_norm_rope_bf16<<<dim3(seq, heads, b), d / 2>>>((const bf16 *)x, (const bf16 *)w, (const bf16 *)cs,
        (bf16 *)o, seq, heads, d, eps, x_bs, x_rs, x_hs, cs_bs);
    return (int)cudaGetLastError();
}
extern "C" int swiglu(const void *gu, void *o, int rows, int n) {
    sp_swiglu_bf16<<<1024, 256>>>((const bf16 *)gu, (bf16 *)o, rows, n);
    return (int)cudaGetLastError();
}
extern "C" int decode_attn(const void *q, const void *k, const void *v, void *o, int b, int kv_heads, int rep,
                           int len, float scale, long long k_bs, long long k_hs, long long k_rs, long long v_bs,
                           long long v_hs, long long v_rs, int iters) {
    dim3 grid(kv_heads, b), block(32 * SP_DEC_WARPS);
    typedef const bf16 *P;
    for (int it = 0; it < iters; ++it)
    if (rep == 1) sp_decode_attn_bf16_d128_r1<<<grid, block>>>((P)q, (P)k, (P)v, (bf16 *)o, len, scale, k_bs, k_hs, k_rs, v_bs, v_hs, v_rs);
    else if (rep == 2) sp_decode_attn_bf16_d128_r2<<<grid, block>>>((P)q, (P)k, (P)v, (bf16 *)o, len, scale, k_bs, k_hs, k_rs, v_bs, v_hs, v_rs);
    else sp_decode_attn_bf16_d128_r4<<<grid, block>>>((P)q, (P)k, (P)v, (bf16 *)o, len, scale, k_bs, k_hs, k_rs, v_bs, v_hs, v_rs);
    return (int)cudaGetLastError();
}
extern "C" int launch(int d, const void *q, const void *k, const void *v, void *o, int b, int sq, int skv,
                      int heads, int kv_heads, int causal, int past, float scale, long long q_bs,
                      long long q_hs, long long q_rs, long long k_bs, long long k_hs, long long k_rs,
                      long long v_bs, long long v_hs, long long v_rs, long long o_bs, long long o_rs,
                      long long o_hs) {
    dim3 grid((sq + SP_BLOCK_M - 1) / SP_BLOCK_M, heads, b), block(SP_WARPS * 32);
    typedef const __nv_bfloat16 *P;
    if (d == 64)
        sp_flash_attn_bf16_d64<<<grid, block>>>((P)q, (P)k, (P)v, (__nv_bfloat16 *)o, sq, skv, heads, kv_heads,
            causal, past, scale, q_bs, q_hs, q_rs, k_bs, k_hs, k_rs, v_bs, v_hs, v_rs, o_bs, o_rs, o_hs);
    else
        sp_flash_attn_bf16_d128<<<grid, block>>>((P)q, (P)k, (P)v, (__nv_bfloat16 *)o, sq, skv, heads, kv_heads,
            causal, past, scale, q_bs, q_hs, q_rs, k_bs, k_hs, k_rs, v_bs, v_hs, v_rs, o_bs, o_rs, o_hs);
    return (int)cudaGetLastError();
}
"""


def build():
    tmp = tempfile.mkdtemp()
    src = os.path.join(tmp, "launch.cu")
    with open(src, "w") as f:
        f.write(LAUNCHER % (KERNELS, KERNELS))
    lib = os.path.join(tmp, "libflash.so")
    major, minor = torch.cuda.get_device_capability()
    arch = f"sm_{major}{minor}"
    subprocess.run(["nvcc", "-O3", "-shared", "-Xcompiler", "-fPIC", f"-arch={arch}", "-o", lib, src], check=True)
    # Also the PTX the Rust build embeds (crates/model/build.rs), to catch errors there.
    for name in ("flash_attn", "fused"):
        subprocess.run(["nvcc", "-O3", "--ptx", "-arch=compute_80", "-o", os.path.join(tmp, name + ".ptx"),
                        os.path.join(KERNELS, name + ".cu")], check=True)
    return ctypes.CDLL(lib)


def run(lib, q, k, v, causal, past, scale):
    """q (b, h, sq, d), k/v (b, hkv, skv, d), any strides with a contiguous last dim."""
    b, h, sq, d = q.shape
    hkv, skv = k.shape[1], k.shape[2]
    o = torch.empty(b, sq, h, d, dtype=torch.bfloat16, device=q.device)
    L = ctypes.c_longlong
    rc = lib.launch(d, ctypes.c_void_p(q.data_ptr()), ctypes.c_void_p(k.data_ptr()), ctypes.c_void_p(v.data_ptr()),
                    ctypes.c_void_p(o.data_ptr()), b, sq, skv, h, hkv, int(causal), past, ctypes.c_float(scale),
                    L(q.stride(0)), L(q.stride(1)), L(q.stride(2)), L(k.stride(0)), L(k.stride(1)), L(k.stride(2)),
                    L(v.stride(0)), L(v.stride(1)), L(v.stride(2)), L(o.stride(0)), L(o.stride(1)), L(o.stride(2)))
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
        # name, b, h, hkv, sq, skv, d, causal
        ("vision 4096", 1, 16, 16, 4096, 4096, 64, False),
        ("vision odd 1000", 1, 16, 16, 1000, 1000, 64, False),
        ("vision tiny 4", 1, 2, 2, 4, 4, 64, False),
        ("prefill 1546", 1, 16, 8, 1546, 1546, 128, True),
        ("follow-up 30 after 1546", 1, 16, 8, 30, 1576, 128, True),
        ("prefill odd 77, batch 2", 2, 4, 2, 77, 77, 128, True),
        ("causal 1 row", 1, 16, 8, 1, 300, 128, True),
    ]
    for name, b, h, hkv, sq, skv, d, causal in cases:
        q = torch.randn(b, h, sq, d, device=dev, dtype=torch.bfloat16)
        k = torch.randn(b, hkv, skv, d, device=dev, dtype=torch.bfloat16)
        v = torch.randn(b, hkv, skv, d, device=dev, dtype=torch.bfloat16)
        past = skv - sq
        scale = d ** -0.5
        out = run(lib, q, k, v, causal, past, scale).float()
        ref = reference(q, k, v, causal, past, scale)
        err = (out - ref).abs().max().item()
        # Output magnitude ~1; bf16 P and output rounding give errors around 1e-2 at worst.
        ok = err < 2e-2 and torch.isfinite(out).all().item()
        bad += not ok
        line = f"{name:28s} max|err| {err:.2e} {'ok' if ok else 'FAIL'}"
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
    # QK-norm + rope, reading q heads in place from a (b, s, (16 + 2 * 8) * 128) qkv output.
    for b, seq, heads, d, shared in [(1, 1546, 16, 128, True), (1, 1, 16, 128, True), (3, 1, 8, 128, False)]:
        qkv = torch.randn(b, seq, (heads + 16) * d, device=dev, dtype=torch.bfloat16) * 3
        x = qkv[..., : heads * d].view(b, seq, heads, d)
        w = (torch.rand(d, device=dev) + 0.5).to(torch.bfloat16)
        cs = torch.rand(b if not shared else 1, seq, d // 2, device=dev) * 6.28
        cos, sin = cs.cos().to(torch.bfloat16).contiguous(), cs.sin().to(torch.bfloat16).contiguous()
        out = torch.empty(b, heads, seq, d, device=dev, dtype=torch.bfloat16)
        table = torch.cat([cos, sin], -1).contiguous()
        rc = lib.norm_rope(ptr(x), ptr(w), ptr(table), ptr(out), b, seq, heads, d, ctypes.c_float(1e-6),
                           L(x.stride(0)), L(x.stride(1)), L(x.stride(2)), L(0 if shared else seq * d))
        assert rc == 0
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
    for rows, n in [(1, 6144), (1546, 6144), (7, 5)]:
        gu = torch.randn(rows, 2 * n, device=dev, dtype=torch.bfloat16) * 4
        out = torch.empty(rows, n, device=dev, dtype=torch.bfloat16)
        assert lib.swiglu(ptr(gu), ptr(out), rows, n) == 0
        ref = F.silu(gu[:, :n]) * gu[:, n:]
        same = torch.equal(out, ref)
        bad += not same
        print(f"{'swiglu %dx%d' % (rows, n):28s} {'bit-identical ok' if same else 'FAIL: differs from torch'}")
    # Decode attention over strided cache views (capacity > length), 1..4 query heads per key head.
    for b, hkv, rep, length in [(1, 8, 2, 1547), (1, 8, 2, 1), (2, 8, 4, 300), (1, 2, 1, 77)]:
        cap = length + 100
        kbuf = torch.randn(b, hkv, cap, 128, device=dev, dtype=torch.bfloat16)
        vbuf = torch.randn(b, hkv, cap, 128, device=dev, dtype=torch.bfloat16)
        k, v = kbuf[:, :, :length], vbuf[:, :, :length]
        q = torch.randn(b, hkv * rep, 1, 128, device=dev, dtype=torch.bfloat16)
        out = torch.empty(b, hkv * rep * 128, device=dev, dtype=torch.bfloat16)
        call = lambda iters=1: lib.decode_attn(ptr(q), ptr(k), ptr(v), ptr(out), b, hkv, rep, length,
                                               ctypes.c_float(128 ** -0.5), L(k.stride(0)), L(k.stride(1)),
                                               L(k.stride(2)), L(v.stride(0)), L(v.stride(1)), L(v.stride(2)), iters)
        assert call() == 0
        ref = reference(q, k, v, False, 0, 128 ** -0.5).reshape(b, -1)
        err = (out.float() - ref).abs().max().item()
        ok = err < 1e-2
        bad += not ok
        line = f"{'decode b%d kv%d rep%d len%d' % (b, hkv, rep, length):28s} max|err| {err:.2e} {'ok' if ok else 'FAIL'}"
        if length > 1000:
            # Launched 100 times from C: Python's call overhead would dominate a single launch.
            line += f"   {timed(lambda: call(100), 5) * 10:.1f} us"
        print(line)
    return bad


if __name__ == "__main__":
    main()
