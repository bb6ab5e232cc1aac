"""Three ways to reach the same kernel comm target, behind one small echo interface.

A  ``DirectPath``    jupyter_client straight to the kernel's ZMQ sockets (no server at all)
B  ``ChannelsPath``  jupyter_server's own ``/api/kernels/{id}/channels`` WebSocket, speaking the
                     kernel protocol (comm_open / comm_msg) as a notebook frontend does; "B
                     nodelay" sets TCP_NODELAY on both ends of the socket
   ``BridgePath``    this extension's ``/api/transports/kernels/{id}/targets/{name}`` WebSocket,
                     a plain (v1) socket or, as "bridge+session", a durable session (contract v2)
   ``WebsocketsPath`` the same socket from a client the project did not write: the
                     ``websockets`` library, as an external Python app would use it

Each opens a comm to an echo target and offers ``send`` / ``recv`` of (data, buffers); the
measurements in :mod:`benchmarks.run` use nothing else, so the paths are compared like for like.
"""

from __future__ import annotations

import json
import socket
import uuid
from typing import Any, Protocol

import websockets
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.jsonutil import json_default
from jupyter_client.session import Session
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_transports.client import CommClient
from jupyter_transports.client_socket import comm_url
from jupyter_transports.framing import pack_binary, unpack_binary

from .server import NODELAY_PARAM

COMM_OPEN = "comm_open"
COMM_MSG = "comm_msg"
COMM_CLOSE = "comm_close"
SHELL = "shell"
IOPUB = "iopub"
MAX_MESSAGE_SIZE = 1024 * 1024 * 1024

Echo = tuple[Any, list[bytes]]


class EchoPath(Protocol):
    """One comm to an echo target, as a benchmark sees it."""

    name: str

    async def send(self, data: Any, buffers: list[bytes] | tuple[bytes, ...] = ()) -> None:
        """Send one comm message."""

    async def recv(self) -> Echo:
        """The next message the kernel sent on this comm."""

    async def close(self) -> None:
        """Close the comm and whatever connection carried it."""


class DirectPath:
    """A: a jupyter_client kernel client of its own, no server in between."""

    name = "A direct"

    def __init__(self, client: AsyncKernelClient, target: str) -> None:
        self.client = client
        self.comm_id = uuid.uuid4().hex
        self._send(COMM_OPEN, {"comm_id": self.comm_id, "target_name": target, "data": {}})

    @classmethod
    async def open(cls, connection_file: str, target: str) -> DirectPath:
        client = AsyncKernelClient(connection_file=connection_file)
        client.load_connection_file()
        client.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=False)
        await client.wait_for_ready(timeout=30)
        return cls(client, target)

    def _send(self, msg_type: str, content: dict[str, Any], buffers: Any = ()) -> None:
        msg = self.client.session.msg(msg_type, content)
        if buffers:
            msg["buffers"] = list(buffers)
        self.client.shell_channel.send(msg)

    async def send(self, data: Any, buffers: list[bytes] | tuple[bytes, ...] = ()) -> None:
        self._send(COMM_MSG, {"comm_id": self.comm_id, "data": data}, buffers)

    async def recv(self) -> Echo:
        while True:
            msg = await self.client.iopub_channel.get_msg(timeout=None)
            if msg["msg_type"] == COMM_MSG and msg["content"].get("comm_id") == self.comm_id:
                return msg["content"]["data"], [bytes(b) for b in msg["buffers"]]

    async def close(self) -> None:
        self._send(COMM_CLOSE, {"comm_id": self.comm_id, "data": {}})
        self.client.stop_channels()


class ChannelsPath:
    """B: jupyter_server's kernel WebSocket (default protocol: JSON text, binary with buffers)."""

    def __init__(self, connection: Any, target: str, nodelay: bool) -> None:
        self.connection = connection
        self.name = "B nodelay" if nodelay else "B /channels"
        self.session = Session(key=b"", session=uuid.uuid4().hex)
        self.comm_id = uuid.uuid4().hex
        self.target = target

    @classmethod
    async def open(
        cls, server_url: str, token: str, kernel_id: str, target: str, *, nodelay: bool = False
    ) -> ChannelsPath:
        connection = await connect_channels(server_url, token, kernel_id, nodelay=nodelay)
        path = cls(connection, target, nodelay)
        await path._send(COMM_OPEN, {"comm_id": path.comm_id, "target_name": target, "data": {}})
        return path

    async def _send(self, msg_type: str, content: dict[str, Any], buffers: Any = ()) -> None:
        msg = self.session.msg(msg_type, content)
        msg["channel"] = SHELL
        if buffers:
            head = json.dumps(msg, default=json_default).encode()
            await self.connection.write_message(pack_binary(head, buffers), binary=True)
        else:
            await self.connection.write_message(json.dumps(msg, default=json_default))

    async def send(self, data: Any, buffers: list[bytes] | tuple[bytes, ...] = ()) -> None:
        await self._send(COMM_MSG, {"comm_id": self.comm_id, "data": data}, buffers)

    async def recv(self) -> Echo:
        return await recv_comm_msg(self.connection, self.comm_id)

    async def close(self) -> None:
        await self._send(COMM_CLOSE, {"comm_id": self.comm_id, "data": {}})
        self.connection.close()


class ChannelsListener:
    """B for fan-out: a ``/channels`` socket (with TCP_NODELAY) that only listens to one comm."""

    reconnects = 0  # a plain socket is never resumed

    def __init__(self, connection: Any, comm_id: str) -> None:
        self.connection = connection
        self.comm_id = comm_id

    @classmethod
    async def open(
        cls, server_url: str, token: str, kernel_id: str, comm_id: str
    ) -> ChannelsListener:
        return cls(await connect_channels(server_url, token, kernel_id, nodelay=True), comm_id)

    async def recv(self) -> Any:
        """The data of the comm's next message."""
        data, _ = await recv_comm_msg(self.connection, self.comm_id)
        return data

    async def close(self) -> None:
        self.connection.close()


async def connect_channels(server_url: str, token: str, kernel_id: str, *, nodelay: bool) -> Any:
    """A WebSocket to jupyter_server's ``/api/kernels/{id}/channels``."""
    url = server_url.replace("http", "ws", 1) + (
        f"api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}"
    )
    if nodelay:
        url += f"&{NODELAY_PARAM}=1"  # the server's socket too (see benchmarks.server)
    request = HTTPRequest(url, headers={"Authorization": f"token {token}"})
    connection = await websocket_connect(request, max_message_size=MAX_MESSAGE_SIZE)
    if nodelay:
        connection.protocol.set_nodelay(True)
    return connection


async def recv_comm_msg(connection: Any, comm_id: str) -> Echo:
    """The next comm_msg on ``comm_id`` that a ``/channels`` socket receives; other messages
    (every socket gets all of the kernel's iopub) are skipped."""
    while True:
        frame = await connection.read_message()
        if frame is None:
            raise ConnectionError("the /channels socket closed")
        if isinstance(frame, bytes):
            head, buffers = unpack_binary(frame)
            msg = json.loads(bytes(head))
        else:
            msg, buffers = json.loads(frame), []
        if (
            msg.get("channel") == IOPUB
            and msg["header"]["msg_type"] == COMM_MSG
            and msg["content"].get("comm_id") == comm_id
        ):
            return msg["content"]["data"], buffers


class BridgePath:
    """The bridge: one socket is one comm; frames are the comm's data, or with ``session`` the
    session's numbered frames and acknowledgements (what a session costs is their difference)."""

    def __init__(self, comm: CommClient, session: bool) -> None:
        self.comm = comm
        self.name = "bridge+session" if session else "bridge"

    @classmethod
    async def open(
        cls, server_url: str, token: str, kernel_id: str, target: str, *, session: bool = False
    ) -> BridgePath:
        comm = await CommClient.open(server_url, kernel_id, target, token=token, session=session)
        return cls(comm, session)

    async def send(self, data: Any, buffers: list[bytes] | tuple[bytes, ...] = ()) -> None:
        await self.comm.send(data, buffers)

    async def recv(self) -> Echo:
        message = await self.comm.recv()
        return message.data, message.buffers

    async def close(self) -> None:
        await self.comm.close()


class WebsocketsPath:
    """The bridge's v1 socket spoken by the ``websockets`` library: frames in the contract's
    layout, TCP_NODELAY on, no receive limit."""

    name = "bridge (websockets)"

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    @classmethod
    async def open(cls, server_url: str, token: str, kernel_id: str, target: str) -> WebsocketsPath:
        url = comm_url(server_url, kernel_id, "targets", target, token=token)
        connection = await websockets.connect(url, max_size=None, compression=None)
        connection.transport.get_extra_info("socket").setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        return cls(connection)

    async def send(self, data: Any, buffers: list[bytes] | tuple[bytes, ...] = ()) -> None:
        text = json.dumps(data)
        await self.connection.send(pack_binary(text.encode(), buffers) if buffers else text)

    async def recv(self) -> Echo:
        frame = await self.connection.recv()
        if isinstance(frame, str):
            return json.loads(frame), []
        head, buffers = unpack_binary(frame)
        return json.loads(bytes(head)), [bytes(b) for b in buffers]

    async def close(self) -> None:
        await self.connection.close()
