"""Widgets in a page whose connection drops: the page's multiplexed socket is a durable session
(``js/src/socket.ts``), so it comes back by itself with nothing lost either way, in a real
Chromium against a real server and ipykernel.

A TCP proxy of the test's own stands between the page and the server. ``cut`` aborts the page's
connections (no close frame: the server keeps the session, the page sees 1006); while the proxy
is ``down`` it refuses every connection, so the page stays away, trying again, for as long as the
test wants; ``frozen`` swallows what either side writes, as a network that fails before anyone
notices.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from .proxies import CuttingProxy, proxied
from .test_browser import chromium, new_page
from .test_browser import pytestmark as browser_marks
from .test_presence import TWO_USERS, until
from .test_widgets_browser import BUNDLE, READOUT, kernel_value

pytestmark = browser_marks  # skipped without Playwright or Chromium


class Outage(CuttingProxy):
    """A proxy that, while ``down``, refuses every connection (accepts and aborts it)."""

    down = False
    refused = 0

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            self.refused += 1
            writer.transport.abort()
            return
        await super()._link(reader, writer)


@pytest.fixture
def outage(server_url, jp_asyncio_loop):
    """(an :class:`Outage` proxy to the server, the server's URL through it)"""
    yield from proxied(server_url, jp_asyncio_loop, Outage)


@pytest.fixture
def transports_app(jp_serverapp: Any) -> Any:
    return next(iter(jp_serverapp.extension_manager.extension_apps["jupyter_transports"]))


SLIDER = """
import ipywidgets as w
from jupyter_transports.kernel import publish

slider = w.IntSlider(value=3, min=0, max=100, description="x")
gone = w.Button(description="gone")
heard = []  # every value the slider took in the kernel, in order
slider.observe(lambda change: heard.append(change["new"]), "value")
"""
PUBLISH = 'publish(slider, "slider")\npublish(gone, "gone")'

# Connects through the proxy, records the statuses and the slider's values, renders `refs`
# (published names, or model ids) into elements of the given ids.
CONNECT = """async ([module, server, kernelId, token, refs, query]) => {
    const Widgets = await import(module);
    window.statuses = [];
    const widgets = await Widgets.connect({
        server, kernelId, token, query, onStatus: (status) => statuses.push(status),
    });
    window.widgets = widgets;
    for (const [id, ref] of Object.entries(refs)) {
        const element = document.createElement("div");
        element.id = id;
        document.body.append(element);
        await widgets.render(element, ref);
    }
    const slider = await widgets.manager.get_model(widgets.names.slider ?? refs.slider);
    window.values = [];
    slider.on("change:value", () => values.push(slider.get("value")));
}"""


async def connect(page, base: str, kernel, token: str, refs: dict[str, str], **query) -> None:
    args = [f"{base}{BUNDLE}", base, kernel.id, token, refs, query]
    try:
        await page.evaluate(CONNECT, args)
    except Exception as e:
        raise AssertionError(f"connect failed: {e}\n{page.console_messages}") from e


async def go_away(page, proxy: Outage) -> None:
    """Cut the page's connection and keep it away until it has tried to come back twice."""
    proxy.down = True
    assert proxy.cut()
    await page.wait_for_function("widgets.status === 'reconnecting'")
    before = proxy.refused

    async def tried_twice() -> bool:
        return proxy.refused >= before + 2

    await until(tried_twice, "the page never tried to come back")


def refused(message: str) -> bool:
    """The browser's own console message for a connection the proxy refused."""
    return message.startswith("WebSocket connection to")


async def test_a_dropped_page_comes_back_with_what_it_missed_and_what_it_sent(
    kernel, outage, token
):
    proxy, base = outage
    await kernel.execute(SLIDER + PUBLISH)
    async with chromium() as browser:
        page = await new_page(await browser.new_context(), f"{base}{BUNDLE}")
        urls: list[str] = []
        page.on("websocket", lambda socket: urls.append(socket.url))
        await connect(page, base, kernel, token, {"slider": "slider"})
        await page.wait_for_function(f"{READOUT} === '3'")

        # keys while the network fails unnoticed: the frames never reach the server
        proxy.frozen = True
        await page.focus("#slider .noUi-handle")
        for _ in range(3):
            await page.keyboard.press("ArrowRight")
        await page.wait_for_function(f"{READOUT} === '6'")
        await go_away(page, proxy)
        proxy.frozen = False

        # while the page is away: the kernel changes the slider, the page presses a key
        await kernel.execute("for v in (20, 21, 22): slider.value = v\nslider.description = 'y'")
        await page.keyboard.press("ArrowRight")  # 6 → 7 here, sent once the page is back
        proxy.down = False

        # back: the kernel's changes first (they came first), then the page's four keys
        await page.wait_for_function(
            f"widgets.status === 'open' && {READOUT} === '7'"
            " && document.querySelector('#slider .widget-label').textContent === 'y'"
        )
        await kernel_value(kernel, "slider.value", 7)
        await kernel.execute("slider.value = 9")  # and live from then on
        await page.wait_for_function(f"{READOUT} === '9'")
        assert await kernel.evaluate("heard") == [20, 21, 22, 4, 5, 6, 7, 9]
        assert await page.evaluate("values") == [4, 5, 6, 7, 20, 21, 22, 7, 9]
        assert await page.evaluate("statuses") == ["open", "reconnecting", "open"]
        assert await page.evaluate("[widgets.reconnects, widgets.resetReason]") == [1, None]
        # every attempt with the session's key (22 characters of URL-safe base64) and its last
        queries = [parse_qs(urlsplit(url).query) for url in urls]
        assert len({q["session_key"][0] for q in queries}) == 1
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", queries[0]["session_key"][0])
        assert queries[0]["last"] == ["0"] and int(queries[-1]["last"][0]) > 0


@pytest.mark.parametrize("transports_config", [{"session_window_bytes": 4096}])
@pytest.mark.parametrize(
    ("server_config", "published", "user"),
    [
        pytest.param({}, True, None, id="published"),
        pytest.param(TWO_USERS, True, "bob", id="published-read-only"),
        pytest.param({}, False, None, id="request_states"),
    ],
)
async def test_a_page_away_longer_than_the_window_gets_the_state_again(
    kernel, outage, token, published, user
):
    """``reset`` / ``overflow``: the same session, but frames were lost. The page asks for every
    model's state again: from the publisher (leaving its comm and joining again, for a new
    greeting; a read-only page can), or with request_states (a page that may send)."""
    proxy, base = outage
    await kernel.execute(SLIDER + (PUBLISH if published else ""))
    ids = await kernel.evaluate("{'slider': slider.model_id, 'gone': gone.model_id}")
    refs = {"slider": "slider", "gone": "gone"} if published else ids
    query = {"as": user} if user else {}
    async with chromium() as browser:
        page = await new_page(await browser.new_context(), f"{base}{BUNDLE}")
        await connect(page, base, kernel, token, refs, **query)
        await page.wait_for_function(f"{READOUT} === '3'")
        assert await page.locator("#gone button").count() == 1

        await go_away(page, proxy)
        # far more than the window while away; a widget made, another closed
        await kernel.execute(
            "for v in range(40, 90): slider.value = v\n"
            "late = w.IntSlider(value=42)\n"
            + ('publish(late, "late")\n' if published else "")
            + "gone.close()"
        )
        late = await kernel.evaluate("late.model_id")
        proxy.down = False

        await page.wait_for_function(
            f"widgets.status === 'open' && widgets.resetReason === 'overflow' && {READOUT} === '89'"
        )
        await page.wait_for_function(
            "([gone, late]) => !widgets.manager.has_model(gone) && widgets.manager.has_model(late)"
            " && document.querySelector('#gone button') === null",
            arg=[ids["gone"], late],
        )
        if published:
            assert await page.evaluate("widgets.names.late") == late
        await page.evaluate(
            """async (late) => {
                   const element = document.body.appendChild(document.createElement("div"));
                   element.id = "late";
                   await widgets.render(element, late);
               }""",
            late,
        )
        assert await page.text_content("#late .widget-readout") == "42"

        # live both ways again
        await kernel.execute("slider.value = 5")
        await page.wait_for_function(f"{READOUT} === '5'")
        if user is None:
            await page.focus("#slider .noUi-handle")
            await page.keyboard.press("ArrowRight")
            await kernel_value(kernel, "slider.value", 6)
        assert await page.evaluate("statuses") == ["open", "reconnecting", "open"]
        assert not [m for m in page.console_messages if "error" in m.lower() and not refused(m)]


@pytest.mark.parametrize("transports_config", [{"session_timeout": 0.5}])
async def test_a_page_away_longer_than_the_session_lives_closes(
    kernel, outage, token, transports_app
):
    """The session expired while the page was away (as after a kernel restart, the session is
    over: ``reset`` / ``expired``): the page closes, and says why, as on any close."""
    proxy, base = outage
    await kernel.execute(SLIDER + PUBLISH)
    async with chromium() as browser:
        page = await new_page(await browser.new_context(), f"{base}{BUNDLE}")
        await connect(page, base, kernel, token, {"slider": "slider"})
        await page.wait_for_function(f"{READOUT} === '3'")
        await go_away(page, proxy)

        async def expired() -> bool:
            return not transports_app.sessions.muxed

        await until(expired, "the session never expired")
        proxy.down = False
        await page.wait_for_function(
            "widgets.status === 'closed' && widgets.resetReason === 'expired'"
            " && document.querySelector('#slider .jupyter-widgets-disconnected') !== null"
        )
        assert await page.evaluate("[widgets.closeCode, widgets.closeReason]") == [
            1000,
            "the session could not resume (expired)",
        ]
        assert await page.evaluate("statuses") == ["open", "reconnecting", "closed"]
        # and the new session the reset began ended with the page's close (1000)
        await until(expired, "the page left a session behind")


async def test_a_page_that_closes_ends_its_session(kernel, outage, token, transports_app):
    _, base = outage
    await kernel.execute(SLIDER + PUBLISH)
    async with chromium() as browser:
        page = await new_page(await browser.new_context(), f"{base}{BUNDLE}")
        await connect(page, base, kernel, token, {"slider": "slider"})
        assert len(transports_app.sessions.muxed) == 1
        await page.evaluate("widgets.close()")
        assert await page.evaluate("[widgets.status, widgets.closeCode]") == ["closed", 1000]

        async def ended() -> bool:
            return not transports_app.sessions.muxed

        await until(ended, "the session lived on")
