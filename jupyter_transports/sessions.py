"""The server's durable sessions: which connection carries each, how long one waits for its
client to come back, and what is said when it cannot resume (see :mod:`.session` for the rules).

A :class:`Session` is the bridge's subscriber for one client across its connections: the router
knows one client id, whatever connection carries it. While no connection does (it dropped
without a close frame), the session lingers for ``timeout`` seconds, its comm stays open, and
what the kernel sends waits in the comm's :class:`~.session.CommLog`, which the bridge keeps
for every comm with sessions or event streams on it. A session key is a secret: it is never
logged.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING

from .context import detached
from .durable import Connection, DurableSession, Owner
from .framing import OutgoingFrame, dumps
from .router import Subscriber
from .session import CommLog, Outcome, Reason, SessionState, ack, hello, lost_frame
from .writer import Pieces, session_wire_pieces, websocket_frame

if TYPE_CHECKING:
    from .bridge import KernelBridge
    from .manager import BridgeManager
    from .mux_session import MuxSession
MAX_TOMBSTONES = 10_000  # ended sessions remembered, to say why they cannot resume


class Session(DurableSession):
    """One durable session on one comm: the bridge's sink for its client."""

    def __init__(
        self,
        store: SessionStore,
        key: tuple[str, str],
        owner: Owner,
        subscriber: Subscriber,
        bridge: KernelBridge,
        log: CommLog,
    ) -> None:
        super().__init__(store, key, owner, bridge, SessionState(log.last))
        self.subscriber = subscriber
        self.log = log
        self.unreported_lost = 0  # kernel messages lost while away, told on resume
        self.wants_presence = False  # its connection asked for roster frames (presence=1)

    # -- the bridge's sink ---------------------------------------------------------------------

    def deliver(self, frame: OutgoingFrame) -> None:
        if self.connection is not None:  # the comm's log keeps it, for a resume
            self.connection.send_pieces(session_wire_pieces(frame))

    def lost(self, count: int) -> None:
        if self.connection is not None:
            self.connection.send_pieces((websocket_frame(lost_frame(count)),))
        else:
            self.unreported_lost += count

    def presence(self, frame: str) -> None:
        """A roster change; one that comes while away is not kept: the resume sends the roster."""
        if self.connection is not None and self.wants_presence:
            self.connection.send_pieces((websocket_frame(frame),))

    # -- connections ---------------------------------------------------------------------------

    def begin(self, connection: Connection, reason: Reason | None) -> None:
        """The first connection of this session: new, or a reset for ``reason``."""
        self._greet(connection, Outcome.NEW if reason is None else Outcome.RESET, reason, [])

    def resume(self, connection: Connection, last: int) -> None:
        """A later connection, whose client had every message up to ``last``: it replaces the
        one before, hears what it missed, then the live stream."""
        self.take_over()
        outcome, missed = self.state.resume(self.log, self.subscriber.id, last)
        reason = Reason.OVERFLOW if outcome is Outcome.RESET else None
        self._greet(connection, outcome, reason, missed)

    def _greet(
        self,
        connection: Connection,
        outcome: Outcome,
        reason: Reason | None,
        missed: list[OutgoingFrame],
    ) -> None:
        self.connection = connection
        subscriber, state = self.subscriber, self.state
        greeting = hello(
            outcome, subscriber.id, subscriber.comm_id, state.handed, self.log.window_bytes, reason
        )
        connection.send_pieces((websocket_frame(greeting),))
        if self.unreported_lost:
            connection.send_pieces((websocket_frame(lost_frame(self.unreported_lost)),))
            self.unreported_lost = 0
        if self.wants_presence and (roster := self.bridge.router.roster(subscriber.comm_id)):
            connection.send_pieces((websocket_frame(dumps(roster)),))
        for frame in missed:
            connection.send_pieces(session_wire_pieces(frame))
        self.greeted()

    def ack_frame(self, seq: int) -> Pieces:
        return (websocket_frame(ack(seq)),)

    def leave(self) -> None:
        self.bridge.leave(self.subscriber.id)  # its comm closes if it opened it
        self.store.close_log(self.bridge, self.subscriber.comm_id, self.log)


class EventHistory:
    """How event streams of a comm that reconnect with ``Last-Event-ID`` are given what they
    missed: from the comm's log, kept from the first stream until ``timeout`` after the last.

    Only messages that went to every client are given: a stream is a new client each time.
    """

    def __init__(
        self, store: SessionStore, key: tuple[str, str], bridge: KernelBridge, log: CommLog
    ) -> None:
        self.store = store
        self.key = key  # (kernel id, comm id)
        self.bridge = bridge
        self.log = log
        self.streams = 0
        self.ended = False
        self._expiry: asyncio.TimerHandle | None = None

    def event_id(self, seq: int) -> str:
        """The SSE id of the comm's message ``seq``: the log's epoch and the seq, so an id from
        an earlier log (whose numbers a new bridge reuses) is never taken for this one's."""
        return f"{self.log.epoch}-{seq}"

    def missed(self, last_event_id: str) -> list[OutgoingFrame] | Reason:
        """What came after the event ``last_event_id``, or why the history cannot say."""
        epoch, _, number = last_event_id.partition("-")
        if not (number.isascii() and number.isdigit()):
            return Reason.UNKNOWN  # not an id this server gives
        last = int(number)
        if epoch != self.log.epoch or last < self.log.since:
            return Reason.EXPIRED  # from before what the log holds
        if last > self.log.last:
            return Reason.UNKNOWN  # not an id this comm gave
        missed = self.log.after(last)
        return Reason.OVERFLOW if missed is None else missed

    def stream_started(self) -> None:
        self.streams += 1
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def stream_ended(self) -> None:
        self.streams -= 1
        if self.streams == 0 and not self.ended:
            loop = asyncio.get_running_loop()
            self._expiry = detached(loop.call_later, self.store.timeout, self.end)

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self._expiry is not None:
            self._expiry.cancel()
        if self.store.histories.get(self.key) is self:
            del self.store.histories[self.key]
        self.store.close_log(self.bridge, self.key[1], self.log)
        self.store.bridges.release(self.bridge)


class SessionStore:
    """Every live session of the server, by kernel and session key, and why ended ones ended."""

    def __init__(
        self, bridges: BridgeManager, *, timeout: float, window_bytes: int, log: logging.Logger
    ) -> None:
        self.bridges = bridges
        self.timeout = timeout
        self.window_bytes = window_bytes
        self.log = log
        self.live: dict[tuple[str, str], Session] = {}
        self.muxed: dict[tuple[str, str], MuxSession] = {}  # on multiplexed sockets
        self.histories: dict[tuple[str, str], EventHistory] = {}  # by (kernel id, comm id)
        self.tombstones: dict[tuple[str, str], Reason] = {}  # oldest first

    def find(self, kernel_id: str, session_key: str) -> Session | None:
        return self.live.get((kernel_id, session_key))

    def why_not(self, kernel_id: str, session_key: str, last: int) -> Reason | None:
        """Why a session that is not live cannot resume (None: it is new)."""
        reason = self.tombstones.get((kernel_id, session_key))
        if reason is None and last > 0:
            return Reason.UNKNOWN
        return reason

    def start(
        self,
        kernel_id: str,
        session_key: str,
        owner: Owner,
        subscriber: Subscriber,
        bridge: KernelBridge,
    ) -> Session:
        """A new session; the caller subscribes it to the bridge."""
        key = (kernel_id, session_key)
        self.tombstones.pop(key, None)
        self.bridges.hold(bridge)
        log = self.open_log(bridge, subscriber.comm_id)
        session = self.live[key] = Session(self, key, owner, subscriber, bridge, log)
        self.log.debug("Session of client %s started", subscriber.id)
        return session

    def start_muxed(self, session: MuxSession) -> None:
        """A new session on a multiplexed socket (which holds the bridge for it)."""
        self.tombstones.pop(session.key, None)
        self.bridges.hold(session.bridge)
        self.muxed[session.key] = session

    def history(self, kernel_id: str, comm_id: str, bridge: KernelBridge) -> EventHistory:
        """The comm's event history, begun now if it has none (the comm must exist)."""
        history = self.histories.get((kernel_id, comm_id))
        if history is None:
            log = self.open_log(bridge, comm_id)
            history = EventHistory(self, (kernel_id, comm_id), bridge, log)
            self.bridges.hold(bridge)
            self.histories[history.key] = history
        return history

    def open_log(self, bridge: KernelBridge, comm_id: str) -> CommLog:
        """The comm's log, begun now if it has none; kept until :meth:`close_log`."""
        log = bridge.logs.get(comm_id)
        if log is None:
            comm = bridge.router.comms.get(comm_id)
            since = comm.seq if comm is not None else 0  # a comm about to open has none yet
            log = CommLog(self.window_bytes, since, secrets.token_hex(4))
            bridge.logs[comm_id] = log
        log.users += 1
        return log

    def close_log(self, bridge: KernelBridge, comm_id: str, log: CommLog) -> None:
        """One user of the comm's log is done with it; the last one stops the bridge keeping
        it."""
        log.users -= 1
        if log.users == 0 and bridge.logs.get(comm_id) is log:
            del bridge.logs[comm_id]

    def forget(self, session: DurableSession, reason: Reason) -> None:
        if self.live.get(session.key) is session:
            del self.live[session.key]
        if self.muxed.get(session.key) is session:
            del self.muxed[session.key]
        self.tombstones[session.key] = reason
        while len(self.tombstones) > MAX_TOMBSTONES:
            del self.tombstones[next(iter(self.tombstones))]
        self.log.debug("Session of client %s ended: %s", session.subscriber.id, reason.value)

    def stop(self) -> None:
        """The server stops: end every session (their bridges closed their sockets already)."""
        for session in list(self.live.values()):
            session.end(Reason.CLOSED)
        for muxed in list(self.muxed.values()):
            muxed.end(Reason.CLOSED)
        for history in list(self.histories.values()):
            history.end()
