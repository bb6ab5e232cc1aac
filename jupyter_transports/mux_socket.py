"""``…/kernels/{kernel_id}/comms`` with an upgrade: one WebSocket for many comms (contract v2).

The socket's comms are its :class:`~.multiplexer.Multiplexer`'s; the socket is that
multiplexer's output, or, with ``?session_key=``, carries a :class:`~.mux_session.MuxSession`,
which is.
"""

from __future__ import annotations

from collections.abc import Awaitable

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from tornado import web

from . import mux
from .base import AUTH_RESOURCE, EXECUTE, FRAMES_PARAM, READ, SESSION_PARAM
from .bridge import KernelBridge
from .errors import ReadOnly, TransportsError
from .framing import Buffers, Frame, OutgoingFrame, utf8_size
from .multiplexer import Multiplexer
from .mux_session import MuxSession
from .router import Subscriber
from .session import Reason
from .socket_base import BridgedSocketHandler
from .writer import enveloped_pieces, object_pieces

MUX_KEY = "websocket mux"  # a kernel message's frame for plain multiplexed sockets, shared


class MuxSocketHandler(BridgedSocketHandler):
    """Many comms of a kernel on one socket."""

    socket: Subscriber  # the socket's own id and user; each comm's client is derived from it
    follows: frozenset[str] = frozenset()
    multiplexer: Multiplexer | None = None  # of a plain socket (set in open)
    session_key: str | None = None
    last = 0
    session: MuxSession | None = None  # set in open
    resuming: MuxSession | None = None  # the live session the handshake names, if any

    def get_compression_options(self) -> None:
        """Frames are written as built, once for every socket (no per-message compression)."""

    @ws_authenticated
    @authorized(READ, resource=AUTH_RESOURCE)
    async def get(self, kernel_id: str) -> None:  # type: ignore[override]
        self.check_query_size()
        if self.get_query_argument(FRAMES_PARAM, None) is not None:
            raise web.HTTPError(400, "a multiplexed socket's frames are JSON objects: no frames")
        follows = self.get_query_arguments(mux.FOLLOW_PARAM)
        if not all(follows):
            raise web.HTTPError(400, "follow names a comm target: it cannot be empty")
        self.follows = frozenset(follows)
        self.kernel_id = kernel_id
        self.session_key = self.get_query_argument(SESSION_PARAM, None)
        if self.session_key is not None:
            self.last = self.session_params(self.session_key)
            self.resuming = self.sessions.muxed.get((kernel_id, self.session_key))
            if self.resuming is not None and not self.resuming.owner.may_resume(self.owner()):
                raise web.HTTPError(403, "this session belongs to another user")
        if self.resuming is None:  # a live session resumes even if its kernel is gone
            await self.check_kernel(kernel_id)
        can_send = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, EXECUTE, AUTH_RESOURCE)
        )
        if self.resuming is not None and self.resuming.mux.socket.can_send and not can_send:
            raise web.HTTPError(403, "this session sends; this user may no longer send")
        self.socket = self.new_client(can_send=can_send)
        self.query = self.comm_open_query()
        bridge = self.resuming.bridge if self.resuming is not None else None
        await self.upgrade(kernel_id, bridge=bridge, check=self.list_comms)

    async def list_comms(self, bridge: KernelBridge) -> None:
        """Learn the kernel's comms (of followed targets) before the upgrade."""
        if self.follows and self.resuming is None:
            await bridge.comms.refresh()

    def open(self, *args: str, **kwargs: str) -> None:
        super().open(*args, **kwargs)
        try:
            if self.session_key is None:
                self.multiplexer = self.new_multiplexer(self)
                self.multiplexer.start()
                hello = mux.hello(self.socket.id, self.socket.can_send, self.multiplexer.listing())
                self.frame(hello)
            else:
                self.begin_session(self.session_key)
        except TransportsError as e:  # the bridge closed meanwhile
            self.close(e.close_code, str(e))
        self.log.debug("Multiplexed socket %s connected", self.socket.id)

    def new_multiplexer(self, output: MuxSocketHandler | MuxSession) -> Multiplexer:
        assert self.bridge is not None
        return Multiplexer(
            self.bridge,
            self.socket,
            output,
            follows=self.follows,
            query=self.query,
            allowed_targets=self.extensionapp.allowed_targets,  # type: ignore[attr-defined]
        )

    def begin_session(self, session_key: str) -> None:
        """Resume the live session of that key, or begin one."""
        key = (self.kernel_id, session_key)
        session = self.sessions.muxed.get(key)
        if session is not None:
            self.session = session
            session.resume(self, self.last)
            return
        assert self.bridge is not None
        reason = self.sessions.why_not(self.kernel_id, session_key, self.last)
        session = MuxSession(self.sessions, key, self.owner(), self.bridge)
        session.mux = self.new_multiplexer(session)
        self.sessions.start_muxed(session)
        try:
            session.mux.start()
        except TransportsError:
            session.end(Reason.CLOSED)
            raise
        self.session = session
        session.begin(self, reason)

    # -- the client's frames ---------------------------------------------------------------------

    def on_message(self, message: Frame) -> Awaitable[None] | None:
        if self.bridge is None or self.closed_by_server:
            return None  # closed by the server; frames the client sent meanwhile go nowhere
        try:
            if self.session is not None:
                return self.paced(self.session_frame(self.session, message))
            assert self.multiplexer is not None
            frame = mux.decode_client_frame(message)
            return self.paced(self.carry_out(self.multiplexer, frame, utf8_size(message)))
        except TransportsError as e:
            self.log.warning("Closing socket %s (%d): %s", self.socket.id, e.close_code, e)
            self.close(e.close_code, str(e))
            return None

    def session_frame(self, session: MuxSession, message: Frame) -> Awaitable[None] | None:
        """A numbered frame, carried out unless it was already; or an acknowledgement."""
        if session.connection is not self:
            return None  # replaced by a newer connection, which the client resends on
        decoded = mux.decode_session_frame(message)
        if isinstance(decoded, int):
            session.acknowledged(decoded)
            return None
        seq, frame = decoded
        if not session.state.received(seq):
            return None
        result = self.carry_out(session.mux, frame, utf8_size(message))
        session.handed()
        return result

    def carry_out(
        self, multiplexer: Multiplexer, frame: mux.ClientFrame, size: int
    ) -> Awaitable[None] | None:
        if not isinstance(frame, mux.Attach | mux.Detach) and not multiplexer.socket.can_send:
            raise ReadOnly("this client may only receive")
        return multiplexer.handle(frame, size)

    # -- the multiplexer's output (a plain socket), a session's connection -----------------------

    def frame(self, head: str, buffers: Buffers = ()) -> None:
        self.send_pieces(object_pieces(head, buffers))

    def message(self, frame: OutgoingFrame, comm_id: str) -> None:
        self.send_pieces(enveloped_pieces(frame, MUX_KEY, lambda f: mux.message(f, comm_id)))

    # -- the end ---------------------------------------------------------------------------------

    def awaits_answers(self) -> bool:
        multiplexer = self.session.mux if self.session is not None else self.multiplexer
        return multiplexer is not None and multiplexer.awaits_answers()

    def leave_bridge(self, bridge: KernelBridge) -> None:
        if self.multiplexer is not None:  # a session's comms stay until the session ends
            self.multiplexer.leave()

    def on_close(self) -> None:
        self.log.debug("Multiplexed socket %s closed", self.socket.id)
        super().on_close()
        self.multiplexer = None  # it holds this handler
