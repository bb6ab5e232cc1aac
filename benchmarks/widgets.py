"""``python -m benchmarks.widgets``: time to first render of a dashboard of widgets in Chromium,
over the multiplexed socket, against the raw cost of ipywidgets' ``request_states``.

Not part of ``make bench``'s table: one run, one server (:class:`benchmarks.server.Server`), one
kernel holding a ``VBox`` of N ``IntSlider`` (each slider is three models: itself, its layout and
its style). Measured, each ``RUNS`` times, median in ms:

* **page, published**: in a fresh Chromium page, from ``Widgets.connect()`` to the N sliders
  shown (``widgets.render(el, "board")``), the page loading every model from the kernel's
  publisher (``jupyter_transports.widgets.publish``) on one multiplexed socket;
* **page, request_states**: the same with nothing published: the page opens the widget control
  comm and asks for every state, as JupyterLab's widget manager does;
* **anchor, request_states over /channels**: a raw WebSocket to jupyter_server's own kernel
  socket (``/api/kernels/{id}/channels``, already open): ``comm_open`` of the control comm,
  ``request_states``, until the ``update_states`` reply is received and parsed; no rendering.

The ratio says what a browser page pays, rendering included, over the bare protocol cost of
the same state. Needs Chromium (``CHROMIUM`` or ``/usr/bin/chromium``) and Playwright for Python.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import websockets
from playwright.async_api import async_playwright

from .server import Server

RUNS = 5
STEP_TIMEOUT = 120.0
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
BUNDLE = "static/jupyter_transports/widgets/widgets.js"

BOARD_CODE = """
import ipywidgets as w
sliders = [w.IntSlider(value=i, description=f"s{{i}}") for i in range({n})]
board = w.VBox(sliders)
"""
PUBLISH_CODE = """
from jupyter_transports.widgets import publish
publish(board, "board")
"""

# In the page: connect, render, and wait until every slider shows its value.
RENDER = """async ([server, kernelId, token, ref, n]) => {
    const Widgets = await import(server + "static/jupyter_transports/widgets/widgets.js");
    const started = performance.now();
    const widgets = await Widgets.connect({ server, kernelId, token });
    const connected = performance.now();
    const element = document.createElement("div");
    document.body.append(element);
    const view = await widgets.render(element, ref);
    await Promise.all(view.children_views.views);  // a box renders its children after itself
    const shown = element.querySelectorAll(".widget-readout").length;
    const done = performance.now();
    widgets.close();
    if (shown !== n) throw new Error(`${shown} sliders shown, not ${n}`);
    return [done - started, connected - started];
}"""


async def page_render(browser: Any, server: Server, ref: str, n: int) -> tuple[float, float]:
    """One fresh page: (ms to first render of the board, ms of that to connect and load)."""
    page = await browser.new_page()
    try:
        await page.goto(server.url + BUNDLE)  # a page of the server's origin
        total, loaded = await page.evaluate(
            RENDER, [server.url, server.kernel_id, server.token, ref, n]
        )
        return total, loaded
    finally:
        await page.close()


def _message(
    session: str, msg_type: str, content: dict[str, Any], metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A kernel message in jupyter_server's JSON form for its ``/channels`` socket."""
    header = {
        "msg_id": uuid.uuid4().hex,
        "msg_type": msg_type,
        "session": session,
        "username": "bench",
        "date": datetime.now(timezone.utc).isoformat(),
        "version": "5.3",
    }
    return {
        "header": header,
        "parent_header": {},
        "metadata": metadata or {},
        "content": content,
        "channel": "shell",
        "buffers": [],
    }


async def request_states(socket: Any, session: str, n: int) -> float:
    """ms from the control comm's open to its ``update_states`` reply, parsed."""
    comm_id = uuid.uuid4().hex
    started = time.perf_counter()
    await socket.send(
        json.dumps(
            _message(
                session,
                "comm_open",
                {"comm_id": comm_id, "target_name": "jupyter.widget.control", "data": {}},
                {"version": "1.0.0"},  # the control comm's protocol, read from the message's
            )
        )
    )
    await socket.send(
        json.dumps(
            _message(
                session, "comm_msg", {"comm_id": comm_id, "data": {"method": "request_states"}}
            )
        )
    )
    while True:
        frame = await asyncio.wait_for(socket.recv(), STEP_TIMEOUT)
        if isinstance(frame, bytes):
            continue
        msg = json.loads(frame)
        content = msg.get("content", {})
        if msg["header"]["msg_type"] == "comm_msg" and content.get("comm_id") == comm_id:
            elapsed = (time.perf_counter() - started) * 1000
            states = content["data"]["states"]
            assert len(states) >= 3 * n, f"{len(states)} states for {n} sliders"
            await socket.send(
                json.dumps(_message(session, "comm_close", {"comm_id": comm_id, "data": {}}))
            )
            return elapsed


async def run(n: int, runs: int) -> None:
    server = await Server.start({})
    try:
        await server.execute(BOARD_CODE.format(n=n))
        board_id = await server.evaluate("board.model_id")
        ws_url = f"ws{server.url[4:]}api/kernels/{server.kernel_id}/channels?token={server.token}"
        anchor = []
        async with websockets.connect(ws_url, max_size=None) as socket:
            session = uuid.uuid4().hex
            await request_states(socket, session, n)  # warm-up
            for _ in range(runs):
                anchor.append(await request_states(socket, session, n))
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                await page_render(browser, server, board_id, n)  # warm-up (bundle cached)
                unpublished = [await page_render(browser, server, board_id, n) for _ in range(runs)]
                await server.execute(PUBLISH_CODE)
                published = [await page_render(browser, server, "board", n) for _ in range(runs)]
            finally:
                await browser.close()
    finally:
        server.stop()
    base = statistics.median(anchor)

    def row(name: str, times: list[tuple[float, float]]) -> str:
        total = statistics.median(t for t, _ in times)
        loaded = statistics.median(c for _, c in times)
        return f"| {name} | {total:.0f} | {loaded:.0f} | {total / base:.1f}x |"

    print(
        f"{n} IntSliders ({3 * n} models), median of {runs} runs, ms\n\n"
        "| path | first render | of which connect + load | vs request_states over /channels |\n"
        "|---|---|---|---|\n"
        f"| anchor: request_states over /api/kernels/{{id}}/channels (no rendering) | {base:.1f} | | 1x |\n"
        + row("page, published (the publisher's state)", published)
        + "\n"
        + row("page, not published (request_states on the control comm)", unpublished)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.widgets", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--widgets", type=int, default=100, help="sliders on the board (100)")
    parser.add_argument("--runs", type=int, default=RUNS, help=f"runs of each path ({RUNS})")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    asyncio.run(run(args.widgets, args.runs))
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
