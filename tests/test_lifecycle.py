"""Kernel deaths, automatic restarts, read-only users, and the stock `transports` library."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
import transports
from jupyter_server.auth import Authorizer
from pydantic import BaseModel

from jupyter_transports.client import Refused, comm_url
from jupyter_transports.errors import CloseCode

from .conftest import TIMEOUT, closed, recv
from .test_websocket import WIDGET

FAST_RESTARTER = {"KernelRestarter": {"time_to_dead": 0.2, "stable_start_time": 0.2}}


@pytest.mark.parametrize("server_config", [FAST_RESTARTER])
async def test_automatic_restart_after_death_closes_1012(open_comm, kernel, jp_serverapp):
    comm = await open_comm("echo")
    kernel.client.execute("import os; os._exit(1)")
    code, _ = await closed(comm)
    assert code == CloseCode.RESTARTING

    await asyncio.wait_for(jp_serverapp.kernel_manager.get_kernel(kernel.id).ready, TIMEOUT)
    again = await open_comm("echo")  # a new bridge, to the new kernel, which lost its targets
    code, _ = await closed(again)
    assert code == CloseCode.NO_SUCH_COMM


async def test_a_socket_opened_during_a_restart_reaches_the_new_kernel(
    open_comm, kernel, jp_serverapp
):
    """Between the old kernel's death and the new one's start, a handshake (a session coming
    back, say) waits for the new kernel instead of being refused 503 "not running"."""
    manager = jp_serverapp.kernel_manager
    restarting = asyncio.ensure_future(manager.restart_kernel(kernel.id))
    kernel_manager = manager.get_kernel(kernel.id)
    while await kernel_manager.is_alive():
        await asyncio.sleep(0.005)
    comm = await open_comm("echo", session=False)  # not 503: the new kernel lacks the target
    code, _ = await closed(comm)
    assert code == CloseCode.NO_SUCH_COMM
    await asyncio.wait_for(restarting, TIMEOUT)


@pytest.mark.parametrize(
    "server_config",
    [{"KernelRestarter": {**FAST_RESTARTER["KernelRestarter"], "restart_limit": 0}}],
)
async def test_death_without_restart_closes_1011(open_comm, kernel):
    comm = await open_comm("echo")
    kernel.client.execute("import os; os._exit(1)")
    code, _ = await closed(comm)
    assert code == CloseCode.BRIDGE_FAILED


class ReadOnlyAuthorizer(Authorizer):
    """Allows reading kernels, nothing else; records what it was asked."""

    asked: ClassVar[list[tuple[str, str]]] = []

    def is_authorized(self, handler, user, action, resource):
        self.asked.append((action, resource))
        return action == "read"


@pytest.mark.parametrize("server_config", [{"ServerApp": {"authorizer_class": ReadOnlyAuthorizer}}])
async def test_read_only_user_may_receive_but_not_send(open_comm, attach, kernel):
    ReadOnlyAuthorizer.asked.clear()
    with pytest.raises(Refused) as info:
        await open_comm("echo")
    assert info.value.status == 403
    assert ReadOnlyAuthorizer.asked == [("execute", "kernels")]

    await kernel.execute(WIDGET)
    observer = await attach(await kernel.evaluate("widget.comm_id"))
    assert ("read", "kernels") in ReadOnlyAuthorizer.asked
    await kernel.execute("widget.send({'news': 1})")
    assert await recv(observer) == {"news": 1}

    await observer.send({"may": "not"})
    code, _ = await closed(observer)
    assert code == CloseCode.READ_ONLY


class Counter(BaseModel):
    count: int = 0


MODEL = """
import transports
from pydantic import BaseModel
from comm import get_comm_manager

class Counter(BaseModel):
    count: int = 0

counter = Counter()
session = transports.Session()
model_id = session.host(counter)
model_server = transports.Server(session)
get_comm_manager().register_target(
    "model", lambda comm, msg: transports.serve_comm(model_server, comm)
)
"""


async def test_stock_transports_client_over_text_frames(server_url, token, kernel):
    await sync_a_model_with_the_stock_client(server_url, token, kernel)


async def sync_a_model_with_the_stock_client(server_url: str, token: str, kernel: Any) -> None:
    """The stock ``transports`` Client syncs a model with the kernel both ways over
    ``frames=text`` (any kernel with ``execute`` and ``evaluate``: a local or a gateway one)."""
    await kernel.execute(MODEL)
    model_id = await kernel.evaluate("model_id")
    client = transports.Client()
    changes: asyncio.Queue[int] = asyncio.Queue()
    client.on_change(lambda change: changes.put_nowait(client.model(model_id, Counter).count))
    url = comm_url(server_url, kernel.id, "targets", "model", frames="text", token=token)
    connection = asyncio.create_task(client.connect(url))
    try:
        assert await asyncio.wait_for(changes.get(), TIMEOUT) == 0  # the opening snapshot

        await kernel.execute("counter.count = 5; transports.sync(model_server)")
        assert await asyncio.wait_for(changes.get(), TIMEOUT) == 5  # kernel -> client

        value = client.value(model_id)
        assert await client.propose(model_id, {"Map": {**value["Map"], "count": {"Int": 7}}})
        assert await asyncio.wait_for(changes.get(), TIMEOUT) == 7  # the authoritative echo
        assert await kernel.evaluate("counter.count") == 7  # client -> kernel
    finally:
        connection.cancel()
        await asyncio.gather(connection, return_exceptions=True)


@pytest.mark.parametrize("transports_config", [{"bridge_idle_timeout": 0.5}])
async def test_an_unused_bridge_lingers_then_closes(open_comm, kernel, jp_serverapp):
    """A kernel's bridge outlives its last socket by bridge_idle_timeout, for the next one."""
    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_transports"]
    first = await open_comm("echo")
    bridge = app.bridges.bridges[kernel.id]
    await first.close()
    second = await open_comm("echo")  # within the linger: the same bridge, no new connection
    assert app.bridges.bridges[kernel.id] is bridge
    await second.send("still there")
    assert await recv(second) == "still there"
    await second.close()
    loop = asyncio.get_running_loop()
    start = loop.time()
    while kernel.id in app.bridges.bridges:
        assert loop.time() - start < TIMEOUT
        await asyncio.sleep(0.05)
    assert bridge.closed
    assert loop.time() - start >= 0.4
