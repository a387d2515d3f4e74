#!/usr/bin/env python3
"""The GUI-task steps of `screenpilot bench-task` in HF transformers, on the same GPU: random
weights at a named shape, bf16; step k's prompt holds a system turn of --system-tokens tokens
(the size of ours with the computer_use tool, printed by `bench-task` as step 1's prompt minus
its image tokens), the task, k synthetic screenshots (the first in the user turn, each later one
in a tool result after the previous answer) and k-1 answers of --answer-tokens tokens.
transformers keeps no cache between requests: every step runs the vision tower on all k
screenshots and prefills the whole conversation, as an agent built on it does. Reports time to
first token per step (preprocessing + the forward pass that yields the first token).
    python3 bench/hf_task_steps.py --shape 2b --steps 6 --screen 1920x1080 --out hf_task.json
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

IM_START, IM_END, VISION_START, VISION_END, NEWLINE = 151644, 151645, 151652, 151653, 198
SYSTEM, USER, ASSISTANT, IMAGE_PAD = 8948, 872, 77091, 151655
TOOL_RESPONSE, TOOL_RESPONSE_END = 151665, 151666


def text_ids(n, salt):
    return [1000 + (i * 7919 + salt * 104729) % 140000 for i in range(n)]


def screen(w, h, salt):
    y, x = np.mgrid[0:h, 0:w].astype(np.uint32)
    img = np.stack([(x * 7 + y + salt * 31) % 256, (y * 3 + salt * 17) % 256, ((x ^ y) * 5 + salt) % 256], -1)
    return Image.fromarray(img.astype(np.uint8))


def stats(xs):
    v = sorted(xs)
    return {"median": v[len(v) // 2], "min": v[0], "max": v[-1], "n": len(v)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="2b")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--screen", default="1920x1080")
    ap.add_argument("--system-tokens", type=int, default=900)
    ap.add_argument("--match-prompt", type=int, help="size the system turn so that step 1's prompt has this many tokens")
    ap.add_argument("--answer-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--out")
    a = ap.parse_args()
    w, h = (int(v) for v in a.screen.split("x"))
    dev = "cuda"
    with torch.device(dev):
        model = Qwen3VLForConditionalGeneration(shape_config(a.shape)).to(torch.bfloat16).eval()
    for c in (model.config, model.model.visual.config, model.model.language_model.config):
        c._attn_implementation = a.attn
    proc = Qwen2VLImageProcessor(size={"longest_edge": 16777216, "shortest_edge": 65536}, patch_size=16,
                                 temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)

    def conversation(shots, answers, task_salt):
        ids = [IM_START, SYSTEM, NEWLINE] + text_ids(a.system_tokens, 3) + [IM_END, NEWLINE]
        feats = proc(images=shots, return_tensors="pt")
        grids = feats["image_grid_thw"]
        for k in range(len(shots)):
            n = int(grids[k].prod()) // 4
            vision = [VISION_START] + [IMAGE_PAD] * n + [VISION_END]
            if k == 0:
                ids += [IM_START, USER, NEWLINE] + text_ids(12, task_salt) + vision + [IM_END, NEWLINE]
            else:
                ids += [IM_START, ASSISTANT, NEWLINE] + answers[k - 1] + [IM_END, NEWLINE]
                ids += [IM_START, USER, NEWLINE, TOOL_RESPONSE, NEWLINE] + vision + [NEWLINE, TOOL_RESPONSE_END, IM_END, NEWLINE]
        ids += [IM_START, ASSISTANT, NEWLINE]
        t = torch.tensor([ids], device=dev)
        return dict(input_ids=t, attention_mask=torch.ones_like(t), mm_token_type_ids=(t == IMAGE_PAD).int(),
                    pixel_values=feats["pixel_values"].to(dev), image_grid_thw=grids.to(dev))

    if a.match_prompt:
        base = conversation([screen(w, h, 0)], [], 0)["input_ids"].shape[1] - a.system_tokens
        a.system_tokens = max(a.match_prompt - int(base), 0)
    runs = [{"ttft_ms": [], "preprocess_ms": [], "forward_ms": []} for _ in range(a.steps)]
    prompt_tokens = [0] * a.steps
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        for rep in range(a.reps + 1):
            shots = [screen(w, h, rep * a.steps + k + 1) for k in range(a.steps)]
            answers = [text_ids(a.answer_tokens, 100 + rep * a.steps + k) for k in range(a.steps)]
            for k in range(a.steps):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                kw = conversation(shots[: k + 1], answers, 50 + rep)
                torch.cuda.synchronize()
                t1 = time.perf_counter()
                model.model.rope_deltas = None
                model(**kw, logits_to_keep=1)
                torch.cuda.synchronize()
                t2 = time.perf_counter()
                prompt_tokens[k] = int(kw["input_ids"].shape[1])
                if rep > 0:
                    runs[k]["preprocess_ms"].append((t1 - t0) * 1000)
                    runs[k]["forward_ms"].append((t2 - t1) * 1000)
                    runs[k]["ttft_ms"].append((t2 - t0) * 1000)
    report = {"model": f"transformers random {a.shape}", "device": torch.cuda.get_device_name(0), "attn": a.attn,
              "screen": [w, h], "answer_tokens": a.answer_tokens, "system_tokens": a.system_tokens,
              "reps": a.reps, "peak_gpu_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
              "torch": torch.__version__, "transformers": __import__("transformers").__version__,
              "steps": [dict(step=k + 1, images=k + 1, prompt_tokens=prompt_tokens[k],
                             **{m: stats(v) for m, v in runs[k].items()}) for k in range(a.steps)]}
    print(json.dumps(report, indent=1))
    if a.out:
        json.dump(report, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
