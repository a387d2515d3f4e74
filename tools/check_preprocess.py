#!/usr/bin/env python3
"""Check ScreenPilot's Rust image preprocessing against torch / transformers.

The Rust side is crates/model/src/preprocess/; it must be *bit-exact* with
transformers' Qwen2VLImageProcessor (torchvision backend: uint8 bicubic
antialiased resize on CPU, fused rescale+normalise, patchify).

Needs a Python with torch, torchvision, transformers, PIL and numpy (CPU is
fine; the reference environment is /opt/pyref/bin/python). Run from the repo
root:

  # Sweep: random sizes/ratios (resize only) + whole-pipeline cases (PNG/BMP/
  # GIF/WebP-lossless/JPEG, RGB/RGBA/L/LA/P/16-bit, several configs). Writes the
  # torch outputs to a temp dir, then runs the ignored Rust test
  # `preprocess::tests::sweep_against_torch_outputs` on them, and prints a summary.
  /opt/pyref/bin/python tools/check_preprocess.py sweep --cases 600 --seed 1

  # Regenerate the small committed fixture used by the normal unit tests.
  /opt/pyref/bin/python tools/check_preprocess.py fixtures

Options: --manifest-path (default crates/model/Cargo.toml; point it at another
crate that includes preprocess/ if needed), --keep DIR (keep the case files),
--no-release. Exit status is non-zero if any exact-expected case differs.
JPEG cases are reported separately: PIL (libjpeg-turbo) and the `image` crate
(zune-jpeg) may decode a few pixels differently, which is not a resize bug.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as tvF

REPO = Path(__file__).resolve().parent.parent
FIXTURE_DIR = REPO / "crates/model/tests/data/preprocess"
RUST_TEST = "preprocess::tests::sweep_against_torch_outputs"

QWEN3_VL = {
    "size": {"shortest_edge": 65536, "longest_edge": 16777216},
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}


def torch_resize(arr: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """HWC uint8 -> HWC uint8 exactly as the transformers torchvision backend resizes."""
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)  # like tvF.pil_to_tensor
    out = tvF.resize(t, [out_h, out_w], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return np.ascontiguousarray(out.permute(1, 2, 0).numpy())


def hf_preprocess(path: Path, config: dict) -> tuple[np.ndarray, list[int]]:
    from transformers import Qwen2VLImageProcessor
    from transformers.image_utils import load_image

    kwargs = {k: v for k, v in config.items() if k != "size"}
    proc = Qwen2VLImageProcessor(size=dict(config["size"]), **kwargs)
    out = proc(images=load_image(str(path)), return_tensors="pt")
    pixels = out["pixel_values"].numpy().astype("<f4")
    return pixels, [int(x) for x in out["image_grid_thw"][0].tolist()]


def random_content(rng: np.random.Generator, h: int, w: int, channels: int = 3) -> np.ndarray:
    kind = rng.choice(["noise", "noise", "noise", "smooth", "edges", "flat"])
    if kind == "noise":
        return rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    if kind == "flat":
        return np.broadcast_to(rng.integers(0, 256, (1, 1, channels), dtype=np.uint8), (h, w, channels)).copy()
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == "smooth":
        base = (xx * rng.uniform(0.1, 3) + yy * rng.uniform(0.1, 3))[..., None] + np.arange(channels) * 40
        return (base % 256).astype(np.uint8)
    # hard 0/255 edges (text-like): maximises overshoot and clamping
    cell = int(rng.integers(1, 5))
    board = (((xx // cell) + (yy // cell)) % 2 * 255).astype(np.uint8)
    return np.repeat(board[..., None], channels, axis=2)


def resize_sizes(rng: random.Random, count: int, max_side: int) -> list[tuple[int, int, int, int]]:
    """(in_w, in_h, out_w, out_h): up/down per axis, one axis only, odd ratios, extremes."""

    def side(lo: int = 1, hi: int = max_side) -> int:
        # log-uniform so that small and large sizes are both common
        return max(lo, min(hi, int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))))

    fixed = [(1, 1, 7, 5), (7, 5, 1, 1), (3000, 2, 41, 2), (2, 3000, 2, 17), (1, 3000, 1, 1),
             (2999, 1, 3000, 1), (13, 3000, 7, 2999), (1440, 1080, 1440, 1088), (2560, 1600, 2560, 1600 - 32),
             (1919, 1079, 1920, 1088), (656, 208, 640, 192), (3000, 3000, 32, 32), (17, 19, 2999, 31)]
    cases = list(fixed)
    modes = ["both", "both", "w_only", "h_only", "up_down", "down_up", "near", "prime"]
    while len(cases) < count:
        mode = rng.choice(modes)
        in_w, in_h = side(), side()
        if mode == "near":  # ratios close to 1, where precision/bounds are delicate
            out_w = max(1, in_w + rng.randint(-40, 40))
            out_h = max(1, in_h + rng.randint(-40, 40))
        elif mode == "prime":
            primes = [p for p in range(2, 800) if all(p % d for d in range(2, int(p**0.5) + 1))]
            in_w, in_h, out_w, out_h = (rng.choice(primes) for _ in range(4))
        else:
            out_w, out_h = side(), side()
            if mode == "w_only":
                out_h = in_h
            elif mode == "h_only":
                out_w = in_w
            elif mode == "up_down":
                out_w, out_h = max(out_w, in_w + 1), min(out_h, max(1, in_h - 1))
            elif mode == "down_up":
                out_w, out_h = min(out_w, max(1, in_w - 1)), max(out_h, in_h + 1)
        if in_w * in_h + out_w * out_h > 6_000_000:  # keep the temp dir small
            continue
        cases.append((in_w, in_h, min(out_w, max_side), min(out_h, max_side)))
    return cases[:count]


def write_resize_cases(out_dir: Path, sizes, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    cases = []
    for i, (in_w, in_h, out_w, out_h) in enumerate(sizes):
        src = random_content(rng, in_h, in_w)
        expected = torch_resize(src, out_w, out_h)
        (out_dir / f"r{i}.in").write_bytes(src.tobytes())
        (out_dir / f"r{i}.out").write_bytes(expected.tobytes())
        cases.append({"id": f"resize {in_w}x{in_h}->{out_w}x{out_h}", "kind": "resize", "in_w": in_w,
                      "in_h": in_h, "out_w": out_w, "out_h": out_h, "input": f"r{i}.in", "expected": f"r{i}.out"})
    return cases


def save_mode_image(rng: np.random.Generator, path: Path, w: int, h: int, mode: str, fmt: str) -> None:
    if mode == "I;16":
        arr = rng.integers(0, 65536, (h, w), dtype=np.uint16)
        arr[: h // 2] //= 200  # also values below 256, which PIL keeps
        Image.fromarray(arr).save(path, fmt)
        return
    if mode == "RGB16":
        write_png16(path, random_content(rng, h, w).astype(np.uint16) * 257 + rng.integers(0, 257, (h, w, 3)))
        return
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2, "P": 3, "PT": 3}[mode]
    arr = random_content(rng, h, w, channels)
    img = Image.fromarray(arr[..., 0] if channels == 1 else arr)
    if mode in ("P", "PT"):
        img = img.quantize(colors=int(rng.integers(2, 256)))
    if mode == "PT":  # palette with a transparent index (PNG tRNS / GIF transparency)
        img.save(path, fmt, transparency=int(np.asarray(img)[0, 0]))
        return
    kwargs = {"quality": 90} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
    if fmt == "ORIENTED":  # PNG with an EXIF orientation tag (rotate 90 CW)
        exif = Image.Exif()
        exif[0x0112] = 6
        img.save(path, "PNG", exif=exif)
        return
    img.save(path, fmt, **kwargs)


def write_png16(path: Path, arr: np.ndarray) -> None:
    import struct
    import zlib

    h, w, _ = arr.shape

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in arr)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
    path.write_bytes(png + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def e2e_configs() -> list[dict]:
    small = dict(QWEN3_VL, size={"shortest_edge": 1024, "longest_edge": 200 * 200})
    clip = dict(QWEN3_VL, image_mean=[0.48145466, 0.4578275, 0.40821073],
                image_std=[0.26862954, 0.26130258, 0.27577711])
    qwen2 = dict(clip, patch_size=14, size={"shortest_edge": 3136, "longest_edge": 12845056})
    return [QWEN3_VL, small, clip, qwen2]


def write_e2e_cases(out_dir: Path, count: int, seed: int, max_side: int) -> list[dict]:
    rng = np.random.default_rng(seed + 1)
    formats = [("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "L"), ("PNG", "LA"), ("PNG", "P"), ("PNG", "I;16"),
               ("PNG", "RGB16"), ("BMP", "RGB"), ("GIF", "P"), ("WEBP", "RGBA"), ("ORIENTED", "RGB"),
               ("PNG", "PT"), ("GIF", "PT"), ("JPEG", "RGB"), ("JPEG", "L")]
    configs = e2e_configs()
    cases = []
    for i in range(count):
        fmt, mode = formats[i % len(formats)]
        config = configs[(i // len(formats)) % len(configs)]
        w = int(np.exp(rng.uniform(np.log(8), np.log(min(max_side, 1400)))))
        h = int(np.clip(w * np.exp(rng.uniform(-2, 2)), 4, 1400))
        ext = {"ORIENTED": "png", "JPEG": "jpg"}.get(fmt, fmt.lower())
        path = out_dir / f"e{i}.{ext}"
        save_mode_image(rng, path, w, h, mode, fmt)
        pixels, grid = hf_preprocess(path, config)
        (out_dir / f"e{i}.f32").write_bytes(pixels.tobytes())
        cases.append({"id": f"e2e {fmt}/{mode} {w}x{h} cfg{configs.index(config)}", "kind": "e2e",
                      "image": path.name, "config": config, "grid": grid, "expected": f"e{i}.f32",
                      "exact": fmt != "JPEG"})
    return cases


def run_rust(case_dir: Path, manifest_path: Path, release: bool) -> dict:
    cmd = ["cargo", "test", "--manifest-path", str(manifest_path), "--lib"]
    cmd += ["--release"] if release else []
    cmd += [RUST_TEST, "--", "--ignored", "--exact", "--nocapture"]
    env = dict(os.environ, SCREENPILOT_PREPROCESS_SWEEP=str(case_dir))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    report = case_dir / "report.json"
    if not report.exists():
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit("the Rust sweep test did not produce report.json (build error?)")
    return json.loads(report.read_text())


def sweep(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    sizes = resize_sizes(rng, args.cases, args.max_side)
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="preprocess_sweep_"))
    tmp.mkdir(parents=True, exist_ok=True)
    totals = {"resize": 0, "resize_bad": 0, "e2e": 0, "e2e_bad": 0, "jpeg": 0, "jpeg_bad": 0}
    bad_ids = []
    try:
        batches = [sizes[i:i + args.batch] for i in range(0, len(sizes), args.batch)]
        for b, batch in enumerate(batches + [[]]):
            for f in tmp.iterdir():
                f.unlink()
            cases = write_resize_cases(tmp, batch, args.seed * 1000 + b)
            if not batch:  # last round: whole-pipeline cases
                cases = write_e2e_cases(tmp, args.e2e, args.seed, args.max_side)
            (tmp / "manifest.json").write_text(json.dumps({"cases": cases}))
            report = run_rust(tmp, Path(args.manifest_path), not args.no_release)
            for case, res in zip(cases, report["cases"]):
                bad = bool(res.get("error")) or res.get("mismatch", 1) > 0
                if case["kind"] == "resize":
                    totals["resize"] += 1
                    totals["resize_bad"] += bad
                elif case["exact"]:
                    totals["e2e"] += 1
                    totals["e2e_bad"] += bad
                else:
                    totals["jpeg"] += 1
                    totals["jpeg_bad"] += bad
                if bad:
                    bad_ids.append(f"{case['id']}: {res}")
            print(f"batch {b + 1}/{len(batches) + 1}: {len(cases)} cases, running totals {totals}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    for line in bad_ids[:40]:
        print("MISMATCH", line)
    print(f"resize: {totals['resize']} size pairs, {totals['resize_bad']} mismatching")
    print(f"whole pipeline (exact formats): {totals['e2e']} cases, {totals['e2e_bad']} mismatching")
    print(f"whole pipeline (JPEG, decoder-dependent): {totals['jpeg']} cases, {totals['jpeg_bad']} differing")
    return 1 if totals["resize_bad"] or totals["e2e_bad"] else 0


def fixtures(_args: argparse.Namespace) -> int:
    """Small committed goldens: random PNG inputs, torch-resized PNG outputs, one full e2e case."""
    FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
    for f in FIXTURE_DIR.iterdir():
        f.unlink()
    rng = np.random.default_rng(20240601)
    sizes = {  # name: (in_w, in_h, out_w, out_h)
        "up_both": (13, 7, 40, 23), "down_both": (97, 61, 32, 19), "down_w_up_h": (120, 9, 33, 30),
        "up_w_down_h": (11, 150, 64, 37), "w_only": (50, 20, 17, 20), "h_only": (30, 40, 30, 96),
        "heavy_down_w": (160, 8, 7, 8), "heavy_down_h": (9, 200, 9, 5), "one_px_to_many": (1, 1, 5, 3),
        "near_one": (64, 48, 63, 50), "edges_down": (90, 70, 37, 29), "edges_up": (20, 15, 47, 33),
    }
    for name, (in_w, in_h, out_w, out_h) in sizes.items():
        src = rng.integers(0, 256, (in_h, in_w, 3), dtype=np.uint8)
        if name.startswith("edges"):  # hard 0/255 edges: bicubic overshoot is clamped
            yy, xx = np.mgrid[0:in_h, 0:in_w]
            src = np.repeat(((((xx // 2) + (yy // 3)) % 2) * 255).astype(np.uint8)[..., None], 3, axis=2)
        Image.fromarray(src).save(FIXTURE_DIR / f"{name}_in.png", optimize=True)
        Image.fromarray(torch_resize(src, out_w, out_h)).save(FIXTURE_DIR / f"{name}_out.png", optimize=True)
    config = dict(QWEN3_VL, size={"shortest_edge": 1024, "longest_edge": 4096})
    arr = rng.integers(0, 256, (45, 70, 4), dtype=np.uint8)
    Image.fromarray(arr).save(FIXTURE_DIR / "e2e_image.png")
    pixels, grid = hf_preprocess(FIXTURE_DIR / "e2e_image.png", config)
    (FIXTURE_DIR / "e2e_pixels.f32").write_bytes(pixels.tobytes())
    (FIXTURE_DIR / "e2e.json").write_text(json.dumps({"config": config, "grid": grid}, indent=1) + "\n")
    total = sum(f.stat().st_size for f in FIXTURE_DIR.iterdir())
    print(f"wrote {len(list(FIXTURE_DIR.iterdir()))} files, {total / 1024:.0f} KiB, to {FIXTURE_DIR}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sweep", help="compare random cases against the Rust implementation")
    s.add_argument("--cases", type=int, default=600, help="number of resize size pairs")
    s.add_argument("--e2e", type=int, default=120, help="number of whole-pipeline cases")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--max-side", type=int, default=3000)
    s.add_argument("--batch", type=int, default=100, help="resize cases per Rust run")
    s.add_argument("--manifest-path", default=str(REPO / "crates/model/Cargo.toml"))
    s.add_argument("--keep", help="directory to keep the case files in (emptied per batch)")
    s.add_argument("--no-release", action="store_true", help="run the Rust test in debug mode")
    sub.add_parser("fixtures", help="regenerate crates/model/tests/data/preprocess")
    args = parser.parse_args()
    torch.set_num_threads(1)
    return sweep(args) if args.command == "sweep" else fixtures(args)


if __name__ == "__main__":
    sys.exit(main())
