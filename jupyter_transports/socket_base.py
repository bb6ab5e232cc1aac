"""What every WebSocket of the extension shares, whatever it carries (one comm, or many).

The handshake's refusals before any upgrade, holding the kernel's bridge and a place in the socket
limits for the socket's lifetime, keep-alive pings, a :class:`~.writer.FrameWriter` for what the
bridge delivers, and closing: with a code, or at once when the network failed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web
from tornado.httputil import HTTPHeaders
from tornado.ioloop import IOLoop
from tornado.websocket import WebSocketHandler, WebSocketProtocol, WebSocketProtocol13

from .base import AUTH_RESOURCE, LAST_PARAM, TransportsHandlerMixin, shortened
from .bridge import KernelBridge
from .client_frames import ClientFrameReader
from .context import detached
from .durable import DurableSession, Owner
from .errors import BadFrame, CloseCode
from .session import check_session_key
from .writer import FrameWriter, Pieces

MAX_SEQ_DIGITS = 19  # a session's numbers fit in 63 bits
MAX_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes, 2 for the code


class BridgedSocketHandler(
    TransportsHandlerMixin, WebSocketMixin, WebSocketHandler, JupyterHandler
):
    """A WebSocket on one kernel's bridge."""

    auth_resource = AUTH_RESOURCE
    bridge: KernelBridge | None = None
    writer: FrameWriter | None = None  # set in open
    admitted: str | None = None  # the kernel this socket counts against in socket_limits
    session: DurableSession | None = None  # the durable session it carries, if any
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
            return ClientFrameReader(self, protocol.params, self.extensionapp.read_buffers)  # type: ignore[attr-defined]
        return protocol

    def get_compression_options(self) -> dict[str, Any] | None:
        return self.settings.get("websocket_compression_options")

    def check_query_size(self) -> None:
        """414 for a query string over ``max_query_bytes`` (logged cut short)."""
        limit: int = self.extensionapp.max_query_bytes  # type: ignore[attr-defined]
        if len(self.request.query) > limit:
            self.request.uri = shortened(self.request.uri)  # for the access log too
            raise web.HTTPError(414, f"the query string is over {limit} bytes (max_query_bytes)")

    def session_params(self, session_key: str) -> int:
        """400 unless ``session_key`` and ``last`` are of the contract's form; ``last``."""
        try:
            check_session_key(session_key)
        except BadFrame as e:
            raise web.HTTPError(400, str(e)) from None
        last = self.get_query_argument(LAST_PARAM, "0")
        if not (last.isascii() and last.isdigit() and len(last) <= MAX_SEQ_DIGITS):
            raise web.HTTPError(400, f"last must be an integer >= 0, not {last[:40]!r}")
        return int(last)

    def owner(self) -> Owner:
        """Who may resume the sessions this request makes."""
        by_token = self.identity_provider.is_token_authenticated(self)
        return Owner(self.current_user.username, by_token)

    async def upgrade(
        self,
        kernel_id: str,
        *args: str,
        bridge: KernelBridge | None = None,
        check: Callable[[KernelBridge], Awaitable[None]] | None = None,
    ) -> None:
        """Hold the kernel's bridge (``bridge``, or the kernel's) for the socket's lifetime,
        ``check``, accept the WebSocket."""
        try:
            with self.http_errors():
                self.socket_limits.admit(self.current_user.username, kernel_id)
                self.admitted = kernel_id
                if bridge is not None:
                    self.bridge = bridge
                    self.bridges.hold(bridge)
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
            bursts=self.bridge.bursts if self.bridge is not None else None,
        )
        self.set_nodelay(True)
        self.forget_handshake()

    def forget_handshake(self) -> None:
        """Drop what only the handshake reads or writes (headers, cookies, parameters), which
        the request and the handler would otherwise keep for the socket's whole life."""
        request = self.request
        request.headers = HTTPHeaders()
        request.arguments, request.query_arguments, request.body_arguments = {}, {}, {}
        request.__dict__.pop("_cookies", None)
        self.__dict__.pop("_new_cookie", None)  # the login cookie the 101 answer carried
        self._headers = HTTPHeaders()  # the 101 answer's, sent
        connection = request.connection
        if connection is not None and hasattr(connection, "_request_headers"):
            connection._request_headers = None  # tornado's copy of the request's

    def send_pieces(self, pieces: Pieces) -> None:
        """Write one whole WebSocket frame (a session's, or a multiplexed socket's)."""
        if self.writer is not None:
            self.writer.send(pieces)

    def paced(self, room: Awaitable[None] | None) -> Awaitable[None] | None:
        """What tornado awaits before it reads the client's next frame: read nothing more while
        the answers it caused back up, nor while the kernel has too much of it unhandled
        (``room``, the bridge's)."""
        draining = self.writer.draining if self.writer is not None else None
        if draining is None or room is None:
            return draining or room
        return _both(draining, room)

    def awaits_answers(self) -> bool:
        """Whether the kernel is still handling messages this socket sent (then what backs up
        may be their answers: the socket is paced rather than dropped)."""
        return False

    def drop_slow_client(self) -> None:
        """The client fell too far behind: close with 1013 (a session waits for its client to
        resume), and let go of the bridge on the next turn (not inside its delivery loop, which
        called us)."""
        if self.bridge is not None:
            self.bridge.count_drop()
        if self.session is not None:
            self.session.disconnected(self)
        IOLoop.current().add_callback(self.release)
        self.close(CloseCode.TOO_SLOW, "client fell too far behind")

    def leave_bridge(self, bridge: KernelBridge) -> None:
        """Say goodbye to the bridge for the socket's clients (on close, or a failed upgrade)."""

    def release(self) -> None:
        if self.admitted is not None:
            self.socket_limits.release(self.current_user.username, self.admitted)
            self.admitted = None
        if self.bridge is not None:
            self.leave_bridge(self.bridge)
            self.bridges.release(self.bridge)
            self.bridge = None

    def on_close(self) -> None:
        if self.session is not None:
            if self.close_code is None and not self.closed_by_server:
                self.session.disconnected(self)  # no close frame (or one without a code)
            else:
                self.session.finished(self)
        if self.ping_callback is not None:  # it would hold this handler until its next tick
            self.ping_callback.stop()
        self.release()
        # Each holds this handler (a bound method of it, or it as a session's connection):
        # without them refcounting frees a closed socket at once, not the cyclic collector's
        # rare full collection (2,000 closed sockets with 15 KB queries held some 60 MiB).
        self.ping_callback = self.writer = self.session = None

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close with ``code``; without one, the keep-alive found the connection dead (the
        network failed, not the client): it is dropped at once rather than after a close
        handshake nobody will answer, and a session waits for its client."""
        self.closed_by_server = True
        if code is None and self.session is not None:
            self.session.disconnected(self)
        if self.writer is not None:  # what was delivered before goes out before the close frame
            self.writer.close()
        if reason is not None:
            reason = reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")
        connection = self.ws_connection
        super().close(code, reason)
        if code is None and connection is not None and connection.stream is not None:
            connection.stream.close()


async def _both(first: Awaitable[None], second: Awaitable[None]) -> None:
    await first
    await second
