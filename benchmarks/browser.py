"""The bridge's echo from Chromium: a page (no library of the project's) that speaks the v1
socket with the browser's own ``WebSocket``, driven by Playwright for Python.

It measures what :func:`benchmarks.run.measure_path` measures of the other paths: the median
small and 1 MiB round trips, and 1 MiB buffers echoed with ``BIG_WINDOW`` in flight (MB/s, and
the server's and the kernel's CPU per echo). The same page on a bare Tornado WebSocket that
echoes what it receives (:class:`BareEcho`, a process of its own: no kernel, no bridge) is the
browser's anchor: Chromium's own WebSocket moves some 30 MB/s of 1 MiB messages on this 2-core
machine, a tenth of what a Python client does, and that bare echo's CPU per message is what any
Python server pays to serve it. Skipped (None) where Playwright or Debian's chromium is missing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from typing import Any

import psutil

from jupyter_transports.client_socket import comm_url

from .server import ECHO, START_TIMEOUT, Server, _free_port, cpu_seconds

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


# A bare Tornado WebSocket echo: what any Python server pays to take a 1 MiB message from
# Chromium and send it back. Run as ``python -c BARE_ECHO PORT``.
BARE_ECHO = """
import sys
from tornado import ioloop, web, websocket

class Echo(websocket.WebSocketHandler):
    def check_origin(self, origin):
        return True  # the page is on the Jupyter server's origin

    def on_message(self, message):
        self.write_message(message, binary=isinstance(message, bytes))

app = web.Application([("/echo", Echo)], websocket_max_message_size=64 * 1024 * 1024)
app.listen(int(sys.argv[1]), "127.0.0.1")
ioloop.IOLoop.current().start()
"""


class BareEcho:
    """:data:`BARE_ECHO` in a process of its own, whose CPU is measured as the server's is."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.process = subprocess.Popen([sys.executable, "-c", BARE_ECHO, str(self.port)])
        self.ps = psutil.Process(self.process.pid)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/echo"

    async def ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the bare echo did not start") from None
                await asyncio.sleep(0.1)
            else:
                writer.close()
                return

    def cpu(self) -> float:
        return cpu_seconds(self.ps)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


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
        echo = cls(playwright, browser, page)
        await echo.bare.ready()
        return echo

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
        server_cpu = self.bare.cpu if bare else server.server_cpu
        cpu = server_cpu(), server.kernel_cpu()
        big_run = {**common, "mode": "big", "count": messages, "warmup": 0}  # all counted
        big = await self.page.evaluate(ECHO_JS, big_run)
        figures = {
            "rt_ms": rt["median_ms"],
            "big_rt_ms": big_rt["median_ms"],
            "big_mb_per_s": messages / big["seconds"],
            "big_server_cpu_ms": (server_cpu() - cpu[0]) / messages * 1e3,
        }
        if not bare:
            figures["big_kernel_cpu_ms"] = (server.kernel_cpu() - cpu[1]) / messages * 1e3
        return figures

    async def stop(self) -> None:
        self.bare.stop()
        await self.browser.close()
        await self.playwright.stop()
