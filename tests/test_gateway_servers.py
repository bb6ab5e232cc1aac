"""Kernels behind a gateway, and several servers on one kernel (contract v2).

Server A is the in-process test server (``jp_serverapp``), server B a second Jupyter server
subprocess (``second_server``, or one of this module's own where it needs other config); both
reach the same Kernel Gateway, which requires its token.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from jupyter_transports.client import CommClient, Refused
from jupyter_transports.errors import CloseCode

from .conftest import KERNEL_TARGETS, TIMEOUT, closed, recv
from .gateway import GatewayKernel, JupyterServer, KernelGateway, cpu_seconds
from .test_rest import Answer, check_against_spec

pytest_plugins = ["tests.gateway"]

ANOTHER_SERVER = "another server"  # in the reason of a comm closed through another server
BURST = 500  # messages of one burst from the kernel (under iopub's high-water mark of 1000)
CPU_CHUNKS = 4  # bursts of BURST per CPU measurement: 2000 messages
CPU_ROUNDS = 2  # measurements per configuration; the smallest counts
IDLE_SECONDS = 10.0
IDLE_CPU_LIMIT = 0.02  # of one core
STATUS_LIMIT = 1.0  # seconds for an endpoint that does not need the gateway, while it is paused
# The gateway connection's backoff, small so that a killed gateway is noticed quickly:
# 0.2, 0.4, 0.8, then 1 s per attempt, for about 40 s, well past the gateway's restart.
FAST_RETRY: dict[str, Any] = {
    "GatewayClient": {
        "gateway_retry_interval": 0.2,
        "gateway_retry_interval_max": 1.0,
        "gateway_retry_max": 40,
    }
}
WRONG_TOKEN: dict[str, Any] = {"GatewayClient": {"auth_token": "not-the-gateway-token"}}


@pytest.fixture
def extra_server_config() -> dict[str, Any]:
    """Config sections for server A on top of the gateway's; parametrize to change them."""
    return {}


@pytest.fixture
def server_config(
    gateway_server_config: dict[str, Any], extra_server_config: dict[str, Any]
) -> dict[str, Any]:
    return merged(gateway_server_config, extra_server_config)


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``extra``, config sections merged key by key."""
    result = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


@dataclass
class Server:
    """Where a server with the extension answers, and its token."""

    url: str  # its base URL, ending with "/"
    token: str
    pid: int  # its process (server A's is the test process)

    async def open(self, kernel_id: str, target_name: str) -> CommClient:
        """A plain (v1) socket opening a new comm."""
        coro = CommClient.open(self.url, kernel_id, target_name, token=self.token, session=False)
        return await asyncio.wait_for(coro, TIMEOUT)

    async def attach(self, kernel_id: str, comm_id: str) -> CommClient:
        """A plain (v1) socket attached to an existing comm."""
        coro = CommClient.attach(self.url, kernel_id, comm_id, token=self.token, session=False)
        return await asyncio.wait_for(coro, TIMEOUT)

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A REST call under the base URL: its status and JSON body (None if empty)."""
        request = HTTPRequest(
            self.url + path,
            method=method,
            headers={"Authorization": f"token {self.token}"},
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True,
            request_timeout=TIMEOUT,
        )
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
        if path.startswith("api/transports/"):  # the extension's own: as its spec says
            answer = Answer(response.code, response.headers, response.body or b"")
            url = urlsplit(self.url)
            data = None if body is None else json.dumps(body).encode()
            check_against_spec(
                f"{url.scheme}://{url.netloc}", method, f"/{path}", data, answer, set()
            )
        return response.code, json.loads(response.body) if response.body else None

    async def handshake(self, path: str) -> tuple[int, str]:
        """A WebSocket handshake that the server refuses: its status and body."""
        request = HTTPRequest(
            self.url + path,
            headers={
                "Authorization": f"token {self.token}",
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            },
            request_timeout=TIMEOUT,
        )
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
        return response.code, response.body.decode(errors="replace")


@pytest.fixture
def server_a(server_url: str, token: str) -> Server:
    return Server(server_url, token, os.getpid())


@pytest.fixture
def server_b(second_server: JupyterServer) -> Server:
    return Server(second_server.url, second_server.token, second_server.pid)


@pytest.fixture
def sockets(jp_asyncio_loop: Any) -> Iterator[list[CommClient]]:
    """Sockets to close at the end of the test (whatever state they are in)."""
    opened: list[CommClient] = []
    yield opened

    async def close_all() -> None:
        for client in opened:
            try:
                await asyncio.wait_for(client.close(), 5)
            except Exception as e:  # already closed by the server, or a dead server
                print(f"closing a socket: {e!r}", file=sys.stderr)

    jp_asyncio_loop.run_until_complete(close_all())


async def comm_id_of_whoami(client: CommClient) -> str:
    """A ``whoami`` comm's first message carries its id."""
    comm_id: str = (await recv(client))["comm_id"]
    return comm_id


async def flood(owner: CommClient, clients: list[CommClient], count: int, size: int = 0) -> None:
    """Ask the ``flood`` comm for ``count`` messages; every client receives all of them, in
    order, and no other."""
    await owner.send({"count": count, "size": size})

    async def whole(client: CommClient) -> list[Any]:
        return [await recv(client) for _ in range(count)]

    expected = [{"i": i, "pad": "x" * size} for i in range(count)]
    for got in await asyncio.gather(*(whole(c) for c in clients)):
        assert got == expected


async def gateway_sockets(pid: int, gateway: KernelGateway, expected: int) -> int:
    """How many TCP connections process ``pid`` holds to the gateway, once it is ``expected``
    (the tests' own short-lived kernel sockets, a REST call, take a moment to go), or after 5 s.

    Counted on the server's side: the gateway's own ``connections`` count in its kernel model
    goes wrong (down to 0 with one connection open) after a handshake whose client left before
    the gateway answered it (jupyter_server's ``select_subprotocol`` then fails, a 500).
    """
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        held = sum(
            1
            for c in psutil.Process(pid).net_connections("tcp")
            if c.raddr and c.raddr.port == gateway.port and c.status == psutil.CONN_ESTABLISHED
        )
        if held == expected or asyncio.get_running_loop().time() > deadline:
            return held
        await asyncio.sleep(0.05)


@pytest.fixture
def fast_retry_server(
    gateway: KernelGateway, tmp_path_factory: pytest.TempPathFactory, jp_asyncio_loop: Any
) -> Iterator[Server]:
    """A second server (B) whose gateway connections retry with :data:`FAST_RETRY`."""
    server = JupyterServer(tmp_path_factory.mktemp("server"), gateway, config=FAST_RETRY)
    try:
        jp_asyncio_loop.run_until_complete(server.start())
        yield Server(server.url, server.token, server.pid)
    finally:
        server.stop()
        print(f"server B log, last lines:\n{server.log_tail()}", file=sys.stderr)


# -- 1 -------------------------------------------------------------------------------------------


async def test_two_servers_one_kernel_burst_reaches_every_socket_once(
    gateway: KernelGateway,
    gateway_kernel: GatewayKernel,
    server_a: Server,
    server_b: Server,
    sockets: list[CommClient],
) -> None:
    """B adopts a kernel A started (then lists it); a burst of the kernel on one comm reaches
    every socket on both servers exactly once, in order; each server holds one connection."""
    kernel_id = gateway_kernel.id
    status, kernels = await server_b.call("GET", "api/kernels")
    assert status == 200
    assert kernel_id not in [k["id"] for k in kernels]  # B has never seen it

    owner = await server_a.open(kernel_id, "flood")
    sockets.append(owner)
    comm_id = await gateway_kernel.opened_comm("flood")
    on_b = [await server_b.attach(kernel_id, comm_id) for _ in range(2)]
    on_a = await server_a.attach(kernel_id, comm_id)
    sockets.extend([*on_b, on_a])
    everyone = [owner, on_a, *on_b]

    status, kernels = await server_b.call("GET", "api/kernels")
    assert status == 200
    assert kernel_id in [k["id"] for k in kernels]
    status, model = await server_b.call("GET", f"api/kernels/{kernel_id}")
    assert status == 200
    assert model["id"] == kernel_id
    for server in (server_a, server_b):
        status, listing = await server.call("GET", f"api/transports/kernels/{kernel_id}/comms")
        assert status == 200
        assert listing["comms"][comm_id] == {"target_name": "flood", "clients": 2}

    await flood(owner, everyone, 1)  # every socket is on the comm
    await flood(owner, everyone, BURST)
    await flood(owner, everyone, 1, size=1)  # next after the burst: nothing repeated in it
    for server in (server_a, server_b):
        assert await gateway_sockets(server.pid, gateway, 1) == 1


# -- 2 -------------------------------------------------------------------------------------------


async def test_kernel_cpu_does_not_grow_with_sockets(
    gateway: KernelGateway,
    gateway_kernel: GatewayKernel,
    server_a: Server,
    server_b: Server,
    sockets: list[CommClient],
) -> None:
    """The kernel's CPU per message is about the same with 4 sockets per server as with 1:
    it sends once per server connection (2), whatever the number of sockets."""
    kernel_id = gateway_kernel.id
    process = gateway.kernel_process(kernel_id)
    owner = await server_a.open(kernel_id, "flood")
    sockets.append(owner)
    comm_id = await gateway_kernel.opened_comm("flood")
    clients = [owner, await server_b.attach(kernel_id, comm_id)]
    sockets.append(clients[1])
    await flood(owner, clients, BURST)  # warm up

    async def cost() -> float:
        """Kernel CPU seconds per message, the smallest of CPU_ROUNDS bursts."""
        costs = []
        for _ in range(CPU_ROUNDS):
            before = cpu_seconds(process)
            for _ in range(CPU_CHUNKS):  # chunks: never more than BURST messages in flight
                await flood(owner, clients, BURST)
            costs.append((cpu_seconds(process) - before) / (CPU_CHUNKS * BURST))
        return min(costs)

    one = await cost()
    for server in (server_a, server_b):
        assert await gateway_sockets(server.pid, gateway, 1) == 1
    for server in (server_a, server_b):
        for _ in range(3):
            clients.append(await server.attach(kernel_id, comm_id))
            sockets.append(clients[-1])
    await flood(owner, clients, 1)
    four = await cost()
    for server in (server_a, server_b):
        assert await gateway_sockets(server.pid, gateway, 1) == 1
    ratio = four / one
    print(
        f"\nkernel CPU per message: 1 socket per server {one * 1e6:.1f} us, "
        f"4 sockets per server {four * 1e6:.1f} us, ratio {ratio:.2f}"
    )
    assert ratio < 1.5


# -- 3 -------------------------------------------------------------------------------------------


async def test_comm_closed_through_one_server_closes_sockets_on_every_server(
    gateway_kernel: GatewayKernel,
    server_a: Server,
    server_b: Server,
    sockets: list[CommClient],
) -> None:
    """An owner closing on A closes B's attached socket (1000, "another server"), and the
    reverse; a REST DELETE on A closes B's attached socket too."""
    kernel_id = gateway_kernel.id
    for owner_on, attached_on in ((server_a, server_b), (server_b, server_a)):
        owner = await owner_on.open(kernel_id, "whoami")
        sockets.append(owner)
        comm_id = await comm_id_of_whoami(owner)
        attached = await attached_on.attach(kernel_id, comm_id)
        sockets.append(attached)
        await owner.send("sync")
        for client in (owner, attached):
            assert (await recv(client))["data"] == "sync"
        await owner.close()
        code, reason = await closed(attached)
        assert code == CloseCode.COMM_CLOSED
        assert reason is not None and ANOTHER_SERVER in reason
        assert comm_id not in await gateway_kernel.comm_ids("whoami")

    status, opened = await server_a.call(
        "POST", f"api/transports/kernels/{kernel_id}/targets/whoami", {"wait": 0}
    )
    assert status == 201
    comm_id = opened["comm_id"]
    on_b = await server_b.attach(kernel_id, comm_id)
    on_a = await server_a.attach(kernel_id, comm_id)
    sockets.extend([on_b, on_a])
    await on_b.send("sync")
    for client in (on_a, on_b):
        assert (await recv(client))["data"] == "sync"
    status, _ = await server_a.call("DELETE", f"api/transports/kernels/{kernel_id}/comms/{comm_id}")
    assert status == 204
    code, reason = await closed(on_b)
    assert code == CloseCode.COMM_CLOSED
    assert reason is not None and ANOTHER_SERVER in reason
    code, reason = await closed(on_a)
    assert code == CloseCode.COMM_CLOSED
    assert comm_id not in await gateway_kernel.comm_ids("whoami")


# -- 4 -------------------------------------------------------------------------------------------


async def test_idle_bridge_to_a_gateway_kernel_costs_no_cpu(
    gateway_kernel: GatewayKernel, server_a: Server, sockets: list[CommClient]
) -> None:
    """With a socket open on a gateway kernel and nothing happening, the test process (server
    A runs in it) uses under 2 % of a core."""
    client = await server_a.open(gateway_kernel.id, "whoami")
    sockets.append(client)
    await comm_id_of_whoami(client)
    await asyncio.sleep(1)  # let the open settle
    before = time.process_time()
    await asyncio.sleep(IDLE_SECONDS)
    share = (time.process_time() - before) / IDLE_SECONDS
    print(f"\nidle CPU of the test process (server A) over {IDLE_SECONDS:.0f} s: {share:.2%}")
    assert share < IDLE_CPU_LIMIT
    await client.send("still there")
    assert (await recv(client))["data"] == "still there"


# -- 5 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transports_config", [{"bridge_idle_timeout": 0}])
@pytest.mark.parametrize("extra_server_config", [WRONG_TOKEN])
async def test_wrong_gateway_token_is_502(
    jp_serverapp: Any, gateway: KernelGateway, server_a: Server
) -> None:
    """A server with a wrong gateway token answers handshakes and REST calls with 502 and the
    gateway's status: when it adopts a kernel, and when it connects to one it knows."""
    model = await gateway.api("POST", "api/kernels", {"name": "python3"})
    kernel_id = model["id"]
    kernel = f"api/transports/kernels/{kernel_id}"

    async def refused_everywhere() -> None:
        """502 naming the gateway's status (401 Unauthorized), for sockets and REST."""
        for path in (f"{kernel}/targets/whoami", f"{kernel}/comms/some-comm"):
            status, body = await server_a.handshake(path)
            print(f"\nhandshake {path.rsplit('/', 2)[-2]}: {status} {body}")
            assert status == 502, body
            assert "401" in body and "Unauthorized" in body, body
        status, error = await server_a.call("GET", f"{kernel}/comms")
        print(f"REST GET comms: {status} {error}")
        assert status == 502, error
        assert "401" in error["message"] and "Unauthorized" in error["message"], error
        with pytest.raises(Refused) as info:
            await server_a.open(kernel_id, "whoami")
        assert info.value.status == 502

    gateway_client = jp_serverapp.gateway_config
    try:
        await refused_everywhere()  # on adopting the kernel
        gateway_client.auth_token = gateway.token
        await GatewayKernel(kernel_id, gateway).wait_ready()
        status, _ = await server_a.call("GET", f"{kernel}/comms")  # adopted; the bridge closes
        assert status == 200
        # the token goes bad (as a renewer could make it): connecting to the channels is refused
        gateway_client.auth_token = WRONG_TOKEN["GatewayClient"]["auth_token"]
        await refused_everywhere()
    finally:
        gateway_client.auth_token = gateway.token  # for the kernels' shutdown at teardown


# -- 6 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transports_config", [{"kernel_timeout": 3, "bridge_idle_timeout": 0}])
async def test_gateway_paused_while_a_socket_opens(
    gateway: KernelGateway,
    gateway_kernel: GatewayKernel,
    server_a: Server,
    sockets: list[CommClient],
) -> None:
    """While a socket's open waits for a paused gateway, endpoints that do not need the
    gateway answer at once; resumed, the socket opens; paused past ``kernel_timeout``, the
    handshake is a clean 503; the server holds one gateway connection afterwards."""
    kernel_id = gateway_kernel.id
    gateway.pause()
    try:
        opening = asyncio.create_task(server_a.open(kernel_id, "whoami"))
        await asyncio.sleep(0.3)
        assert not opening.done()
        for path in ("api/transports/status", "api/me"):
            started = time.monotonic()
            status, _ = await asyncio.wait_for(server_a.call("GET", path), STATUS_LIMIT)
            assert status == 200
            assert time.monotonic() - started < STATUS_LIMIT
        assert not opening.done()
    finally:
        gateway.resume()
    client = await asyncio.wait_for(opening, TIMEOUT)
    sockets.append(client)
    await comm_id_of_whoami(client)
    await client.close()
    assert await gateway_sockets(server_a.pid, gateway, 0) == 0  # bridge_idle_timeout 0

    gateway.pause()
    try:
        started = time.monotonic()
        status, body = await server_a.handshake(
            f"api/transports/kernels/{kernel_id}/targets/whoami"
        )
        waited = time.monotonic() - started
    finally:
        gateway.resume()
    print(f"\nhandshake while paused past kernel_timeout: {status} {body} after {waited:.1f} s")
    assert status == 503, body
    assert "gateway" in body
    assert waited < TIMEOUT

    client = await server_a.open(kernel_id, "whoami")
    sockets.append(client)
    await comm_id_of_whoami(client)
    await client.send("after the pauses")
    assert (await recv(client))["data"] == "after the pauses"
    assert await gateway_sockets(server_a.pid, gateway, 1) == 1  # none left behind


# -- 7 -------------------------------------------------------------------------------------------


async def test_buffers_reach_sockets_on_both_servers(
    gateway_kernel: GatewayKernel,
    server_a: Server,
    server_b: Server,
    sockets: list[CommClient],
) -> None:
    """A kernel comm message with buffers reaches attached sockets on both servers intact
    (sent from either server), and nobody is closed."""
    kernel_id = gateway_kernel.id
    owner = await server_a.open(kernel_id, "echo")
    sockets.append(owner)
    comm_id = await gateway_kernel.opened_comm("echo")
    on_b = await server_b.attach(kernel_id, comm_id)
    sockets.append(on_b)
    buffers = [bytes(range(256)) * 512, os.urandom(2_000_000), b""]
    for sender, n in ((owner, 1), (on_b, 2)):
        await sender.send({"n": n}, buffers)
        for client in (owner, on_b):
            message = await asyncio.wait_for(client.recv(), TIMEOUT)
            assert message.data == {"n": n}
            assert [bytes(b) for b in message.buffers] == buffers
    await owner.send({"plain": True})
    for client in (owner, on_b):
        assert await recv(client) == {"plain": True}
        assert client.close_code is None


# -- 8 -------------------------------------------------------------------------------------------


# Remove with the fix of the bug test_dropped_gateway_connection_is_closed shows.
@pytest.mark.parametrize("extra_server_config", [FAST_RETRY])
async def test_gateway_killed_and_restarted(
    jp_serverapp: Any,
    gateway: KernelGateway,
    gateway_kernel: GatewayKernel,
    server_a: Server,
    fast_retry_server: Server,
    sockets: list[CommClient],
) -> None:
    """Killed, the gateway takes its kernels along: once it is back, every socket on both
    servers is closed with 1001 "kernel shut down" (the reconnection finds the kernel gone);
    then a new kernel works end to end through both servers."""
    server_b = fast_retry_server
    kernel_id = gateway_kernel.id
    owner = await server_a.open(kernel_id, "whoami")
    sockets.append(owner)
    comm_id = await comm_id_of_whoami(owner)
    attached = [
        await server_a.attach(kernel_id, comm_id),
        await server_b.attach(kernel_id, comm_id),
    ]
    sockets.extend(attached)
    everyone = [owner, *attached]
    await owner.send("sync")
    for client in everyone:
        assert (await recv(client))["data"] == "sync"

    gateway.kill()
    await gateway.restart()
    for client in everyone:
        code, reason = await closed(client)
        assert (code, reason) == (CloseCode.GOING_AWAY, "kernel shut down")

    new_id = await jp_serverapp.kernel_manager.start_kernel(kernel_name="python3")
    kernel = GatewayKernel(new_id, gateway)
    await kernel.wait_ready()
    await kernel.execute(KERNEL_TARGETS)
    owner = await server_a.open(new_id, "whoami")
    sockets.append(owner)
    comm_id = await comm_id_of_whoami(owner)
    on_b = await server_b.attach(new_id, comm_id)
    sockets.append(on_b)
    await on_b.send("back")
    for client in (owner, on_b):
        assert (await recv(client))["data"] == "back"
    for server in (server_a, server_b):
        assert await gateway_sockets(server.pid, gateway, 1) == 1


UNCLOSED = "Unclosed WebSocketClientConnection"


@pytest.mark.parametrize("extra_server_config", [FAST_RETRY])
async def test_dropped_gateway_connection_is_closed(
    gateway: KernelGateway,
    gateway_kernel: GatewayKernel,
    server_a: Server,
    sockets: list[CommClient],
) -> None:
    """(With test 8.) A gateway connection that dropped is closed by the server, not left for
    the garbage collector: collecting it warns of nothing."""
    client = await server_a.open(gateway_kernel.id, "whoami")
    sockets.append(client)
    await comm_id_of_whoami(client)
    gateway.kill()
    await gateway.restart()
    assert await closed(client) == (CloseCode.GOING_AWAY, "kernel shut down")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert [str(w.message) for w in caught if UNCLOSED in str(w.message)] == []
