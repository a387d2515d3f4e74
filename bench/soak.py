#!/usr/bin/env python3
"""Soak test of `screenpilot serve` (issue 17): the server on the tiny model under mixed clients
for a while, sampling its resident memory, open file descriptors, threads and request latencies
every few seconds.

Clients (each a thread looping until the end): non-streaming and streaming questions, a small
image as a data: URI, streams dropped mid-answer, slow readers, oversized bodies, malformed
JSON, a decompression-bomb PNG, idle connections that send nothing. Every request must end
with an HTTP status (200, or a 4xx/429/503 refusal); a request that ends with no status (reset,
timeout, empty reply) is counted as lost.

Writes a CSV (one row per sample) and, with --plot, a PNG (needs matplotlib). With --check it
exits non-zero when a request was lost, a well-formed request failed with a 5xx, or the
server's memory or descriptors grew after warm-up (see `verdict`).

Standard library only (the plot aside), so CI can run a short version:
    python3 bench/soak.py --binary target/debug/screenpilot --duration 60 --check
"""
import argparse
import base64
import csv
import http.client
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def png(width, height, rows):
    """A grayscale 8-bit PNG whose rows come from `rows(y)` (bytes of `width`)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + rows(y) for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def bomb_png(side=40000):
    """A 1-bit PNG of side x side zero pixels: a few hundred KB that decode to gigabytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    row = b"\x00" + bytes((side + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def data_uri(data):
    return "data:image/png;base64," + base64.b64encode(data).decode()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latencies = []  # (end time, seconds, kind)
        self.statuses = {}
        self.lost = []
        self.server_errors = []

    def record(self, kind, status, seconds, wellformed=True):
        with self.lock:
            key = f"{kind}:{status}"
            self.statuses[key] = self.statuses.get(key, 0) + 1
            if status is None:
                self.lost.append(kind)
            elif status >= 500 and status != 503 and wellformed:
                self.server_errors.append(f"{kind}:{status}")
            if status == 200:
                self.latencies.append((time.time(), seconds, kind))


def chat(question, max_tokens=16, stream=False, image=None):
    content = [{"type": "text", "text": question}]
    if image is not None:
        content.insert(0, {"type": "image_url", "image_url": {"url": image}})
    return json.dumps({"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
                       "stream": stream}).encode()


def request(port, body, *, stream=False, read_lines=None, slow=0.0, timeout=120.0, content_type="application/json"):
    """POSTs a chat request; returns the status (None when the exchange ended without one)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", body=body,
                     headers={"Content-Type": content_type, "Content-Length": str(len(body))})
        resp = conn.getresponse()
        status = resp.status
        if stream and status == 200:
            n = 0
            for line in resp:
                if slow:
                    time.sleep(slow)
                n += 1
                if read_lines is not None and n >= read_lines:
                    break  # drop the stream mid-answer
                if line.strip() == b"data: [DONE]":
                    break
        else:
            resp.read()
        return status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def oversized(port):
    """Announces a 65 MiB body and sends its first 64 KiB: the server must answer 413 from the
    head (a client that sent it all would see the connection closed under its writes)."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % (65 << 20) + b"x" * (64 << 10))
        head = s.recv(64)
        s.close()
        return int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else None
    except (OSError, ValueError, IndexError):
        return None


def client(port, kind, stats, stop, rng):
    small = data_uri(png(64, 48, lambda y: bytes((x * y) % 256 for x in range(64))))
    bomb = data_uri(bomb_png())
    while not stop.is_set():
        t = time.time()
        wellformed = True
        if kind == "plain":
            status = request(port, chat(f"Question {rng.random():.6f}?"))
        elif kind == "stream":
            status = request(port, chat("Tell me more.", 32, stream=True), stream=True)
        elif kind == "image":
            status = request(port, chat("What is in the image?", 8, image=small))
        elif kind == "disconnect":
            status = request(port, chat("A long answer please.", 200, stream=True), stream=True, read_lines=3)
        elif kind == "slow":
            status = request(port, chat("Slowly.", 24, stream=True), stream=True, slow=0.05)
        elif kind == "hostile":
            wellformed = False
            pick = rng.randrange(4)
            if pick == 0:
                status = request(port, b"{\"messages\": [", )
            elif pick == 1:
                status = oversized(port)
            elif pick == 2:
                status = request(port, chat("Bomb?", 4, image=bomb))
            else:
                status = request(port, chat("Plain text body?"), content_type="text/plain")
        elif kind == "idle":
            wellformed = False
            # A connection that sends half a request line and nothing more: the server must
            # close it by itself (its header timeout), or it holds a descriptor forever.
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=60)
                s.sendall(b"POST /v1/chat/comp")
                s.settimeout(60)
                closed = s.recv(1) == b""
                status = 408 if closed else None
                s.close()
            except OSError:
                status = 408  # reset by the server: closed too
        stats.record(kind, status, time.time() - t, wellformed)


def proc_sample(pid):
    status = open(f"/proc/{pid}/status").read()
    field = lambda name: int(next(l for l in status.splitlines() if l.startswith(name)).split()[1])
    return {"rss_mib": field("VmRSS:") / 1024.0, "threads": field("Threads:"), "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def percentile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slope_per_hour(xs, ys):
    n = len(xs)
    if n < 3:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den * 3600.0


def verdict(rows, stats, idle_fds, base_fds):
    """Problems found: lost requests, 5xx on well-formed ones, growth after warm-up."""
    problems = []
    if stats.lost:
        problems.append(f"{len(stats.lost)} requests lost (no status): {sorted(set(stats.lost))}")
    if stats.server_errors:
        problems.append(f"server errors on well-formed requests: {stats.server_errors[:10]}")
    warm = [r for r in rows if r["t_s"] >= rows[-1]["t_s"] * 0.25]
    if len(warm) >= 3:
        rss = [r["rss_mib"] for r in warm]
        growth = max(rss[len(rss) // 2:]) - max(rss[: len(rss) // 2])
        if growth > max(64.0, 0.1 * max(rss)):
            problems.append(f"RSS grew by {growth:.0f} MiB between the halves after warm-up")
    if idle_fds > base_fds + 4:
        problems.append(f"{idle_fds} descriptors open once idle, {base_fds} before the clients")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/screenpilot"))
    ap.add_argument("--model", default=os.path.join(ROOT, "tests/fixtures/tiny"))
    ap.add_argument("--duration", type=float, default=1800.0, help="seconds of load")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--clients", default="plain=2,stream=2,image=1,disconnect=1,slow=1,hostile=1,idle=1")
    ap.add_argument("--server-args", default="--prefix-cache-mib 32 --vision-cache-mib 32",
                    help="more flags for `serve`; small caches so that they fill during warm-up and "
                         "memory growth after it means a leak")
    ap.add_argument("--csv", default="soak.csv")
    ap.add_argument("--plot", default=None, help="PNG to draw (needs matplotlib)")
    ap.add_argument("--check", action="store_true", help="exit 1 on a lost request or growth")
    a = ap.parse_args()

    port = free_port()
    args = [a.binary, "serve", "--model", a.model, "--port", str(port), "--header-timeout-s", "5",
            *a.server_args.split()]
    server = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None:
                sys.exit(f"soak: the server exited: {server.stderr.read()}")
            time.sleep(0.2)
    base = proc_sample(server.pid)
    stats, stop = Stats(), threading.Event()
    threads = []
    for spec in a.clients.split(","):
        kind, n = spec.split("=")
        for i in range(int(n)):
            th = threading.Thread(target=client, args=(port, kind, stats, stop, random.Random(len(threads))),
                                  daemon=True)
            th.start()
            threads.append(th)
    rows, start, last_n = [], time.time(), 0
    while time.time() - start < a.duration:
        time.sleep(min(a.interval, max(0.0, a.duration - (time.time() - start))))
        if server.poll() is not None:
            stop.set()
            sys.exit(f"soak: the server died (exit {server.returncode}): {server.stderr.read()[-2000:]}")
        s = proc_sample(server.pid)
        with stats.lock:
            window = [l for _, l, _ in stats.latencies[last_n:]]
            last_n = len(stats.latencies)
            answered, lost = len(stats.latencies), len(stats.lost)
        row = {"t_s": round(time.time() - start, 1), **s, "answered": answered, "lost": lost,
               "p50_ms": percentile(window, 0.5) * 1000, "p90_ms": percentile(window, 0.9) * 1000,
               "p99_ms": percentile(window, 0.99) * 1000}
        rows.append(row)
        print(", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    stop.set()
    for th in threads:
        th.join(timeout=130)
    time.sleep(7)  # past the header timeout: idle connections are closed by now
    idle = proc_sample(server.pid)
    server.terminate()
    server.wait(timeout=30)
    with open(a.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    print("statuses:", json.dumps(dict(sorted(stats.statuses.items()))))
    print(f"descriptors: {base['fds']} before the clients, {idle['fds']} once idle after them; "
          f"threads {base['threads']} -> {idle['threads']}; RSS {base['rss_mib']:.0f} -> {idle['rss_mib']:.0f} MiB")
    if a.plot:
        plot(rows, a.plot)
    problems = verdict(rows, stats, idle["fds"], base["fds"])
    for p in problems:
        print("soak: PROBLEM:", p)
    if a.check and problems:
        sys.exit(1)
    print("soak: ok" if not problems else "soak: problems found")


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [r["t_s"] / 60 for r in rows]
    fig, ax = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    ax[0].plot(t, [r["rss_mib"] for r in rows]); ax[0].set_ylabel("RSS (MiB)")
    ax[1].plot(t, [r["fds"] for r in rows], label="open fds")
    ax[1].plot(t, [r["threads"] for r in rows], label="threads"); ax[1].legend(); ax[1].set_ylabel("count")
    for q in ("p50_ms", "p90_ms", "p99_ms"):
        ax[2].plot(t, [r[q] for r in rows], label=q)
    ax[2].set_yscale("log"); ax[2].legend(); ax[2].set_ylabel("latency (ms)")
    ax[3].plot(t, [r["answered"] for r in rows], label="answered (200)")
    ax[3].plot(t, [r["lost"] for r in rows], label="lost"); ax[3].legend(); ax[3].set_ylabel("requests")
    ax[3].set_xlabel("minutes")
    fig.suptitle("screenpilot serve soak (tiny model, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
