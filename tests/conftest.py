"""Fixtures: a real Jupyter server with the extension, real ipykernel kernels with test targets."""

from __future__ import annotations

import ast
import asyncio
import json
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
import websockets
from traitlets.config import Config

from jupyter_transports.client import CommClient, CommClosed
from jupyter_transports.client_socket import comm_url
from jupyter_transports.framing import pack_binary, unpack_binary

pytest_plugins = ["pytest_jupyter.jupyter_server"]

TIMEOUT = 30  # seconds: every wait on a socket or the kernel is bounded

# Comm targets the tests talk to, registered in every test kernel.
KERNEL_TARGETS = textwrap.dedent(
    """
    from comm import create_comm, get_comm_manager

    def echo(comm, open_msg):
        # every message back as it came, buffers included
        comm.on_msg(lambda msg: comm.send(msg["content"]["data"], buffers=msg["buffers"]))

    def whoami(comm, open_msg):
        # what the kernel learns of the client: at open, and on every message
        comm.send({"comm_id": comm.comm_id, "data": open_msg["content"]["data"],
                   "metadata": open_msg["metadata"]})
        comm.on_msg(lambda msg: comm.send({"data": msg["content"]["data"],
                                           "metadata": msg["metadata"]}))

    def flood(comm, open_msg):
        # {"count": n, "size": s}: n messages of s bytes each
        def on_msg(msg):
            request = msg["content"]["data"]
            for i in range(request["count"]):
                comm.send({"i": i, "pad": "x" * request["size"]})
        comm.on_msg(on_msg)

    for _name, _target in [("echo", echo), ("whoami", whoami), ("flood", flood)]:
        get_comm_manager().register_target(_name, _target)
    """
)


@pytest.fixture
def transports_config() -> dict[str, Any]:
    """Traits of ``TransportsExtension`` for one test; override to change them."""
    return {}


@pytest.fixture
def server_config() -> dict[str, Any]:
    """Other config sections for one test (e.g. ``ServerApp.authorizer_class``)."""
    return {}


@pytest.fixture
def jp_server_config(transports_config: dict[str, Any], server_config: dict[str, Any]) -> Config:
    config = Config(server_config)
    config.ServerApp.jpserver_extensions = {"jupyter_transports": True}
    config.TransportsExtension = Config(transports_config)
    return config


@pytest.fixture
def server_url(jp_serverapp: Any, http_server: Any, jp_http_port: int, jp_base_url: str) -> str:
    """The base URL of the running test server."""
    return f"http://localhost:{jp_http_port}{jp_base_url}"


@pytest.fixture
def token(jp_serverapp: Any) -> str:
    return jp_serverapp.identity_provider.token


@dataclass
class Kernel:
    """A kernel of the test server, and a client to run code in it."""

    id: str
    client: Any

    async def execute(self, code: str) -> None:
        """Run ``code``; fail the test if it raises."""
        reply = await self.client.execute_interactive(
            textwrap.dedent(code), timeout=TIMEOUT, output_hook=lambda msg: None
        )
        content = reply["content"]
        assert content["status"] == "ok", "\n".join(content.get("traceback", []))

    async def evaluate(self, expression: str, timeout: float = TIMEOUT) -> Any:
        """The value of a JSON-able Python expression in the kernel.

        From the shell reply alone: this client's iopub is read by nobody while a test floods
        the kernel, so ZMQ drops what passes its high-water mark, and an iopub status awaited
        here could be among it."""
        msg_id = self.client.execute(
            "",
            store_history=False,
            user_expressions={"value": f"__import__('json').dumps({expression})"},
        )
        while True:
            reply = await self.client.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        value = reply["content"]["user_expressions"]["value"]
        assert value["status"] == "ok", value
        return json.loads(ast.literal_eval(value["data"]["text/plain"]))

    async def comm_ids(self, target_name: str) -> list[str]:
        """The kernel's own view of its open comms to ``target_name``."""
        msg_id = self.client.comm_info(target_name)
        while True:
            reply = await self.client.get_shell_msg(timeout=TIMEOUT)
            if reply["parent_header"].get("msg_id") == msg_id:
                return list(reply["content"]["comms"])

    async def opened_comm(self, target_name: str) -> str:
        """The id of the one comm to ``target_name``, once the kernel has it: the comm_open
        comes on the server's connection, which may be behind this client's request."""
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while not (ids := await self.comm_ids(target_name)):
            assert asyncio.get_running_loop().time() < deadline, f"no comm to {target_name}"
            await asyncio.sleep(0.01)
        [comm_id] = ids
        return comm_id


@pytest.fixture
def kernel(jp_serverapp: Any, jp_asyncio_loop: Any) -> Iterator[Kernel]:
    """A new ipykernel in the test server, with the test targets registered."""

    async def start() -> Kernel:
        kernel_id = await jp_serverapp.kernel_manager.start_kernel(kernel_name="python3")
        client = jp_serverapp.kernel_manager.get_kernel(kernel_id).client()
        client.start_channels()
        await client.wait_for_ready(timeout=TIMEOUT)
        kernel = Kernel(kernel_id, client)
        await kernel.execute(KERNEL_TARGETS)
        return kernel

    kernel = jp_asyncio_loop.run_until_complete(start())
    yield kernel
    kernel.client.stop_channels()


Connect = Callable[..., Awaitable[CommClient]]


@pytest.fixture
def open_comm(
    server_url: str, token: str, kernel: Kernel, jp_asyncio_loop: Any
) -> Iterator[Connect]:
    """Open a new comm to a target of the test kernel: ``await open_comm("echo")``."""
    yield from connecting(server_url, token, kernel.id, CommClient.open, jp_asyncio_loop)


@pytest.fixture
def attach(server_url: str, token: str, kernel: Kernel, jp_asyncio_loop: Any) -> Iterator[Connect]:
    """Attach to an existing comm of the test kernel: ``await attach(comm_id)``."""
    yield from connecting(server_url, token, kernel.id, CommClient.attach, jp_asyncio_loop)


def connecting(
    server_url: str, token: str, kernel_id: str, connect: Connect, loop: Any, **defaults: Any
) -> Iterator[Connect]:
    """``connect`` (``CommClient.open`` or ``.attach``) bound to one kernel, with ``defaults``
    for its options; every client it made is closed at the end."""
    clients: list[CommClient] = []

    async def inner(name: str, **kwargs: Any) -> CommClient:
        kwargs = {"token": token, **defaults, **kwargs}
        client = await asyncio.wait_for(connect(server_url, kernel_id, name, **kwargs), TIMEOUT)
        clients.append(client)
        return client

    yield inner

    async def close_all() -> None:
        for client in clients:
            await asyncio.wait_for(client.close(), TIMEOUT)

    loop.run_until_complete(close_all())


async def start_cell(kernel: Kernel, code: str) -> str:
    """Start running ``code`` in the kernel; return its msg id once the kernel has begun."""
    msg_id: str = kernel.client.execute(code)
    while True:
        msg = await kernel.client.get_iopub_msg(timeout=TIMEOUT)
        if msg["msg_type"] == "execute_input" and msg["parent_header"].get("msg_id") == msg_id:
            return msg_id


async def recv(client: CommClient) -> Any:
    """The next message's data, within the timeout."""
    return (await asyncio.wait_for(client.recv(), TIMEOUT)).data


async def closed(client: CommClient) -> tuple[int | None, str | None]:
    """Wait for the server to close ``client``; its close code and reason."""
    with pytest.raises(CommClosed) as info:
        while True:
            await asyncio.wait_for(client.recv(), TIMEOUT)
    return info.value.code, info.value.reason


class Mux:
    """A multiplexed socket, frame by frame."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket

    async def recv(self) -> tuple[dict[str, Any], list[bytes]]:
        frame = await asyncio.wait_for(self.socket.recv(), TIMEOUT)
        if isinstance(frame, str):
            return json.loads(frame), []
        head, buffers = unpack_binary(frame)
        return json.loads(bytes(head)), [bytes(b) for b in buffers]

    async def frame(self) -> dict[str, Any]:
        return (await self.recv())[0]

    async def send(self, frame: dict[str, Any], buffers: list[bytes] = ()) -> None:
        text = json.dumps(frame)
        await self.socket.send(pack_binary(text.encode(), buffers) if buffers else text)


@pytest.fixture
def mux(server_url, token, kernel, jp_asyncio_loop):
    """Connect a multiplexed socket to the test kernel: ``await mux("t.widget", …)``."""
    sockets = []

    async def connect(*follow: str, **query: str) -> Mux:
        params = [("follow", target) for target in follow] + [("token", token), *query.items()]
        url = f"{comm_url(server_url, kernel.id, 'comms')}?{urlencode(params)}"
        socket = await websockets.connect(url, max_size=None, open_timeout=TIMEOUT)
        sockets.append(socket)
        return Mux(socket)

    yield connect
    for socket in sockets:
        jp_asyncio_loop.run_until_complete(socket.close())
