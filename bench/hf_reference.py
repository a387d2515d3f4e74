#!/usr/bin/env python3
"""The speed workload of `screenpilot bench` in HF transformers, on the same GPU, same JSON fields.

Workload: random weights at a named shape, bf16, one square synthetic image (1024x1024 -> 1024
visual tokens), `--text-tokens` text tokens after it, then `--new-tokens` greedy tokens; a second
question of `--followup-tokens` new tokens on the same image. transformers keeps no cache between
requests, so its second question costs a full prefill with vision.

    python3 bench/hf_reference.py --shape 2b --out hf_2b.json [--static]
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image
from transformers import Qwen3VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from compare_with_hf import shape_config  # noqa: E402

IM_START, IM_END, VISION_START, VISION_END, NEWLINE, USER, ASSISTANT = 151644, 151645, 151652, 151653, 198, 872, 77091


def text_ids(n, salt):
    return [1000 + (i * 7919 + salt * 104729) % 140000 for i in range(n)]


def synthetic_screen(size):
    y, x = np.mgrid[0:size, 0:size].astype(np.uint32)
    img = np.stack([(x * 7 + y) % 256, (y * 3) % 256, ((x ^ y) * 5) % 256], -1).astype(np.uint8)
    return Image.fromarray(img)


def stats(xs):
    v = sorted(xs)
    return {"median": v[len(v) // 2], "min": v[0], "max": v[-1], "n": len(v)}


def timed(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, (time.perf_counter() - t) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="2b")
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--text-tokens", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--followup-tokens", type=int, default=30)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--static", action="store_true", help="also decode with a static compiled cache")
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--out")
    a = ap.parse_args()
    dev = "cuda"
    with torch.device(dev):
        model = Qwen3VLForConditionalGeneration(shape_config(a.shape)).to(torch.bfloat16).eval()
    model.config._attn_implementation = a.attn
    model.model.visual.config._attn_implementation = a.attn
    model.model.language_model.config._attn_implementation = a.attn
    params = sum(p.numel() for p in model.parameters())
    proc = Qwen2VLImageProcessor(size={"longest_edge": 16777216, "shortest_edge": 65536}, patch_size=16,
                                 temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    img = synthetic_screen(a.image_size)
    tail = [IM_END, NEWLINE, IM_START, ASSISTANT, NEWLINE]

    def prompt(question):
        feats = proc(images=[img], return_tensors="pt")
        n = int(feats["image_grid_thw"][0].prod()) // 4
        ids = [IM_START, USER, NEWLINE, VISION_START] + [151655] * n + [VISION_END] + question + tail
        ids = torch.tensor([ids], device=dev)
        return dict(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=(ids == 151655).int(),
                    pixel_values=feats["pixel_values"].to(dev), image_grid_thw=feats["image_grid_thw"].to(dev))

    question = text_ids(a.text_tokens, 1)
    followup = text_ids(max(a.followup_tokens - len(tail), 0), 2)
    runs = {k: [] for k in ["preprocess_ms", "vision_ms", "prefill_ms", "ttft_ms", "decode_tokens_per_s",
                            "followup_ttft_ms", "decode_static_tokens_per_s"]}
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        for rep in range(a.reps + 1):
            kw, pre_ms = timed(lambda: prompt(question))
            _, vis_ms = timed(lambda: model.model.visual(kw["pixel_values"], grid_thw=kw["image_grid_thw"]))
            model.model.rope_deltas = None
            _, prefill_ms = timed(lambda: model(**kw, logits_to_keep=1))
            gen, gen_ms = timed(lambda: model.generate(**kw, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens,
                                                        do_sample=False, temperature=None, top_p=None, top_k=None))
            decode_s = max(gen_ms - prefill_ms, 1e-6) / 1000
            kw2, pre2 = timed(lambda: prompt(followup))
            model.model.rope_deltas = None
            _, f_ms = timed(lambda: model(**kw2, logits_to_keep=1))
            if rep == 0:
                continue
            runs["preprocess_ms"].append(pre_ms)
            runs["vision_ms"].append(vis_ms)
            runs["prefill_ms"].append(prefill_ms)
            runs["ttft_ms"].append(pre_ms + prefill_ms)
            runs["decode_tokens_per_s"].append((a.new_tokens - 1) / decode_s)
            runs["followup_ttft_ms"].append(pre2 + f_ms)
        if a.static:
            for rep in range(3):
                _, s_ms = timed(lambda: model.generate(**kw, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens,
                                                        do_sample=False, cache_implementation="static",
                                                        temperature=None, top_p=None, top_k=None))
                if rep > 0:
                    runs["decode_static_tokens_per_s"].append((a.new_tokens - 1) / max(s_ms - prefill_ms, 1e-6) * 1000)
    report = {"model": f"transformers random {a.shape}", "params": params, "attn": a.attn,
              "device": torch.cuda.get_device_name(0), "dtype": "bf16",
              "prompt_tokens": int(kw["input_ids"].shape[1]), "new_tokens": a.new_tokens,
              "peak_gpu_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
              "torch": torch.__version__, "transformers": __import__("transformers").__version__}
    report.update({k: stats(v) for k, v in runs.items() if v})
    print(json.dumps(report, indent=1))
    if a.out:
        json.dump(report, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
