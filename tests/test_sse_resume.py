"""Server-Sent Events that reconnect get what they missed, by ``Last-Event-ID`` (contract v2)."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from .conftest import TIMEOUT
from .proxies import CuttingProxy, proxied
from .test_browser import WAIT_MS, chromium, new_page
from .test_browser import pytestmark as browser_marks

SEND = (
    "from comm import get_comm_manager\n"
    "for _c in list(get_comm_manager().comms.values()):\n"
    "    [_c.send({{'i': i}}) for i in range({start}, {stop})] if _c.target_name == 'echo' else None"
)


async def open_events(server_url: str, token: str, path: str, last_id: str | None) -> Any:
    """An HTTP/1.1 event stream, read raw: (reader, writer)."""
    url = urlsplit(server_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    headers = [
        f"GET {url.path}{path} HTTP/1.1",
        f"Host: {url.netloc}",
        f"Authorization: token {token}",
        "Accept: text/event-stream",
    ]
    if last_id is not None:
        headers.append(f"Last-Event-ID: {last_id}")
    writer.write(("\r\n".join(headers) + "\r\n\r\n").encode())
    return reader, writer


async def next_event(reader: asyncio.StreamReader) -> dict[str, str]:
    """The next event's fields (chunked transfer framing and comments skipped)."""
    fields: dict[str, str] = {}
    while True:
        line = (await asyncio.wait_for(reader.readline(), TIMEOUT)).decode().rstrip("\r\n")
        if not line:
            if fields:
                return fields
            continue
        name, sep, value = line.partition(": ")
        if sep and name in ("event", "id", "data", "retry"):
            fields[name] = value


async def events_until(reader, count: int) -> list[dict[str, str]]:
    return [await next_event(reader) for _ in range(count)]


async def test_a_stream_that_comes_back_gets_what_it_missed(server_url, token, kernel, open_comm):
    socket = await open_comm("echo")
    comm_id = socket.comm_id
    path = f"api/transports/kernels/{kernel.id}/comms/{comm_id}/events"
    reader, writer = await open_events(server_url, token, path, None)
    opened = await next_event(reader)
    epoch, _, seq = opened["id"].partition("-")
    assert opened["event"] == "open" and epoch and seq.isdigit()
    await kernel.execute(SEND.format(start=0, stop=3))
    first = await events_until(reader, 3)
    assert [json.loads(e["data"]) for e in first] == [{"i": 0}, {"i": 1}, {"i": 2}]
    last = first[-1]["id"]
    writer.transport.abort()  # the stream drops; the kernel goes on
    await kernel.execute(SEND.format(start=3, stop=8))

    reader, writer = await open_events(server_url, token, path, last)
    reopened = await next_event(reader)
    assert reopened["event"] == "open" and "id" not in reopened  # Last-Event-ID stays
    missed = await events_until(reader, 5)
    assert [json.loads(e["data"])["i"] for e in missed] == [3, 4, 5, 6, 7]
    ids = [int(e["id"].partition("-")[2]) for e in first + missed]
    assert ids == sorted(ids) and len(set(ids)) == 8
    await kernel.execute(SEND.format(start=8, stop=9))
    assert json.loads((await next_event(reader))["data"]) == {"i": 8}  # then live
    writer.close()


@pytest.mark.parametrize("transports_config", [{"session_window_bytes": 50}])
async def test_a_stream_that_missed_too_much_is_told_reset(server_url, token, kernel, open_comm):
    socket = await open_comm("echo")
    path = f"api/transports/kernels/{kernel.id}/comms/{socket.comm_id}/events"
    reader, writer = await open_events(server_url, token, path, None)
    opened = await next_event(reader)
    writer.transport.abort()
    await kernel.execute(SEND.format(start=0, stop=20))  # about 180 bytes: over the window
    reader, writer = await open_events(server_url, token, path, opened["id"])
    assert (await next_event(reader))["event"] == "open"
    reset = await next_event(reader)
    assert reset["event"] == "reset" and json.loads(reset["data"]) == {"reason": "overflow"}
    await kernel.execute(SEND.format(start=20, stop=21))
    assert json.loads((await next_event(reader))["data"]) == {"i": 20}
    writer.close()


@pytest.mark.parametrize(
    ("last_id", "reason"),
    [("not-a-number", "unknown"), ("999999", "unknown"), ("0abc-3", "expired")],
)
async def test_an_unknown_last_event_id_is_told_reset(
    server_url, token, kernel, open_comm, last_id, reason
):
    socket = await open_comm("echo")
    path = f"api/transports/kernels/{kernel.id}/comms/{socket.comm_id}/events"
    reader, writer = await open_events(server_url, token, path, last_id)
    assert (await next_event(reader))["event"] == "open"
    reset = await next_event(reader)
    assert reset["event"] == "reset" and json.loads(reset["data"]) == {"reason": reason}
    writer.close()


@pytest.fixture
def proxy(server_url, jp_asyncio_loop):
    yield from proxied(server_url, jp_asyncio_loop, CuttingProxy)


@pytest.mark.parametrize("_", [pytest.param(None, marks=browser_marks)])
async def test_an_eventsource_in_chromium_resumes_after_cuts(_, token, kernel, open_comm, proxy):
    cutter, proxied = proxy
    socket = await open_comm("echo")
    events = f"{proxied}api/transports/kernels/{kernel.id}/comms/{socket.comm_id}/events"
    async with chromium() as browser:
        page = await new_page(  # any page of the server's origin without a strict CSP
            await browser.new_context(), f"{proxied}static/jupyter_transports/transports.d.ts"
        )
        await page.evaluate(
            """(url) => {
                window.received = []; window.opens = 0;
                const source = new EventSource(url);
                // the server's own "open" event (not the connection's, which shares its name)
                source.addEventListener("open", (e) => { if (e.data) window.opens += 1; });
                source.onmessage = (e) => window.received.push([e.lastEventId, JSON.parse(e.data).i]);
            }""",
            f"{events}?token={token}",
        )
        await page.wait_for_function("window.opens === 1")
        sent = 0
        for cut in range(2):
            await kernel.execute(SEND.format(start=sent, stop=sent + 10))
            sent += 10
            await page.wait_for_function(f"window.received.length === {sent}")
            assert cutter.cut()  # the EventSource reconnects by itself, with Last-Event-ID
            await kernel.execute(SEND.format(start=sent, stop=sent + 10))  # while it is away
            sent += 10
            await page.wait_for_function(f"window.opens === {cut + 2}", timeout=WAIT_MS)
        await page.wait_for_function(f"window.received.length === {sent}")
        received = await page.evaluate("window.received")
    assert [i for _, i in received] == list(range(sent))  # nothing lost, nothing twice
    seqs = [int(event_id.partition("-")[2]) for event_id, _ in received]
    assert seqs == sorted(seqs)
