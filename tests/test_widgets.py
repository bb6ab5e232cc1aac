"""``jupyter_transports.widgets`` in a real kernel: ``publish`` greets each page that arrives on
its comm, and it alone, with the names and every widget's state; ``with out: print(...)`` fills
an Output widget's outputs in the kernel (pages of the bridge never see iopub)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any
from urllib.parse import urlencode

import pytest
import websockets

from jupyter_transports.framing import unpack_binary
from jupyter_transports.widgets import PUBLISHER_TARGET

from .conftest import TIMEOUT
from .test_presence import TWO_USERS

WIDGET_TARGET = "jupyter.widget"

PUBLISHED = """
import ipywidgets as w
from jupyter_transports.kernel import publish

slider = w.IntSlider(value=5, description="x")
publish(slider, "main")
"""


class Page:
    """A multiplexed socket that follows the widget and publisher targets, as a page's does."""

    def __init__(self, socket: Any, hello: dict[str, Any]) -> None:
        self.socket = socket
        self.hello = hello
        [self.publisher] = [
            c["comm_id"] for c in hello["comms"] if c["target_name"] == PUBLISHER_TARGET
        ]

    async def frame(self) -> dict[str, Any]:
        data = await asyncio.wait_for(self.socket.recv(), TIMEOUT)
        if isinstance(data, str):
            return json.loads(data)
        head, _buffers = unpack_binary(data)
        return json.loads(bytes(head))

    async def from_publisher(self) -> dict[str, Any]:
        """The next message on the publisher comm (widgets' own frames are skipped)."""
        while True:
            frame = await self.frame()
            if frame.get("comm_id") == self.publisher and frame["type"] == "msg":
                return frame["data"]


@pytest.fixture
def page(server_url, token, kernel, jp_asyncio_loop):
    sockets = []

    async def connect(**query: str) -> Page:
        params = [("follow", WIDGET_TARGET), ("follow", PUBLISHER_TARGET), ("token", token)]
        url = (
            f"ws{server_url[4:]}api/transports/kernels/{kernel.id}/comms?"
            f"{urlencode([*params, *query.items()])}"
        )
        socket = await websockets.connect(url, max_size=None, open_timeout=TIMEOUT)
        sockets.append(socket)
        hello = json.loads(await asyncio.wait_for(socket.recv(), TIMEOUT))
        assert hello["type"] == "hello", hello
        return Page(socket, hello)

    yield connect
    for socket in sockets:
        jp_asyncio_loop.run_until_complete(socket.close())


@pytest.mark.parametrize("server_config", [TWO_USERS])
async def test_publish_greets_each_page_alone_with_the_names_and_every_widgets_state(kernel, page):
    await kernel.execute(PUBLISHED)
    slider_id = await kernel.evaluate("slider.model_id")

    first = await page()
    welcome = await first.from_publisher()
    assert welcome["names"] == {"main": slider_id}
    models = welcome["state"]["state"]
    assert models[slider_id]["model_name"] == "IntSliderModel"
    assert models[slider_id]["state"]["value"] == 5
    layout_id = models[slider_id]["state"]["layout"].removeprefix("IPY_MODEL_")
    assert models[layout_id]["model_name"] == "LayoutModel"  # what the slider refers to, too
    assert {c["comm_id"] for c in first.hello["comms"]} >= {slider_id, layout_id}

    observer = await page(**{"as": "bob"})  # may only read: it loads through the publisher too
    assert not observer.hello["can_send"]
    assert (await observer.from_publisher())["names"] == {"main": slider_id}

    # a name published later reaches every page; the first page got no second welcome
    await kernel.execute("button = w.Button(description='go'); publish(button, 'go')")
    button_id = await kernel.evaluate("button.model_id")
    for each in (first, observer):
        assert await each.from_publisher() == {"names": {"go": button_id}}


OUTPUT = """
import sys
import ipywidgets as w
from IPython.display import HTML, display
from jupyter_transports.widgets import publish

out, elsewhere = w.Output(), w.Output()
publish(w.VBox([w.Label("log"), out]), "log")
with out:
    print("hello from the kernel")
    print("and more")
    print("oops", file=sys.stderr)
    display(HTML("<b>bold</b>"))
with elsewhere:  # in no published tree: left to a notebook frontend, as ever
    print("not captured")
"""


async def test_with_output_print_fills_the_outputs_of_a_published_output_widget(kernel):
    await kernel.execute(OUTPUT)
    assert await kernel.evaluate("out.outputs") == [
        {"output_type": "stream", "name": "stdout", "text": "hello from the kernel\nand more\n"},
        {"output_type": "stream", "name": "stderr", "text": "oops\n"},
        {
            "output_type": "display_data",
            "data": {
                "text/html": "<b>bold</b>",
                "text/plain": "<IPython.core.display.HTML object>",
            },
            "metadata": {},
        },
    ]
    assert await kernel.evaluate("elsewhere.outputs") == []
    assert await kernel.evaluate("sys.stdout is sys.__stdout__ or type(sys.stdout).__name__") in (
        True,
        "OutStream",
    )
    await kernel.execute("out.clear_output(wait=True)\nwith out: print('fresh')")
    assert await kernel.evaluate("out.outputs") == [
        {"output_type": "stream", "name": "stdout", "text": "fresh\n"}
    ]


def test_the_kernel_module_imports_widgets_only_when_publish_is_called():
    code = (
        "import sys, jupyter_transports.kernel as k\n"
        "assert callable(k.publish)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'ipywidgets'"
        " or m == 'jupyter_transports.widgets'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, check=True
    )
    assert result.stdout.strip() == "[]"
