"""Durable sessions on the wire (contract v2), with a raw WebSocket client of the test's own."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from jupyter_transports.client import comm_url

from .conftest import TIMEOUT

SLOW = 0.3  # seconds: how long the tests wait for something that must not happen


def new_session_id() -> str:
    return secrets.token_urlsafe(16)


class Raw:
    """One session connection speaking the v2 frames by hand."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def recv(self) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))  # type: ignore[no-any-return]

    async def message(self) -> dict[str, Any]:
        """The next comm message, past acknowledgements."""
        while "seq" not in (frame := await self.recv()):
            pass
        return frame

    async def send(self, **fields: Any) -> None:
        await self.ws.send(json.dumps(fields))

    def drop(self) -> None:
        """Cut the TCP connection, with no close frame."""
        self.ws.transport.abort()

    async def close_code(self) -> int | None:
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(self.ws.recv(), TIMEOUT)
        return self.ws.close_code


@pytest.fixture
def connect(server_url, token, kernel):
    sockets: list[ClientConnection] = []

    async def inner(*path: str, **query: Any) -> Raw:
        url = comm_url(server_url, kernel.id, *path, token=token, **query)
        ws = await websockets.connect(url, max_size=None)
        sockets.append(ws)
        return Raw(ws)

    yield inner
    for ws in sockets:
        ws.transport.abort()


async def test_a_new_session_numbers_its_messages_and_acknowledges(connect):
    sid = new_session_id()
    raw = await connect("targets", "echo", session_key=sid)
    hello = await raw.recv()
    assert hello["session"] == "new" and hello["ack"] == 0
    assert set(hello) == {"session", "client", "comm_id", "ack", "window"}
    assert hello["window"] == 16 * 1024 * 1024
    for n in (1, 2, 3):
        await raw.send(seq=n, data={"n": n})
    got = [await raw.recv() for _ in range(4)]  # three echoes and an ack, the ack within 100 ms
    assert [g["data"] for g in got if "seq" in g] == [{"n": 1}, {"n": 2}, {"n": 3}]
    seqs = [g["seq"] for g in got if "seq" in g]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert {"ack": 3} in got


async def test_a_dropped_connection_resumes_with_nothing_lost_or_repeated(connect, kernel):
    sid = new_session_id()
    raw = await connect("targets", "echo", session_key=sid)
    hello = await raw.recv()
    await raw.send(seq=1, data="one")
    first = await raw.recv()
    assert first["data"] == "one"
    raw.drop()
    await asyncio.sleep(SLOW)  # the server notices the drop
    # the kernel keeps the comm; what the client sent twice reaches it once
    again = await connect("targets", "echo", session_key=sid, last=first["seq"])
    resumed = await again.recv()
    assert resumed == {**hello, "session": "resumed", "ack": 1}
    await again.send(seq=1, data="one")  # a resend: dropped
    await again.send(seq=2, data="two")
    frames = [await again.recv() for _ in range(2)]
    assert [f.get("data") for f in frames if "seq" in f] == ["two"]
    assert len(await kernel.comm_ids("echo")) == 1


async def away_while_the_kernel_sends(connect, kernel, count: int, size: int = 0) -> str:
    """A session on a new "flood" comm whose connection drops; then the kernel sends ``count``
    messages ``{"i": i, "pad": "x" * size}`` on the comm, which lingers. Its key."""
    sid = new_session_id()
    raw = await connect("targets", "flood", session_key=sid)
    await raw.recv()
    await kernel.opened_comm("flood")
    raw.drop()
    await asyncio.sleep(SLOW)
    await kernel.execute(
        "from comm import get_comm_manager\n"
        "for _c in get_comm_manager().comms.values():\n"
        f"    [_c.send({{'i': i, 'pad': 'x' * {size}}}) for i in range({count})]"
        " if _c.target_name == 'flood' else None"
    )
    return sid


async def test_messages_sent_while_away_are_replayed_in_order(connect, kernel):
    sid = await away_while_the_kernel_sends(connect, kernel, 50)
    again = await connect("targets", "flood", session_key=sid, last=0)
    assert (await again.recv())["session"] == "resumed"
    replayed = [(await again.recv())["data"]["i"] for _ in range(50)]
    assert replayed == list(range(50))


async def test_a_clean_close_ends_the_session_and_its_comm(connect, kernel):
    sid = new_session_id()
    raw = await connect("targets", "echo", session_key=sid)
    await raw.recv()
    await kernel.opened_comm("echo")
    await raw.ws.close()
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while await kernel.comm_ids("echo"):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    again = await connect("targets", "echo", session_key=sid, last=0)
    hello = await again.recv()
    assert (hello["session"], hello["reason"]) == ("reset", "closed")


async def test_an_unknown_session_with_history_is_reset(connect):
    raw = await connect("targets", "echo", session_key=new_session_id(), last=7)
    hello = await raw.recv()
    assert (hello["session"], hello["reason"], hello["ack"]) == ("reset", "unknown", 0)
    await raw.send(seq=1, data="still works")
    assert (await raw.recv())["data"] == "still works"


async def test_a_newer_connection_replaces_the_older(connect):
    sid = new_session_id()
    old = await connect("targets", "echo", session_key=sid)
    await old.recv()
    new = await connect("targets", "echo", session_key=sid, last=0)
    assert (await new.recv())["session"] == "resumed"
    assert await old.close_code() == 4409
    await new.send(seq=1, data="x")
    assert (await new.recv())["data"] == "x"


async def test_a_number_that_skips_one_closes_1002(connect):
    raw = await connect("targets", "echo", session_key=new_session_id())
    await raw.recv()
    await raw.send(seq=2, data="skipped one")
    assert await raw.close_code() == 1002


@pytest.mark.parametrize(
    "query",
    [
        {"session_key": "short"},
        {"session_key": "x" * 65},
        {"session_key": "a" * 20, "last": "-1"},
        {"session_key": "a" * 20, "frames": "text"},
    ],
)
async def test_bad_session_parameters_are_400(connect, query):
    with pytest.raises(websockets.InvalidStatus) as info:
        await connect("targets", "echo", **query)
    assert info.value.response.status_code == 400


@pytest.mark.parametrize("transports_config", [{"session_timeout": 0.3}])
async def test_a_session_nobody_resumes_expires_and_closes_its_comm(connect, kernel):
    sid = new_session_id()
    raw = await connect("targets", "echo", session_key=sid)
    await raw.recv()
    await kernel.opened_comm("echo")
    raw.drop()
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while await kernel.comm_ids("echo"):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    again = await connect("targets", "echo", session_key=sid, last=1)
    hello = await again.recv()
    assert (hello["session"], hello["reason"]) == ("reset", "expired")
    await again.send(seq=1, data="after")
    assert (await again.recv())["data"] == "after"


@pytest.mark.parametrize("transports_config", [{"session_window_bytes": 10_000}])
async def test_a_backlog_over_the_window_resumes_as_overflow(connect, kernel):
    sid = await away_while_the_kernel_sends(connect, kernel, 50, 1000)  # 50 kB > 10 kB
    again = await connect("targets", "flood", session_key=sid, last=0)
    hello = await again.recv()
    assert (hello["session"], hello["reason"]) == ("reset", "overflow")
    await again.send(seq=1, data={"count": 1, "size": 1})
    assert (await again.recv())["data"]["i"] == 0  # the same session, live again


async def test_the_session_id_never_reaches_the_kernel_nor_the_log(connect, caplog):
    sid = new_session_id()
    raw = await connect("targets", "whoami", session_key=sid, color="blue")
    await raw.recv()  # the hello
    opened = await raw.recv()
    assert opened["data"]["metadata"]["transports"]["query"] == {"color": "blue"}
    raw.drop()
    again = await connect("targets", "whoami", session_key=sid, last=opened["seq"])
    assert (await again.recv())["session"] == "resumed"
    assert sid not in json.dumps(opened)
    assert sid not in caplog.text


async def test_a_comm_that_closed_while_away_is_told_after_what_was_waiting(connect, kernel):
    owner = await connect("targets", "echo", session_key=new_session_id())
    comm_id = (await owner.recv())["comm_id"]
    sid = new_session_id()
    watcher = await connect("comms", comm_id, session_key=sid)
    await watcher.recv()
    await owner.send(seq=1, data="before")
    assert (await watcher.message())["data"] == "before"  # the echo reaches both
    watcher.drop()
    await asyncio.sleep(SLOW)
    await owner.send(seq=2, data="while away")
    assert (await owner.message())["data"] == "before"
    assert (await owner.message())["data"] == "while away"
    await owner.ws.close()  # the owner leaves: its comm closes
    again = await connect("comms", comm_id, session_key=sid, last=1)
    assert (await again.recv())["session"] == "resumed"
    assert (await again.message())["data"] == "while away"
    assert await again.close_code() == 1000
    assert again.ws.close_reason == "comm closed by the client that opened it"


async def test_secrets_stay_out_of_the_log_of_a_refused_handshake(connect, token, caplog):
    sid = new_session_id()
    with pytest.raises(websockets.InvalidStatus):
        await connect("targets", "echo", session_key=sid, last="-1")
    assert "400" in caplog.text and "last must be an integer" in caplog.text
    assert sid not in caplog.text and token not in caplog.text


async def test_a_kernel_shut_down_while_away_is_told_after_what_was_waiting(
    connect, kernel, jp_serverapp
):
    sid = new_session_id()
    raw = await connect("targets", "echo", session_key=sid)
    await raw.recv()
    await raw.send(seq=1, data="x")
    first = await raw.message()
    await raw.send(seq=2, data="y")
    await asyncio.sleep(SLOW)  # the echo of "y" waits in the window
    raw.drop()
    await asyncio.sleep(SLOW)
    await jp_serverapp.kernel_manager.shutdown_kernel(kernel.id)
    again = await connect("targets", "echo", session_key=sid, last=first["seq"])
    assert (await again.recv())["session"] == "resumed"
    assert (await again.message())["data"] == "y"
    assert await again.close_code() == 1001
