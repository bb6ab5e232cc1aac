"""A comm that survives dropped connections: the Python client's durable session (contract v2).

When the connection drops without a close frame (or the server drops it for falling behind,
1013), :class:`ResumableSocket` reconnects with backoff to the same session and resumes: what the
kernel sent meanwhile arrives in order and once; what this end sent and the server had not
acknowledged is written again under the same numbers, and reaches the kernel once. The numbers,
the acknowledgements and the hello are :class:`~.session.ClientSession`'s; this module does the
I/O. A connection that could not resume is reported (``outcome``, ``reason``, ``on_reset``), and
messages keep flowing after it. Any other close ends the comm, a kernel restart (1012) included.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError

from .client_socket import CommClosed, Message, Refused, Socket
from .errors import BadFrame, CloseCode
from .framing import Buffers, dumps
from .session import CLIENT_ACK_IDLE, ClientSession, Hello, Outcome, ack

RESUMABLE = frozenset({None, 1006, CloseCode.TOO_SLOW})  # the network, not the comm, ended
NO_RESPONSE = 599  # tornado's status for a connection that failed before any response
FIRST_DELAY = 0.05  # seconds before the first reconnection attempt, doubling up to MAX_DELAY
MAX_DELAY = 2.0
SESSION_KEY_BYTES = 16


def new_session_key() -> str:
    """A random session key: 22 characters of URL-safe base64 (128 bits)."""
    return secrets.token_urlsafe(SESSION_KEY_BYTES)


class ResumableSocket:
    """One kernel comm over a durable session, on one connection after another.

    ``resume_within``: seconds to keep trying to reconnect before giving up (:class:`CommClosed`
    with code None); ``on_reset(reason)``: called when a connection could not resume;
    ``on_lost(count)``: when the server says ``count`` kernel messages never reached it;
    ``on_presence(roster)``: when who is on the comm changed (``presence=1`` in the URL).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        resume_within: float = 60.0,
        on_reset: Callable[[str], None] | None = None,
        on_lost: Callable[[int], None] | None = None,
        on_presence: Callable[[dict[str, dict[str, Any]]], None] | None = None,
    ) -> None:
        self.url = url  # the endpoint's, without session parameters
        self.token = token
        self.session_key = new_session_key()
        self.resume_within = resume_within
        self.on_reset = on_reset
        self.on_lost = on_lost
        self.on_presence = on_presence
        self.session = ClientSession()
        self.reconnects = 0
        self.socket: Socket | None = None  # the current connection
        self._ack_timer: asyncio.TimerHandle | None = None
        self._inbox: asyncio.Queue[Message | CommClosed] = asyncio.Queue()
        self._closing = False
        self._closed: CommClosed | None = None
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, url: str, **options: Any) -> ResumableSocket:
        """Begin a new session on the endpoint ``url``."""
        resumable = cls(url, **options)
        await resumable._connect()
        resumable._reader = asyncio.ensure_future(resumable._read())
        return resumable

    @property
    def hello(self) -> Hello:
        """The first frame of the current connection."""
        assert self.session.hello is not None
        return self.session.hello

    # -- connections ---------------------------------------------------------------------------

    def _session_url(self) -> str:
        scheme, netloc, path, query, _ = urlsplit(self.url)
        extra = urlencode({"session_key": self.session_key, "last": self.session.last})
        return urlunsplit((scheme, netloc, path, f"{query}&{extra}" if query else extra, ""))

    async def _connect(self) -> None:
        """Connect, read the session's first frame, and write what it says is missing."""
        socket = await Socket.connect(self._session_url(), self.token)
        try:
            hello = Hello.parse(await socket.connection.read_message())
        except BadFrame as e:
            code = socket.close_code
            socket.start_closing(CloseCode.PROTOCOL_ERROR)
            raise CommClosed(code, str(e)) from None
        if self.socket is not None:
            self.socket.start_closing()  # release the dropped one
        self.socket = socket
        self.session.greeted(hello)
        if hello.outcome is Outcome.RESET and hello.reason is not None and self.on_reset:
            self.on_reset(hello.reason.value)  # before writing, which a new drop may cut short
        await self._write_unwritten()

    async def _read(self) -> None:
        """Receive until the comm ends; whatever ends it reaches :meth:`recv`."""
        try:
            await self._receive_all()
        except Exception as e:  # a frame not of the contract, a failing on_reset, ...
            self.start_closing(CloseCode.PROTOCOL_ERROR)
            self._end(CommClosed(None, f"the session failed: {e!r}"))

    async def _receive_all(self) -> None:
        """Receive, reconnecting whenever the connection drops, until the comm ends."""
        while True:
            assert self.socket is not None
            frame = await self.socket.connection.read_message()
            if frame is not None:
                self._receive(frame)
                continue
            code, reason = self.socket.close_code, self.socket.close_reason
            if self._closing or code not in RESUMABLE:
                self._end(CommClosed(code, reason))
                return
            failed = await self._reconnect()
            if failed is not None:
                self._end(CommClosed(None, f"could not resume: {failed}"))
                return

    async def _reconnect(self) -> str | None:
        """Connect again, with backoff; why not, if it could not."""
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
            except Refused as e:
                if e.status == NO_RESPONSE:
                    continue
                return str(e)  # the comm or the kernel is gone, or access was withdrawn
            if self._closing:  # closed while reconnecting: close the new connection too
                self.start_closing()
                return "closed"
            self.reconnects += 1
            return None
        return "closed" if self._closing else f"no connection within {self.resume_within} s"

    def _end(self, closed: CommClosed) -> None:
        self._closed = closed
        if self._ack_timer is not None:
            self._ack_timer.cancel()
        self._inbox.put_nowait(closed)

    # -- receiving -----------------------------------------------------------------------------

    def _receive(self, frame: str | bytes) -> None:
        lost, roster = self.session.lost, self.session.roster
        message = self.session.receive(frame)
        if self.session.lost > lost and self.on_lost:
            self.on_lost(self.session.lost - lost)
        if self.session.roster is not roster and self.on_presence:
            self.on_presence(self.session.roster)
        if message is None:
            return
        buffers = list(message.buffers)
        self._inbox.put_nowait(Message(message.data, buffers, message.sender or None))  # type: ignore[arg-type]
        if self.session.ack_due():
            self._send_ack()
        elif self._ack_timer is None:
            loop = asyncio.get_running_loop()
            self._ack_timer = loop.call_later(CLIENT_ACK_IDLE, self._send_ack)

    def _send_ack(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        assert self.socket is not None
        with contextlib.suppress(WebSocketClosedError):  # the next resume says it
            written = self.socket.connection.write_message(ack(self.session.take_ack()))
            written.add_done_callback(_ignore_failure)

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
        self.session.number(data, buffers)
        await self._write_unwritten()

    async def send_frame(self, frame: str | bytes) -> None:
        """Send a raw frame (which the server must understand as a session's)."""
        assert self.socket is not None
        await self.socket.send_frame(frame)

    async def _write_unwritten(self) -> None:
        """Write, in order and at once, what the current connection has not carried yet; then
        wait until it is sent. A dropped connection is no error: the next one carries it."""
        socket, unwritten = self.socket, self.session.unwritten
        assert socket is not None
        written = None
        try:
            while unwritten:
                message = unwritten[0]
                numbered = {"seq": message.seq, "data": message.data}
                if message.buffers:
                    written = socket.write(numbered, message.buffers)
                else:
                    written = socket.write_frame(dumps(numbered))
                unwritten.popleft()
            if written is not None:
                await written
        except (CommClosed, StreamClosedError, WebSocketClosedError):
            pass

    # -- closing -------------------------------------------------------------------------------

    @property
    def close_code(self) -> int | None:
        return self._closed.code if self._closed is not None else None

    @property
    def close_reason(self) -> str | None:
        return self._closed.reason if self._closed is not None else None

    def start_closing(self, code: int = CloseCode.COMM_CLOSED) -> None:
        """Close the session: a close frame on the current connection ends it in the server."""
        self._closing = True
        if self.socket is not None:
            self.socket.start_closing(code)  # or, if the server closed it, release it

    async def close(self, code: int = CloseCode.COMM_CLOSED) -> None:
        self.start_closing(code)
        if self._reader is not None:
            await self._reader


def _ignore_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
