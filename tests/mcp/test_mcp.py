"""`screenpilot mcp` driven by the official MCP Python SDK (mcp==2.3.0) as a real client.

Every test starts its own server process (stdio: the SDK spawns it; HTTP: a fixture does) and
stops it afterwards. The model is the random-weight tiny Qwen3-VL (tests/fixtures/tiny): answers
are gibberish, so the tests check shapes and types, never content.

Environment: SCREENPILOT_BIN (the binary), SCREENPILOT_MODEL (the model folder), DISPLAY (an
Xvfb of 1920x1080, started by the caller), xdotool and ImageMagick's `display` on PATH.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import threading
import time
import zlib
from base64 import b64decode
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("SCREENPILOT_BIN") or str(
    REPO / os.environ.get("CARGO_TARGET_DIR", "target") / "debug" / "screenpilot"
)
MODEL = os.environ.get("SCREENPILOT_MODEL") or str(REPO / "tests" / "fixtures" / "tiny")

# The model loads in 5-20 s on two CPU cores; one answer of 8 tokens takes a few seconds.
CALL_TIMEOUT = float(os.environ.get("MCP_TEST_CALL_TIMEOUT", "120"))
TEST_TIMEOUT = float(os.environ.get("MCP_TEST_TIMEOUT", "240"))
MODERN = "2026-07-28"  # the SDK's default (mode="auto" probes server/discover at this version)
LEGACY = "2025-11-25"  # mode="legacy": the initialize handshake

ALL_TOOLS = {
    "list_monitors", "list_windows", "ask_screen", "describe_screen", "find", "screenshot",
    "click", "type", "key", "scroll", "do_task", "wait_for_change",
}
ACTIONS: dict[str, dict[str, Any]] = {
    "click": {"x": 10, "y": 10},
    "type": {"text": "hello"},
    "key": {"keys": "ctrl+a"},
    "scroll": {"direction": "down", "amount": 1},
    "do_task": {"task": "open the menu"},
}

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def _environment() -> None:
    missing = [what for what, ok in (
        (f"the binary {BIN} (SCREENPILOT_BIN)", os.access(BIN, os.X_OK)),
        (f"the model {MODEL} (SCREENPILOT_MODEL)", Path(MODEL, "config.json").is_file()),
        (f"{MODEL}/tokenizer.json (scripts/setup.sh)", Path(MODEL, "tokenizer.json").is_file()),
        ("DISPLAY (start an Xvfb of 1920x1080)", bool(os.environ.get("DISPLAY"))),
        ("xdotool", shutil.which("xdotool") is not None),
        ("ImageMagick's display", shutil.which("display") is not None),
    ) if not ok]
    if missing:
        pytest.fail("missing: " + ", ".join(missing), pytrace=False)


def has_window_manager() -> bool:
    """Whether an EWMH window manager runs: the root's _NET_SUPPORTING_WM_CHECK names a window
    that still exists and names itself (a manager that died can leave the root property behind)."""

    def check(*where: str) -> str | None:
        out = subprocess.run(["xprop", *where, "_NET_SUPPORTING_WM_CHECK"], capture_output=True, text=True)
        m = re.search(r"window id # (0x[0-9a-f]+)", out.stdout)
        return m.group(1) if out.returncode == 0 and m else None

    child = check("-root")
    return child is not None and check("-id", child) == child


@pytest.fixture
def window_manager() -> Iterator[None]:
    """openbox for the test's duration, unless a window manager runs already: without one the
    display has no window list (the other tests run without, as scripts/test.sh has it)."""
    if shutil.which("xprop") is None:
        pytest.fail("xprop (x11-utils) is needed to see whether a window manager runs", pytrace=False)
    if has_window_manager():
        yield
        return
    if shutil.which("openbox") is None:
        pytest.fail("openbox is needed for the window tests (scripts/setup.sh installs it)", pytrace=False)
    proc = subprocess.Popen(["openbox", "--sm-disable"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not has_window_manager():
            assert proc.poll() is None and time.monotonic() < deadline, "openbox did not take over the display"
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()  # openbox gives the windows back and clears its root properties
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def server_log(tmp_path: Path) -> Iterator[Path]:
    """The server's stderr; its tail is printed, so pytest shows it when the test fails."""
    path = tmp_path / "server-stderr.log"
    path.touch()
    yield path
    tail = path.read_text(errors="replace").splitlines()[-40:]
    if tail:
        print(f"--- server stderr ({path}) ---", *tail, sep="\n")


def server_args(*extra: str) -> list[str]:
    return ["mcp", "--model", MODEL, "--device", "cpu", "--max-tokens", "8", *extra]


def audit_args(log: Path, extra: tuple[str, ...]) -> list[str]:
    """The audit log goes next to the test's server log (by default the server writes it into
    the user's data folder)."""
    return [] if "--audit" in extra else ["--audit", str(log.parent / "audit.jsonl")]


def server_env(**extra: str) -> dict[str, str]:
    env = {"DISPLAY": os.environ["DISPLAY"], "RUST_BACKTRACE": "1"}
    for key in ("XAUTHORITY", "HOME", "RUST_LOG", "HF_HOME"):
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(extra)
    return env


class Elicitor:
    """An elicitation callback that answers from a script and records what it was asked."""

    def __init__(self, *answers: types.ElicitResult) -> None:
        self.answers = list(answers)
        self.asked: list[types.ElicitRequestParams] = []

    async def __call__(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.asked.append(params)
        # Unscripted questions are declined; the tests check `asked` afterwards.
        return self.answers.pop(0) if self.answers else types.ElicitResult(action="decline")


def accept(approve: bool = True) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"approve": approve})


def connected(transport: Any, mode: str, elicit: Elicitor | None) -> Client:
    """The SDK's client over `transport`, as every test uses it (stdio or HTTP)."""
    return Client(transport, mode=mode, elicitation_callback=elicit, read_timeout_seconds=CALL_TIMEOUT)


@asynccontextmanager
async def stdio(
    log: Path, *extra: str, mode: str = "auto", elicit: Elicitor | None = None, env: dict[str, str] | None = None
) -> AsyncIterator[Client]:
    """A client connected over stdio to a server process of its own (the SDK spawns and stops it)."""
    params = StdioServerParameters(
        command=BIN, args=server_args(*extra, *audit_args(log, extra)), env=env or server_env(), cwd=str(REPO)
    )
    with anyio.fail_after(TEST_TIMEOUT), log.open("a") as errlog:
        async with connected(stdio_client(params, errlog=errlog), mode, elicit) as client:
            yield client


@contextmanager
def http_server(log: Path, *extra: str, env: dict[str, str] | None = None, stdin: Any = subprocess.DEVNULL) -> Iterator[str]:
    """Starts `screenpilot mcp --http 127.0.0.1:0`, yields its URL from the `listening on` line."""
    proc = subprocess.Popen(
        [BIN, *server_args("--http", "127.0.0.1:0", *extra, *audit_args(log, extra))],
        stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=env or server_env(), cwd=REPO, text=True,
    )
    found: list[str] = []
    listening = threading.Event()

    def drain() -> None:  # copies stderr to the log, noting the URL
        assert proc.stderr is not None
        with log.open("a") as out:
            for line in proc.stderr:
                out.write(line)
                out.flush()
                m = re.search(r"screenpilot mcp: listening on (http://127\.0\.0\.1:(\d+)/mcp)", line)
                if m and not found:
                    found.append(m.group(1))
                    listening.set()
        listening.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        deadline = time.monotonic() + CALL_TIMEOUT
        while not listening.wait(0.2):
            if time.monotonic() > deadline:
                pytest.fail("the server printed no `listening on` line", pytrace=False)
        if not found:
            pytest.fail(f"the server exited ({proc.poll()}) without a `listening on` line", pytrace=False)
        yield found[0]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@asynccontextmanager
async def http_client(
    url: str, token: str | None = None, mode: str = "auto", elicit: Elicitor | None = None
) -> AsyncIterator[Client]:
    """A client over streamable HTTP; the bearer token goes on every request of its httpx2 client."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    with anyio.fail_after(TEST_TIMEOUT):
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=CALL_TIMEOUT)) as hc:
            async with connected(streamable_http_client(url, http_client=hc), mode, elicit) as client:
                yield client


def mcp_errors(exc: BaseException) -> list[MCPError]:
    """The MCPErrors in an exception, looking inside exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [e for sub in exc.exceptions for e in mcp_errors(sub)]
    return [exc] if isinstance(exc, MCPError) else []


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def ok(result: types.CallToolResult) -> dict[str, Any]:
    """The structured content of a successful result."""
    assert not result.is_error, f"tool error: {text_of(result)}"
    assert isinstance(result.structured_content, dict), result
    return result.structured_content


def pointer() -> tuple[int, int]:
    out = subprocess.run(["xdotool", "getmouselocation", "--shell"], capture_output=True, text=True, check=True)
    pos = dict(line.split("=", 1) for line in out.stdout.split())
    return int(pos["X"]), int(pos["Y"])


def move_pointer(x: int, y: int) -> None:
    subprocess.run(["xdotool", "mousemove", "--sync", str(x), str(y)], check=True)
    assert pointer() == (x, y)


def png_size(data: bytes) -> tuple[int, int]:
    """Decodes a PNG far enough to trust it (chunk CRCs, zlib stream, scanline count); its size."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    assert header is not None, "no IHDR"
    width, height, depth, color = header[:4]
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    raw = zlib.decompress(idat)
    row = (width * channels * depth + 7) // 8 + 1
    assert header[6] == 0 and len(raw) == row * height, "scanlines do not match the header"
    return width, height


@contextmanager
def red_window(x: int = 50, y: int = 50, size: int = 300, title: str = "mcp-test") -> Iterator[None]:
    """A red X window (ImageMagick's display) at x,y, shown when this enters; closed on exit."""
    proc = subprocess.Popen(
        ["display", "-geometry", f"+{x}+{y}", "-size", f"{size}x{size}", "-title", title, "xc:red"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        found = subprocess.run(["xdotool", "search", "--sync", "--onlyvisible", "--name", f"^{title}$"],
                               capture_output=True, text=True, timeout=20, check=True)
        if shutil.which("xprop"):
            # display sets only the ICCCM WM_NAME; the server's window list (xcap) reads the EWMH
            # _NET_WM_NAME (UTF8_STRING) and leaves windows without it out as untitled.
            for wid in found.stdout.split():
                subprocess.run(["xprop", "-id", wid, "-f", "_NET_WM_NAME", "8u", "-set", "_NET_WM_NAME", title],
                               check=True)
        yield
    finally:
        proc.kill()
        proc.wait()


async def assert_protocol_error(client: Client, name: str, arguments: dict[str, Any]) -> MCPError:
    """The call is a JSON-RPC error (MCPError), not a result, and the server goes on serving."""
    with pytest.raises(MCPError) as raised:
        result = await client.call_tool(name, arguments)
        pytest.fail(f"{name}({arguments}) returned a result, not a protocol error: {result}")
    tools = await client.list_tools(cache_mode="refresh")
    assert tools.tools, "no tools listed after the error"
    ok(await client.call_tool("list_monitors", {}))
    return raised.value


# --- stdio: listing and negotiation -------------------------------------------------------------


async def test_stdio_list_tools(server_log: Path) -> None:
    async with stdio(server_log) as client:
        assert client.protocol_version == MODERN
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) == ALL_TOOLS
        for tool in tools.values():
            assert tool.input_schema.get("type") == "object", tool
            assert tool.description, f"{tool.name} has no description"
        required = {name: set(tools[name].input_schema.get("required", [])) for name in tools}
        assert "question" in required["ask_screen"]
        assert "description" in required["find"]
        assert {"x", "y"} <= required["click"]
        assert "text" in required["type"]
        assert "keys" in required["key"]
        assert "direction" in required["scroll"]
        assert "task" in required["do_task"]
        assert "timeout_ms" in required["wait_for_change"]
        assert "question" in tools["ask_screen"].input_schema["properties"]


async def test_stdio_legacy_handshake(server_log: Path) -> None:
    """A client that only speaks the initialize handshake (2025-11-25) is served too."""
    async with stdio(server_log, mode="legacy") as client:
        assert client.protocol_version == LEGACY
        assert {tool.name for tool in (await client.list_tools()).tools} == ALL_TOOLS
        ok(await client.call_tool("list_monitors", {}))


async def test_list_monitors(server_log: Path) -> None:
    async with stdio(server_log) as client:
        monitors = ok(await client.call_tool("list_monitors", {}))["monitors"]
        assert len(monitors) == 1, monitors
        (m,) = monitors
        assert {"index", "name", "x", "y", "width", "height", "scale_factor"} <= set(m)
        assert (m["x"], m["y"], m["width"], m["height"]) == (0, 0, 1920, 1080)
        assert isinstance(m["index"], int) and isinstance(m["name"], str)
        assert isinstance(m["scale_factor"], (int, float))


async def test_list_windows(server_log: Path, window_manager: None) -> None:
    """With a window manager (xcap lists windows from its _NET_CLIENT_LIST_STACKING): a window
    opened by the test is listed, can be asked about, and once closed its id is a protocol error."""
    async with stdio(server_log) as client:
        with red_window(title="mcp-test-window"):
            deadline = time.monotonic() + 10  # openbox manages a new window asynchronously
            while True:
                windows = ok(await client.call_tool("list_windows", {}))["windows"]
                assert isinstance(windows, list)
                for w in windows:
                    assert {"id", "title", "app"} <= set(w), w
                    assert isinstance(w["id"], int) and isinstance(w["title"], str) and isinstance(w["app"], str)
                ours = [w for w in windows if w["title"] == "mcp-test-window"]
                if ours or time.monotonic() > deadline:
                    break
                await anyio.sleep(0.2)
            assert len(ours) == 1, windows
            wid = ours[0]["id"]
            data = ok(await client.call_tool("ask_screen", {"question": "What colour is this?", "window": wid}))
            assert isinstance(data["answer"], str)
            ok(await client.call_tool("describe_screen", {"window": wid}))
        await assert_protocol_error(client, "ask_screen", {"question": "And now?", "window": wid})


# --- stdio: the model tools ---------------------------------------------------------------------


async def test_ask_screen(server_log: Path) -> None:
    async with stdio(server_log) as client:
        for args in (
            {"question": "What is on the screen?"},
            {"question": "And here?", "monitor": 0},
            {"question": "And in this corner?", "region": {"x": 0, "y": 0, "width": 640, "height": 480}},
        ):
            result = await client.call_tool("ask_screen", args)
            data = ok(result)
            assert isinstance(data["answer"], str)
            assert isinstance(data["capture"], dict) and isinstance(data["timings"], dict)
            assert [b.type for b in result.content] == ["text"], result.content
            assert text_of(result) == data["answer"]


async def test_a_second_question_about_an_unchanged_screen_reuses_its_encoding(server_log: Path) -> None:
    """Each call captures afresh; the engine's vision cache knows the same pixels, so the
    follow-up skips the vision tower and reuses the prompt's prefix."""
    async with stdio(server_log) as client:
        first = ok(await client.call_tool("ask_screen", {"question": "What is on the screen?"}))
        second = ok(await client.call_tool("ask_screen", {"question": "Which window is in front?"}))
        assert first["timings"]["vision_cache_hits"] == 0, first["timings"]
        assert second["timings"]["vision_cache_hits"] == 1, second["timings"]
        assert second["timings"]["cached_prompt_tokens"] > 0, second["timings"]


async def test_describe_screen(server_log: Path) -> None:
    async with stdio(server_log) as client:
        result = await client.call_tool("describe_screen", {})
        data = ok(result)
        assert isinstance(data["summary"], str)
        assert result.content and result.content[0].type == "text"


async def test_find(server_log: Path) -> None:
    async with stdio(server_log) as client:
        for args in ({"description": "the close button"},
                     {"description": "a red square", "region": {"x": 0, "y": 0, "width": 800, "height": 600}}):
            data = ok(await client.call_tool("find", args))
            assert isinstance(data["model_output"], str)
            assert isinstance(data["objects"], list)  # usually empty with random weights
            for obj in data["objects"]:
                assert isinstance(obj["label"], str)
                assert len(obj["point"]) == 2 and all(isinstance(v, (int, float)) for v in obj["point"])
                if obj.get("bbox") is not None:
                    assert len(obj["bbox"]) == 4 and all(isinstance(v, (int, float)) for v in obj["bbox"])


# --- screenshots --------------------------------------------------------------------------------


async def test_screenshot_refused_when_sharing_off(server_log: Path) -> None:
    async with stdio(server_log) as client:
        result = await client.call_tool("screenshot", {})
        assert result.is_error
        assert not any(isinstance(b, types.ImageContent) for b in result.content)
        message = text_of(result).lower()  # "sharing is off", "screenshots are not shared ..."
        assert "shar" in message and ("off" in message or "not" in message), message


async def test_screenshot_shared(server_log: Path) -> None:
    async with stdio(server_log, "--share-screenshots") as client:
        for args, size in (({}, (1920, 1080)), ({"monitor": 0}, (1920, 1080)),
                           ({"region": {"x": 10, "y": 20, "width": 200, "height": 100}}, (200, 100))):
            result = await client.call_tool("screenshot", args)
            assert not result.is_error, text_of(result)
            images = [b for b in result.content if isinstance(b, types.ImageContent)]
            assert len(images) == 1, result.content
            assert images[0].mime_type == "image/png"
            assert png_size(b64decode(images[0].data)) == size, args


# --- actions and elicitation --------------------------------------------------------------------


async def test_actions_refused_when_off(server_log: Path) -> None:
    elicit = Elicitor()
    async with stdio(server_log, elicit=elicit) as client:
        move_pointer(5, 5)
        for name, args in ACTIONS.items():
            result = await client.call_tool(name, args)
            assert result.is_error, f"{name}: {result}"
            assert "actions are off" in text_of(result).lower(), f"{name}: {text_of(result)}"
        assert pointer() == (5, 5)
        assert elicit.asked == [], "actions are off: nothing should be asked"


def check_approval_form(params: types.ElicitRequestParams) -> None:
    assert isinstance(params, types.ElicitRequestFormParams), params
    assert params.message
    props = params.requested_schema["properties"]
    assert props["approve"]["type"] == "boolean", params.requested_schema


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_click_accepted_moves_pointer(server_log: Path, mode: str) -> None:
    """auto: 2026-07-28, the elicitation rides an input_required result and the SDK retries the
    call with inputResponses; legacy: 2025-11-25, the server sends elicitation/create mid-call."""
    elicit = Elicitor(accept())
    async with stdio(server_log, "--allow-actions", mode=mode, elicit=elicit) as client:
        assert client.protocol_version == (MODERN if mode == "auto" else LEGACY)
        move_pointer(5, 5)
        result = await client.call_tool("click", {"x": 321, "y": 456})
        assert not result.is_error, text_of(result)
        assert len(elicit.asked) == 1
        check_approval_form(elicit.asked[0])
        assert pointer() == (321, 456)


async def test_click_input_required_by_hand(server_log: Path) -> None:
    """The 2026-07-28 multi round-trip, driven by hand: the first tools/call answers
    resultType "input_required" with one form elicitation and a requestState; the retry carries
    inputResponses {key: {"action": "accept", "content": {"approve": true}}} and the state."""
    async with stdio(server_log, "--allow-actions", elicit=Elicitor()) as client:
        assert client.protocol_version == MODERN
        move_pointer(5, 5)
        args = {"x": 222, "y": 333}
        first = await client.session.call_tool("click", args, allow_input_required=True)
        assert isinstance(first, types.InputRequiredResult), first
        assert first.input_requests and len(first.input_requests) == 1, first
        ((key, request),) = first.input_requests.items()
        assert isinstance(request, types.ElicitRequest), request
        check_approval_form(request.params)
        assert pointer() == (5, 5), "the pointer moved before the user approved"
        final = await client.session.call_tool(
            "click", args, input_responses={key: accept()}, request_state=first.request_state,
            allow_input_required=True,
        )
        assert isinstance(final, types.CallToolResult), final
        assert not final.is_error, text_of(final)
        assert pointer() == (222, 333)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_click_rejected_does_not_move(server_log: Path, mode: str) -> None:
    answers = (types.ElicitResult(action="decline"), types.ElicitResult(action="cancel"), accept(False))
    elicit = Elicitor(*answers)
    async with stdio(server_log, "--allow-actions", mode=mode, elicit=elicit) as client:
        move_pointer(5, 5)
        for answer in answers:
            result = await client.call_tool("click", {"x": 400, "y": 300})
            assert result.is_error, f"{answer}: {result}"
            assert "rejected" in text_of(result).lower(), f"{answer}: {text_of(result)}"
            assert pointer() == (5, 5), f"the pointer moved after {answer}"
        assert len(elicit.asked) == len(answers)


async def test_every_action_asks_first(server_log: Path) -> None:
    """type, key, scroll and do_task ask like click does; declined, none of them runs."""
    others = {name: args for name, args in ACTIONS.items() if name != "click"}
    elicit = Elicitor(*(types.ElicitResult(action="decline") for _ in others))
    async with stdio(server_log, "--allow-actions", elicit=elicit) as client:
        for name, args in others.items():
            result = await client.call_tool(name, args)
            assert result.is_error and "rejected" in text_of(result).lower(), f"{name}: {result}"
        assert len(elicit.asked) == len(others)
        for params in elicit.asked:
            check_approval_form(params)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_click_without_elicitation_support(server_log: Path, mode: str) -> None:
    async with stdio(server_log, "--allow-actions", mode=mode) as client:  # no elicitation callback
        move_pointer(5, 5)
        result = await client.call_tool("click", {"x": 400, "y": 300})
        assert result.is_error, result
        assert "confirm" in text_of(result).lower(), text_of(result)
        assert pointer() == (5, 5)


async def test_audit_log(server_log: Path, tmp_path: Path) -> None:
    """--audit FILE: one JSON object a line, each naming the SHA-256 of the line before
    (prev_sha256); an approved click and a rejected one are both recorded."""
    audit = tmp_path / "decisions.jsonl"
    elicit = Elicitor(accept(), types.ElicitResult(action="decline"))
    async with stdio(server_log, "--allow-actions", "--audit", str(audit), elicit=elicit) as client:
        assert not (await client.call_tool("click", {"x": 30, "y": 40})).is_error
        assert (await client.call_tool("click", {"x": 50, "y": 60})).is_error
    lines = audit.read_bytes().splitlines()
    entries = [json.loads(line) for line in lines]
    assert len(entries) >= 2, entries
    for before, entry in zip(lines, entries[1:]):
        assert entry["prev_sha256"] == hashlib.sha256(before).hexdigest(), entry
    decisions = [entry["decision"] for entry in entries]
    assert "executed" in decisions and "rejected_by_user" in decisions, decisions


# --- streamable HTTP ----------------------------------------------------------------------------

TOKEN = "s3cret-test-token"


async def test_http_with_token(server_log: Path) -> None:
    with http_server(server_log, "--token", TOKEN) as url:
        async with http_client(url, TOKEN) as client:
            assert client.protocol_version == MODERN
            assert {tool.name for tool in (await client.list_tools()).tools} == ALL_TOOLS
            data = ok(await client.call_tool("ask_screen", {"question": "What is on the screen?"}))
            assert isinstance(data["answer"], str)
        async with http_client(url, TOKEN, mode="legacy") as client:
            assert client.protocol_version == LEGACY
            ok(await client.call_tool("list_monitors", {}))


def raw_post(url: str, headers: dict[str, str]) -> httpx2.Response:
    """A bare initialize POST, to see the HTTP status the SDK hides."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}
    return httpx2.post(url, json=body, timeout=30, headers={
        "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": LEGACY, **headers})


async def check_401(url: str, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth is not None else {}
    assert raw_post(url, headers).status_code == 401, auth
    assert httpx2.get(url, headers={"Accept": "text/event-stream", **headers}, timeout=30).status_code == 401, auth
    # Through the SDK the 401 surfaces while connecting as an MCPError ("Server returned an error
    # response", no status), wrapped in an ExceptionGroup by the transport's task group.
    token = auth.removeprefix("Bearer ") if auth and auth.startswith("Bearer ") else None
    with pytest.raises((MCPError, BaseExceptionGroup)) as raised:
        async with http_client(url, token):
            pass
    assert mcp_errors(raised.value), raised.value
    assert raw_post(url, {"Authorization": f"Bearer {TOKEN}"}).status_code == 200, "not serving after a 401"


async def test_http_missing_token_is_401(server_log: Path) -> None:
    with http_server(server_log, "--token", TOKEN) as url:
        await check_401(url, None)


async def test_http_wrong_token_is_401(server_log: Path) -> None:
    with http_server(server_log, "--token", TOKEN) as url:
        for auth in ("Bearer wrong-token", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN):
            await check_401(url, auth)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_http_click_elicitation(server_log: Path, mode: str) -> None:
    """Elicitation over HTTP: input_required rounds (auto), elicitation/create on the SSE stream (legacy)."""
    with http_server(server_log, "--token", TOKEN, "--allow-actions") as url:
        elicit = Elicitor(accept(), types.ElicitResult(action="decline"))
        async with http_client(url, TOKEN, mode=mode, elicit=elicit) as client:
            move_pointer(5, 5)
            result = await client.call_tool("click", {"x": 444, "y": 222})
            assert not result.is_error, text_of(result)
            assert pointer() == (444, 222)
            result = await client.call_tool("click", {"x": 10, "y": 10})
            assert result.is_error and "rejected" in text_of(result).lower(), result
            assert pointer() == (444, 222)
            assert len(elicit.asked) == 2


async def test_http_terminal_asks_for_clients_without_elicitation(server_log: Path) -> None:
    """`mcp --http` started from a terminal asks there when the client cannot: `y` allows the
    click, anything else rejects it (stdin is a pty here, as in a terminal)."""
    import pty

    master, slave = pty.openpty()

    def answer_when_asked(nth: int, text: bytes) -> threading.Thread:
        def run() -> None:
            deadline = time.monotonic() + CALL_TIMEOUT
            # The question is a line of its own (the `[y/N]` prompt after it has no newline).
            while server_log.read_text(errors="replace").count("Allow it this once?") < nth:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
            os.write(master, text)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    try:
        with http_server(server_log, "--allow-actions", stdin=slave) as url:
            async with http_client(url) as client:  # no elicitation callback
                move_pointer(5, 5)
                t = answer_when_asked(1, b"n\n")
                result = await client.call_tool("click", {"x": 321, "y": 123})
                t.join(5)
                assert result.is_error and "rejected" in text_of(result).lower(), result
                assert pointer() == (5, 5)
                t = answer_when_asked(2, b"y\n")
                result = await client.call_tool("click", {"x": 321, "y": 123})
                t.join(5)
                assert not result.is_error, text_of(result)
                assert pointer() == (321, 123)
        assert "left click at (321, 123)" in server_log.read_text(errors="replace")
    finally:
        os.close(master)
        os.close(slave)


async def test_too_many_calls_at_once_are_told_busy_and_the_server_goes_on(server_log: Path) -> None:
    """Ten waits at once: eight run (the server's cap), the others get a `busy` tool error at once;
    afterwards calls run again."""
    with http_server(server_log) as url:
        async with http_client(url) as client:
            results: list[types.CallToolResult] = []

            async def wait() -> None:
                results.append(await client.call_tool("wait_for_change", {"timeout_ms": 3000}))

            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(wait)
            busy = [r for r in results if r.is_error]
            assert len(busy) == 2, [text_of(r) for r in results]
            assert all("busy" in text_of(r) for r in busy)
            assert all(ok(r)["changed"] is False for r in results if not r.is_error)
            ok(await client.call_tool("list_monitors", {}))


async def test_http_requests_from_web_pages_are_refused(server_log: Path) -> None:
    """A page in the user's browser may POST to 127.0.0.1 too; browsers send an Origin, MCP
    clients do not: with one the request is refused (403), even with no token set."""
    with http_server(server_log) as url:
        for origin in ("http://evil.example", "http://127.0.0.1:8000", "null"):
            assert raw_post(url, {"Origin": origin}).status_code == 403, origin
        assert raw_post(url, {}).status_code == 200
        async with http_client(url) as client:
            ok(await client.call_tool("list_monitors", {}))


async def test_http_token_from_environment(server_log: Path) -> None:
    with http_server(server_log, env=server_env(SCREENPILOT_MCP_TOKEN=TOKEN)) as url:
        assert raw_post(url, {}).status_code == 401
        async with http_client(url, TOKEN) as client:
            ok(await client.call_tool("list_monitors", {}))


async def test_http_loopback_without_token(server_log: Path) -> None:
    with http_server(server_log) as url:
        async with http_client(url) as client:
            ok(await client.call_tool("list_monitors", {}))


def test_http_non_loopback_without_token_refused(tmp_path: Path) -> None:
    audit = ["--audit", str(tmp_path / "audit.jsonl")]
    proc = subprocess.run([BIN, *server_args("--http", "0.0.0.0:0", *audit)], env=server_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=CALL_TIMEOUT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.strip(), "no message on stderr"
    assert "listening on" not in proc.stderr


# --- --tools and bad input ----------------------------------------------------------------------


async def test_tools_filter(server_log: Path) -> None:
    async with stdio(server_log, "--tools", "list_monitors,ask_screen", "--allow-actions", elicit=Elicitor()) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == {"list_monitors", "ask_screen"}
        await assert_protocol_error(client, "click", {"x": 1, "y": 1})
        await assert_protocol_error(client, "describe_screen", {})
        ok(await client.call_tool("ask_screen", {"question": "hi"}))


BAD_INPUTS = {
    "unknown tool": ("no_such_tool", {}),
    "wrong type": ("ask_screen", {"question": 5}),
    "huge region": ("ask_screen", {"question": "hi", "region": {"x": 0, "y": 0, "width": 100000, "height": 100000}}),
    "closed window": ("ask_screen", {"question": "hi", "window": 999999999}),
    "screenshot of a closed window": ("screenshot", {"window": 999999999}),
    "bad button": ("click", {"x": 1, "y": 1, "button": "fourth"}),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
async def test_bad_input_is_protocol_error(server_log: Path, case: str, request: pytest.FixtureRequest) -> None:
    name, args = BAD_INPUTS[case]
    if "window" in args:  # with a window list, so that the id is looked up, not the list missed
        request.getfixturevalue("window_manager")
    elicit = Elicitor()  # a click with bad arguments must fail before anything is asked
    async with stdio(server_log, "--share-screenshots", "--allow-actions", elicit=elicit) as client:
        await assert_protocol_error(client, name, args)
        assert elicit.asked == []


# --- wait_for_change ----------------------------------------------------------------------------


async def test_wait_for_change_unchanged(server_log: Path) -> None:
    async with stdio(server_log) as client:
        started = time.monotonic()
        data = ok(await client.call_tool("wait_for_change", {"timeout_ms": 500}))
        assert data["changed"] is False, data
        assert isinstance(data["waited_ms"], (int, float)) and data["waited_ms"] >= 400, data
        assert time.monotonic() - started >= 0.4


async def test_wait_for_change_changed(server_log: Path) -> None:
    """A red window appears and goes every 1.5 s while the call waits (so a change follows
    whatever the server took as its first capture)."""
    async with stdio(server_log) as client:
        ok(await client.call_tool("list_monitors", {}))  # the server is up before the clock starts
        result: list[types.CallToolResult] = []

        async def flicker(done: anyio.Event) -> None:
            while True:
                with anyio.move_on_after(1.5):
                    await done.wait()
                    return
                with red_window():
                    with anyio.move_on_after(1.5):
                        await done.wait()
                        return

        done = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(flicker, done)
            try:
                result.append(await client.call_tool("wait_for_change", {"timeout_ms": 15000}))
            finally:
                done.set()
        data = ok(result[0])
        assert data["changed"] is True, data
        assert isinstance(data["waited_ms"], (int, float)) and 0 <= data["waited_ms"] < 15000, data
