#!/usr/bin/env python3
"""Checks crates/model/kernels/flash_attn.cu on a GPU against PyTorch, without Rust.

Compiles the kernel with nvcc into a small shared library (plus a host launcher), runs it on
the shapes Qwen3-VL uses (vision: 16 heads x 64, non-causal; text: 16/8 heads x 128, causal
with cached keys) and on awkward sizes, compares with attention computed in f32 by PyTorch,
and times it against torch's scaled_dot_product_attention (flash backend) on the same inputs.

    python3 tools/check_flash_attn.py            # needs nvcc, torch with CUDA, a GPU
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
KERNEL = os.path.join(ROOT, "crates", "model", "kernels", "flash_attn.cu")

LAUNCHER = r"""
#include "%s"
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
        f.write(LAUNCHER % KERNEL)
    lib = os.path.join(tmp, "libflash.so")
    major, minor = torch.cuda.get_device_capability()
    arch = f"sm_{major}{minor}"
    subprocess.run(["nvcc", "-O3", "-shared", "-Xcompiler", "-fPIC", f"-arch={arch}", "-o", lib, src], check=True)
    # Also the PTX the Rust build embeds, to catch errors there.
    subprocess.run(["nvcc", "-O3", "--ptx", f"-arch={arch}", "-o", os.path.join(tmp, "k.ptx"), KERNEL], check=True)
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
    print("check_flash_attn:", "FAILED" if bad else "all cases ok")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
