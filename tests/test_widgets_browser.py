"""Kernel widgets in plain pages (issue 15): ipywidgets and anywidgets rendered in Chromium by the
bundle in ``js/`` (``static/jupyter_transports/widgets/widgets.js``), one multiplexed socket per
page, from a page on another allowed origin, with a real server and a real ipykernel.

Skipped without Playwright or Chromium, as the other browser tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from traitlets.config import Config

from . import test_browser
from .test_browser import ARTIFACTS, ORIGIN_PAGE, chromium, new_page, serve_origin
from .test_presence import EditorsOnly, NamedUsers, until

pytestmark = test_browser.pytestmark
origin_socket = test_browser.origin_socket  # fixtures: a second web server, for another origin
allowed_origin = test_browser.allowed_origin

BUNDLE = "static/jupyter_transports/widgets/widgets.js"
DEMO_KERNEL = Path(__file__).parents[1] / "demo" / "widgets_kernel.py"
DEMO_PAGE = "static/jupyter_transports/demo/widgets.html"

KERNEL = """
import anywidget, traitlets
import ipywidgets as w
from jupyter_transports.kernel import publish

class Counter(anywidget.AnyWidget):
    _esm = '''
    export default {
      render({ model, el }) {
        const button = document.createElement("button");
        button.className = "counter";
        const show = () => { button.textContent = `${model.get("value")} clicks`; };
        button.onclick = () => { model.set("value", model.get("value") + 1); model.save_changes(); };
        model.on("change:value", show);
        show();
        el.append(button);
      },
    };
    '''
    value = traitlets.Int(0).tag(sync=True)

slider = w.IntSlider(value=3, min=0, max=10, description="x")
out = w.Output()
counter = Counter()
publish(slider, "slider")
publish(out, "out")
publish(counter, "counter")
"""

# Connects a page to the kernel's widgets and renders `refs` into elements of those ids.
RENDER = """async ([module, server, kernelId, token, refs, query]) => {
    const Widgets = await import(module);
    const widgets = await Widgets.connect({ server, kernelId, token, query });
    window.widgets = widgets;
    const started = performance.now();
    for (const ref of refs) {
        const element = document.createElement("div");
        element.id = ref;
        document.body.append(element);
        await widgets.render(element, ref);
    }
    return performance.now() - started;
}"""

# `#slider`'s value as the page shows it (the readout) and whether its slider is disabled
READOUT = "document.querySelector('#slider .widget-readout').textContent"
DISABLED = "document.querySelector('#slider .noUi-target').hasAttribute('disabled')"


@pytest.fixture
def jp_server_config(allowed_origin: str | None) -> Config:
    """The test server, with an allowed origin when parametrized, and two users: the token's
    holder named by ``?as=``, ``bob`` only reads (``test_presence``'s)."""
    server: dict[str, Any] = {
        "jpserver_extensions": {"jupyter_transports": True},
        "identity_provider_class": NamedUsers,
        "authorizer_class": EditorsOnly,
    }
    if allowed_origin is not None:
        server["allow_origin"] = allowed_origin
    return Config({"ServerApp": server})


async def open_page(context, url: str) -> Any:
    """A page that records the WebSockets it opens (``page.sockets``)."""
    page = await new_page(context)
    page.sockets = []  # type: ignore[attr-defined]
    page.on("websocket", lambda socket: page.sockets.append(socket.url))  # type: ignore[attr-defined]
    await page.goto(url)
    return page


async def render(page, server_url, kernel, token, refs, **query) -> float:
    """Connect ``page`` and render ``refs``; how long the renders took (ms)."""
    args = [f"{server_url}{BUNDLE}", server_url, kernel.id, token, refs, query]
    try:
        return await page.evaluate(RENDER, args)
    except Exception as e:
        raise AssertionError(f"render failed: {e}\n{page.console_messages}") from e


async def kernel_value(kernel, expression: str, expected) -> None:
    async def reached() -> bool:
        return await kernel.evaluate(expression) == expected

    await until(reached, f"{expression} never became {expected!r}")


@pytest.mark.parametrize("allowed_origin", [True], indirect=True)
async def test_two_pages_on_another_origin_follow_the_kernel_and_each_other(
    origin_socket, kernel, server_url, token
):
    await kernel.execute(KERNEL)
    server = await serve_origin(origin_socket, ORIGIN_PAGE)
    try:
        async with chromium() as browser:
            context = await browser.new_context(viewport={"width": 900, "height": 500})
            pages = [await open_page(context, f"{origin_socket[1]}/page.html") for _ in range(2)]
            for page in pages:
                await render(page, server_url, kernel, token, ["slider", "out", "counter"])
                await page.wait_for_function(f"{READOUT} === '3'")
                assert not await page.evaluate(DISABLED)
            first, second = pages

            # keys on the first page's slider: the kernel and the second page follow
            await first.focus("#slider .noUi-handle")
            await first.keyboard.press("ArrowRight")
            await first.keyboard.press("ArrowRight")
            await kernel_value(kernel, "slider.value", 5)
            await second.wait_for_function(f"{READOUT} === '5'")

            # dragging the second page's slider to its right end
            handle = await second.locator("#slider .noUi-handle").bounding_box()
            track = await second.locator("#slider .noUi-target").bounding_box()
            y = handle["y"] + handle["height"] / 2
            await second.mouse.move(handle["x"] + handle["width"] / 2, y)
            await second.mouse.down()
            await second.mouse.move(track["x"] + track["width"] + 40, y, steps=8)
            await second.mouse.up()
            await kernel_value(kernel, "slider.value", 10)
            await first.wait_for_function(f"{READOUT} === '10'")

            # the kernel moves it on both pages
            await kernel.execute("slider.value = 1")
            for page in pages:
                await page.wait_for_function(f"{READOUT} === '1'")

            # an anywidget (its ES module from the kernel): clicks count in the kernel
            await second.click("#counter button.counter")
            await second.click("#counter button.counter")
            await kernel_value(kernel, "counter.value", 2)
            await first.wait_for_function(
                "document.querySelector('#counter button.counter').textContent === '2 clicks'"
            )

            # an Output widget shows what the kernel prints into it
            await kernel.execute("with out:\n    print('hello from the kernel')")
            for page in pages:
                await page.wait_for_function(
                    "document.querySelector('#out').innerText.includes('hello from the kernel')"
                )

            ARTIFACTS.mkdir(exist_ok=True)
            for i, page in enumerate(pages, 1):
                await page.screenshot(path=str(ARTIFACTS / f"widgets_sync_page{i}.png"))
            assert [len(page.sockets) for page in pages] == [1, 1]
            assert all("/comms?" in page.sockets[0] for page in pages)
            assert not any("error" in m.lower() for p in pages for m in p.console_messages)
    finally:
        server.stop()


async def test_a_read_only_user_sees_the_widgets_live_but_disabled(kernel, server_url, token):
    await kernel.execute(KERNEL)
    async with chromium() as browser:
        context = await browser.new_context()
        # any page of the server's origin (the bundle needs none of its own)
        page = await open_page(context, f"{server_url}{BUNDLE}")
        await render(page, server_url, kernel, token, ["slider", "counter"], **{"as": "bob"})
        assert await page.evaluate("window.widgets.canSend") is False
        await page.wait_for_function(f"{READOUT} === '3' && {DISABLED}")
        assert await page.evaluate("document.getElementById('slider').inert")

        await kernel.execute("slider.value = 8")  # live all the same
        await page.wait_for_function(f"{READOUT} === '8'")
        await kernel.execute("slider.disabled = False")  # the kernel cannot enable it here
        await kernel.execute("slider.value = 9")
        await page.wait_for_function(f"{READOUT} === '9' && {DISABLED}")

        # what would be a change on an editor's page sends nothing: the socket stays open
        await page.evaluate(
            """() => widgets.manager.get_model(widgets.names.counter).then((model) => {
                   model.set("value", 40);
                   model.save_changes();
               })"""
        )
        await kernel.execute("slider.value = 2")
        await page.wait_for_function(f"{READOUT} === '2'")
        assert await page.evaluate("window.widgets.status") == "open"
        assert await kernel.evaluate("counter.value") == 0
        assert len(page.sockets) == 1


DASHBOARD = """
import ipywidgets as w
sliders = [w.IntSlider(value=i, description=f"s{i}") for i in range(100)]
board = w.VBox(sliders)
"""


async def test_a_dashboard_of_100_widgets_renders_over_one_socket(kernel, server_url, token):
    """Not published: the page loads the kernel's models with request_states, as JupyterLab."""
    await kernel.execute(DASHBOARD)
    board = await kernel.evaluate("board.model_id")
    async with chromium() as browser:
        page = await open_page(await browser.new_context(), f"{server_url}{BUNDLE}")
        await render(page, server_url, kernel, token, [board])
        assert await page.locator(".widget-slider").count() == 100
        readouts = await page.locator(".widget-readout").all_inner_texts()
        assert readouts == [str(i) for i in range(100)]
        await kernel.execute("sliders[42].value = 99")
        await page.wait_for_function(
            "document.querySelectorAll('.widget-readout')[42].textContent === '99'"
        )
        assert len(page.sockets) == 1, page.sockets


async def test_the_demo_widgets_page(kernel, server_url, token):
    await kernel.execute(DEMO_KERNEL.read_text())
    url = f"{server_url}{DEMO_PAGE}?{urlencode({'kernel': kernel.id, 'token': token})}"
    async with chromium() as browser:
        context = await browser.new_context(viewport={"width": 1100, "height": 760})
        page = await open_page(context, url)
        try:
            await page.wait_for_function("document.body.dataset.rendered === 'true'")
        except Exception as e:
            notice = await page.text_content("#notice")
            raise AssertionError(f"{notice}\n{page.console_messages}") from e
        await page.select_option("#dashboard select", "triangle")
        await kernel_value(kernel, "shape.value", "triangle")
        await page.wait_for_function(
            "document.querySelector('#dashboard').innerText.includes('shape → triangle')"
        )
        await page.click("#counter button")
        await kernel_value(kernel, "counter.value", 1)
        await kernel.execute("amplitude.value = 90")
        await page.wait_for_function(
            "document.querySelector('#dashboard .widget-readout').textContent === '90'"
        )
        # the kernel's SVG plot, as an output area shows SVG (an image)
        assert await page.locator("#dashboard img[src^='data:image/svg+xml']").count() == 1
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "widgets_demo.png"), full_page=True)
        assert len(page.sockets) == 1


async def test_a_page_connected_before_any_widget_renders_those_made_later(
    kernel, server_url, token, jp_serverapp
):
    """The kernel has not imported ipywidgets: it refuses the control comm, and the page loads
    nothing; a widget made later reaches the page as an ``open`` frame of the followed target.
    When the kernel goes, the views stay, shown disconnected."""
    async with chromium() as browser:
        page = await open_page(await browser.new_context(), f"{server_url}{BUNDLE}")
        await render(page, server_url, kernel, token, [])
        await kernel.execute("import ipywidgets as w\nlater = w.IntSlider(value=4)")
        later = await kernel.evaluate("later.model_id")
        await page.evaluate(
            """async (id) => {
                   const element = document.createElement("div");
                   element.id = "slider";
                   document.body.append(element);
                   await widgets.render(element, id);
               }""",
            later,
        )
        await page.wait_for_function(f"{READOUT} === '4'")
        await page.focus("#slider .noUi-handle")
        await page.keyboard.press("ArrowLeft")
        await kernel_value(kernel, "later.value", 3)
        assert len(page.sockets) == 1

        await jp_serverapp.kernel_manager.shutdown_kernel(kernel.id)
        await page.wait_for_function(
            "widgets.status === 'closed' && widgets.closeCode === 1001"
            " && document.querySelector('#slider .jupyter-widgets-disconnected') !== null"
        )
        assert await page.evaluate(READOUT) == "3"
