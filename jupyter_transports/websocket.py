"""A comm socket: one socket is one client of one comm.

The handshake's checks of both endpoints (kernel, parameters, session) run before the upgrade
(each endpoint's own are in :mod:`.endpoints`, what every socket shares in :mod:`.socket_base`),
then each WebSocket event is one call into the kernel's bridge. A plain socket is the bridge's
sink; a socket with ``?session_key=`` carries a durable session (:mod:`.sessions`), which is the
sink.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tornado import web

from .base import FRAMES_PARAM, PRESENCE_PARAM, SESSION_PARAM
from .bridge import KernelBridge
from .errors import CloseCode, CommNotFound, TransportsError
from .framing import Frame, FrameMode, OutgoingFrame, decode_frame, utf8_size
from .router import Subscriber
from .session import ClientAck, Reason, decode_client_frame
from .sessions import Session
from .sinks import Sink
from .socket_base import BridgedSocketHandler
from .writer import wire_pieces


class CommSocketHandler(BridgedSocketHandler):
    """A WebSocket bridged to one kernel comm."""

    client: Subscriber
    raw_frames = False  # write the frames of wire_pieces() (set in open)
    session_key: str | None = None  # the ?session_key= parameter: this socket carries that session
    last = 0  # the ?last= parameter: the last seq its client received
    wants_presence = False  # ?presence=1 on a session: roster frames
    session: Session | None = None  # set in open
    resuming: Session | None = None  # the live session the handshake names, if any

    async def parse_common(self, kernel_id: str) -> None:
        """Checks and parameters shared by both endpoints, before any upgrade. A live session
        resumes even if its kernel is gone: it is told how, after what was waiting for it."""
        self.check_query_size()
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
        if self.mode is not FrameMode.JSON:
            raise web.HTTPError(400, "a session's frames are JSON: frames=text does not apply")
        self.last = self.session_params(self.session_key)
        self.wants_presence = self.get_query_argument(PRESENCE_PARAM, "") == "1"
        session = self.sessions.find(self.kernel_id, self.session_key)
        if session is not None and not session.owner.may_resume(self.owner()):
            raise web.HTTPError(403, "this session belongs to another user")
        self.resuming = session

    async def upgrade(
        self,
        kernel_id: str,
        *args: str,
        bridge: KernelBridge | None = None,
        check: Callable[[KernelBridge], Awaitable[None]] | None = None,
    ) -> None:
        """A live session's socket joins the session's bridge, whatever the kernel's is now."""
        if bridge is None and self.resuming is not None:
            bridge = self.resuming.bridge
        await super().upgrade(kernel_id, *args, bridge=bridge, check=check)

    def open(self, *args: str, **kwargs: str) -> None:
        super().open(*args, **kwargs)
        # Without per-message compression a frame from the server is the same bytes for every
        # socket: write the kernel message's ready-made frame rather than re-frame it per socket
        # (write_message copies the payload and starts a task per call).
        self.raw_frames = self.get_compression_options() is None
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

    def on_message(self, message: Frame) -> Awaitable[None] | None:
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
        return self.paced(self.bridge.room(self.client.id) if self.bridge is not None else None)

    def awaits_answers(self) -> bool:
        """Whether the kernel is still handling messages of this client."""
        return self.bridge is not None and self.bridge.awaits_answers(self.client.id)

    def session_message(self, session: Session, message: Frame) -> None:
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
        super().on_close()

    def leave_bridge(self, bridge: KernelBridge) -> None:
        if self.session is None:  # a session's client stays until the session ends
            bridge.leave(self.client.id)

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
        self.log.warning("Client %s fell too far behind; closing it", self.client.id)
        super().drop_slow_client()
