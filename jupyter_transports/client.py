"""An async Python client of bridged comms, speaking the same frames as the browser.

    async with await CommClient.open(server_url, kernel_id, "echo", token=token) as comm:
        await comm.send({"hello": "kernel"})
        reply = await comm.recv()          # a Message: .data and .buffers

A refused handshake raises :class:`Refused` (with the HTTP status); once the server closes the
socket, :meth:`CommClient.recv` raises :class:`CommClosed` (with the close code and reason).

By default a comm travels over a durable session (contract v2, :class:`SessionClient`): when the
connection drops without a close frame (or the server drops it for falling behind, 1013), it
reconnects with backoff to the same session and resumes. What the kernel sent meanwhile arrives
in order and once; what this end sent and the server had not acknowledged is sent again under
the same numbers, and reaches the kernel once. A resume that fails is reported in
:attr:`SessionClient.outcome` and :attr:`SessionClient.reason` and to ``on_reset``; messages keep
flowing after it. A kernel restart (1012) ends the comm, as for a plain socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections import deque
from collections.abc import Callable
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
from .framing import Buffers, FrameMode, OutgoingFrame, decode_frame, dumps
from .session import ACK_DELAY, ACK_EVERY, Outcome, Reason
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
        raise Refused(e.code, e.message or "") from None


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
        session: bool = True,
        **query: str,
    ) -> CommClient:
        """Open a new comm to ``target_name``; it closes when this client does.

        With ``session`` (the default, unless ``frames="text"``) the comm survives dropped
        connections (see :class:`SessionClient`).
        """
        if data is not None:
            query["data"] = json.dumps(data)
        url = comm_url(server_url, kernel_id, "targets", target_name, **query, frames=frames)
        return await cls._start(url, token, session and frames == FrameMode.JSON.value)

    @classmethod
    async def attach(
        cls,
        server_url: str,
        kernel_id: str,
        comm_id: str,
        *,
        token: str | None = None,
        frames: str = FrameMode.JSON.value,
        session: bool = True,
        **query: str,
    ) -> CommClient:
        """Attach to an existing comm (e.g. a widget's); ``session`` as for :meth:`open`."""
        url = comm_url(server_url, kernel_id, "comms", comm_id, **query, frames=frames)
        return await cls._start(url, token, session and frames == FrameMode.JSON.value)

    @classmethod
    async def _start(cls, url: str, token: str | None, session: bool) -> CommClient:
        if session:
            return await SessionClient.start(url, token=token)
        return await cls.connect(url, token=token)

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> CommClient:
        """Connect to an endpoint's ``ws(s)://`` URL as it is (see :func:`comm_url`), with no
        session unless the URL names one."""
        connection = await open_socket(url, token, headers)
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

    async def __aenter__(self) -> CommClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


RESUMABLE = frozenset({None, 1006, CloseCode.TOO_SLOW})  # the network, not the comm, ended
FIRST_DELAY = 0.05  # seconds before the first reconnection attempt, doubling up to MAX_DELAY
MAX_DELAY = 2.0
SESSION_ID_BYTES = 16


def new_session_id() -> str:
    """A random session id: 22 characters of URL-safe base64 (128 bits)."""
    return secrets.token_urlsafe(SESSION_ID_BYTES)


class SessionClient(CommClient):
    """One kernel comm over a durable session.

    ``resume_within``: seconds to keep trying to reconnect before giving up (:class:`~.client.
    CommClosed` with code 1006); ``on_reset(reason)``: called when a reconnection could not
    resume (see the contract's reasons).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        resume_within: float = 60.0,
        on_reset: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.headers = headers
        self.session_id = new_session_id()
        self.resume_within = resume_within
        self.on_reset = on_reset
        self.outcome: Outcome | None = None  # of the latest connection
        self.reason: Reason | None = None  # why it did not resume, if it did not
        self.client_id = self.comm_id = ""
        self.reconnects = 0
        self._last = 0  # the highest seq received
        self._numbered = 0  # the last number given to a message of ours
        self._unacked: deque[tuple[int, Any, Buffers]] = deque()  # sent, not yet acknowledged
        self._received = 0  # messages received since our last acknowledgement
        self._ack_timer: asyncio.TimerHandle | None = None
        self._inbox: asyncio.Queue[Message | CommClosed] = asyncio.Queue()
        self._closing = False
        self._closed: CommClosed | None = None
        self._reader: asyncio.Task[None] | None = None
        self._refused: Refused | None = None

    @classmethod
    async def start(cls, url: str, **options: Any) -> SessionClient:
        """Connect to ``url`` (an endpoint's URL without session parameters) with a new session."""
        client = cls(url, **options)
        await client._connect()
        client._reader = asyncio.ensure_future(client._read())
        return client

    # -- connections ---------------------------------------------------------------------------

    def _session_url(self) -> str:
        scheme, netloc, path, query, _ = urlsplit(self.url)
        extra = urlencode({"session_key": self.session_id, "last": self._last})
        return urlunsplit((scheme, netloc, path, f"{query}&{extra}" if query else extra, ""))

    async def _connect(self) -> None:
        """Connect, read the session's first frame, and resend what it says is missing."""
        connection = await open_socket(self._session_url(), self.token, self.headers)
        first = await connection.read_message()
        if not isinstance(first, str):
            code = connection.close_code
            connection.close(CloseCode.PROTOCOL_ERROR)
            raise CommClosed(code, "the server did not begin the session")
        hello = json.loads(first)
        if getattr(self, "connection", None) is not None:
            self.connection.close()  # the dropped one
        self.connection = connection
        self.mode = FrameMode.JSON
        self.outcome = Outcome(hello["session"])
        self.reason = Reason(hello["reason"]) if "reason" in hello else None
        self.client_id, self.comm_id = hello["client"], hello["comm_id"]
        if self.outcome is Outcome.RESET and self.reason is not Reason.OVERFLOW:
            self._numbered = 0  # a new session: our unacknowledged messages are not resent
            self._unacked.clear()
        self._acknowledged(hello["ack"])
        for seq, data, buffers in list(self._unacked):
            await self._write(seq, data, buffers)
        if self.outcome is Outcome.RESET and self.on_reset is not None:
            self.on_reset(self.reason.value if self.reason else "")

    async def _read(self) -> None:
        """Receive until the comm ends, reconnecting whenever the connection drops."""
        while True:
            frame = await self.connection.read_message()
            if frame is not None:
                self._receive(frame)
                continue
            code, reason = self.connection.close_code, self.connection.close_reason
            if self._closing or code not in RESUMABLE or not await self._reconnect():
                if self._refused is not None:
                    code, reason = None, f"could not resume: {self._refused}"
                self._end(CommClosed(code, reason))
                return

    async def _reconnect(self) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.resume_within
        delay = FIRST_DELAY
        while loop.time() < deadline and not self._closing:
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
            try:
                await self._connect()
            except (OSError, CommClosed):
                continue
            except Refused as e:  # the comm or the kernel is gone, or access was withdrawn
                self.reason = None
                self._refused = e
                return False
            self.reconnects += 1
            return True
        return False

    def _end(self, closed: CommClosed) -> None:
        self._closed = closed
        if self._ack_timer is not None:
            self._ack_timer.cancel()
        self._inbox.put_nowait(closed)

    # -- receiving -----------------------------------------------------------------------------

    def _receive(self, frame: str | bytes) -> None:
        fields, buffers = decode_frame(frame, FrameMode.JSON)
        if "seq" in fields:
            self._last = fields["seq"]
            self._inbox.put_nowait(Message(fields["data"], buffers))
            self._received += 1
            if self._received >= ACK_EVERY:
                self._send_ack()
            elif self._ack_timer is None:
                loop = asyncio.get_running_loop()
                self._ack_timer = loop.call_later(ACK_DELAY, self._send_ack)
        elif "ack" in fields:
            self._acknowledged(fields["ack"])

    def _send_ack(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        self._received = 0
        with contextlib.suppress(Exception):  # a dropped connection: the next resume says it
            written = self.connection.write_message(json.dumps({"ack": self._last}))
            written.add_done_callback(_ignore_failure)

    def _acknowledged(self, seq: int) -> None:
        while self._unacked and self._unacked[0][0] <= seq:
            self._unacked.popleft()

    async def recv(self) -> Message:
        item = await self._inbox.get()
        if isinstance(item, CommClosed):
            self._inbox.put_nowait(item)  # every later recv raises it too
            raise item
        return item

    # -- sending -------------------------------------------------------------------------------

    async def send(self, data: Any, buffers: Buffers = ()) -> None:
        """Send one comm message; it reaches the kernel once, across reconnections."""
        if self._closed is not None:
            raise self._closed
        self._numbered += 1
        self._unacked.append((self._numbered, data, buffers))
        with contextlib.suppress(CommClosed):  # sent again after the reconnection
            await self._write(self._numbered, data, buffers)

    async def _write(self, seq: int, data: Any, buffers: Buffers) -> None:
        numbered = {"seq": seq, "data": data}
        if buffers:
            await CommClient.send(self, numbered, buffers)
        else:
            await self.send_frame(dumps(numbered))

    # -- closing -------------------------------------------------------------------------------

    @property
    def close_code(self) -> int | None:
        return self._closed.code if self._closed is not None else None

    @property
    def close_reason(self) -> str | None:
        return self._closed.reason if self._closed is not None else None

    def start_closing(self, code: int = CloseCode.COMM_CLOSED) -> None:
        self._closing = True
        self.connection.close(code)  # or, if the server closed it already, release it

    async def close(self, code: int = CloseCode.COMM_CLOSED) -> None:
        """Close the session (and, if it opened the comm, the comm) and wait for it."""
        self.start_closing(code)
        if self._reader is not None:
            await self._reader


def _ignore_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
