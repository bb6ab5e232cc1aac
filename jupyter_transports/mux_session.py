"""A durable session on a multiplexed socket (contract v2): the output of its multiplexer
across connections.

Every frame it sends but ``hello`` and ``ack`` is numbered and kept in its :class:`~.mux.MuxLog`
until the client acknowledges it; a connection that drops without a close frame leaves the
session waiting ``session_timeout`` seconds on all its comms, and the next connection hears what
it missed. The client's frames are numbered too and carried out exactly once (the rules of
:class:`~.session.SessionState`, shared with one-comm sessions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import mux
from .durable import Connection, DurableSession, Owner
from .framing import Buffers, OutgoingFrame
from .router import Subscriber
from .session import Outcome, Reason, SessionState
from .writer import Pieces, object_pieces

if TYPE_CHECKING:
    from .bridge import KernelBridge
    from .multiplexer import Multiplexer
    from .sessions import SessionStore


class MuxSession(DurableSession):
    """One multiplexed client's stay on a kernel across its connections."""

    mux: Multiplexer  # set once made

    def __init__(
        self, store: SessionStore, key: tuple[str, str], owner: Owner, bridge: KernelBridge
    ) -> None:
        super().__init__(store, key, owner, bridge, SessionState(0))
        self.log = mux.MuxLog(store.window_bytes)

    @property
    def subscriber(self) -> Subscriber:  # type: ignore[override]
        return self.mux.socket

    # -- the multiplexer's output ----------------------------------------------------------------

    def frame(self, head: str, buffers: Buffers = ()) -> None:
        seq = self.log.next()
        self._send(seq, object_pieces(mux.numbered(seq, head), buffers))

    def message(self, frame: OutgoingFrame, comm_id: str) -> None:
        seq = self.log.next()
        head = mux.numbered(seq, mux.message(frame, comm_id))
        self._send(seq, object_pieces(head, frame.buffers))

    def _send(self, seq: int, pieces: Pieces) -> None:
        self.log.keep(seq, pieces)
        if self.connection is not None:
            self.connection.send_pieces(pieces)

    # -- connections -----------------------------------------------------------------------------

    def begin(self, connection: Connection, reason: Reason | None) -> None:
        """The first connection: new, or a reset for ``reason``."""
        self._greet(connection, Outcome.NEW if reason is None else Outcome.RESET, reason, [])

    def resume(self, connection: Connection, last: int) -> None:
        """A later connection, whose client had every frame up to ``last``."""
        self.take_over()
        missed = self.log.after(last)
        if missed is None:
            self._greet(connection, Outcome.RESET, Reason.OVERFLOW, [])
        else:
            self.log.acknowledged(last)
            self._greet(connection, Outcome.RESUMED, None, missed)

    def _greet(
        self, connection: Connection, outcome: Outcome, reason: Reason | None, missed: list[Pieces]
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
        for pieces in missed:
            connection.send_pieces(pieces)
        self.greeted()

    def acknowledged(self, seq: int) -> None:
        """The client had every frame up to ``seq``: they need not be kept."""
        self.log.acknowledged(seq)

    def ack_frame(self, seq: int) -> Pieces:
        return object_pieces(mux.session_ack(seq))

    def leave(self) -> None:
        self.mux.leave()
