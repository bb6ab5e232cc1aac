"""Durable sessions: sequence numbers, acks, the comm's log and the outcome of a resume (pure).

A session is one client's stay on one comm across several connections. Its wire is described
byte for byte in ``docs/CONTRACT.md`` (v2, "Durable sessions").

Rules, in plain words:

1. Every comm message the server sends on a session carries the comm's sequence number
   ``seq``: strictly increasing per comm, so one encoded frame serves every session on the comm;
   a session sees the part of that sequence that is routed to it (``transports.to`` skips some).
2. A comm with sessions (or event streams) on it keeps its latest messages in one
   :class:`CommLog` of at most ``window_bytes``, shared by all of them: each message is kept
   once, with whom it went to, whatever the number of sessions (so a session costs a fan-out
   nothing per delivery). A log that would hold more drops its oldest messages, and remembers
   the highest ``seq`` it dropped.
3. A resume that says which ``seq`` the client had last (``last``) replays, in order, the log's
   messages after it that went to that client, then the live stream: no gap, no repeat. If the
   log dropped messages after ``last``, the resume is a reset instead, with the reason
   ``overflow``.
4. The client numbers its own messages 1, 2, 3, …. The session hands the next number to the
   kernel, drops a number it already handed (a resend after a resume: each message reaches the
   kernel once), and refuses a number that skips one (a client fault, close code 1002).
5. The server acknowledges what it handed to the kernel at least every ``ACK_EVERY`` messages
   and within ``ACK_DELAY`` seconds of the first message not yet acknowledged; the hello of every
   connection says what was handed so far, and how large the log (``window``) is. The client
   acknowledges what it received once it has a ``1 / CLIENT_ACK_FRACTION`` of the window
   unacknowledged, and ``CLIENT_ACK_IDLE`` seconds after an unacknowledged message at the
   latest: rarely, as an acknowledgement costs the server what hundreds of deliveries do. This
   server's log keeps the comm's latest messages whatever the acknowledgements say.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple, TypeGuard

from . import presence
from .errors import BadFrame, ClientFault, CloseCode
from .framing import Buffers, Frame, FrameMode, OutgoingFrame, decode_frame, dumps
from .presence import PRESENCE_KEY
from .protocol import Buffer

SESSION_KEY_FORM = re.compile(r"[A-Za-z0-9_-]{16,64}")
ACK_EVERY = 64  # messages, the server's acknowledgements
ACK_DELAY = 0.1  # seconds
CLIENT_ACK_FRACTION = 4  # the client acknowledges at a quarter of the window...
CLIENT_ACK_IDLE = 10.0  # ... or this many seconds after an unacknowledged message

# keys of the JSON objects of the session wire
SESSION_KEY = "session"
REASON_KEY = "reason"
CLIENT_KEY = "client"
COMM_ID_KEY = "comm_id"
SEQ_KEY = "seq"
ACK_KEY = "ack"
WINDOW_KEY = "window"
DATA_KEY = "data"
LOST_KEY = "lost"
FROM_KEY = "from"


class Outcome(str, Enum):
    """What the first frame of a session connection says."""

    def __str__(self) -> str:  # the value, as the wire says it (not "Outcome.NEW")
        return str(self.value)

    NEW = "new"  # no session by that id was known: it starts now
    RESUMED = "resumed"  # the log replays what the client missed, then the live stream
    RESET = "reset"  # not resumed (see Reason); the socket is on the comm, live from now


class Reason(str, Enum):
    """Why a connection could not resume its session."""

    __str__ = Outcome.__str__

    UNKNOWN = "unknown"  # no such session (never made here, or forgotten long ago)
    EXPIRED = "expired"  # nobody resumed it within session_timeout
    OVERFLOW = "overflow"  # the log dropped messages the client had not received
    KERNEL_RESTARTED = "kernel_restarted"  # the kernel, and every comm with it, started anew
    CLOSED = "closed"  # the session ended: closed by its client or by the server


class OutOfOrder(ClientFault):
    """A client's message number skips one."""

    close_code = CloseCode.PROTOCOL_ERROR


@dataclass(frozen=True)
class ClientMessage:
    """A numbered comm message (from the client, or to it)."""

    seq: int
    data: Any
    buffers: Sequence[Buffer]
    sender: str = ""  # the client whose message the server relayed (echo)


@dataclass(frozen=True)
class ClientAck:
    """The client has received every ``seq`` up to this one."""

    seq: int


# What the server keeps of a logged message besides its bytes (its frame object, its JSON text,
# the log's entry): about 950 bytes, measured; counted so that the window bounds memory.
ENTRY_BYTES = 1024


class CommLog:
    """The latest messages of one comm, for the sessions and event streams on it (no I/O)."""

    def __init__(
        self, window_bytes: int, since: int, epoch: str = "", *, entry_bytes: int = ENTRY_BYTES
    ) -> None:
        self.window_bytes = window_bytes
        self.entry_bytes = entry_bytes  # counted for each message besides its own bytes
        self.since = since  # the comm's last seq before the log began
        self.last = since  # the comm's last seq so far
        self.entries: deque[Entry] = deque()  # in seq order
        self.size = 0  # their bytes, each with what the server keeps of it
        self.lost_through = 0  # the highest seq dropped
        self.users = 0  # sessions and event histories that keep the log
        self.epoch = epoch  # what tells this log's event ids from an earlier log's

    def add(self, frame: OutgoingFrame, clients: Sequence[str], broadcast: bool) -> None:
        """``frame`` went to ``clients`` (to every client of the comm, if ``broadcast``)."""
        entries = self.entries
        entries.append(Entry(frame, clients, broadcast))
        self.last = frame.seq
        self.size += frame.size + self.entry_bytes
        while self.size > self.window_bytes:
            dropped = entries.popleft().frame
            self.size -= dropped.size + self.entry_bytes
            self.lost_through = dropped.seq

    def after(self, last: int, client_id: str | None = None) -> list[OutgoingFrame] | None:
        """The messages after ``last`` that went to ``client_id`` (None: to every client), or
        None if the log cannot say (it began, or dropped messages, after ``last``)."""
        if last < self.since or last < self.lost_through:
            return None
        return [
            entry.frame
            for entry in self.entries
            if entry.frame.seq > last
            and (entry.broadcast if client_id is None else client_id in entry.clients)
        ]


class Entry(NamedTuple):
    """One message of a :class:`CommLog`."""

    frame: OutgoingFrame
    clients: Sequence[str]
    broadcast: bool


class SessionState:
    """A session's own numbers (no I/O): what of its client's messages went to the kernel, and
    what of it the client has been told; and since when it is in sync with its comm."""

    def __init__(self, since: int) -> None:
        self.since = since  # the comm's last seq when the client was last in sync with it
        self.handed = 0  # the client's last message handed to the kernel
        self.unacked = 0  # how many of those the client has not been told of yet

    def resume(
        self, log: CommLog, client_id: str, last: int
    ) -> tuple[Outcome, list[OutgoingFrame]]:
        """A new connection whose client had every message up to ``last``: what it is told,
        and the messages to send it before the live stream. After a reset it is in sync again
        from the comm's latest message."""
        missed = log.after(max(last, self.since), client_id)
        if missed is None:
            self.since = log.last
            return Outcome.RESET, []
        return Outcome.RESUMED, missed

    # -- client -> server ----------------------------------------------------------------------

    def received(self, seq: int) -> bool:
        """Whether the client's message ``seq`` is to be handed to the kernel now (False: it
        was already); :class:`OutOfOrder` if it skips one."""
        if seq <= self.handed:
            return False
        if seq != self.handed + 1:
            raise OutOfOrder(f"message {seq} after {self.handed}: messages are numbered 1, 2, 3…")
        self.handed = seq
        self.unacked += 1
        return True

    def ack_due(self) -> bool:
        """Whether enough messages wait for an acknowledgement to send one now."""
        return self.unacked >= ACK_EVERY

    def take_ack(self) -> int | None:
        """The acknowledgement to send, if anything is not yet acknowledged."""
        if not self.unacked:
            return None
        self.unacked = 0
        return self.handed


class ClientSession:
    """A session as its client keeps it (no I/O): numbers its messages and keeps them until the
    server acknowledges them, follows what it received, and takes in each connection's hello."""

    def __init__(self) -> None:
        self.last = 0  # the highest seq received
        self.numbered = 0  # the last number given to a message
        self.unacked: deque[ClientMessage] = deque()  # numbered, not yet acknowledged, in order
        self.unwritten: deque[ClientMessage] = deque()  # not yet written on this connection
        self.received = 0  # bytes received since the last acknowledgement
        self.hello: Hello | None = None  # of the current connection
        self.lost = 0  # kernel messages on the comm the server said never reached it
        self.roster: dict[str, dict[str, Any]] = {}  # who is on the comm (presence=1), by client

    def greeted(self, hello: Hello) -> None:
        """A connection began with ``hello``: a new session forgets every number of the old one
        (its comm, if new, numbers from 1 again)."""
        self.hello = hello
        if hello.outcome is Outcome.RESET and hello.reason is not Reason.OVERFLOW:
            self.numbered = self.last = self.received = 0
            self.unacked.clear()
        self.acknowledged(hello.ack)
        self.unwritten = deque(self.unacked)  # what the server has not: above its ack

    def number(self, data: Any, buffers: Buffers) -> None:
        """A message to send: it gets the next number, to be written and kept until the server
        acknowledges it."""
        self.numbered += 1
        message = ClientMessage(self.numbered, data, list(buffers))
        self.unacked.append(message)
        self.unwritten.append(message)

    def acknowledged(self, seq: int) -> None:
        while self.unacked and self.unacked[0].seq <= seq:
            self.unacked.popleft()

    def receive(self, frame: Frame) -> ClientMessage | None:
        """A frame from the server after the hello: a comm message (with its seq), or None for
        an acknowledgement, a loss or a roster change; :class:`BadFrame` for anything else."""
        fields, buffers = decode_frame(frame, FrameMode.JSON)
        if isinstance(fields, dict) and _is_count(fields.get(SEQ_KEY)) and DATA_KEY in fields:
            self.last = fields[SEQ_KEY]
            self.received += len(frame)  # of a text frame, its characters: at most its bytes
            sender = fields.get(FROM_KEY)
            return ClientMessage(
                self.last, fields[DATA_KEY], buffers, sender if isinstance(sender, str) else ""
            )
        if isinstance(fields, dict) and _is_count(fields.get(ACK_KEY)):
            self.acknowledged(fields[ACK_KEY])
            return None
        if isinstance(fields, dict) and _is_count(fields.get(LOST_KEY)):
            self.lost += fields[LOST_KEY]
            return None
        if isinstance(fields, dict) and isinstance(fields.get(PRESENCE_KEY), str):
            self.roster = presence.apply(self.roster, fields)
            return None
        raise BadFrame("not a frame of a session's server")

    def ack_due(self) -> bool:
        """Whether so much came since the last acknowledgement that one is due now."""
        assert self.hello is not None
        return self.received * CLIENT_ACK_FRACTION >= self.hello.window

    def take_ack(self) -> int:
        """The acknowledgement to send now."""
        self.received = 0
        return self.last


@dataclass(frozen=True)
class Hello:
    """The first frame of a session connection."""

    outcome: Outcome
    reason: Reason | None
    client_id: str
    comm_id: str
    ack: int
    window: int

    @classmethod
    def parse(cls, frame: Frame | None) -> Hello:
        """:class:`BadFrame` unless ``frame`` is a session's first frame."""
        try:
            fields: Any = json.loads(frame) if isinstance(frame, str) else None
            reason = fields.get(REASON_KEY)
            hello = cls(
                Outcome(fields[SESSION_KEY]),
                None if reason is None else Reason(reason),
                fields[CLIENT_KEY],
                fields[COMM_ID_KEY],
                fields[ACK_KEY],
                fields[WINDOW_KEY],
            )
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise BadFrame("the server did not begin the session") from None
        if not (_is_count(hello.ack) and _is_count(hello.window)):
            raise BadFrame("a hello's ack and window are counts")
        return hello


# -- the wire ----------------------------------------------------------------------------------


def check_session_key(session_key: str) -> str:
    """``session_key`` if it is one a client may choose; :class:`BadFrame` otherwise."""
    if not SESSION_KEY_FORM.fullmatch(session_key):
        raise BadFrame("a session key is 16 to 64 characters of A-Z, a-z, 0-9, _ and -")
    return session_key


def hello(
    outcome: Outcome,
    client_id: str,
    comm_id: str,
    ack: int,
    window: int,
    reason: Reason | None = None,
) -> str:
    """The first frame of a session connection."""
    fields: dict[str, Any] = {SESSION_KEY: outcome.value}
    if reason is not None:
        fields[REASON_KEY] = reason.value
    fields.update({CLIENT_KEY: client_id, COMM_ID_KEY: comm_id, ACK_KEY: ack, WINDOW_KEY: window})
    return json.dumps(fields, separators=(",", ":"))


def ack(seq: int) -> str:
    """The frame that acknowledges every message up to ``seq``."""
    return f'{{"{ACK_KEY}":{seq}}}'


def lost_frame(count: int) -> str:
    """The frame that says ``count`` kernel messages of the comm never reached the server."""
    return f'{{"{LOST_KEY}":{count}}}'


def envelope(frame: OutgoingFrame) -> str:
    """The JSON of a numbered comm message (text frame, or part 0 of a binary one)."""
    if frame.sender:  # a client id (a multiplexed socket's holds a comm id, which may need escapes)
        sender = f'"{FROM_KEY}":{dumps(frame.sender)},'
        return f'{{"{SEQ_KEY}":{frame.seq},{sender}"{DATA_KEY}":{frame.json_text}}}'
    return f'{{"{SEQ_KEY}":{frame.seq},"{DATA_KEY}":{frame.json_text}}}'


def decode_client_frame(frame: Frame) -> ClientMessage | ClientAck:
    """A frame from a session's client; :class:`BadFrame` unless it is a numbered message or
    an acknowledgement."""
    fields, buffers = decode_frame(frame, FrameMode.JSON)
    if not isinstance(fields, dict):
        raise BadFrame("a session frame is a JSON object")
    seq = fields.get(SEQ_KEY)
    if _is_count(seq) and DATA_KEY in fields and len(fields) == 2:
        return ClientMessage(seq, fields[DATA_KEY], buffers)
    number = fields.get(ACK_KEY)
    if _is_count(number) and len(fields) == 1 and not buffers:
        return ClientAck(number)
    raise BadFrame('a session frame is {"seq": n, "data": …} or {"ack": n}')


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
