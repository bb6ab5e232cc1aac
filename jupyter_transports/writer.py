"""Writing to a client without waiting for it, and WebSocket frames built by hand (RFC 6455).

:class:`BoundedWriter` is the only code that touches a connection's stream. It never waits for a
client, and bounds the data still unsent *before* each write at ``limit`` bytes: a write that
would leave more is refused whole (the caller drops the client), while one message larger than
the limit still goes out.

:class:`FrameWriter` adds what WebSockets need: the first frame of a burst of kernel messages
goes out at once (no added latency), and the rest of the same burst (routed before the event
loop next runs) leaves together in one write, one syscall per socket rather than per message.
And it tells a client that falls behind on messages it caused from one that falls behind on
messages it did not: while the client's own messages are still being handled by the kernel
(``caused()``), what backs up may be their answers, so its writes may go on up to
``paced_limit`` and :attr:`FrameWriter.draining` asks the socket to stop reading the client
until they are out (it sends faster than it reads: TCP backpressure paces it); past the limit,
or without ``caused()``, the client is too slow.

Frames from the server are unmasked (section 5.1) and, without per-message compression, the
same bytes for every socket: :func:`wire_pieces` builds a kernel message's frame, header
included, once per frame mode and shares it between its recipients. Large buffers stay pieces of
their own, written as they are, never joined into a copy.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from functools import partial
from itertools import chain

from tornado.concurrent import Future
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamBufferFullError, StreamClosedError
from tornado.util import _websocket_mask  # C (tornado.speedups) where built
from tornado.websocket import WebSocketClosedError

from .framing import Buffers, Frame, FrameMode, OutgoingFrame, binary_parts
from .protocol import Buffer
from .session import envelope

Pieces = tuple[Buffer, ...]  # one WebSocket frame, to be written piece after piece

# keys of a frame's encodings (OutgoingFrame.encoded): its frame mode, or one of these
BINARY_KEY = "websocket binary"
SESSION_KEY = "websocket session"
UNJOINED_BYTES = 64 * 1024  # a buffer this large is written as it is rather than joined
COALESCE_BYTES = 256 * 1024  # frames waiting together up to this size are joined into one write

# Section 5.2: the header of a final frame
FIN = 0x80
MASKED = 0x80  # in the second byte: a masking key follows the length
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
LENGTH_16 = 126  # a 7-bit length of 126: the real length follows as uint16
LENGTH_64 = 127  # ... of 127: as uint64
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def websocket_header(opcode: int, length: int, mask: bytes = b"") -> bytes:
    """The header of a final WebSocket frame of ``length`` payload bytes, masked with ``mask``
    (4 bytes) if one is given."""
    bit = MASKED if mask else 0
    if length < LENGTH_16:
        return _SHORT.pack(FIN | opcode, bit | length) + mask
    if length < 1 << 16:
        return _MEDIUM.pack(FIN | opcode, bit | LENGTH_16, length) + mask
    return _LONG.pack(FIN | opcode, bit | LENGTH_64, length) + mask


def websocket_frame(payload: Frame) -> bytes:
    """``payload`` as a whole server-to-client WebSocket frame (text if str, binary if bytes)."""
    if isinstance(payload, str):
        data = payload.encode("utf-8")
        return websocket_header(OPCODE_TEXT, len(data)) + data
    return websocket_header(OPCODE_BINARY, len(payload)) + payload


def wire_pieces(frame: OutgoingFrame, mode: FrameMode) -> Pieces:
    """``frame.for_mode(mode)`` as a whole uncompressed WebSocket frame, in pieces ready to
    write; made once per frame and mode."""
    key = BINARY_KEY if frame.buffers else mode
    pieces: Pieces | None = frame.encoded.get(key)
    if pieces is None:
        if frame.buffers:
            header = websocket_header(OPCODE_BINARY, frame.size)
            pieces = join_small([header, *frame.parts])
        else:
            pieces = (websocket_frame(frame.for_mode(mode)),)
        frame.encoded[key] = pieces
    return pieces


def session_wire_pieces(frame: OutgoingFrame) -> Pieces:
    """The numbered form of ``frame`` that session sockets receive (contract v2), as a whole
    WebSocket frame in pieces; made once per frame."""
    return enveloped_pieces(frame, SESSION_KEY, envelope)


def enveloped_pieces(
    frame: OutgoingFrame, key: str, head: Callable[[OutgoingFrame], str]
) -> Pieces:
    """``frame`` in a JSON object of ``head``'s (a session's or a multiplexed socket's form),
    as a whole WebSocket frame in pieces; made once per frame and ``key``."""
    pieces: Pieces | None = frame.encoded.get(key)
    if pieces is None:
        pieces = frame.encoded[key] = object_pieces(head(frame), frame.buffers)
    return pieces


def object_pieces(head: str, buffers: Buffers = ()) -> Pieces:
    """A JSON object as a whole WebSocket frame in pieces: text, or with ``buffers`` a binary
    frame whose part 0 is the object."""
    if not buffers:
        return (websocket_frame(head),)
    parts = binary_parts(head.encode("utf-8"), buffers)
    size = sum(len(part) for part in parts)
    return join_small([websocket_header(OPCODE_BINARY, size), *parts])


def masked_frame(opcode: int, payload: Buffers) -> Pieces:
    """A client's frame (section 5.3: masked) of the ``payload`` pieces, in pieces.

    Each piece is masked on its own, from where it starts in the payload, and large ones are
    never joined: one copy of a large buffer, where framing the joined payload makes four.
    """
    mask = os.urandom(4)
    masked: list[Buffer] = []
    start = 0
    for piece in payload:
        turn = start % 4
        masked.append(_websocket_mask(mask[turn:] + mask[:turn], bytes(piece)))
        start += len(piece)
    return join_small([websocket_header(opcode, start, mask), *masked])


def join_small(pieces: Sequence[Buffer]) -> Pieces:
    """``pieces`` with each run of small ones joined; large ones stay as they are."""
    joined: list[Buffer] = []
    run: list[Buffer] = []
    for piece in pieces:
        if len(piece) < UNJOINED_BYTES:
            run.append(piece)
            continue
        if run:
            joined.append(b"".join(run))
            run = []
        joined.append(piece)
    if run:
        joined.append(b"".join(run))
    return tuple(joined)


class BoundedWriter:
    """Writes to ``stream`` at once, refusing a write while ``limit`` bytes are still unsent."""

    def __init__(self, stream: IOStream, limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self._unbounded = stream.max_write_buffer_size  # the stream's own limit, for unbound()

    def write(self, size: int, write: Callable[[], object], limit: int | None = None) -> bool:
        """Call ``write``, which writes ``size`` bytes first; False if the client is more than
        ``limit`` (default: the writer's) behind (nothing of it was written). A closed stream is
        not an error: its close is handled where it is noticed."""
        self.stream.max_write_buffer_size = (limit or self.limit) + size
        try:
            write()
        except StreamBufferFullError:
            self.unbound()  # room for a close frame
            return False
        except (StreamClosedError, WebSocketClosedError):
            pass
        return True

    def write_pieces(self, pieces: Pieces, limit: int | None = None) -> bool:
        """Write one frame's pieces; only the first one is bounded (a frame is never cut)."""
        return self.write(len(pieces[0]), lambda: self._write_all(pieces), limit)

    def _write_all(self, pieces: Pieces) -> None:
        stream = self.stream
        stream.write(pieces[0])
        stream.max_write_buffer_size = None  # the rest of a frame is never refused
        for piece in pieces[1:]:
            stream.write(piece)

    def unbound(self) -> None:
        """Give the stream its own limit back (for a close frame, or the connection's next
        request)."""
        self.stream.max_write_buffer_size = self._unbounded


class Bursts:
    """The writers with a burst under way, flushed together when the loop next runs: one
    callback for all the sockets a kernel message went to (10,000 callbacks for a broadcast to
    10,000 sockets doubled its latency)."""

    def __init__(self) -> None:
        self.writers: list[FrameWriter] = []

    def add(self, writer: FrameWriter) -> None:
        if not self.writers:
            IOLoop.current().add_callback(self.flush)
        self.writers.append(writer)

    def flush(self) -> None:
        writers, self.writers = self.writers, []
        for writer in writers:
            writer.flush()


class FrameWriter(BoundedWriter):
    """A :class:`BoundedWriter` of whole WebSocket frames that joins the frames of a burst.

    ``too_slow`` is called once if a write is refused; nothing more is written after it, nor
    after :meth:`close`, nor while ``closing()`` says the socket is closing.
    """

    def __init__(
        self,
        stream: IOStream,
        limit: int,
        too_slow: Callable[[], None],
        closing: Callable[[], bool],
        *,
        caused: Callable[[], bool] = lambda: False,
        paced_limit: int = 0,
        bursts: Bursts | None = None,
    ) -> None:
        super().__init__(stream, limit)
        self.bursts = bursts if bursts is not None else Bursts()
        self.too_slow = too_slow
        self.closing = closing
        self.caused = caused
        self.paced_limit = paced_limit
        self.closed = False
        self.draining: Future[None] | None = None  # while the client is paced: all is out
        self._unsent: list[Pieces] | None = None  # the burst so far; None: no burst under way

    def send(self, pieces: Pieces) -> None:
        """Write one frame now if no burst is under way, else with the rest of the burst."""
        if self._unsent is not None:
            self._unsent.append(pieces)
            return
        if self.closed:
            return
        self._unsent = []
        self.bursts.add(self)
        self._write_frames([pieces])

    def flush(self) -> None:
        """Write the burst so far."""
        frames, self._unsent = self._unsent or [], None
        self._write_frames(frames)

    def close(self) -> None:
        """Write what is waiting; write nothing after (a close frame follows)."""
        self.flush()
        self.closed = True

    def _write_frames(self, frames: list[Pieces]) -> None:
        if not frames or self.closed or self.closing():
            return
        if len(frames) > 1 and sum(map(len, chain(*frames))) <= COALESCE_BYTES:
            frames = [(b"".join(chain(*frames)),)]
        for pieces in frames:
            if not self.write_or_pace(len(pieces[0]), partial(self._write_all, pieces)):
                return

    def write_or_pace(self, size: int, write: Callable[[], object]) -> bool:
        """:meth:`write`, paced as the class says; False if the client was too slow (then
        ``too_slow`` was called, and nothing more is written)."""
        if self.write(size, write):
            return True
        if self.caused() and self.write(size, write, self.paced_limit):
            if self.draining is None:
                self.draining = self.stream.write(b"")  # done when everything is out
                self.draining.add_done_callback(self._drained)
            return True
        self._unsent = None
        self.closed = True
        self.too_slow()
        return False

    def _drained(self, _: Future[None]) -> None:
        self.draining = None
