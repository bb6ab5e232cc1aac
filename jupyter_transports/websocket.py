"""A comm socket: one socket is one client of one comm.

The handshake's shared checks (kernel, parameters, session, limits) run before the upgrade (the
endpoints' own are in :mod:`.endpoints`), then each WebSocket event is one call into the
kernel's bridge. A plain socket is the bridge's sink; a
socket with ``?session_key=`` carries a durable session (:mod:`.sessions`), which is the sink.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web
from tornado.ioloop import IOLoop
from tornado.websocket import WebSocketHandler, WebSocketProtocol, WebSocketProtocol13

from .base import (
    AUTH_RESOURCE,
    FRAMES_PARAM,
    LAST_PARAM,
    PRESENCE_PARAM,
    SESSION_PARAM,
    TransportsHandlerMixin,
    shortened,
)
from .bridge import KernelBridge, Sink
from .context import detached
from .errors import BadFrame, CloseCode, CommNotFound, TransportsError
from .framing import FrameMode, OutgoingFrame, decode_frame, utf8_size
from .router import Subscriber
from .session import ClientAck, Reason, check_session_key, decode_client_frame
from .sessions import Owner, Session
from .writer import FrameWriter, Pieces, wire_pieces

TEXT_OPCODE = 0x1
MAX_SEQ_DIGITS = 19  # a session's numbers fit in 63 bits
MAX_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes, 2 for the code


class CommSocketHandler(TransportsHandlerMixin, WebSocketMixin, WebSocketHandler, JupyterHandler):
    """A WebSocket bridged to one kernel comm."""

    auth_resource = AUTH_RESOURCE
    bridge: KernelBridge | None = None
    client: Subscriber
    writer: FrameWriter | None = None  # set in open
    raw_frames = False  # write the frames of wire_pieces() (set in open)
    session_key: str | None = None  # the ?session_key= parameter: this socket carries that session
    last = 0  # the ?last= parameter: the last seq its client received
    wants_presence = False  # ?presence=1 on a session: roster frames
    admitted: str | None = None  # the kernel this socket counts against in socket_limits
    session: Session | None = None  # set in open
    resuming: Session | None = None  # the live session the handshake names, if any
    closed_by_server = False

    def set_default_headers(self) -> None:
        """Jupyter's default headers (CSP and the like) do not apply to a socket."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """A refused handshake is answered in plain text: jupyter_server's error page needs the
        request's user, which a request refused before authentication (a path that is not
        UTF-8, say) does not have."""
        error = kwargs.get("exc_info", (None, None))[1]
        message = error.log_message if isinstance(error, web.HTTPError) else None
        try:
            phrase = HTTPStatus(status_code).phrase
        except ValueError:  # a status of no standard's
            phrase = ""
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(f"{status_code} {phrase}: {message or ''}")

    @property
    def ping_interval(self) -> float:
        """Milliseconds between keep-alive pings (``socket_ping_interval``)."""
        return 1000 * self.extensionapp.socket_ping_interval  # type: ignore[attr-defined,no-any-return]

    @property
    def ping_timeout(self) -> float:
        """Milliseconds without a pong before the socket counts as dead."""
        return 1000 * self.extensionapp.socket_ping_timeout  # type: ignore[attr-defined,no-any-return]

    @property
    def max_message_size(self) -> int:
        return self.extensionapp.max_message_bytes  # type: ignore[attr-defined,no-any-return]

    def get_websocket_protocol(self) -> WebSocketProtocol | None:
        protocol = super().get_websocket_protocol()
        if isinstance(protocol, WebSocketProtocol13):
            # Tornado's own pings (6.5+) would read ping_interval, which WebSocketMixin's pings
            # give in milliseconds, as seconds: the mixin's alone keep the connection alive.
            protocol.params.ping_interval = protocol.params.ping_timeout = None
            return StrictTextProtocol(self, False, protocol.params)
        return protocol

    def get_compression_options(self) -> dict[str, Any] | None:
        return self.settings.get("websocket_compression_options")

    async def parse_common(self, kernel_id: str) -> None:
        """Checks and parameters shared by both endpoints, before any upgrade. A live session
        resumes even if its kernel is gone: it is told how, after what was waiting for it."""
        limit: int = self.extensionapp.max_query_bytes  # type: ignore[attr-defined]
        if len(self.request.query) > limit:
            self.request.uri = shortened(self.request.uri)  # for the access log too
            raise web.HTTPError(414, f"the query string is over {limit} bytes (max_query_bytes)")
        frames = self.get_query_argument(FRAMES_PARAM, FrameMode.JSON.value)
        try:
            self.mode = FrameMode(frames)
        except ValueError:
            raise web.HTTPError(400, f"frames must be 'json' or 'text', not {frames!r}") from None
        self.kernel_id = kernel_id
        self.session_key = self.get_query_argument(SESSION_PARAM, None)
        if self.session_key is not None:
            self.parse_session()
        if self.resuming is None:
            await self.check_kernel(kernel_id)

    def parse_session(self) -> None:
        """The session parameters; 403 if the session is someone else's."""
        assert self.session_key is not None
        try:
            check_session_key(self.session_key)
        except BadFrame as e:
            raise web.HTTPError(400, str(e)) from None
        if self.mode is not FrameMode.JSON:
            raise web.HTTPError(400, "a session's frames are JSON: frames=text does not apply")
        last = self.get_query_argument(LAST_PARAM, "0")
        if not (last.isascii() and last.isdigit() and len(last) <= MAX_SEQ_DIGITS):
            raise web.HTTPError(400, f"last must be an integer >= 0, not {last[:40]!r}")
        self.last = int(last)
        self.wants_presence = self.get_query_argument(PRESENCE_PARAM, "") == "1"
        session = self.sessions.find(self.kernel_id, self.session_key)
        if session is not None and not session.owner.may_resume(self.owner()):
            raise web.HTTPError(403, "this session belongs to another user")
        self.resuming = session

    def owner(self) -> Owner:
        by_token = self.identity_provider.is_token_authenticated(self)
        return Owner(self.current_user.username, by_token)

    async def upgrade(
        self,
        kernel_id: str,
        *args: str,
        check: Callable[[KernelBridge], Awaitable[None]] | None = None,
    ) -> None:
        """Hold the kernel's bridge for the socket's lifetime, ``check``, accept the WebSocket."""
        try:
            with self.http_errors():
                self.socket_limits.admit(self.current_user.username, kernel_id)
                self.admitted = kernel_id
                if self.resuming is not None:
                    self.bridge = self.resuming.bridge
                    self.bridges.hold(self.bridge)
                else:
                    self.bridge = await self.bridges.acquire(kernel_id)
                if check is not None:
                    await check(self.bridge)
                await WebSocketHandler.get(self, kernel_id, *args)
        finally:
            if self.ws_connection is None:  # no upgrade: no on_close will follow
                self.release()

    def open(self, *args: str, **kwargs: str) -> None:
        # WebSocketMixin's keep-alive pings, whose timer (even once cancelled) would otherwise
        # hold this request's context, and with it this handler, until its next tick
        detached(super().open, *args, **kwargs)
        # Without per-message compression a frame from the server is the same bytes for every
        # socket: write the kernel message's ready-made frame rather than re-frame it per socket
        # (write_message copies the payload and starts a task per call).
        self.raw_frames = self.get_compression_options() is None
        connection = self.ws_connection
        assert connection is not None and connection.stream is not None
        limit: int = self.extensionapp.client_buffer_bytes  # type: ignore[attr-defined]
        self.writer = FrameWriter(
            connection.stream,
            limit,
            self.drop_slow_client,
            connection.is_closing,
            caused=self.awaits_answers,
            paced_limit=limit + self.max_message_size,
        )
        self.set_nodelay(True)
        self.log.debug("Client %s of comm %s connected", self.client.id, self.client.comm_id)

    def subscribe(self, subscribe: Callable[[Subscriber, Sink], object]) -> None:
        """Subscribe this socket's client to the bridge with ``subscribe`` (open or attach),
        or, with a session, resume or begin it."""
        try:
            if self.session_key is None:
                subscribe(self.client, self)
                return
            session = self.sessions.find(self.kernel_id, self.session_key)
            if session is not None:
                self.session, self.client = session, session.subscriber
                session.wants_presence = self.wants_presence
                session.resume(self, self.last)
                return
            assert self.bridge is not None
            reason = self.sessions.why_not(self.kernel_id, self.session_key, self.last)
            self.session = self.sessions.start(
                self.kernel_id, self.session_key, self.owner(), self.client, self.bridge
            )
            self.session.wants_presence = self.wants_presence
            subscribe(self.client, self.session)
            self.session.begin(self, reason)
        except Exception as e:
            if self.session is not None and self.session.connection is None:
                self.session.end(Reason.CLOSED)  # it never began
            if isinstance(e, CommNotFound):
                self.close(e.close_code, "the comm no longer exists")
            elif isinstance(e, TransportsError):
                self.close(e.close_code, str(e))
            else:
                self.log.error("Client %s could not subscribe", self.client.id, exc_info=e)
                self.close(CloseCode.BRIDGE_FAILED, "the bridge failed")

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        if self.bridge is None or self.closed_by_server:
            return None  # closed by the server; frames the client sent meanwhile go nowhere
        try:
            if self.session is not None:
                self.session_message(self.session, message)
            else:
                data, buffers = decode_frame(message, self.mode)
                self.bridge.send(self.client.id, data, buffers, utf8_size(message))
        except TransportsError as e:
            self.log.warning("Closing client %s (%d): %s", self.client.id, e.close_code, e)
            self.close(e.close_code, str(e))
        # tornado awaits this before it reads the next frame: read nothing more from the client
        # while the answers it caused back up, or while the kernel has too much of it unhandled
        draining = self.writer.draining if self.writer is not None else None
        room = self.bridge.room(self.client.id) if self.bridge is not None else None
        if draining is None or room is None:
            return draining or room
        return _both(draining, room)

    def awaits_answers(self) -> bool:
        """Whether the kernel is still handling messages of this client."""
        return self.bridge is not None and self.bridge.awaits_answers(self.client.id)

    def session_message(self, session: Session, message: str | bytes) -> None:
        """One frame of a session's client: an acknowledgement, or a numbered comm message
        that goes to the kernel unless it already went."""
        if session.connection is not self:
            return  # replaced by a newer connection, which the client resends on
        frame = decode_client_frame(message)
        if isinstance(frame, ClientAck):
            return  # the comm's log keeps its latest messages for every session alike
        if session.state.received(frame.seq):
            assert self.bridge is not None
            self.bridge.send(self.client.id, frame.data, frame.buffers, utf8_size(message))
            session.handed()

    def on_close(self) -> None:
        self.log.debug("Client %s of comm %s closed", self.client.id, self.client.comm_id)
        if self.ping_callback is not None:  # it would hold this handler until its next tick
            self.ping_callback.stop()
        if self.session is not None:
            if self.close_code is None and not self.closed_by_server:
                self.session.disconnected(self)  # no close frame (or one without a code)
            else:
                self.session.finished(self)
        self.release()
        # Each holds this handler (a bound method of it, or it as the session's connection):
        # without them refcounting frees a closed socket at once, not the cyclic collector's
        # rare full collection (2,000 closed sockets with 15 KB queries held some 60 MiB).
        self.ping_callback = self.writer = self.session = None

    def release(self) -> None:
        if self.admitted is not None:
            self.socket_limits.release(self.current_user.username, self.admitted)
            self.admitted = None
        if self.bridge is not None:
            if self.session is None:  # a session's client stays until the session ends
                self.bridge.leave(self.client.id)
            self.bridges.release(self.bridge)
            self.bridge = None

    def send_pieces(self, pieces: Pieces) -> None:
        """Write one whole WebSocket frame (for the session this socket carries)."""
        if self.writer is not None:
            self.writer.send(pieces)

    # -- the bridge's sink ---------------------------------------------------------------------

    def deliver(self, frame: OutgoingFrame) -> None:
        writer = self.writer
        if writer is None:
            return
        if self.raw_frames:  # the writer checks the socket once per burst
            writer.send(wire_pieces(frame, self.mode))
            return
        if writer.closed or writer.closing():
            return  # on_close follows and says goodbye to the bridge
        message = frame.for_mode(self.mode)
        binary = isinstance(message, bytes)
        writer.write_or_pace(len(message), lambda: self.write_message(message, binary=binary))

    def lost(self, count: int) -> None:
        """v1's frames have no place to say it (the status and metrics count it)."""

    def presence(self, frame: str) -> None:
        """Only sessions hear of the roster (v1's frames are the kernel's messages alone)."""

    def drop_slow_client(self) -> None:
        """Close with 1013 and let go of what was queued; the bridge forgets the client next."""
        self.log.warning("Client %s fell too far behind; closing it", self.client.id)
        if self.bridge is not None:
            self.bridge.count_drop()
        if self.session is not None:
            self.session.disconnected(self)  # its client may resume from the comm's log
        else:  # not from inside the bridge's delivery loop, which called us: on the next turn
            IOLoop.current().add_callback(self.release)
        self.close(CloseCode.TOO_SLOW, "client fell too far behind")

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close with ``code``; without one, the keep-alive found the connection dead (the
        network failed, not the client): a session waits for its client, and the connection is
        dropped at once rather than after a close handshake nobody will answer."""
        self.closed_by_server = True
        dead = code is None
        if dead and self.session is not None:
            self.session.disconnected(self)
        if self.writer is not None:  # what was delivered before goes out before the close frame
            self.writer.close()
        if reason is not None:
            reason = reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")
        connection = self.ws_connection
        super().close(code, reason)
        if dead and connection is not None and connection.stream is not None:
            connection.stream.close()


async def _both(first: Awaitable[None], second: Awaitable[None]) -> None:
    await first
    await second


class StrictTextProtocol(WebSocketProtocol13):
    """Tornado drops a connection whose text frame is not UTF-8 without a word (1006, which
    clients take for a network failure and retry); RFC 6455 (8.1) and the contract say 1007."""

    def _handle_message(self, opcode: int, data: bytes) -> Any:
        if opcode != TEXT_OPCODE or self._frame_compressed or self.client_terminated:
            return super()._handle_message(opcode, data)
        try:  # decoded once, here, as tornado's own branch for text frames does
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            handler: Any = self.handler  # the CommSocketHandler that made this protocol
            handler.log.warning("Closing a socket (1007): a text frame that is not UTF-8")
            handler.close(CloseCode.BAD_FRAME, "a text frame that is not UTF-8")
            return None
        self._message_bytes_in += len(data)
        return self._run_callback(self.handler.on_message, text)
