"""The browser client, the demo and RPC in a real headless Chromium (Debian's), driven by Playwright.

Skipped when Playwright for Python or ``chromium`` is missing; CI installs both.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from traitlets.config import Config

from .conftest import TIMEOUT
from .test_rpc import KERNEL_CHANNEL

try:
    from playwright.async_api import Page, async_playwright
except ImportError:  # pragma: no cover - depends on the machine
    async_playwright = None

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ROOT = Path(__file__).parent.parent
DEMO_KERNEL = ROOT / "demo" / "demo_kernel.py"
DEMO_PAGE = "static/jupyter_transports/demo/index.html"
MODULE = "static/jupyter_transports/transports.js"
ARTIFACTS = ROOT / "artifacts"
WAIT_MS = TIMEOUT * 1000

pytestmark = [
    pytest.mark.skipif(async_playwright is None, reason="Playwright for Python is not installed"),
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM}"),
]


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def origin_socket() -> Any:
    """A listening socket for a second web server: the page of "another origin"."""
    sock, port = bind_unused_port()
    yield sock, f"http://localhost:{port}"
    sock.close()


@pytest.fixture
def allowed_origin(request: Any, origin_socket: Any) -> str | None:
    """``ServerApp.allow_origin``: the second server's origin when parametrized with True."""
    return origin_socket[1] if getattr(request, "param", False) else None


@pytest.fixture
def jp_server_config(transports_config: dict[str, Any], allowed_origin: str | None) -> Config:
    server: dict[str, Any] = {"jpserver_extensions": {"jupyter_transports": True}}
    if allowed_origin is not None:
        server["allow_origin"] = allowed_origin
    return Config({"ServerApp": server, "TransportsExtension": transports_config})


@pytest.fixture
def demo_url(kernel: Any, server_url: str, token: str, jp_asyncio_loop: Any) -> str:
    """The demo page's URL, with the demo running in the test kernel."""
    jp_asyncio_loop.run_until_complete(kernel.execute(DEMO_KERNEL.read_text()))
    return f"{server_url}{DEMO_PAGE}?{urlencode({'kernel': kernel.id, 'token': token})}"


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A fresh headless Chromium (one per test: Playwright objects live on the test's loop)."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(context: Any, url: str | None = None) -> Page:
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.console_messages = []  # type: ignore[attr-defined]
    page.on("console", lambda message: page.console_messages.append(message.text))  # type: ignore[attr-defined]
    if url is not None:
        await page.goto(url)
    return page


async def live(page: Page) -> None:
    """Wait until the demo page is connected and has the model's state."""
    try:
        await page.wait_for_function(
            "document.getElementById('status').dataset.state === 'open'"
            " && document.body.dataset.version !== undefined"
        )
    except Exception as e:
        status = await page.text_content("#status")
        log = await page.inner_text("#log")
        raise AssertionError(f"page not live: {status!r}\n{log}\n{page.console_messages}") from e  # type: ignore[attr-defined]


async def text_becomes(page: Page, element_id: str, text: str) -> None:
    await page.wait_for_function(
        "([id, text]) => document.getElementById(id).textContent === text", arg=[element_id, text]
    )


async def serve_origin(origin_socket: Any, html: str) -> HTTPServer:
    """Serve ``html`` at ``/page.html`` on the second server."""

    class OriginPage(web.RequestHandler):
        def get(self) -> None:
            self.set_header("Content-Type", "text/html")
            self.finish(html)

    server = HTTPServer(web.Application([(r"/page.html", OriginPage)]))
    server.add_sockets([origin_socket[0]])
    return server


# -- the demo ----------------------------------------------------------------------------------


async def test_demo_pages_stay_in_sync(demo_url, kernel):
    async with chromium() as browser:
        context = await browser.new_context(viewport={"width": 1280, "height": 860})
        first, second = await new_page(context, demo_url), await new_page(context, demo_url)
        await live(first)
        await live(second)

        for _ in range(3):
            await first.click("#increment")
        await text_becomes(second, "counter", "3")
        await text_becomes(first, "counter", "3")
        await second.click("#decrement")
        await text_becomes(first, "counter", "2")

        await second.locator("#slider").fill("80")
        await text_becomes(first, "slider-value", "80")
        assert await first.input_value("#slider") == "80"
        assert await kernel.evaluate("shared.state") == {"counter": 2, "slider": 80, "version": 5}

        # who is here, and a note typed in one tab appears in the other, relayed by the server
        for page in (first, second):
            await page.wait_for_function("document.body.dataset.people === '2'")
        assert "(this tab)" in await first.inner_text("#people")
        await first.locator("#note").fill("hello from the first tab")
        await second.wait_for_function(
            "document.getElementById('note').value === 'hello from the first tab'"
        )
        assert await kernel.evaluate("shared.note") == "hello from the first tab"
        third = await new_page(context, demo_url)  # a late joiner gets the note from the kernel
        await live(third)
        await third.wait_for_function(
            "document.getElementById('note').value === 'hello from the first tab'"
        )
        await first.wait_for_function("document.body.dataset.people === '3'")
        await third.close()
        await first.wait_for_function("document.body.dataset.people === '2'")

        # the page calls the kernel, which calls back into that page
        await first.click("#roll")
        await first.wait_for_function(
            "document.getElementById('roll-result').textContent.includes('rolled')"
        )
        assert "call back into this tab took" in await first.text_content("#roll-result")
        assert await first.text_content("#die") != "?"
        assert await second.text_content("#die") == "?"  # only the caller was called back

        # the kernel calls every page
        await second.click("#announce")
        await text_becomes(second, "announce-result", "2 tabs answered the kernel.")
        await first.wait_for_selector(".toast")

        ARTIFACTS.mkdir(exist_ok=True)
        await first.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)
        assert (ARTIFACTS / "demo.png").stat().st_size > 10_000


async def test_demo_shows_a_python_exception(demo_url):
    async with chromium() as browser:
        page = await new_page(await browser.new_context(), demo_url)
        await live(page)
        await page.fill("#a", "7")
        await page.fill("#b", "0")
        await page.click("#divide")
        await text_becomes(
            page, "divide-result", "Python raised ZeroDivisionError: division by zero"
        )
        await page.fill("#b", "2")
        await page.click("#divide")
        await text_becomes(page, "divide-result", "= 3.5")


async def test_comm_frames_in_the_browser(demo_url, kernel, token):
    async with chromium() as browser:
        page = await new_page(await browser.new_context(), demo_url)
        await live(page)
        result = await page.evaluate(
            """async ([kernelId, token]) => {
                 const { Comm } = await import("../transports.js");
                 const next = (comm) => new Promise((r) => comm.addEventListener("message", r, { once: true }));
                 const json = await Comm.open({ kernelId, token, target: "echo", data: { a: 1 } });
                 json.send({ x: [1, "y"] });
                 const plain = (await next(json)).data;
                 json.send({ kind: "blob" }, [new Uint8Array([9, 8, 7]), new Float32Array([0.5]).buffer]);
                 const binary = await next(json);
                 const text = await Comm.open({ kernelId, token, target: "echo", frames: "text" });
                 text.send("not { json");
                 const raw = (await next(text)).data;
                 json.close(); text.close();
                 return [plain, binary.data, binary.buffers.map((b) => Array.from(b)), raw];
               }""",
            [kernel.id, token],
        )
        assert result == [
            {"x": [1, "y"]},
            {"kind": "blob"},
            [[9, 8, 7], [0, 0, 0, 63]],
            "not { json",
        ]


# -- RPC both ways -----------------------------------------------------------------------------

OPEN_CALC = """
async ([kernelId, token]) => {
  const { Channel } = await import("../transports.js");
  const handler = {
    double: (x) => 2 * x,
    later: async (x) => { await new Promise((r) => setTimeout(r, 10)); return x; },
    fail: () => { throw new TypeError("js says no"); },
    hang: () => new Promise(() => {}),
    size: (bytes) => ({ kind: bytes.constructor.name, size: bytes.byteLength }),
  };
  window.calc = await Channel.open({ kernelId, token, name: "calc", handler, timeout: 10000 });
  await window.calc.echo();
}
"""


async def test_rpc_both_ways(demo_url, kernel, token):
    await kernel.execute(KERNEL_CHANNEL)
    async with chromium() as browser:
        page = await new_page(await browser.new_context(), demo_url)
        await live(page)
        await page.evaluate(OPEN_CALC, [kernel.id, token])

        # browser -> kernel: a result, an exception, a timeout; binary both ways
        assert await page.evaluate("calc.call('add', 20, 22)") == 42
        assert await page.evaluate("calc.call('slow', 0)") == "done"
        error = await page.evaluate(
            "calc.call('fail', 'bad input').catch((e) => [e.name, e.type, e.remoteMessage, e.message])"
        )
        assert error == ["RemoteError", "ValueError", "bad input", "ValueError: bad input"]
        timeout = await page.evaluate(
            """async () => {
                 calc.timeout = 300;
                 try { await calc.call('slow', 30); return 'no timeout'; }
                 catch (e) { return [e.name, e.message]; }
                 finally { calc.timeout = 10000; }
               }"""
        )
        assert timeout == ["TimeoutError", "no answer to 'slow' within 300 ms"]
        assert await page.evaluate("calc.echo(1, 'two', [3], {four: null})") == [
            1,
            "two",
            [3],
            {"four": None},
        ]
        assert await page.evaluate(
            "calc.pipe(new Uint8Array([0, 1, 255])).then((b) => [b.constructor.name, Array.from(b)])"
        ) == ["Uint8Array", [0, 1, 255]]
        measured = await page.evaluate(
            """calc.callWithStream('measure', [new Uint8Array([1, 2]), new Uint8Array([3])], 'chunks')
                 .then((r) => [r.label, r.size, Array.from(r.reversed)])"""
        )
        assert measured == ["chunks", 3, [3, 2, 1]]

        # kernel -> browser, from inside a kernel handler: a result, an exception, a timeout
        ask = "([name, args, timeout]) => calc.call('ask', name, args, timeout, null)"
        assert await page.evaluate(ask, ["double", [21], 3]) == {"result": 42}
        assert await page.evaluate(ask, ["later", ["async"], 3]) == {"result": "async"}
        assert await page.evaluate(ask, ["fail", [], 3]) == {
            "raised": "RemoteError",
            "message": "TypeError: js says no",
        }
        assert await page.evaluate(ask, ["hang", [], 0.3]) == {
            "raised": "TimeoutError",
            "message": "no answer to 'hang' within 0.3 s",
        }
        sized = await page.evaluate("calc.call('ask', 'size', [new Uint8Array(1000)], 3, null)")
        assert sized == {"result": {"kind": "Uint8Array", "size": 1000}}

        # kernel -> browser from a cell that awaits, and the built-in echo and pipe
        await kernel.execute("from_cell = await channel.call('double', 5, timeout=10)")
        assert await kernel.evaluate("from_cell") == 10
        await kernel.execute("piped = await channel.pipe([b'ab', b'cd'], timeout=10)")
        assert await kernel.evaluate("piped.decode()") == "abcd"
        await kernel.execute("echoed = await channel.echo({'x': [1, None]}, timeout=10)")
        assert await kernel.evaluate("echoed") == [{"x": [1, None]}]


async def test_rpc_many_calls_in_flight_both_ways(demo_url, kernel, token):
    await kernel.execute(KERNEL_CHANNEL)
    async with chromium() as browser:
        page = await new_page(await browser.new_context(), demo_url)
        await live(page)
        await page.evaluate(
            """() => {   // count the frames every socket of the page sends
                 const send = WebSocket.prototype.send;
                 window.framesSent = 0;
                 WebSocket.prototype.send = function (frame) { window.framesSent += 1; return send.call(this, frame); };
               }"""
        )
        await page.evaluate(OPEN_CALC, [kernel.id, token])

        # 1,000 calls at once: each gets its own result, or its own exception
        outcome = await page.evaluate(
            """async () => {
                 const before = window.framesSent;
                 const calls = [];
                 for (let i = 0; i < 1000; i++) calls.push(calc.call('add_or_fail', i, 1));
                 const settled = await Promise.allSettled(calls);
                 const wrong = settled.filter((r, i) => i % 7 === 0
                   ? r.status !== 'rejected' || r.reason.remoteMessage !== `${i} is a multiple of 7`
                   : r.value !== i + 1);
                 return [wrong.length, window.framesSent - before];
               }"""
        )
        assert outcome[0] == 0
        assert outcome[1] <= 2  # batched: not a frame per call

        # the kernel calls 200 of this page's handlers at once, sync and async
        client = (await kernel.evaluate("list(channel.clients)"))[0]
        await kernel.execute(
            "import asyncio\n"
            f"doubled = await asyncio.gather(*(channel.call('double', i, to={client!r}, timeout=20) for i in range(200)))\n"
            f"later = await asyncio.gather(*(channel.call('later', i, to={client!r}, timeout=20) for i in range(200)))"
        )
        assert await kernel.evaluate("doubled") == [2 * i for i in range(200)]
        assert await kernel.evaluate("later") == list(range(200))


# -- origins -----------------------------------------------------------------------------------

ORIGIN_PAGE = "<!doctype html><title>another origin</title><p>a page of another web app</p>"

# Connect with a bare WebSocket; resolves "open" or "refused" (the browser hides the status).
RAW_CONNECT = """
(url) => new Promise((resolve) => {
  const socket = new WebSocket(url);
  socket.onopen = () => { socket.close(); resolve("open"); };
  socket.onclose = () => resolve("refused");
})
"""


def socket_url(server_url: str, kernel_id: str, token: str | None = None) -> str:
    _scheme, rest = server_url.split("://", 1)
    query = f"?{urlencode({'token': token})}" if token else ""
    return f"ws://{rest}api/transports/kernels/{kernel_id}/targets/calc{query}"


async def login(context: Any, server_url: str, token: str) -> None:
    """Visit the server once with the token, as a user does: the browser keeps its login cookie."""
    page = await new_page(context, f"{server_url}{DEMO_PAGE}?{urlencode({'token': token})}")
    cookies = await context.cookies(server_url)
    assert any(cookie["name"].startswith("username-") for cookie in cookies), cookies
    await page.close()


@pytest.mark.parametrize("allowed_origin", [True], indirect=True)
async def test_allowed_origin_imports_the_client_and_connects(
    origin_socket, kernel, server_url, token, jp_serverapp
):
    origin = origin_socket[1]
    assert jp_serverapp.allow_origin == origin
    await kernel.execute(KERNEL_CHANNEL)
    server = await serve_origin(origin_socket, ORIGIN_PAGE)
    try:
        async with chromium() as browser:
            context = await browser.new_context()
            page = await new_page(context, f"{origin}/page.html")
            result = await page.evaluate(
                """async ([module, kernelId, token]) => {
                     const { Channel } = await import(module);   // cross-origin: needs CORS
                     const channel = await Channel.open({ kernelId, token, name: "calc", timeout: 10000 });
                     const sum = await channel.call("add", 2, 3);
                     channel.close();
                     return sum;
                   }""",
                [f"{server_url}{MODULE}", kernel.id, token],
            )
            assert result == 5
            # the login cookie works too from an allowed origin (a browser sends it: same site)
            await login(context, server_url, token)
            assert await page.evaluate(RAW_CONNECT, socket_url(server_url, kernel.id)) == "open"
    finally:
        server.stop()


@pytest.mark.parametrize("allowed_origin", [True], indirect=True)
async def test_the_example_page_on_another_origin_echoes(origin_socket, kernel, server_url, token):
    """examples/echo.html, served by another web server, as the README tells a user to run it."""
    page_html = (Path(__file__).parents[1] / "examples" / "echo.html").read_text()
    server = await serve_origin(origin_socket, page_html)
    query = urlencode({"server": server_url, "kernel": kernel.id, "token": token})
    try:
        async with chromium() as browser:
            page = await new_page(
                await browser.new_context(), f"{origin_socket[1]}/page.html?{query}"
            )
            await text_becomes(page, "status", "open")
            await page.fill("#text", "from another origin")
            await page.click("button")
            await page.wait_for_function(
                "document.getElementById('log').textContent.includes('← {\"text\":\"from another origin\"}')"
            )
    finally:
        server.stop()


async def test_origin_not_allowed_is_refused(
    origin_socket, kernel, server_url, token, jp_serverapp
):
    origin = origin_socket[1]
    assert not jp_serverapp.allow_origin
    await kernel.execute(KERNEL_CHANNEL)
    server = await serve_origin(origin_socket, ORIGIN_PAGE)
    try:
        async with chromium() as browser:
            context = await browser.new_context()
            await login(context, server_url, token)
            page = await new_page(context, f"{origin}/page.html")
            # the server sends no CORS header to this origin: the browser will not load the client
            imported = await page.evaluate(
                "(module) => import(module).then(() => 'imported', (e) => e.name)",
                f"{server_url}{MODULE}",
            )
            assert imported == "TypeError"
            # the login cookie is not enough from this origin: the handshake is refused (403)
            assert await page.evaluate(RAW_CONNECT, socket_url(server_url, kernel.id)) == "refused"
            # Jupyter's rule (IdentityProvider.should_check_origin): a request that carries the
            # token skips the origin check, because holding the token is the authorization
            assert (
                await page.evaluate(RAW_CONNECT, socket_url(server_url, kernel.id, token)) == "open"
            )
    finally:
        server.stop()


# -- reconnecting ------------------------------------------------------------------------------


async def test_page_reconnects_after_the_server_drops_its_socket(demo_url, kernel, jp_serverapp):
    app = next(iter(jp_serverapp.extension_manager.extension_apps["jupyter_transports"]))
    async with chromium() as browser:
        page = await new_page(await browser.new_context(), demo_url)
        await live(page)
        await page.click("#increment")
        await text_becomes(page, "counter", "1")
        old_clients = await kernel.evaluate("list(channel.clients)")

        await page.evaluate(
            "() => { window.pending = demo.channel.call('nap', 1).then(() => 'answered', (e) => e.name); }"
        )
        await page.evaluate("demo.channel.echo()")  # the nap call has reached the kernel

        sessions = list(app.sessions.live.values())
        assert len(sessions) == 2  # the RPC channel's session and the model's
        for session in sessions:
            session.connection.ws_connection.stream.close()  # drop the TCP connection, no close frame

        assert await page.evaluate("window.pending") == "answered"  # resumed: answered once

        await page.wait_for_function(
            "document.body.dataset.reconnects === '1' && document.getElementById('status').dataset.state === 'open'"
        )
        await page.click("#increment")
        await text_becomes(page, "counter", "2")
        assert await page.evaluate("demo.channel.call('divide', 1, 4)") == 0.25
        assert await kernel.evaluate("list(channel.clients)") == old_clients  # the same client

        # an answer is not retried: a refused comm (4404) and a deliberate close stay closed
        closed = await page.evaluate(
            """async (kernelId) => {
                 const { Comm } = await import("../transports.js");
                 const token = new URLSearchParams(location.search).get("token");
                 const comm = await Comm.open({ kernelId, token, target: "no.such.target" });
                 const event = await new Promise((r) => comm.addEventListener("close", r));
                 const mine = await Comm.open({ kernelId, token, target: "echo" });
                 const mineClosed = new Promise((r) => mine.addEventListener("close", r));
                 mine.close();
                 const second = await mineClosed;
                 return [event.code, event.reconnecting, comm.state, second.code, second.reconnecting, mine.state];
               }""",
            kernel.id,
        )
        assert closed == [4404, False, "closed", 1000, False, "closed"]
