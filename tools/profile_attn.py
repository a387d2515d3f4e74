#!/usr/bin/env python3
"""Profiles our flash-attention kernels next to PyTorch's on the shapes of workload W, for Nsight
Compute: the vision tower's (16 heads x 4096 x 64, non-causal) and the text prefill's (16 query /
8 key heads x 1546 x 128, causal). Warm-up launches run outside the profiled range; then one launch
of each side runs inside it (torch.cuda.profiler start/stop), so

    ncu --profile-from-start off --clock-control none --set full python3 tools/profile_attn.py

reports exactly four kernels (ours and torch's, per shape). Without ncu it prints the timings only.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_kernels as ck  # noqa: E402


def main():
    torch.manual_seed(0)
    lib = ck.build()
    shapes = [("vision", 16, 16, 4096, 64, False), ("prefill", 16, 8, 1546, 128, True)]
    runs = []
    for name, h, hkv, s, d, causal in shapes:
        q = torch.randn(1, h, s, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, hkv, s, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, hkv, s, d, device="cuda", dtype=torch.bfloat16)
        kr, vr = k.repeat_interleave(h // hkv, 1), v.repeat_interleave(h // hkv, 1)
        ours = lambda q=q, k=k, v=v, causal=causal, d=d: ck.run(lib, q, k, v, causal, 0, d ** -0.5)
        theirs = lambda q=q, kr=kr, vr=vr, causal=causal: F.scaled_dot_product_attention(q, kr, vr, is_causal=causal)
        runs.append((name, ours, theirs))
        print(f"{name}: ours {ck.timed(ours):.3f} ms, torch sdpa {ck.timed(theirs):.3f} ms", flush=True)
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    for _, ours, theirs in runs:
        ours()
        theirs()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()


if __name__ == "__main__":
    main()
