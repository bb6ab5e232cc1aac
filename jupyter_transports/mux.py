"""The frames of a multiplexed socket, one socket for many comms (contract v2): pure, no I/O.

Every frame is a JSON object with a ``type``; those about a comm name it (``comm_id``). A frame
with buffers is a binary frame in v1's layout whose part 0 is the object. On each comm the
socket is a client of its own, ``{socket id}/{comm id}``, so the router needs nothing new.

A durable session on a multiplexed socket numbers every frame but ``hello`` and ``ack`` with a
``seq`` key, in both directions, and keeps what it sent in a :class:`MuxLog` until the client
acknowledges it, so that a connection that comes back resumes after the last frame it had.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .errors import BadFrame
from .framing import Buffers, Frame, FrameMode, OutgoingFrame, decode_frame, dumps
from .protocol import Buffer

FOLLOW_PARAM = "follow"  # a target name whose comms the socket is on; repeated for several

TYPE_KEY = "type"
SEQ_KEY = "seq"
COMM_ID_KEY = "comm_id"
TARGET_KEY = "target_name"
DATA_KEY = "data"
METADATA_KEY = "metadata"

# types of frames: server -> client
HELLO = "hello"
ATTACHED = "attached"
LOST = "lost"
# both ways
ACK = "ack"  # durable sessions
OPEN = "open"
MSG = "msg"
CLOSE = "close"
# client -> server
ATTACH = "attach"
DETACH = "detach"

MESSAGE_KEY = "mux message"  # a message's head, in OutgoingFrame.encoded (a frame is one comm's)
MAX_ID_CHARS = 256
OPENED_ID_FORM = re.compile(r"[A-Za-z0-9_.:-]{1,256}")  # a comm id a client chooses


def client_id(socket_id: str, comm_id: str) -> str:
    """The id of the socket's client on one comm."""
    return f"{socket_id}/{comm_id}"


@dataclass(frozen=True)
class Open:
    """Open a new comm, owned by the socket."""

    comm_id: str
    target_name: str
    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    buffers: Buffers = ()


@dataclass(frozen=True)
class Attach:
    """Be on an existing comm."""

    comm_id: str


@dataclass(frozen=True)
class Message:
    """A comm message to the kernel."""

    comm_id: str
    data: Any
    buffers: Buffers = ()


@dataclass(frozen=True)
class CloseComm:
    """Close a comm in the kernel."""

    comm_id: str


@dataclass(frozen=True)
class Detach:
    """Be no longer on a comm."""

    comm_id: str


ClientFrame = Open | Attach | Message | CloseComm | Detach

_REQUIRED = {
    OPEN: {TYPE_KEY, COMM_ID_KEY, TARGET_KEY, DATA_KEY},
    MSG: {TYPE_KEY, COMM_ID_KEY, DATA_KEY},
    ATTACH: {TYPE_KEY, COMM_ID_KEY},
    CLOSE: {TYPE_KEY, COMM_ID_KEY},
    DETACH: {TYPE_KEY, COMM_ID_KEY},
}
_OPTIONAL = {OPEN: {METADATA_KEY}}
_ONLY_IDS: dict[str, type[Attach | CloseComm | Detach]] = {
    ATTACH: Attach,
    CLOSE: CloseComm,
    DETACH: Detach,
}


def decode_client_frame(frame: Frame) -> ClientFrame:
    """A client's frame; :class:`~.errors.BadFrame` unless it is one the contract lists."""
    fields, buffers = _object(frame)
    return _client_frame(fields, buffers)


def decode_session_frame(frame: Frame) -> tuple[int, ClientFrame] | int:
    """A session client's frame: its number and what it says, or (an ``ack`` frame) the last
    ``seq`` the client received; :class:`~.errors.BadFrame` for anything else."""
    fields, buffers = _object(frame)
    seq = fields.pop(SEQ_KEY, None)
    if not (isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0):
        raise BadFrame("a session's frame has a seq, an integer >= 0")
    if fields.get(TYPE_KEY) == ACK:
        if len(fields) != 1 or buffers:
            raise BadFrame('an acknowledgement is exactly {"type": "ack", "seq": n}')
        return seq
    return seq, _client_frame(fields, buffers)


def _object(frame: Frame) -> tuple[dict[str, Any], list[memoryview]]:
    fields, buffers = decode_frame(frame, FrameMode.JSON)
    if not isinstance(fields, dict):
        raise BadFrame("a frame of a multiplexed socket is a JSON object")
    return fields, buffers


def _client_frame(fields: dict[str, Any], buffers: list[memoryview]) -> ClientFrame:
    kind = fields.get(TYPE_KEY)
    if not isinstance(kind, str) or kind not in _REQUIRED:
        raise BadFrame(f"unknown frame type {str(kind)[:40]!r}")
    required = _REQUIRED[kind]
    keys = fields.keys()
    if not required <= keys or keys - required - _OPTIONAL.get(kind, set()):
        expected = ", ".join(sorted(required))
        raise BadFrame(f"a {kind!r} frame has exactly the keys {expected} (and no others)")
    comm_id = fields[COMM_ID_KEY]
    if not isinstance(comm_id, str) or not 0 < len(comm_id) <= MAX_ID_CHARS:
        raise BadFrame(f"comm_id must be a string of 1 to {MAX_ID_CHARS} characters")
    if buffers and kind not in (OPEN, MSG):
        raise BadFrame(f"a {kind!r} frame carries no buffers")
    if kind == MSG:
        return Message(comm_id, fields[DATA_KEY], buffers)
    if kind != OPEN:
        return _ONLY_IDS[kind](comm_id)
    if not OPENED_ID_FORM.fullmatch(comm_id):
        raise BadFrame("the id of a comm a client opens is 1 to 256 of A-Z a-z 0-9 _ . : -")
    target_name, data = fields[TARGET_KEY], fields[DATA_KEY]
    metadata = fields.get(METADATA_KEY, {})
    if not isinstance(target_name, str) or not target_name:
        raise BadFrame("target_name must be a non-empty string")
    if not isinstance(data, dict) or not isinstance(metadata, dict):
        raise BadFrame("the data and metadata of an open frame are JSON objects")
    return Open(comm_id, target_name, data, metadata, buffers)


# -- server -> client ----------------------------------------------------------------------


def hello(socket_id: str, can_send: bool, comms: list[tuple[str, str]]) -> str:
    """The first frame: the socket's id, whether it may send, the followed comms it is on."""
    listed = [{COMM_ID_KEY: comm_id, TARGET_KEY: target} for comm_id, target in comms]
    return dumps({TYPE_KEY: HELLO, "client": socket_id, "can_send": can_send, "comms": listed})


def opened(comm_id: str, target_name: str, data: Any, metadata: Any) -> str:
    """The kernel opened a comm the socket follows (part 0, if its comm_open had buffers)."""
    return dumps(
        {
            TYPE_KEY: OPEN,
            COMM_ID_KEY: comm_id,
            TARGET_KEY: target_name,
            DATA_KEY: data,
            METADATA_KEY: metadata,
        }
    )


def attached(comm_id: str, target_name: str) -> str:
    return dumps({TYPE_KEY: ATTACHED, COMM_ID_KEY: comm_id, TARGET_KEY: target_name})


def lost(comm_id: str, count: int) -> str:
    return dumps({TYPE_KEY: LOST, COMM_ID_KEY: comm_id, "count": count})


def closed(comm_id: str, code: int, reason: str) -> str:
    return dumps({TYPE_KEY: CLOSE, COMM_ID_KEY: comm_id, "code": code, "reason": reason})


def message(frame: OutgoingFrame, comm_id: str) -> str:
    """A kernel message of comm ``comm_id`` (part 0, if it has buffers), built around the JSON
    of its data; made once per message, for every socket and session it goes to."""
    head: str | None = frame.encoded.get(MESSAGE_KEY)
    if head is None:
        start = f'{{"{TYPE_KEY}":"{MSG}","{COMM_ID_KEY}":{dumps(comm_id)},'
        if frame.sender:  # relayed (echo)
            start += f'"from":{dumps(frame.sender)},'
        head = frame.encoded[MESSAGE_KEY] = f'{start}"{DATA_KEY}":{frame.json_text}}}'
    return head


# -- durable sessions ----------------------------------------------------------------------


def session_hello(
    outcome: str,
    reason: str | None,
    socket_id: str,
    can_send: bool,
    ack: int,
    window: int,
    comms: list[tuple[str, str]],
) -> str:
    """The first frame of a session's connection."""
    fields: dict[str, Any] = {TYPE_KEY: HELLO, "session": outcome}
    if reason is not None:
        fields["reason"] = reason
    listed = [{COMM_ID_KEY: comm_id, TARGET_KEY: target} for comm_id, target in comms]
    fields |= {"client": socket_id, "can_send": can_send, "ack": ack, "window": window}
    return dumps(fields | {"comms": listed})


def session_ack(seq: int) -> str:
    return f'{{"{TYPE_KEY}":"{ACK}","{SEQ_KEY}":{seq}}}'


def numbered(seq: int, head: str) -> str:
    """A frame's JSON object with its ``seq`` first."""
    return f'{{"{SEQ_KEY}":{seq},{head[1:]}'


class MuxLog:
    """What a session sent and its client has not acknowledged, at most ``window_bytes``
    (each frame counted with ``entry_bytes`` more, for what the server keeps of it)."""

    def __init__(self, window_bytes: int, entry_bytes: int = 256) -> None:
        self.window_bytes = window_bytes
        self.entry_bytes = entry_bytes
        self.seq = 0  # the last number given
        self.entries: deque[tuple[int, tuple[Buffer, ...], int]] = deque()  # seq, pieces, size
        self.size = 0
        self.lost_through = 0  # the highest seq dropped before its acknowledgement

    def next(self) -> int:
        self.seq += 1
        return self.seq

    def keep(self, seq: int, pieces: tuple[Buffer, ...]) -> None:
        size = sum(len(piece) for piece in pieces) + self.entry_bytes
        self.entries.append((seq, pieces, size))
        self.size += size
        while self.size > self.window_bytes and self.entries:
            dropped, _, dropped_size = self.entries.popleft()
            self.size -= dropped_size
            self.lost_through = dropped

    def acknowledged(self, seq: int) -> None:
        while self.entries and self.entries[0][0] <= seq:
            self.size -= self.entries.popleft()[2]

    def after(self, last: int) -> list[tuple[Buffer, ...]] | None:
        """The frames after ``last``, or None if some were dropped unacknowledged."""
        if last < self.lost_through:
            return None
        return [pieces for seq, pieces, _ in self.entries if seq > last]
