"""The bridge's echo from Chromium: a page (no library of the project's) that speaks the v1
socket with the browser's own ``WebSocket``, driven by Playwright for Python.

It measures what :func:`benchmarks.run.measure_path` measures of the other paths: the median
small and 1 MiB round trips, and 1 MiB buffers echoed with ``BIG_WINDOW`` in flight (MB/s, and
the server's and the kernel's CPU per echo). The same page on a bare Tornado WebSocket that
echoes what it receives (:class:`BareEcho`, in this process: no kernel, no bridge) is the
browser's anchor: Chromium's own WebSocket moves some 30 MB/s of 1 MiB messages on this 2-core
machine, a tenth of what a Python client does. Skipped (None) where Playwright or Debian's
chromium is missing.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from tornado import web, websocket
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from jupyter_transports.client_socket import comm_url

from .server import ECHO, Server

CHROMIUM = "/usr/bin/chromium"
MiB = 1024 * 1024

# Runs in the page: opens the socket, times round trips or a window of 1 MiB echoes, closes.
ECHO_JS = """
async ({ url, mode, count, window, size, warmup }) => {
  const socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  await new Promise((resolve, reject) => { socket.onopen = resolve; socket.onerror = reject; });
  const waiting = [];
  socket.onmessage = () => waiting.shift()();
  const echoed = () => new Promise((resolve) => waiting.push(resolve));
  let frame = '{"i":0}';
  if (mode !== "rt") {  // the contract's binary layout: 2 parts, the JSON and one buffer
    const head = new TextEncoder().encode('{"i":0}');
    const bytes = new Uint8Array(12 + head.length + size);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, 2); view.setUint32(4, 12); view.setUint32(8, 12 + head.length);
    bytes.set(head, 12);
    for (let i = 12 + head.length; i < bytes.length; i += 65536)
      crypto.getRandomValues(bytes.subarray(i, Math.min(i + 65536, bytes.length)));
    frame = bytes.buffer;
  }
  for (let i = 0; i < warmup; i++) { socket.send(frame); await echoed(); }
  const times = [];
  const began = performance.now();
  if (mode !== "big") {
    for (let i = 0; i < count; i++) {
      const t = performance.now(); socket.send(frame); await echoed();
      times.push(performance.now() - t);
    }
  } else {
    let sent = 0;
    const inFlight = [];
    while (sent < Math.min(window, count)) { inFlight.push(echoed()); socket.send(frame); sent++; }
    for (let received = 0; received < count; received++) {
      await inFlight.shift();
      if (sent < count) { inFlight.push(echoed()); socket.send(frame); sent++; }
    }
  }
  const seconds = (performance.now() - began) / 1000;
  socket.close(1000);
  times.sort((a, b) => a - b);
  return { median_ms: times.length ? times[times.length >> 1] : null, seconds };
}
"""


class _Echo(websocket.WebSocketHandler):
    def check_origin(self, origin: str) -> bool:
        return True  # the page is on the Jupyter server's origin

    def on_message(self, message: str | bytes) -> None:
        self.write_message(message, binary=isinstance(message, bytes))


class BareEcho:
    """A bare Tornado WebSocket echo on a port of its own, on this process's event loop."""

    def __init__(self) -> None:
        sock, self.port = bind_unused_port()
        app = web.Application([("/echo", _Echo)], websocket_max_message_size=64 * MiB)
        self.server = HTTPServer(app)
        self.server.add_sockets([sock])

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/echo"


class BrowserEcho:
    """One Chromium page on the server's origin, reused by every round."""

    def __init__(self, playwright: Any, browser: Any, page: Any) -> None:
        self.playwright, self.browser, self.page = playwright, browser, page
        self.bare = BareEcho()

    @classmethod
    async def start(cls, server: Server) -> BrowserEcho | None:
        if not os.path.exists(CHROMIUM) and not shutil.which("chromium"):
            return None
        try:
            from playwright.async_api import async_playwright
        except ImportError:
            return None
        playwright = await async_playwright().start()
        browser = await playwright.chromium.launch(executable_path=CHROMIUM)
        page = await browser.new_page()
        await page.goto(f"{server.url}api/transports/spec.yaml?token={server.token}")
        return cls(playwright, browser, page)

    async def measure(
        self,
        server: Server,
        *,
        round_trips: int,
        big_round_trips: int,
        messages: int,
        window: int,
        bare: bool = False,
    ) -> dict[str, Any]:
        """The figures of the bridge's echo target, or with ``bare`` of :class:`BareEcho`."""
        url = (
            self.bare.url
            if bare
            else comm_url(server.url, server.kernel_id, "targets", ECHO, token=server.token)
        )
        common = {"url": url, "size": MiB, "window": window, "warmup": 5}
        rt = await self.page.evaluate(ECHO_JS, {**common, "mode": "rt", "count": round_trips})
        big_rt = await self.page.evaluate(
            ECHO_JS, {**common, "mode": "bigrt", "count": big_round_trips, "warmup": 2}
        )
        cpu = server.server_cpu(), server.kernel_cpu()
        big_run = {**common, "mode": "big", "count": messages, "warmup": 0}  # all counted
        big = await self.page.evaluate(ECHO_JS, big_run)
        server_cpu, kernel_cpu = server.server_cpu() - cpu[0], server.kernel_cpu() - cpu[1]
        figures = {
            "rt_ms": rt["median_ms"],
            "big_rt_ms": big_rt["median_ms"],
            "big_mb_per_s": messages / big["seconds"],
        }
        if not bare:
            figures["big_server_cpu_ms"] = server_cpu / messages * 1e3
            figures["big_kernel_cpu_ms"] = kernel_cpu / messages * 1e3
        return figures

    async def stop(self) -> None:
        self.bare.server.stop()
        await self.browser.close()
        await self.playwright.stop()
