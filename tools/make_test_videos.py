#!/usr/bin/env python3
"""Tiny video files for the tests of decoding video files (crates/engine/tests/video_file.rs).

Run with PyAV (any recent version; the reference venv has it):
    python3 tools/make_test_videos.py [--out tests/fixtures/video_files]

Every clip is 64x48. The top half of frame i is grey at brightness `level(i)`, so a decoded frame
says which frame it is (lossy codecs move it by a few levels at most); the bottom half is a fixed
red, so a swapped channel order shows. Writes:
  h264.mp4      15 frames at 5 fps, H.264 (yuv420p, B-frames on), the frame count in the header
  vp9.webm      11 frames at 4 fps, VP9 (WebM headers carry no frame count)
  vp8.mkv        9 frames at 3 fps, VP8 in Matroska
  audio.m4a     one second of a sine tone, AAC: a container without a video stream
"""
import argparse
import math
import os

import av
import numpy as np

WIDTH, HEIGHT = 64, 48
RED = (200, 40, 40)


def level(i):
    """The brightness of frame i's top half (kept in sync with the Rust test)."""
    return 20 + 14 * i


def frame(i):
    rgb = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    rgb[: HEIGHT // 2] = level(i)
    rgb[HEIGHT // 2 :] = RED
    return rgb


def write_video(path, codec, frames, fps, options):
    with av.open(path, "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = options
        stream.thread_count = 1  # deterministic output
        for i in range(frames):
            vf = av.VideoFrame.from_ndarray(frame(i), format="rgb24")
            vf.pts = i
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def write_audio(path):
    rate = 16000
    with av.open(path, "w") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        t = np.arange(rate, dtype=np.float32) / rate
        samples = (0.2 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)
        af = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="fltp", layout="mono")
        af.sample_rate = rate
        af.pts = 0
        for packet in stream.encode(af):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "video_files"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    write_video(os.path.join(args.out, "h264.mp4"), "libx264", 15, 5, {"crf": "12", "preset": "medium"})
    write_video(os.path.join(args.out, "vp9.webm"), "libvpx-vp9", 11, 4, {"crf": "10", "b": "0"})
    write_video(os.path.join(args.out, "vp8.mkv"), "libvpx", 9, 3, {"crf": "8", "b": "1M"})
    write_audio(os.path.join(args.out, "audio.m4a"))
    for name in sorted(os.listdir(args.out)):
        print(f"{name}: {os.path.getsize(os.path.join(args.out, name))} bytes")


if __name__ == "__main__":
    main()
