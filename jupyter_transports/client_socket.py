"""One WebSocket to an endpoint, as the Python client speaks it (no session).

Frames are v1's: a comm message's ``data`` as a JSON text frame, or a binary frame in Jupyter's
layout when it carries buffers, which are masked piece by piece and never joined (see
:func:`~.writer.masked_frame`).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

from tornado.concurrent import Future
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
MAX_DETAIL = 500  # characters of a refusal's body kept in Refused.detail


class TransportsClientError(Exception):
    """Base of this client's errors."""


class Refused(TransportsClientError):
    """The server refused the WebSocket handshake; ``detail``: the server's own words."""

    def __init__(self, status: int, message: str, detail: str = "") -> None:
        super().__init__(f"{status}: {message}" + (f" ({detail})" if detail else ""))
        self.status = status
        self.detail = detail


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
    sender: str | None = None  # the client that sent it, when the server relayed it (echo)


def comm_url(server_url: str, kernel_id: str, *path: str, **query: str) -> str:
    """The ``ws(s)://`` URL of an endpoint under ``server_url`` (its ``http(s)://`` base URL)."""
    scheme, netloc, base, _, _ = urlsplit(server_url)
    ws_scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
    parts = [base.rstrip("/"), API_PATH, kernel_id, *(quote(p, safe="") for p in path)]
    return urlunsplit((ws_scheme, netloc, "/".join(parts), urlencode(query), ""))


async def open_socket(
    url: str, token: str | None, headers: dict[str, str] | None = None
) -> WebSocketClientConnection:
    """A WebSocket to ``url``; :class:`Refused` if the handshake is."""
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"token {token}"
    try:
        return await websocket_connect(
            HTTPRequest(url, headers=headers), max_message_size=DEFAULT_MAX_MESSAGE_SIZE
        )
    except HTTPClientError as e:
        body = e.response.body if e.response is not None else b""
        detail = body.decode("utf-8", "replace").strip()[:MAX_DETAIL] if body else ""
        raise Refused(e.code, e.message or "", detail) from None


class Socket:
    """One WebSocket bridged to one kernel comm."""

    def __init__(self, connection: WebSocketClientConnection, mode: FrameMode) -> None:
        self.connection = connection
        self.mode = mode

    @classmethod
    async def connect(
        cls, url: str, token: str | None = None, headers: dict[str, str] | None = None
    ) -> Socket:
        """A socket to an endpoint's ``ws(s)://`` URL (see :func:`comm_url`)."""
        connection = await open_socket(url, token, headers)
        frames = parse_qs(urlsplit(url).query).get(FRAMES_PARAM, [FrameMode.JSON.value])[-1]
        return cls(connection, FrameMode(frames))

    async def send(self, data: Any, buffers: Buffers = ()) -> None:
        """Send one comm message."""
        await self._written(self.write(data, buffers))

    async def send_frame(self, frame: str | bytes) -> None:
        """Send a raw frame."""
        await self._written(self.write_frame(frame))

    def write(self, data: Any, buffers: Buffers = ()) -> Future[None]:
        """Write one comm message now (frames go out in the order written); done once sent."""
        frame = OutgoingFrame(data, buffers)
        if not buffers:
            return self.write_frame(frame.for_mode(self.mode))
        # Framed here rather than by write_message, which would join and copy the buffers
        # three times more (see masked_frame).
        stream = self._protocol().stream
        if stream is None or stream.closed():
            raise CommClosed(self.close_code, self.close_reason)
        for piece in masked_frame(OPCODE_BINARY, frame.parts):
            written = stream.write(piece)
        return written

    def write_frame(self, frame: str | bytes) -> Future[None]:
        """Write a raw frame now; done once sent."""
        try:
            return self._protocol().write_message(frame, binary=isinstance(frame, bytes))
        except WebSocketClosedError:
            raise CommClosed(self.close_code, self.close_reason) from None

    async def _written(self, written: Awaitable[None]) -> None:
        try:
            await written
        except (StreamClosedError, WebSocketClosedError):
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

    @property
    def close_code(self) -> int | None:
        return self.connection.close_code

    @property
    def close_reason(self) -> str | None:
        return self.connection.close_reason

    def start_closing(self, code: int = CloseCode.COMM_CLOSED) -> None:
        """Send the close frame; whoever reads sees the end of the messages next."""
        self.connection.close(code)

    async def close(self, code: int = CloseCode.COMM_CLOSED) -> None:
        """Close the socket (and, if this client opened the comm, the comm) and wait for it."""
        closed_by_server = self.close_code is not None
        self.start_closing(code)
        if not closed_by_server:
            while await self.connection.read_message() is not None:
                pass
