#!/usr/bin/env python3
"""Renders conversations through a Qwen3-VL *Thinking* chat template with transformers, and
writes the prompt token ids our renderer must reproduce.

Run with the pinned reference stack (see tools/requirements-reference.txt):
    python3 tools/make_thinking_fixture.py --tokenizer tests/fixtures/tokenizer/tokenizer.json

Reads tests/fixtures/thinking/chat_template.jinja (the Thinking models' chat template, as their
folders ship it in chat_template.json) and the tiny model's preprocessor_config.json; writes
tests/fixtures/thinking/cases.json: for each case the messages (in OpenAI's form, images named by
their file under tests/fixtures/images/), the tools, whether a generation prompt was added, the
rendered text and the token ids of transformers' Qwen3VLProcessor (images expanded to their
number of <|image_pad|> tokens). crates/model/tests/thinking_template.rs checks our ids against
them, and tests the tiny model loaded from a folder carrying this template.
"""
import argparse
import json
import os
import shutil
import tempfile

from PIL import Image
import transformers
from transformers import AutoProcessor

PINNED = "5.17.0"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "fixtures", "thinking")
IMAGES = os.path.join(ROOT, "tests", "fixtures", "images")

CLICK_TOOL = {
    "type": "function",
    "function": {
        "name": "computer_use",
        "description": "Use a mouse and keyboard.",
        "parameters": {
            "type": "object",
            "properties": {"action": {"type": "string"}, "coordinate": {"type": "array"}},
            "required": ["action"],
        },
    },
}


def cases():
    """Conversations that exercise what the Thinking template does differently from Instruct's:
    the `<think>` generation prompt, earlier answers whose reasoning is dropped, reasoning kept
    after the last user query (a tool-calling turn), and tools."""
    img = {"type": "image", "image": "a_120x90.png"}
    return [
        {
            "name": "single_turn_image",
            "messages": [{"role": "user", "content": [img, {"type": "text", "text": "What is on this screen?"}]}],
            "tools": [],
            "add_generation_prompt": True,
        },
        {
            "name": "multi_turn_earlier_reasoning_dropped",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [img, {"type": "text", "text": "Where is OK?"}]},
                {"role": "assistant", "content": "<think>\nThe button is at the bottom.\n</think>\n\nBottom right."},
                {"role": "user", "content": "And Cancel?"},
            ],
            "tools": [],
            "add_generation_prompt": True,
        },
        {
            "name": "tools_reasoning_after_last_query_kept",
            "messages": [
                {"role": "user", "content": [img, {"type": "text", "text": "Click OK."}]},
                {
                    "role": "assistant",
                    "content": "I should click it.\n</think>\n\n<tool_call>\n{\"name\": \"computer_use\", "
                    "\"arguments\": {\"action\": \"left_click\", \"coordinate\": [500, 800]}}\n</tool_call>",
                },
                {"role": "tool", "content": [{"type": "text", "text": "clicked"}, {"type": "image", "image": "small_50x40.png"}]},
                {"role": "assistant", "content": "No reasoning here, only an answer."},
                {"role": "tool", "content": "second"},
            ],
            "tools": [CLICK_TOOL],
            "add_generation_prompt": True,
        },
        {
            "name": "last_assistant_turn_gets_an_empty_think_block",
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
            ],
            "tools": [],
            "add_generation_prompt": False,
        },
    ]


def with_images(messages):
    """The messages as the processor takes them: image items carry the opened image."""
    out = []
    for m in messages:
        if isinstance(m["content"], str):
            out.append(m)
            continue
        content = []
        for item in m["content"]:
            if item["type"] == "image":
                content.append({"type": "image", "image": Image.open(os.path.join(IMAGES, item["image"])).convert("RGB")})
            else:
                content.append(item)
        out.append({"role": m["role"], "content": content})
    return out


def processor(tokenizer_json, template):
    """Qwen3VLProcessor over a folder holding the tokenizer, the tiny model's preprocessing and
    the Thinking chat template (as chat_template.json, the form the model folders use)."""
    d = tempfile.mkdtemp()
    shutil.copy(tokenizer_json, os.path.join(d, "tokenizer.json"))
    for f in ("config.json", "preprocessor_config.json"):
        shutil.copy(os.path.join(ROOT, "tests", "fixtures", "tiny", f), d)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "Qwen2Tokenizer", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                   "processor_class": "Qwen3VLProcessor"}, f)
    with open(os.path.join(d, "chat_template.json"), "w") as f:
        json.dump({"chat_template": template}, f)
    return AutoProcessor.from_pretrained(d)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "tests", "fixtures", "tokenizer", "tokenizer.json"))
    args = ap.parse_args()
    if transformers.__version__ != PINNED:
        raise SystemExit(f"transformers {transformers.__version__}; the fixtures are made with {PINNED}")
    with open(os.path.join(OUT, "chat_template.jinja")) as f:
        template = f.read()
    proc = processor(args.tokenizer, template)
    out = []
    for case in cases():
        kwargs = dict(tools=case["tools"] or None, add_generation_prompt=case["add_generation_prompt"])
        text = proc.apply_chat_template(case["messages"], tokenize=False, **kwargs)
        enc = proc.apply_chat_template(with_images(case["messages"]), tokenize=True, return_dict=True, **kwargs)
        ids = [int(i) for i in enc["input_ids"][0]]
        grids = [[int(v) for v in g] for g in enc.get("image_grid_thw", [])]
        out.append({**case, "text": text, "image_grid_thw": grids, "ids": ids})
        print(f"{case['name']}: {len(ids)} ids, grids {grids}")
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "cases": out}, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
