"""Reading a client's WebSocket frames (RFC 6455, section 5): tornado's protocol, with the
changes the contract and large messages need.

* A text frame that is not UTF-8 closes with 1007. Tornado drops the connection without a word
  (1006, which clients take for a network failure and retry); RFC 6455 (8.1) and the contract
  say 1007.
* A large message (:data:`LARGE_BYTES` or more), or one in fragments (browsers send a large one
  as 128 KiB frames), is read straight into a buffer of a :class:`BufferPool` and unmasked there,
  in place, with the ``websockets`` library's vectorised mask; the socket's handler gets a view
  of it. Tornado reads a payload in 64 KiB chunks that it appends to the stream's buffer, copies
  it out, unmasks it into a third copy, and grows a bytearray with each fragment: copies into
  fresh memory, whose page faults cost the server more than the copying does (server CPU per
  1 MiB echo: 2.0 ms with tornado's reading, 2.3 with the payload read into a fresh buffer of
  its own, 1.5 in a reused one, unmasked in place).
"""

from __future__ import annotations

import asyncio
import struct
import sys
from typing import Any

from tornado.log import gen_log
from tornado.util import _websocket_mask  # C (tornado.speedups) where built
from tornado.websocket import WebSocketHandler, WebSocketProtocol13, _WebSocketParams

from .errors import CloseCode
from .writer import FIN, LENGTH_16, LENGTH_64, MASKED, OPCODE_TEXT


def tornado_mask(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
    """Tornado's mask (8 bytes at a time), where the vectorised one is missing."""
    return _websocket_mask(bytes(mask), bytes(data))


try:  # vectorised (SSE2, NEON): a 1 MiB payload in 0.05 ms, where tornado's takes 0.13
    from websockets.speedups import apply_mask
except ImportError:  # websockets installed without its compiled module
    apply_mask = tornado_mask


# Section 5.2: the frame's header, as far as writer.py does not name it
RSV_BITS = 0x70
RSV1 = 0x40  # per-message compression (RFC 7692)
OPCODE_BITS = 0x0F
CONTROL = 0x8  # opcodes from 8 up: close, ping, pong
CONTINUATION = 0x0
LENGTH_BITS = 0x7F
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
EXTENDED_LENGTH = {LENGTH_16: _U16, LENGTH_64: _U64}  # what follows these 7-bit lengths
MASK_BYTES = 4

LARGE_BYTES = 64 * 1024  # a one-frame message this large is read into a pooled buffer (and
# every pooled buffer is at least this large: the pool holds a few, not one per tiny fragment)
UNMASK_STEP = 64 * 1024  # unmasked this many bytes at a time (a multiple of the mask's 4)


class BufferPool:
    """Buffers for large messages, reused: the memory of a message read before is warm, where
    a fresh 1 MiB costs the server 256 page faults the first time it is written.

    A buffer is lent as views of it (the payload a handler gets, and what it hands on: the
    buffers of a comm message, which pyzmq sends to the kernel without copying them). It is
    free again when nothing but the pool refers to it, which CPython's reference count tells:
    no view of it is left, so nothing can read it any more.
    """

    def __init__(self, kept_bytes: int) -> None:
        self.kept_bytes = kept_bytes  # the most the pool keeps, in all its buffers
        self.buffers: list[bytearray] = []
        probe = [bytearray()]
        self._free_refs = self._refs(probe, 0)  # what an unshared buffer counts, measured

    @staticmethod
    def _refs(buffers: list[bytearray], i: int) -> int:
        return sys.getrefcount(buffers[i])

    def take(self, size: int, largest: bool = False) -> bytearray:
        """A buffer of at least ``size`` bytes, nobody else's until its views are gone: the first
        free one large enough, or with ``largest`` the largest (for a message in fragments,
        whose size is known only at its end: growing it would copy what was read so far)."""
        free = [
            i
            for i in range(len(self.buffers))
            if len(self.buffers[i]) >= size and self._refs(self.buffers, i) == self._free_refs
        ]
        if free:
            chosen = max(free, key=lambda i: len(self.buffers[i])) if largest else free[0]
            return self.buffers[chosen]
        buffer = bytearray(size)
        kept = sum(map(len, self.buffers))
        if kept + size > self.kept_bytes:  # make room: let go of free buffers, smallest first
            for i in sorted(range(len(self.buffers)), key=lambda i: len(self.buffers[i])):
                if kept + size <= self.kept_bytes:
                    break
                if self._refs(self.buffers, i) == self._free_refs:
                    kept -= len(self.buffers[i])
                    self.buffers[i] = bytearray()
            self.buffers = [b for b in self.buffers if b]
        if kept + size <= self.kept_bytes:
            self.buffers.append(buffer)
        return buffer


class Message:
    """A message being read, frame after frame, into one pooled buffer."""

    def __init__(self, opcode: int, pool: BufferPool) -> None:
        self.opcode = opcode
        self.pool = pool
        self.buffer = bytearray()
        self.size = 0

    def __len__(self) -> int:
        return self.size

    async def read(
        self, reader: ClientFrameReader, length: int, mask: bytes | None, final: bool
    ) -> None:
        """Read a frame's payload of ``length`` bytes onto the message, and unmask it."""
        end = self.size + length
        if end > len(self.buffer):  # a larger buffer, with what was read so far
            size = max(end, 2 * len(self.buffer), LARGE_BYTES)
            larger = self.pool.take(size, largest=not final)
            larger[: self.size] = memoryview(self.buffer)[: self.size]
            self.buffer = larger
        with memoryview(self.buffer) as whole, whole[self.size : end] as payload:
            await reader.stream.read_into(payload)  # type: ignore[arg-type]  # any buffer
            reader._wire_bytes_in += length
            if mask is not None:
                unmask(mask, payload)
        self.size = end

    def payload(self) -> memoryview:
        return memoryview(self.buffer)[: self.size]


def unmask(mask: bytes, payload: memoryview) -> None:
    """Unmask ``payload`` in place, a step at a time: the mask makes new bytes, which for a
    step are warm memory, reused from step to step."""
    for start in range(0, len(payload), UNMASK_STEP):
        with payload[start : start + UNMASK_STEP] as step:
            step[:] = apply_mask(step, mask)


class ClientFrameReader(WebSocketProtocol13):
    """Tornado's protocol, reading the client's frames as this module says."""

    _message: Message | None = None  # a fragmented or large message being read
    _frame_loop: asyncio.Task[None] | None = None

    def __init__(
        self, handler: WebSocketHandler, params: _WebSocketParams, pool: BufferPool
    ) -> None:
        super().__init__(handler, False, params)
        self.pool = pool

    async def _receive_frame_loop(self) -> None:
        """Read frames in a task of the socket's own: tornado reads them in the coroutine of the
        handshake, which would keep, for the socket's whole life, every frame of it (the
        handler's ``get`` and its decorators, holding the request and its headers): some
        6 KiB of each idle socket."""
        self._frame_loop = asyncio.ensure_future(self._read_frames())

    async def _read_frames(self) -> None:
        """Tornado's frame loop, and what tornado's handshake does when it fails."""
        try:
            await super()._receive_frame_loop()
        except asyncio.CancelledError:
            self._abort()
        except ValueError:
            gen_log.debug("Malformed WebSocket request received", exc_info=True)
            self._abort()

    async def _receive_frame(self) -> None:
        """One frame, with tornado's checks, closes and aborts."""
        first, second = await self._read_bytes(2)
        final, opcode, reserved = first & FIN, first & OPCODE_BITS, first & RSV_BITS
        if self._decompressor is not None and opcode != CONTINUATION:
            self._frame_compressed = bool(reserved & RSV1)
            reserved &= ~RSV1
        length = second & LENGTH_BITS
        control = opcode & CONTROL
        if reserved or (control and (length >= LENGTH_16 or not final)):
            self._abort()  # an extension nobody agreed on, or a malformed control frame
            return
        # the rest of the header in one read (tornado reads the length and the mask apart)
        extended = EXTENDED_LENGTH.get(length)
        masked_at = extended.size if extended is not None else 0
        rest = masked_at + (MASK_BYTES if second & MASKED else 0)
        header = await self._read_bytes(rest) if rest else b""
        if extended is not None:
            (length,) = extended.unpack_from(header)
        mask = header[masked_at:] if second & MASKED else None
        message = self._message
        if length + (len(message) if message is not None else 0) > self.params.max_message_size:
            self.close(CloseCode.TOO_BIG, "message too big")
            self._abort()
            return
        data: bytes | memoryview
        if control or (message is None and final and length < LARGE_BYTES):
            data = await self._read_bytes(length)  # most messages: one small frame
            if mask is not None:
                data = _websocket_mask(mask, data)
        elif (opcode == CONTINUATION) != (message is not None):
            self._abort()  # a continuation of nothing, or a new message before the last ended
            return
        else:
            if message is None:
                message = self._message = Message(opcode, self.pool)
            await message.read(self, length, mask, bool(final))
            if not final:
                return
            opcode, data, self._message = message.opcode, message.payload(), None
        handled = self._handle_message(opcode, data)
        if handled is not None:
            await handled

    def _handle_message(self, opcode: int, data: bytes | memoryview) -> Any:
        if self._frame_compressed and isinstance(data, memoryview):
            data = data.tobytes()  # tornado's inflater appends bytes to it
        if opcode != OPCODE_TEXT or self._frame_compressed or self.client_terminated:
            return super()._handle_message(opcode, data)  # type: ignore[arg-type]
        try:  # decoded once, here, as tornado's own branch for text frames does
            text = str(data, "utf-8")
        except UnicodeDecodeError:
            handler: Any = self.handler  # the socket handler that made this protocol
            handler.log.warning("Closing a socket (1007): a text frame that is not UTF-8")
            handler.close(CloseCode.BAD_FRAME, "a text frame that is not UTF-8")
            return None
        self._message_bytes_in += len(data)
        return self._run_callback(self.handler.on_message, text)
