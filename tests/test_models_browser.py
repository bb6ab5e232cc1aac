"""Three Chromium pages edit one ``transports`` model served by the kernel through the bridge
(``jupyter_transports.models``), one page's connection cut and resumed meanwhile: all three and
the kernel end with the same state."""

from __future__ import annotations

from pathlib import Path

import pytest
import transports

from .proxies import CuttingProxy, proxied
from .test_browser import WAIT_MS, chromium, new_page
from .test_browser import pytestmark as browser_marks
from .test_models import MODELS

# transports' own browser client (its ES module and its wasm), served to the pages by the test
CLIENT_DIR = Path(transports.__file__).parent / "extension"
CLIENT_FILES = {
    "index.js": (CLIENT_DIR / "cdn" / "index.js", "text/javascript"),
    "transports_bg.wasm": (CLIENT_DIR / "pkg" / "transports_bg.wasm", "application/wasm"),
}

PAGE_SCRIPT = """async ([kernelId, token, base]) => {
    const { Client, wasm } = await import(base + "tp/index.js");
    await wasm.default({ module_or_path: base + "tp/transports_bg.wasm" });
    const { Comm } = await import(base + "static/jupyter_transports/transports.js");
    const client = new Client("json");
    const comm = await Comm.open({ kernelId, target: "board", token, baseUrl: base });
    comm.addEventListener("message", ({ data }) => client.recv(data));
    client.attach((wire) => comm.send(wire));
    window.board = { client, comm };
}"""


@pytest.fixture
def proxy(server_url, jp_asyncio_loop):
    yield from proxied(server_url, jp_asyncio_loop, CuttingProxy)


@pytest.mark.parametrize("_", [pytest.param(None, marks=browser_marks)])
async def test_three_pages_edit_one_model_and_converge(_, kernel, token, proxy):
    cutter, base = proxy
    await kernel.execute(MODELS)
    board_id = await kernel.evaluate("board_id")
    async with chromium() as browser:
        context = await browser.new_context()

        async def serve_client(route) -> None:
            path, content_type = CLIENT_FILES[route.request.url.rsplit("/", 1)[-1]]
            await route.fulfill(body=path.read_bytes(), content_type=content_type)

        await context.route("**/tp/*", serve_client)
        pages = []
        for _ in range(3):
            page = await new_page(context, f"{base}static/jupyter_transports/transports.d.ts")
            await page.evaluate(PAGE_SCRIPT, [kernel.id, token, base])
            await page.wait_for_function(f"window.board.client.value({board_id}) != null")
            pages.append(page)

        async def propose(page, field: str, value) -> None:
            await page.evaluate(
                """([id, field, value]) => {
                    const { client } = window.board;
                    const current = client.value(id);
                    client.propose(id, { Map: { ...current.Map, [field]: value } });
                }""",
                [board_id, field, value],
            )

        async def all_see(title: str, count: int) -> None:
            for page in pages:
                await page.wait_for_function(
                    """([id, title, count]) => {
                        const value = window.board.client.value(id);
                        return value.Map.title.Str === title && value.Map.count.Int === count;
                    }""",
                    arg=[board_id, title, count],
                    timeout=WAIT_MS,
                )

        # a proposal carries the whole model: each page edits what it has seen, as a user would
        await propose(pages[0], "title", {"Str": "first"})
        await all_see("first", 0)
        assert cutter.cut()  # every page's connection drops without a close frame
        await propose(pages[2], "count", {"Int": 2})  # sent while it reconnects: it waits
        await all_see("first", 2)
        await propose(pages[1], "title", {"Str": "second"})
        await all_see("second", 2)
        assert [await p.evaluate("window.board.comm.reconnects") for p in pages] == [1, 1, 1]
    assert await kernel.evaluate("[board.title, board.count]") == ["second", 2]
