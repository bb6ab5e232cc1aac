"""A durable session on a multiplexed socket (contract v2): the output of its multiplexer
across connections.

Every frame it sends but ``hello`` and ``ack`` is numbered and kept in its :class:`~.mux.MuxLog`
until the client acknowledges it; a connection that drops without a close frame leaves the
session waiting ``session_timeout`` seconds on all its comms, and the next connection hears what
it missed. The client's frames are numbered too and carried out exactly once (the rules of
:class:`~.session.SessionState`, shared with one-comm sessions).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from . import mux
from .context import detached
from .errors import CloseCode
from .framing import Buffers, OutgoingFrame
from .router import Subscriber
from .session import ACK_DELAY, Outcome, Reason, SessionState
from .sessions import REPLACED, Connection, Owner
from .writer import object_pieces

if TYPE_CHECKING:
    from .bridge import KernelBridge
    from .multiplexer import Multiplexer
    from .sessions import SessionStore

MUX_HEAD_KEY = "mux head"  # a kernel message's frame head for multiplexed sockets, shared


def message_head(frame: OutgoingFrame, comm_id: str) -> str:
    """The JSON object of a kernel message for multiplexed sockets (made once per message)."""
    head: str | None = frame.encoded.get(MUX_HEAD_KEY)
    if head is None:
        head = frame.encoded[MUX_HEAD_KEY] = mux.message(frame, comm_id)
    return head


class MuxSession:
    """One multiplexed client's stay on a kernel across its connections."""

    mux: Multiplexer  # set once made

    def __init__(
        self, store: SessionStore, key: tuple[str, str], owner: Owner, bridge: KernelBridge
    ) -> None:
        self.store = store
        self.key = key  # (kernel id, session key)
        self.owner = owner
        self.bridge = bridge
        self.log = mux.MuxLog(store.window_bytes)
        self.state = SessionState(0)  # what of the client's frames was carried out
        self.connection: Connection | None = None
        self.closing: tuple[int | None, str | None] | None = None  # an end while away
        self.ended = False
        self._expiry: asyncio.TimerHandle | None = None
        self._ack_timer: asyncio.TimerHandle | None = None

    @property
    def subscriber(self) -> Subscriber:
        return self.mux.socket

    # -- the multiplexer's output ----------------------------------------------------------------

    def frame(self, head: str, buffers: Buffers = ()) -> None:
        seq = self.log.next()
        self._send(seq, object_pieces(mux.numbered(seq, head), buffers))

    def message(self, frame: OutgoingFrame, comm_id: str) -> None:
        seq = self.log.next()
        self._send(
            seq, object_pieces(mux.numbered(seq, message_head(frame, comm_id)), frame.buffers)
        )

    def _send(self, seq: int, pieces: tuple[bytes | memoryview, ...]) -> None:
        self.log.keep(seq, pieces)
        if self.connection is not None:
            self.connection.send_pieces(pieces)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """The kernel went away or the server stops (once per comm, and once more)."""
        if self.ended or self.closing is not None:
            return
        if code == CloseCode.RESTARTING:
            self.end(Reason.KERNEL_RESTARTED, code, reason)
        elif self.connection is not None:
            self.end(Reason.CLOSED, code, reason)
        else:  # told on resume, after what the log holds for it
            self.closing = (code, reason)

    # -- connections -----------------------------------------------------------------------------

    def begin(self, connection: Connection, reason: Reason | None) -> None:
        """The first connection: new, or a reset for ``reason``."""
        self._greet(connection, Outcome.NEW if reason is None else Outcome.RESET, reason, [])

    def resume(self, connection: Connection, last: int) -> None:
        """A later connection, whose client had every frame up to ``last``."""
        if self.connection is not None:
            old, self.connection = self.connection, None
            old.close(CloseCode.REPLACED, REPLACED)
        self._cancel_expiry()
        missed = self.log.after(last)
        if missed is None:
            self._greet(connection, Outcome.RESET, Reason.OVERFLOW, [])
        else:
            self.log.acknowledged(last)
            self._greet(connection, Outcome.RESUMED, None, missed)

    def _greet(
        self,
        connection: Connection,
        outcome: Outcome,
        reason: Reason | None,
        missed: list[tuple[bytes | memoryview, ...]],
    ) -> None:
        self.connection = connection
        socket = self.mux.socket
        greeting = mux.session_hello(
            outcome.value,
            None if reason is None else reason.value,
            socket.id,
            socket.can_send,
            self.state.handed,
            self.log.window_bytes,
            self.mux.listing(),
        )
        connection.send_pieces(object_pieces(greeting))
        self.state.unacked = 0  # the hello said what was carried out
        for pieces in missed:
            connection.send_pieces(pieces)
        if self.closing is not None:
            code, why = self.closing
            self.end(Reason.CLOSED, code, why)

    def disconnected(self, connection: Connection) -> None:
        """``connection`` dropped without a close frame: wait for the client to come back."""
        if connection is not self.connection or self.ended:
            return
        self.connection = None
        loop = asyncio.get_running_loop()
        self._expiry = detached(loop.call_later, self.store.timeout, self.end, Reason.EXPIRED)

    def finished(self, connection: Connection) -> None:
        """``connection`` closed for good (a close frame, or a fault): the session ends."""
        if connection is self.connection:
            self.connection = None
            self.end(Reason.CLOSED)

    # -- the client's frames ---------------------------------------------------------------------

    def acknowledged(self, seq: int) -> None:
        self.log.acknowledged(seq)

    def handed(self) -> None:
        """A client frame was carried out: acknowledge it soon, or now if many wait."""
        if self.state.ack_due():
            self.flush_ack()
        elif self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY, self.flush_ack)

    def flush_ack(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self.connection is None:
            return  # the next hello says it
        seq = self.state.take_ack()
        if seq is not None:
            self.connection.send_pieces(object_pieces(mux.session_ack(seq)))

    # -- the end ---------------------------------------------------------------------------------

    def end(self, reason: Reason, code: int | None = None, why: str | None = None) -> None:
        """Forget the session (the comms it opened close); close its connection with ``code``
        if given."""
        if self.ended:
            return
        self.ended = True
        self._cancel_expiry()
        if self._ack_timer is not None:
            self._ack_timer.cancel()
        connection, self.connection = self.connection, None
        self.store.forget(self, reason)
        self.mux.leave()
        self.store.bridges.release(self.bridge)
        if connection is not None and code is not None:
            connection.close(code, why)

    def _cancel_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
