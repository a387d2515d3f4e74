#!/usr/bin/env python3
"""Writes the seed inputs of the safetensors_config fuzz target into fuzz/corpus/safetensors_config:
small safetensors files (several dtypes, metadata, a truncated one, a huge offset), then
config.json / preprocessor_config.json / generation_config.json, joined by the target's SEP."""
import json
import os
import struct
import sys

SEP = b"\n--8<--\n"
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "fuzz", "corpus", "safetensors_config")
SIZES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "U8": 1, "U32": 4, "I16": 2, "BOOL": 1, "F8_E4M3": 1}


def safetensors(tensors, metadata=None, pad=0, truncate=0, fake_end=None):
    header, data, off = {}, b"", 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        n = SIZES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, fake_end if fake_end is not None else off + n]}
        data += bytes((i * 37 + 11) % 256 for i in range(n))
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8 + pad)
    out = struct.pack("<Q", len(h)) + h + data
    return out[: len(out) - truncate] if truncate else out


def read(p):
    with open(os.path.join(ROOT, p), "rb") as f:
        return f.read()


config = read("tests/fixtures/tiny/config.json")
pre = read("tests/fixtures/tiny/preprocessor_config.json")
gen = read("tests/fixtures/tiny/generation_config.json")
small_cfg = json.dumps(json.loads(config), separators=(",", ":")).encode()

seeds = {
    "f32_with_configs": SEP.join([safetensors([("a.weight", "F32", [2, 3]), ("b.bias", "F32", [3])], {"format": "pt"}), small_cfg, pre, gen]),
    "bf16_f16": safetensors([("x", "BF16", [4, 2]), ("y", "F16", [1, 1, 3])]),
    "ints": safetensors([("i", "I64", [2]), ("j", "I32", [1]), ("k", "U8", [5]), ("l", "U32", [1]), ("m", "I16", [2])]),
    "misc_dtypes": safetensors([("f", "F64", [1]), ("b", "BOOL", [3]), ("e", "F8_E4M3", [2, 2])]),
    "scalar_and_empty": safetensors([("s", "F32", []), ("z", "F32", [0, 4])]),
    "truncated": safetensors([("a", "F32", [16])], truncate=5),
    "huge_offset": safetensors([("a", "F32", [1])], fake_end=2**64 - 1),
    "header_only": struct.pack("<Q", 2) + b"{}",
    "configs_only": SEP.join([b"", config, pre, b'{"eos_token_id": [151645, 151643], "do_sample": true, "temperature": 0.7}']),
    "preprocess_variants": SEP.join([b"", b"{}", b'{"min_pixels": 3136, "max_pixels": 12845056, "size": null, "max_image_tokens": 64}', b'{"eos_token_id": 5}']),
}
os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, "seed_" + name), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds in {OUT}")
