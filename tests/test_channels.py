"""The channel adapters: their waits (with fake channels), a gateway's v1 wire, a local kernel's iopub."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time
from queue import Empty
from typing import Any

import pytest
from jupyter_server.services.kernels.connection.base import serialize_msg_to_ws_v1
from tornado.httpclient import AsyncHTTPClient

from jupyter_transports.channels.base import WAKEUP_GUARD, ClientChannels, next_msg
from jupyter_transports.channels.local import IOPUB_RCVBUF
from jupyter_transports.channels.wire import split_v1
from jupyter_transports.errors import KernelFault

from .conftest import TIMEOUT
from .test_sse_resume import next_event, open_events


class MissedWakeup:
    """A channel whose message arrives during a wait that never wakes for it, as a pyzmq
    asyncio socket's edge-triggered descriptor can make happen: only a new wait sees it."""

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self.waits = 0

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:
        self.waits += 1
        if self.message is not None:
            return self.message
        if timeout is None:
            await asyncio.Event().wait()  # the wake-up that never comes
        await asyncio.sleep(timeout)  # type: ignore[arg-type]
        raise Empty


async def test_a_message_whose_wakeup_was_missed_waits_one_slice_at_most():
    channel = MissedWakeup()
    waiting = asyncio.ensure_future(next_msg(channel))
    await asyncio.sleep(0)  # the first wait is under way
    channel.message = {"msg_type": "comm_info_reply"}
    assert await asyncio.wait_for(waiting, 3 * WAKEUP_GUARD) == channel.message
    assert channel.waits == 2


async def test_a_wait_with_a_timeout_ends_empty():
    channel = MissedWakeup()
    with pytest.raises(Empty):
        await asyncio.wait_for(next_msg(channel, 2.5 * WAKEUP_GUARD), 1)
    assert channel.waits == 3


class FakeClient:
    """A kernel client whose shell channel never answers."""

    def __init__(self) -> None:
        self.shell_channel = MissedWakeup()


async def test_failed_channels_fail_pending_requests():
    channels = ClientChannels(FakeClient())
    channels.send = lambda *args, **kwargs: "msg-1"  # type: ignore[method-assign]
    pending = asyncio.ensure_future(channels.request("comm_info_request", {}, timeout=5))
    await asyncio.sleep(0)
    channels._fail(KernelFault("gone"))
    with pytest.raises(KernelFault, match="gone"):
        await pending
    with pytest.raises(KernelFault, match="gone"):
        await channels.request("comm_info_request", {}, timeout=5)


# -- a gateway's v1 binary subprotocol -------------------------------------------------------


def test_v1_messages_split_into_views_of_jupyter_servers_own_layout():
    parts = [b'{"msg_type": "comm_msg"}', b"{}", b"{}", b'{"data": 1}', b"\x00" * 70_000, b""]
    message = serialize_msg_to_ws_v1(parts, "iopub")
    channel, views = split_v1(message)
    assert channel == "iopub"
    assert [bytes(view) for view in views] == parts
    assert all(view.obj is message for view in views)  # no copy of a buffer


@pytest.mark.parametrize(
    "message",
    [
        b"",
        (1).to_bytes(8, "little") + b"x" * 8,  # one offset: no channel
        (3).to_bytes(8, "little") + (99).to_bytes(8, "little") * 3,  # offsets past the end
        (3).to_bytes(8, "little")
        + b"".join(n.to_bytes(8, "little") for n in (32, 31, 32)),  # out of order
    ],
)
def test_malformed_v1_messages_are_refused(message):
    with pytest.raises((ValueError, struct.error)):
        split_v1(message)


async def test_a_local_kernels_iopub_has_room_for_bursts(open_comm, jp_serverapp, kernel):
    """The bridge's iopub socket holds iopub_high_water_mark messages (ZMQ's default, 1,000,
    lost parts of 4,000-message bursts in half the runs) and a TCP buffer of its own."""
    await open_comm("echo")
    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_transports"]
    socket = app.bridges.bridges[kernel.id].channels._iopub_socket
    assert socket.rcvhwm == app.iopub_high_water_mark == 100_000
    assert socket.rcvbuf == IOPUB_RCVBUF


NUMBERED_FLOOD = """
import pathlib, threading
from comm import get_comm_manager

def numbered_flood(comm, open_msg):
    # {"count": n, "size": s, "done": path}: n messages of s bytes, numbered as the transports
    # protocol says; the file at path is written once the kernel's iopub thread has put them all
    # on its socket. {"last": n}: message n, empty.
    def on_msg(msg):
        request = msg["content"]["data"]
        if "last" in request:
            n = request["last"]
            comm.send({"n": n, "pad": ""}, metadata={"transports": {"sent": n}})
            return
        for n in range(1, request["count"] + 1):
            comm.send({"n": n, "pad": "x" * request["size"]},
                      metadata={"transports": {"sent": n}})
        flushed = threading.Event()
        get_ipython().kernel.iopub_thread.schedule(flushed.set)
        flushed.wait(60)
        pathlib.Path(request["done"]).touch()
    comm.on_msg(on_msg)

get_comm_manager().register_target("numbered_flood", numbered_flood)
"""


@pytest.mark.parametrize(
    "transports_config", [{"iopub_high_water_mark": 100, "client_buffer_bytes": 512 * 2**20}]
)
@pytest.mark.parametrize("session", [False, True], ids=["plain", "session"])
async def test_numbered_messages_lost_before_the_server_are_counted(
    open_comm, kernel, server_url, token, tmp_path, session
):
    """A kernel that numbers its messages on a comm (metadata.transports.sent, as
    jupyter_transports.kernel's channels do) has every gap counted in the status and metrics,
    and told to the comm's sessions ("lost" frames) and event streams ("lost" events): here the
    server reads nothing until the kernel has published 180 MB, more than ZMQ and TCP hold
    between them, so ZMQ drops some."""
    await kernel.execute(NUMBERED_FLOOD)
    told: list[int] = []
    comm = await open_comm("numbered_flood", session=session, on_lost=told.append)
    if session:
        path = f"api/transports/kernels/{kernel.id}/comms/{comm.comm_id}/events"
        events, stream = await open_events(server_url, token, path, None)
        assert (await next_event(events))["event"] == "open"
    done = tmp_path / "flood-published"
    await comm.send({"count": 3000, "size": 60 * 1024, "done": str(done)})
    await asyncio.sleep(0.3)  # on its way to the kernel, which starts publishing
    deadline = time.monotonic() + TIMEOUT
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the server (this process) reads nothing until the kernel is done
    numbers = []
    with contextlib.suppress(TimeoutError):
        while True:  # what survived, until a quiet second
            numbers.append((await asyncio.wait_for(comm.recv(), 1)).data["n"])
    await comm.send({"last": 3001})  # behind an empty queue now: it arrives
    while not numbers or numbers[-1] < 3001:
        numbers.append((await asyncio.wait_for(comm.recv(), TIMEOUT)).data["n"])
    assert numbers == sorted(numbers) and len(numbers) < 3001
    response = await AsyncHTTPClient().fetch(
        f"{server_url}api/transports/status", headers={"Authorization": f"token {token}"}
    )
    lost = json.loads(response.body)["kernels"][kernel.id]["lost"]
    assert lost == numbers[-1] - numbers[0] + 1 - len(numbers) > 0  # the gaps, no more
    assert sum(told) == comm.lost == (lost if session else 0)  # plain sockets are not told
    if session:
        streamed = 0
        while (event := await next_event(events)).get("data") != '{"n":3001,"pad":""}':
            if event.get("event") == "lost":
                streamed += json.loads(event["data"])["count"]
        assert streamed == lost
        stream.close()
