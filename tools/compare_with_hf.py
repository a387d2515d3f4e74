#!/usr/bin/env python3
"""Runs one prompt through HF transformers and through our `screenpilot ask --json` and compares:
prompt token ids, the logits of the last prompt position (cosine, max difference, top-1) and the
greedy tokens. Works on any prompt and images, so it checks prompts the fixtures never saw.

CPU, tiny model, f32 (needs `pip install -r tools/requirements-reference.txt`):
    python3 tools/compare_with_hf.py --model tests/fixtures/tiny --binary target/debug/screenpilot \
        --image some.png --prompt "What is on this screen?"
GPU machine, full 2B shape with random weights made there, bf16:
    python3 tools/compare_with_hf.py --make-random 2b --model /tmp/qwen3vl-2b --device cuda --dtype bf16 \
        --binary target/cuda/release/screenpilot --tokenizer tests/fixtures/tokenizer/tokenizer.json \
        --image-size 1024 --new-tokens 32 --out report.json
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

SHAPES = {
    # hidden, intermediate, layers, heads, vision depth, vision hidden, vision intermediate, taps, tied
    "2b": (2048, 6144, 28, 16, 24, 1024, 4096, [5, 11, 17], True),
    "4b": (2560, 9728, 36, 32, 24, 1024, 4096, [5, 11, 17], True),
    "8b": (4096, 12288, 36, 32, 27, 1152, 4304, [8, 16, 24], False),
}


def shape_config(name):
    h, inter, layers, heads, vd, vh, vi, taps, tied = SHAPES[name]
    return Qwen3VLConfig(
        text_config=dict(vocab_size=151936, hidden_size=h, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6,
                         max_position_embeddings=262144, hidden_act="silu", attention_bias=False,
                         tie_word_embeddings=tied,
                         rope_parameters=dict(rope_type="default", rope_theta=5000000.0,
                                              mrope_section=[24, 20, 20], mrope_interleaved=True)),
        vision_config=dict(depth=vd, hidden_size=vh, intermediate_size=vi, num_heads=16, in_channels=3,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=h,
                           num_position_embeddings=2304, deepstack_visual_indexes=taps,
                           hidden_act="gelu_pytorch_tanh"),
        tie_word_embeddings=tied,
    )


def make_random(shape, out_dir, tokenizer, device, seed=0):
    """Random weights with healthy scales (norms near 1, N(0, 1/fan_in) matrices, embeddings N(0, 1)),
    so logits are spread out and greedy decoding is not decided by rounding."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration(shape_config(shape)).to(torch.bfloat16).eval()
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g, device=device))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g, device=device))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g, device=device))
            else:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=g, device=device) / fan_in ** 0.5)
    model.save_pretrained(out_dir)
    shutil.copy(tokenizer, os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "preprocessor_config.json"), "w") as f:
        json.dump({"size": {"longest_edge": 16777216, "shortest_edge": 65536}, "patch_size": 16,
                   "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}, f)
    del model
    torch.cuda.empty_cache() if device == "cuda" else None


def render(system, images_tokens, text):
    s = f"<|im_start|>system\n{system}<|im_end|>\n" if system is not None else ""
    s += "<|im_start|>user\n"
    for n in images_tokens:
        s += "<|vision_start|>" + "<|image_pad|>" * n + "<|vision_end|>"
    return s + f"{text}<|im_end|>\n<|im_start|>assistant\n"


def synthetic_image(size, path):
    y, x = np.mgrid[0:size, 0:size]
    rng = np.random.default_rng(7)
    img = np.stack([127 + 100 * np.sin(x / 9 + c + y / 13) for c in range(3)], -1) + rng.normal(0, 20, (size, size, 3))
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)


def run_ours(args, images):
    logits_path = os.path.join(tempfile.mkdtemp(), "logits.f32")
    cmd = [args.binary, "ask", "--model", args.model, "--device", args.device, "--dtype", args.dtype, "--greedy",
           "--max-tokens", str(args.new_tokens), "--json", "--dump-logits", logits_path]
    for im in images:
        cmd += ["--image", im]
    if args.system is not None:
        cmd += ["--system", args.system]
    cmd.append(args.prompt)
    t = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"screenpilot failed: {out.stderr}")
    res = json.loads(out.stdout)
    res["wall_s"] = time.time() - t
    res["last_logits"] = np.fromfile(logits_path, dtype="<f4")
    return res


def run_hf(args, images):
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[args.dtype]
    model = Qwen3VLForConditionalGeneration.from_pretrained(args.model, dtype=dtype).to(args.device).eval()
    pcfg = json.load(open(os.path.join(args.model, "preprocessor_config.json")))
    proc = Qwen2VLImageProcessor(size=pcfg["size"], patch_size=16, temporal_patch_size=2, merge_size=2,
                                 image_mean=[0.5] * 3, image_std=[0.5] * 3)
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    kwargs, counts = {}, []
    if images:
        feats = proc(images=[Image.open(p) for p in images], return_tensors="pt")
        kwargs = dict(pixel_values=feats["pixel_values"].to(args.device), image_grid_thw=feats["image_grid_thw"].to(args.device))
        counts = [int(g.prod()) // 4 for g in feats["image_grid_thw"]]
    ids = tok.encode(render(args.system, counts, args.prompt), add_special_tokens=False).ids
    input_ids = torch.tensor([ids], device=args.device)
    kwargs.update(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                  mm_token_type_ids=(input_ids == 151655).int())
    with torch.no_grad():
        gen = model.generate(**kwargs, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                             do_sample=False, output_logits=True, return_dict_in_generate=True,
                             temperature=None, top_p=None, top_k=None)
    logits = [l[0].float().cpu().numpy() for l in gen.logits]
    return {"prompt_token_ids": ids, "ids": gen.sequences[0, len(ids):].tolist(), "logits": logits}


def compare(ours, hf):
    a, b = ours["last_logits"].astype(np.float64), hf["logits"][0].astype(np.float64)
    our_ids = [s["id"] for s in ours["steps"]]
    n = min(len(our_ids), len(hf["ids"]))
    agree = next((i for i in range(n) if our_ids[i] != hf["ids"][i]), n)
    rep = {
        "prompt_ids_equal": ours["prompt_token_ids"] == hf["prompt_token_ids"],
        "prompt_tokens": len(hf["prompt_token_ids"]),
        "last_logits_cosine": float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))),
        "last_logits_max_abs_diff": float(np.abs(a - b).max()),
        "last_logits_ref_max_abs": float(np.abs(b).max()),
        "top1_equal": int(a.argmax()) == int(b.argmax()),
        "greedy_tokens_compared": n,
        "greedy_tokens_agreeing_prefix": agree,
        "ours_ids": our_ids, "hf_ids": hf["ids"],
        "ours_timings": ours["timings"],
    }
    if agree < n:
        top2 = np.sort(hf["logits"][agree])[-2:]
        rep["divergence_ref_top2_gap"] = float(top2[1] - top2[0])
    return rep


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--image", action="append", default=[])
    ap.add_argument("--image-size", type=int, help="add a synthetic square image of this size")
    ap.add_argument("--system")
    ap.add_argument("--prompt", default="Describe this screen in detail, then list every button you can see.")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--make-random", choices=sorted(SHAPES))
    ap.add_argument("--tokenizer", help="tokenizer.json to copy into a --make-random folder")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.make_random:
        make_random(args.make_random, args.model, args.tokenizer, args.device)
    images = list(args.image)
    if args.image_size:
        path = os.path.join(tempfile.mkdtemp(), f"synthetic_{args.image_size}.png")
        synthetic_image(args.image_size, path)
        images.append(path)
    ours = run_ours(args, images)
    hf = run_hf(args, images)
    rep = compare(ours, hf)
    rep.update({"device": args.device, "dtype": args.dtype, "images": images, "prompt": args.prompt,
                "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None})
    print(json.dumps(rep, indent=1))
    if args.out:
        json.dump(rep, open(args.out, "w"), indent=1)
    ok = rep["prompt_ids_equal"] and rep["top1_equal"] and rep["last_logits_cosine"] >= 0.999
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
