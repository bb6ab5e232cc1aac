"""Durable sessions on a multiplexed socket (contract v2): connections that drop and come back
on many comms at once, against a real server and kernel, with a third-party client."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import pytest
import websockets

from jupyter_transports.errors import CloseCode

from .conftest import Mux
from .test_mux import WIDGETS, until

TIMEOUT = 30


class Page:
    """A session client, frame by frame: numbers what it sends, remembers the last seq."""

    def __init__(self, connect: Any, key: str) -> None:
        self.connect, self.key = connect, key
        self.last = self.numbered = 0
        self.mux: Mux | None = None

    async def connection(self, **query: str) -> dict[str, Any]:
        self.mux = await self.connect(session_key=self.key, last=str(self.last), **query)
        return await self.mux.frame()

    async def recv(self) -> dict[str, Any]:
        assert self.mux is not None
        frame = await self.mux.frame()
        if "seq" in frame:
            assert frame["seq"] > self.last, "a frame repeated"
            self.last = frame["seq"]
        return frame

    async def send(self, frame: dict[str, Any], seq: int | None = None) -> None:
        assert self.mux is not None
        if seq is None:
            self.numbered += 1
            seq = self.numbered
        await self.mux.send({"seq": seq, **frame})

    def drop(self) -> None:
        """The network fails: no close frame."""
        assert self.mux is not None
        self.mux.socket.transport.abort()


async def routed(watcher: Mux, data: Any) -> None:
    """Return once ``watcher``, a plain socket on the same comms, got ``data``: the server has
    routed everything the kernel sent before it (to sessions away too)."""
    while (await watcher.frame()).get("data") != data:
        pass


@pytest.fixture
def page(mux):
    return lambda *follow: Page(lambda **q: mux(*follow, **q), secrets.token_urlsafe(16))


async def test_a_dropped_connection_resumes_every_comm_with_nothing_lost_or_repeated(
    kernel, page, mux
):
    await kernel.execute(WIDGETS)
    ids = await kernel.evaluate("make(3)")
    alice, watcher = page("t.widget"), await mux("t.widget")
    hello = await alice.connection()
    assert hello["session"] == "new" and hello["ack"] == 0 and hello["window"] > 0
    assert sorted(c["comm_id"] for c in hello["comms"]) == sorted(ids)
    await kernel.execute("for c in made.values(): c.send({'n': 0})")
    first = [await alice.recv() for _ in ids]
    assert [f["seq"] for f in first] == [1, 2, 3]
    alice.drop()
    # while away: messages on every comm, and a new comm
    await kernel.execute(
        "for c in made.values(): c.send({'n': 1})\n"
        "late = listen(create_comm(target_name='t.widget', data={}))\nlate.send('marker')"
    )
    await routed(watcher, "marker")
    hello = await alice.connection()
    assert hello["session"] == "resumed"
    missed = [await alice.recv() for _ in range(5)]
    assert [f["seq"] for f in missed] == [4, 5, 6, 7, 8]
    assert [f["type"] for f in missed] == ["msg", "msg", "msg", "open", "msg"]
    late = missed[3]["comm_id"]
    await kernel.execute("late.send('live')")
    assert await alice.recv() == {"seq": 9, "type": "msg", "comm_id": late, "data": "live"}


async def test_each_frame_reaches_the_kernel_once_across_a_drop(kernel, page):
    await kernel.execute(WIDGETS)
    [comm_id] = await kernel.evaluate("make(1)")
    alice = page("t.widget")
    await alice.connection()
    await alice.send({"type": "msg", "comm_id": comm_id, "data": 1})
    await alice.send({"type": "msg", "comm_id": comm_id, "data": 2})
    ack = await alice.recv()
    assert ack == {"type": "ack", "seq": 2}
    await alice.send({"type": "msg", "comm_id": comm_id, "data": 3})
    await until(kernel, "len(heard) == 3")
    alice.drop()
    hello = await alice.connection()
    assert hello["session"] == "resumed" and hello["ack"] == 3
    await alice.send({"type": "msg", "comm_id": comm_id, "data": 3}, seq=3)  # a resend: dropped
    await alice.send({"type": "msg", "comm_id": comm_id, "data": 4})
    await until(kernel, "len(heard) == 4")
    assert [data for _, data, _ in await kernel.evaluate("heard")] == [1, 2, 3, 4]
    client = f"{hello['client']}/{comm_id}"
    assert {sender for _, _, sender in await kernel.evaluate("heard")} == {client}


async def test_a_comm_the_session_opened_stays_open_while_it_is_away(kernel, page):
    alice = page()
    await alice.connection()
    await alice.send({"type": "open", "comm_id": "mine", "target_name": "echo", "data": {}})
    await alice.send({"type": "msg", "comm_id": "mine", "data": "before"})
    assert (await alice.recv())["data"] == "before"
    alice.drop()
    await asyncio.sleep(0.3)  # time for the server to see the drop (nothing to await)
    assert await kernel.comm_ids("echo") == ["mine"]
    assert (await alice.connection())["session"] == "resumed"
    await alice.send({"type": "msg", "comm_id": "mine", "data": "after"})
    frame = await alice.recv()
    while frame["type"] == "ack":
        frame = await alice.recv()
    assert frame["data"] == "after"


@pytest.mark.parametrize("transports_config", [{"session_timeout": 0.3}])
async def test_a_session_nobody_resumes_expires_and_its_comms_close(kernel, page):
    alice = page()
    await alice.connection()
    await alice.send({"type": "open", "comm_id": "mine", "target_name": "echo", "data": {}})
    await until(kernel, "bool(get_ipython().kernel.comm_manager.comms)")
    alice.drop()
    await until(kernel, "not get_ipython().kernel.comm_manager.comms")
    hello = await alice.connection()
    assert (hello["session"], hello["reason"]) == ("reset", "expired")


@pytest.mark.parametrize("transports_config", [{"session_window_bytes": 4000}])
async def test_more_than_the_window_while_away_is_a_reset_overflow_on_the_same_comms(
    kernel, page, mux
):
    await kernel.execute(WIDGETS)
    [comm_id] = await kernel.evaluate("make(1)")
    alice, watcher = page("t.widget"), await mux("t.widget")
    first = await alice.connection()
    alice.drop()
    await kernel.execute(
        f"for i in range(50): made[{comm_id!r}].send({{'pad': 'x' * 200}})\n"
        f"made[{comm_id!r}].send('marker')"
    )
    await routed(watcher, "marker")
    hello = await alice.connection()
    assert (hello["session"], hello["reason"]) == ("reset", "overflow")
    assert hello["client"] == first["client"] and hello["comms"] == first["comms"]
    await kernel.execute(f"made[{comm_id!r}].send('live')")
    frame = await alice.recv()
    while frame.get("data") != "live":
        frame = await alice.recv()
    assert frame["seq"] == 52


async def test_a_close_frame_ends_the_session_and_a_newer_connection_replaces_an_older(page):
    alice = page()
    await alice.connection()
    older = alice.mux
    assert (await alice.connection())["session"] == "resumed"
    with pytest.raises(websockets.ConnectionClosed) as info:
        await older.recv()
    assert info.value.rcvd.code == CloseCode.REPLACED
    await alice.mux.socket.close(1000)
    hello = await alice.connection()
    assert (hello["session"], hello["reason"]) == ("reset", "closed")


async def test_a_skipped_number_closes_with_1002(page):
    alice = page()
    await alice.connection()
    await alice.send({"type": "attach", "comm_id": "x"}, seq=2)
    with pytest.raises(websockets.ConnectionClosed) as info:
        await alice.recv()
    assert info.value.rcvd.code == CloseCode.PROTOCOL_ERROR


async def test_a_kernel_restart_ends_the_session(jp_serverapp, kernel, page):
    alice = page("t.widget")
    await alice.connection()
    await jp_serverapp.kernel_manager.restart_kernel(kernel.id)
    with pytest.raises(websockets.ConnectionClosed) as info:
        await alice.recv()
    assert info.value.rcvd.code == CloseCode.RESTARTING
    hello = await alice.connection()
    assert (hello["session"], hello["reason"]) == ("reset", "kernel_restarted")


async def test_session_frames_that_are_not_the_contracts_close_with_1007(page):
    alice = page()
    await alice.connection()
    await alice.mux.socket.send(json.dumps({"type": "msg", "comm_id": "a", "data": 1}))  # no seq
    with pytest.raises(websockets.ConnectionClosed) as info:
        await alice.recv()
    assert info.value.rcvd.code == CloseCode.BAD_FRAME
