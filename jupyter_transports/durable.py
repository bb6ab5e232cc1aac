"""What every durable session does across its connections, whatever it carries (one comm, or
a multiplexed socket's many): the rules of ``docs/CONTRACT.md`` v2, "Durable sessions",
"Lifetime", kept in one place."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .context import detached
from .errors import CloseCode
from .router import Subscriber
from .session import ACK_DELAY, Reason, SessionState
from .writer import Pieces

if TYPE_CHECKING:
    from .bridge import KernelBridge
    from .sessions import SessionStore

REPLACED = "replaced by a newer connection of the same session"


class Connection(Protocol):
    """A socket as a session sees it."""

    def send_pieces(self, pieces: Pieces) -> None:
        """Write one whole WebSocket frame."""

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close the socket; the session has decided what follows."""


@dataclass(frozen=True)
class Owner:
    """Who may resume a session: the same user, or anyone holding the server's token when the
    session was made with it (with jupyter_server's default identity provider, a request with
    only the token gets a new anonymous user each time)."""

    username: str
    by_token: bool

    def may_resume(self, other: Owner) -> bool:
        return self.username == other.username or (self.by_token and other.by_token)


class DurableSession:
    """What every durable session does across its connections (a one-comm :class:`Session`,
    a multiplexed socket's :class:`~.mux_session.MuxSession`): a newer connection takes over an
    older one, a dropped one leaves it waiting ``timeout`` seconds, what its client sent is
    acknowledged, a close while away is told on resume, and it ends once."""

    subscriber: Subscriber  # its client (for the store's log lines)

    def __init__(
        self,
        store: SessionStore,
        key: tuple[str, str],
        owner: Owner,
        bridge: KernelBridge,
        state: SessionState,
    ) -> None:
        self.store = store
        self.key = key  # (kernel id, session key)
        self.owner = owner
        self.bridge = bridge
        self.state = state
        self.connection: Connection | None = None
        self.closing: tuple[int | None, str | None] | None = None  # an end that came while away
        self.ended = False
        self._expiry: asyncio.TimerHandle | None = None
        self._ack_timer: asyncio.TimerHandle | None = None

    def ack_frame(self, seq: int) -> Pieces:
        """The frame that acknowledges the client's messages up to ``seq``."""
        raise NotImplementedError

    def leave(self) -> None:
        """Let go of its comms (those it opened close): the session ends."""
        raise NotImplementedError

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Its comm or its kernel went away, or the server stops."""
        if self.ended or self.closing is not None:
            return
        if code == CloseCode.RESTARTING:
            self.end(Reason.KERNEL_RESTARTED, code, reason)
        elif self.connection is not None:
            self.end(Reason.CLOSED, code, reason)
        else:  # told on resume, after what waits for it
            self.closing = (code, reason)

    def take_over(self) -> None:
        """A newer connection comes: the older one, if still open, closes with 4409."""
        if self.connection is not None:
            old, self.connection = self.connection, None
            old.close(CloseCode.REPLACED, REPLACED)
        self._cancel_expiry()

    def greeted(self) -> None:
        """The hello of a connection said what was handed; an end that came while away
        follows what waited for it."""
        self.state.unacked = 0
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

    def handed(self) -> None:
        """A client message went to the kernel: acknowledge it soon, or now if many wait."""
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
            self.connection.send_pieces(self.ack_frame(seq))

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
        self.leave()
        self.store.bridges.release(self.bridge)
        if connection is not None and code is not None:
            connection.close(code, why)

    def _cancel_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
