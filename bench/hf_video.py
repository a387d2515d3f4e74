#!/usr/bin/env python3
"""The rewind workload of `screenpilot bench --rewind` in HF transformers, on the same GPU.

A rewind of SECONDS of a synthetic WxH screen at FPS frames a second (every frame differs; the
same pixels as the binary's synthetic_rewind), sent as a video with Qwen3-VL's published video
settings (4096..=25165824 pixels over all frames, 2 fps sampling) through transformers' own
Qwen3VLProcessor, then `--text-tokens` question tokens; time to first token = the processor
(sampling, resizing, tokenizing the timestamps) + the prefill with vision. transformers keeps
nothing between requests, so a second question about the same clip costs the same again:
it is measured too (a new question, the same clip).

    python3 bench/hf_video.py --seconds 30 --fps 2 --screen 1920x1080 --out hf_video.json
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor
from transformers.video_utils import VideoMetadata

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
sys.path.insert(0, os.path.dirname(__file__))
from compare_with_hf import shape_config  # noqa: E402
from hf_reference import stats, text_ids  # noqa: E402

IM_START, IM_END, NEWLINE, USER, ASSISTANT = 151644, 151645, 198, 872, 77091


def synthetic_rewind(w, h, n):
    """Frame k: the binary's pattern shifted 3k pixels to the left (wrapping like its u8 math)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.uint32)
    frames = []
    for k in range(n):
        xs = x + 3 * k
        frames.append(np.stack([(xs * 7 + y) % 256, (y * 3 + k) % 256, ((xs ^ y) * 5) % 256], -1).astype(np.uint8))
    return np.stack(frames)


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn):
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return out, (time.perf_counter() - t) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="2b")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--fps", type=float, default=2)
    ap.add_argument("--screen", default="1920x1080")
    ap.add_argument("--text-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tokenizer", default="tests/fixtures/tokenizer/tokenizer.json")
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out")
    a = ap.parse_args()
    w, h = (int(v) for v in a.screen.lower().split("x"))
    n = round(a.seconds * a.fps)
    dev = a.device
    with torch.device(dev):
        model = Qwen3VLForConditionalGeneration(shape_config(a.shape)).to(torch.bfloat16).eval()
    for c in (model.config, model.model.visual.config, model.model.language_model.config):
        c._attn_implementation = a.attn
    tok = PreTrainedTokenizerFast(tokenizer_file=a.tokenizer)
    vproc = Qwen3VLVideoProcessor(size={"shortest_edge": 4096, "longest_edge": 25165824}, patch_size=16,
                                  temporal_patch_size=2, merge_size=2, fps=2, min_frames=4, max_frames=768,
                                  image_mean=[0.5] * 3, image_std=[0.5] * 3, cap_pixels_per_frame=False)
    iproc = Qwen2VLImageProcessor(patch_size=16, temporal_patch_size=2, merge_size=2)
    proc = Qwen3VLProcessor(image_processor=iproc, tokenizer=tok, video_processor=vproc)
    clip = synthetic_rewind(w, h, n)
    tail = [IM_END, NEWLINE, IM_START, ASSISTANT, NEWLINE]

    def prompt(question):
        meta = VideoMetadata(total_num_frames=n, fps=a.fps, width=w, height=h, duration=n / a.fps)
        feats = proc(text=["<|im_start|>user\n<|video_pad|>"], videos=[clip], video_metadata=[meta],
                     videos_kwargs=dict(do_sample_frames=True, fps=2), return_tensors="pt")
        ids = torch.cat([feats["input_ids"][0], torch.tensor(question + tail)]).unsqueeze(0).to(dev)
        mm = torch.cat([feats["mm_token_type_ids"][0], torch.zeros(len(question) + len(tail), dtype=torch.int32)])
        return dict(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=mm.unsqueeze(0).to(dev),
                    pixel_values_videos=feats["pixel_values_videos"].to(dev),
                    video_grid_thw=feats["video_grid_thw"].to(dev))

    runs = {k: [] for k in ["preprocess_ms", "vision_ms", "prefill_ms", "ttft_ms", "followup_ttft_ms"]}
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        for rep in range(a.reps + 1):
            kw, pre_ms = timed(lambda: prompt(text_ids(a.text_tokens, 1)))
            _, vis_ms = timed(lambda: model.model.visual(kw["pixel_values_videos"], grid_thw=kw["video_grid_thw"]))
            model.model.rope_deltas = None
            _, prefill_ms = timed(lambda: model(**kw, logits_to_keep=1))
            kw2, pre2 = timed(lambda: prompt(text_ids(a.text_tokens, 2)))
            model.model.rope_deltas = None
            _, f_ms = timed(lambda: model(**kw2, logits_to_keep=1))
            if rep == 0:
                continue
            for k, v in (("preprocess_ms", pre_ms), ("vision_ms", vis_ms), ("prefill_ms", prefill_ms),
                         ("ttft_ms", pre_ms + prefill_ms), ("followup_ttft_ms", pre2 + f_ms)):
                runs[k].append(v)
    grid = kw["video_grid_thw"][0].tolist()
    report = {"model": f"transformers random {a.shape}", "attn": a.attn, "device": torch.cuda.get_device_name(0) if dev == "cuda" else dev,
              "dtype": "bf16", "rewind": {"screen": [w, h], "seconds": a.seconds, "fps": a.fps, "frames": n,
                                          "grid": grid},
              "visual_tokens": grid[0] * grid[1] * grid[2] // 4, "prompt_tokens": int(kw["input_ids"].shape[1]),
              "peak_gpu_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else None,
              "torch": torch.__version__, "transformers": __import__("transformers").__version__}
    report.update({k: stats(v) for k, v in runs.items() if v})
    print(json.dumps(report, indent=1))
    if a.out:
        json.dump(report, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
