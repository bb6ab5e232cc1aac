"""An async Python client of bridged comms, speaking the same frames as the browser.

    async with await CommClient.open(server_url, kernel_id, "echo", token=token) as comm:
        await comm.send({"hello": "kernel"})
        reply = await comm.recv()          # a Message: .data and .buffers

A refused handshake raises :class:`Refused` (with the HTTP status); once the server closes the
socket, :meth:`CommClient.recv` raises :class:`CommClosed` (with the close code and reason).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.websocket import (
    WebSocketClientConnection,
    WebSocketClosedError,
    WebSocketProtocol,
    websocket_connect,
)

from .errors import CloseCode
from .framing import Buffers, FrameMode, OutgoingFrame, decode_frame
from .writer import OPCODE_BINARY, masked_frame

API_PATH = "api/transports/kernels"
FRAMES_PARAM = "frames"
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024 * 1024  # accept anything up to 1 GiB from the server


class TransportsClientError(Exception):
    """Base of this client's errors."""


class Refused(TransportsClientError):
    """The server refused the WebSocket handshake."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class CommClosed(TransportsClientError):
    """The socket is closed; ``code`` and ``reason`` say why."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"closed ({code}): {reason or ''}")
        self.code = code
        self.reason = reason


@dataclass
class Message:
    """One comm message."""

    data: Any
    buffers: list[memoryview] = field(default_factory=list)  # views of the frame


def comm_url(server_url: str, kernel_id: str, *path: str, **query: str) -> str:
    """The ``ws(s)://`` URL of an endpoint under ``server_url`` (its ``http(s)://`` base URL)."""
    scheme, netloc, base, _, _ = urlsplit(server_url)
    ws_scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
    parts = [base.rstrip("/"), API_PATH, kernel_id, *(quote(p, safe="") for p in path)]
    return urlunsplit((ws_scheme, netloc, "/".join(parts), urlencode(query), ""))


class CommClient:
    """One WebSocket bridged to one kernel comm."""

    def __init__(self, connection: WebSocketClientConnection, mode: FrameMode) -> None:
        self.connection = connection
        self.mode = mode

    @classmethod
    async def open(
        cls,
        server_url: str,
        kernel_id: str,
        target_name: str,
        *,
        token: str | None = None,
        data: dict[str, Any] | None = None,
        frames: str = FrameMode.JSON.value,
        **query: str,
    ) -> CommClient:
        """Open a new comm to ``target_name``; it closes when this client does."""
        if data is not None:
            query["data"] = json.dumps(data)
        url = comm_url(server_url, kernel_id, "targets", target_name, **query, frames=frames)
        return await cls.connect(url, token=token)

    @classmethod
    async def attach(
        cls,
        server_url: str,
        kernel_id: str,
        comm_id: str,
        *,
        token: str | None = None,
        frames: str = FrameMode.JSON.value,
        **query: str,
    ) -> CommClient:
        """Attach to an existing comm (e.g. a widget's)."""
        url = comm_url(server_url, kernel_id, "comms", comm_id, **query, frames=frames)
        return await cls.connect(url, token=token)

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> CommClient:
        """Connect to an endpoint's ``ws(s)://`` URL as it is (see :func:`comm_url`)."""
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"token {token}"
        try:
            connection = await websocket_connect(
                HTTPRequest(url, headers=headers), max_message_size=DEFAULT_MAX_MESSAGE_SIZE
            )
        except HTTPClientError as e:
            raise Refused(e.code, e.message or "") from None
        frames = parse_qs(urlsplit(url).query).get(FRAMES_PARAM, [FrameMode.JSON.value])[-1]
        return cls(connection, FrameMode(frames))

    async def send(self, data: Any, buffers: Buffers = ()) -> None:
        """Send one comm message."""
        frame = OutgoingFrame(data, buffers)
        if not buffers:
            await self.send_frame(frame.for_mode(self.mode))
            return
        # Framed here rather than by write_message, which would join and copy the buffers
        # three times more (see masked_frame).
        stream = self._protocol().stream
        if stream is None:
            raise CommClosed(self.close_code, self.close_reason)
        try:
            for piece in masked_frame(OPCODE_BINARY, frame.parts):
                written = stream.write(piece)
            await written
        except StreamClosedError:
            raise CommClosed(self.close_code, self.close_reason) from None

    async def send_frame(self, frame: str | bytes) -> None:
        """Send a raw frame."""
        try:
            await self._protocol().write_message(frame, binary=isinstance(frame, bytes))
        except WebSocketClosedError:
            raise CommClosed(self.close_code, self.close_reason) from None

    def _protocol(self) -> WebSocketProtocol:
        if self.connection.protocol is None:
            raise CommClosed(self.close_code, self.close_reason)
        return self.connection.protocol

    async def recv(self) -> Message:
        """The next comm message; :class:`CommClosed` once the socket is closed.

        Its buffers are views of the frame, as jupyter_client's are of the kernel's message.
        """
        frame = await self.connection.read_message()
        if frame is None:
            raise CommClosed(self.close_code, self.close_reason)
        data, buffers = decode_frame(frame, self.mode)
        return Message(data, buffers)

    def __aiter__(self) -> CommClient:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.recv()
        except CommClosed:
            raise StopAsyncIteration from None

    @property
    def close_code(self) -> int | None:
        return self.connection.close_code

    @property
    def close_reason(self) -> str | None:
        return self.connection.close_reason

    async def close(self, code: int = CloseCode.COMM_CLOSED) -> None:
        """Close the socket (and, if this client opened the comm, the comm) and wait for it."""
        closed_by_server = self.close_code is not None
        self.connection.close(code)
        if not closed_by_server:
            while await self.connection.read_message() is not None:
                pass

    async def __aenter__(self) -> CommClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
