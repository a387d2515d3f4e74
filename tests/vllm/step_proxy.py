"""A pass-through proxy in front of vLLM for tests/vllm/run.sh.

A model with random weights never writes a usable tool call, so `screenpilot do` would stop after
its first step and the second request (the assistant's `tool_calls` answered by a `tool` message
carrying the next screenshot) would never reach vLLM. This proxy forwards every request to vLLM
unchanged; for the FIRST chat completion it still requires vLLM's answer to be a 200, then replaces
that answer with a fixed `computer_use` left click (in the request's mode: streamed or not).
Every later request and answer passes through untouched. Each request body is appended to
BODIES (one JSON line each) so the script can check what ScreenPilot sent.

usage: step_proxy.py LISTEN_PORT UPSTREAM_BASE BODIES
"""
import http.server
import json
import sys
import threading
import urllib.error
import urllib.request

PORT, UPSTREAM, BODIES = int(sys.argv[1]), sys.argv[2].rstrip("/"), sys.argv[3]
lock = threading.Lock()
chats = 0
CALL = {"name": "computer_use", "arguments": {"action": "left_click", "coordinate": [500, 500]}}


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write("proxy: " + (fmt % args) + "\n")

    def forward(self, method, body):
        req = urllib.request.Request(UPSTREAM + self.path.removeprefix("/v1"), data=body, method=method)
        for k in ("Authorization", "Content-Type", "Accept"):
            if self.headers.get(k):
                req.add_header(k, self.headers[k])
        try:
            return urllib.request.urlopen(req, timeout=600)
        except urllib.error.HTTPError as e:
            return e

    def relay(self, resp):
        self.send_response(resp.status)
        for k, v in resp.headers.items():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()
        while True:
            line = resp.readline()
            if not line:
                break
            self.wfile.write(line)
            self.wfile.flush()

    def do_GET(self):
        self.relay(self.forward("GET", None))

    def do_POST(self):
        global chats
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with lock:
            with open(BODIES, "a") as f:
                f.write(body.decode() + "\n")
            chats += 1
            first = chats == 1
        resp = self.forward("POST", body)
        if not first or resp.status != 200:
            return self.relay(resp)
        resp.read()  # vLLM accepted the first step; answer it with a click instead
        stream = json.loads(body).get("stream", False)
        model = json.loads(body).get("model", "")
        call = {"id": "call_proxy_0", "type": "function",
                "function": {"name": CALL["name"], "arguments": json.dumps(CALL["arguments"])}}
        self.send_response(200)
        self.send_header("Connection", "close")
        if stream:
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            chunks = [
                {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None, "tool_calls": [dict(call, index=0)]}, "finish_reason": None}]},
                {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
            ]
            for c in chunks:
                c.update({"id": "chatcmpl-proxy", "object": "chat.completion.chunk", "model": model})
                self.wfile.write(b"data: " + json.dumps(c).encode() + b"\n\n")
            self.wfile.write(b"data: [DONE]\n\n")
        else:
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps({
                "id": "chatcmpl-proxy", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "finish_reason": "tool_calls",
                             "message": {"role": "assistant", "content": None, "tool_calls": [call]}}],
            }).encode())


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
