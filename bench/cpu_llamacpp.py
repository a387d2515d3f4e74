#!/usr/bin/env python3
"""ScreenPilot against llama.cpp on the CPU, side by side in one run, on the same model, quant types,
screenshots and question (BENCHMARKS.md, "CPU: side by side with llama.cpp").

Ours: `screenpilot bench --model DIR --device cpu --quant Q` (the folder's safetensors, quantized at
load). llama.cpp: `llama-mtmd-cli` on GGUF files made from the same folder by llama.cpp's own
`convert_hf_to_gguf.py` (text in f32, vision `--mmproj` in f16) and `llama-quantize --pure` (every
tensor in the quant type: the same type ours uses for every projection). Both decode greedily on the
same synthetic screenshot (the pattern of `screenpilot bench`) with a short question.

Measured per side: time to first token (ours: preprocessing + vision + prefill; llama.cpp: image
`prompt eval time` of its perf log, which holds the image's encoding, logged on its own), decode tokens/s, peak RSS (/usr/bin/time). llama.cpp's
numbers are from its second run (the first warms the page cache for its mmap); ours from the second of
bench's runs (one warm-up, one measured).

Usage: bench/cpu_llamacpp.py --model DIR --llama-bin DIR --gguf-dir DIR [--quants q8_0,q4_k]
       [--sizes 512,1024] [--threads 2] [--out results.json]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

from PIL import Image

QUESTION = "Describe this screen in detail, then list every button you can see."
LLAMA_TYPES = {"q8_0": "Q8_0", "q4_k": "Q4_K", "q6_k": "Q6_K", "q5_k": "Q5_K", "q4_0": "Q4_0"}


def synthetic_screen(side, path):
    """The pattern `screenpilot bench` draws (crates/cli/src/bench.rs, synthetic_screen)."""
    img = Image.new("RGB", (side, side))
    px = img.load()
    for y in range(side):
        for x in range(side):
            px[x, y] = ((x * 7 + y) & 255, (y * 3) & 255, ((x ^ y) * 5) & 255)
    img.save(path)


def timed(cmd, env=None):
    """Runs `cmd` under /usr/bin/time -v: (stdout, stderr, peak RSS in GiB)."""
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    return p.stdout, p.stderr, int(rss.group(1)) / (1 << 20) if rss else None


def llama_gguf(args, quant):
    """The text GGUF in `quant`, made by llama-quantize --pure from the f32 one."""
    src = os.path.join(args.gguf_dir, "2b-f32.gguf")
    out = os.path.join(args.gguf_dir, f"2b-{quant}-pure.gguf")
    if not os.path.exists(out):
        subprocess.run([os.path.join(args.llama_bin, "llama-quantize"), "--pure", src, out, LLAMA_TYPES[quant]],
                       check=True, capture_output=True)
    return out


def run_llama(args, quant, image):
    cmd = [os.path.join(args.llama_bin, "llama-mtmd-cli"), "-m", llama_gguf(args, quant),
           "--mmproj", os.path.join(args.gguf_dir, "2b-mmproj-f16.gguf"), "--image", image, "-p", QUESTION,
           "-n", str(args.new_tokens), "--temp", "0", "--ignore-eos", "--chat-template", "chatml", "-t", str(args.threads), "-c", "8192", "--perf", "-lv", "4"]
    for _ in range(2):
        out, err, rss = timed(cmd)
    enc = sum(float(m) for m in re.findall(r"mtmd batch encoding done in (\d+) ms", err))
    prompt = re.search(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens", err)
    ev = re.search(r"\beval time =\s*([\d.]+) ms /\s*(\d+) runs", err)
    if not (prompt and ev):
        sys.exit(f"cannot read llama.cpp's timings:\n{err[-3000:]}")
    decode = (int(ev.group(2))) / (float(ev.group(1)) / 1000)
    # Its prompt eval time runs from the first prompt batch to the first token: the image's
    # encoding (logged on its own) is inside it.
    ttft = float(prompt.group(1))
    return {"ttft_ms": ttft, "vision_ms": enc, "prefill_ms": ttft - enc,
            "prompt_tokens": int(prompt.group(2)), "decode_tokens_per_s": decode, "peak_rss_gib": rss}


def run_ours(args, quant, side):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [args.screenpilot, "--threads", str(args.threads), "bench",
               "--model", args.model, "--device", "cpu", "--image-size", str(side), "--text-tokens", "16",
               "--new-tokens", str(args.new_tokens), "--followup-tokens", "8", "--reps", "1", "--json-out", f.name]
        if quant != "none":
            cmd += ["--quant", quant]
        _, _, rss = timed(cmd)
        r = json.load(open(f.name))
    med = lambda k: r[k]["median"] if isinstance(r[k], dict) else r[k]
    return {"ttft_ms": med("ttft_ms"), "vision_ms": med("vision_ms"), "prefill_ms": med("prefill_ms"),
            "prompt_tokens": r["prompt_tokens"], "decode_tokens_per_s": med("decode_tokens_per_s"), "peak_rss_gib": rss}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--llama-bin", required=True)
    ap.add_argument("--gguf-dir", required=True)
    ap.add_argument("--screenpilot", default="target/release/screenpilot")
    ap.add_argument("--quants", default="q8_0,q4_k")
    ap.add_argument("--sizes", default="512,1024")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for side in [int(s) for s in args.sizes.split(",")]:
            image = os.path.join(tmp, f"screen_{side}.png")
            synthetic_screen(side, image)
            for quant in args.quants.split(","):
                for who, fn in (("llama.cpp", lambda: run_llama(args, quant, image)), ("screenpilot", lambda: run_ours(args, quant, side))):
                    r = {"who": who, "quant": quant, "image": side, **fn()}
                    print(json.dumps(r), flush=True)
                    rows.append(r)
    print("\n| image | quant | who | prompt tokens | vision ms | prefill ms | TTFT ms | decode tok/s | peak RSS GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['image']} | {r['quant']} | {r['who']} | {r['prompt_tokens']} | {r['vision_ms']:.0f} | "
              f"{r['prefill_ms']:.0f} | {r['ttft_ms']:.0f} | {r['decode_tokens_per_s']:.2f} | {r['peak_rss_gib']:.2f} |")
    if args.out:
        json.dump(rows, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
