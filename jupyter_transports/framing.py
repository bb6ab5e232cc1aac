"""Frames <-> comm messages: the wire format between a socket and the bridge (pure, no I/O).

One comm message is one WebSocket frame, in both directions.

Text frame (``frames=json``, the default)
    The UTF-8 JSON of the comm message's ``data``. A text frame that is not JSON is a client
    fault (close code 1007).

Text frame (``frames=text``)
    For protocols that frame their own messages: a string ``data`` travels as that text verbatim,
    and a client's text frame reaches the kernel as a string ``data``, unparsed. Non-string
    ``data`` from the kernel still goes out as its JSON text.

Binary frame (any mode; used when the message carries buffers)
    Jupyter's binary message layout, all integers big-endian uint32::

        offset 0        n                 number of parts (>= 1)
        offset 4        offset[0..n-1]    where each part starts, from the frame's start
        offset[0]       part 0            UTF-8 JSON of ``data``
        offset[i]       part i            buffer i-1, raw bytes, in order

    A part ends where the next begins; the last ends with the frame.

A kernel message fanned out to many sockets is the same frame for each of them:
:class:`OutgoingFrame` encodes it at most once per form, for all its recipients, and its binary
form stays in pieces, so large buffers (views of the kernel's message) are never joined into a
copy. The WebSocket framing around it (RFC 6455) is :mod:`.writer`'s.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from itertools import pairwise
from typing import Any

from jupyter_client.jsonutil import json_default

from .errors import BadFrame
from .protocol import Buffer

Buffers = Sequence[Buffer]
Frame = str | Buffer  # text, or binary: bytes, or a view (a large client message, pooled)

_UINT32 = struct.Struct("!I")
# Parts of a client's binary frame: every part costs the server and the kernel (a frame of a
# million empty buffers held the server's loop for seconds); messages carry a few.
MAX_PARTS = 1024


class FrameMode(str, Enum):
    """How a socket's text frames map to comm ``data`` (the ``frames`` query parameter)."""

    JSON = "json"
    TEXT = "text"


def dumps(data: Any) -> str:
    """Compact JSON, with Jupyter's encoding of dates and bytes."""
    return json.dumps(data, default=json_default, separators=(",", ":"), ensure_ascii=False)


def utf8_size(text: Frame) -> int:
    """Bytes of ``text`` in UTF-8, without encoding it when it is ASCII (the common case)."""
    if not isinstance(text, str) or text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def pack_binary(data_json: bytes, buffers: Buffers) -> bytes:
    """Lay ``data_json`` and ``buffers`` out as one binary frame."""
    return b"".join(binary_parts(data_json, buffers))


def binary_parts(data_json: bytes, buffers: Buffers) -> list[Buffer]:
    """The pieces of a binary frame, offset table first; each buffer as bytes, or as a view whose
    ``len`` is its size in bytes (an array of floats has fewer elements than bytes)."""
    parts = [data_json, *(b if isinstance(b, bytes) else memoryview(b).cast("B") for b in buffers)]
    n = len(parts)
    offsets = []
    position = 4 * (n + 1)
    for part in parts:
        offsets.append(position)
        position += len(part)
    return [struct.pack(f"!{n + 1}I", n, *offsets), *parts]


def unpack_binary(frame: Buffer) -> tuple[memoryview, list[memoryview]]:
    """Split a binary frame into (part 0, buffers), views of ``frame`` (no copy of large
    buffers); :class:`BadFrame` if the layout is broken."""
    view = memoryview(frame)
    if len(view) < 4:
        raise BadFrame("binary frame shorter than its part count")
    (n,) = _UINT32.unpack_from(view, 0)
    header_end = 4 * (n + 1)
    if n < 1 or header_end > len(view):
        raise BadFrame(f"binary frame declares {n} parts but cannot hold their offsets")
    if n > MAX_PARTS:
        raise BadFrame(f"binary frame of {n} parts: at most {MAX_PARTS} are taken")
    offsets = [*struct.unpack_from(f"!{n}I", view, 4), len(view)]
    if offsets[0] < header_end or any(a > b for a, b in pairwise(offsets)):
        raise BadFrame("binary frame offsets are out of order or out of range")
    parts = [view[start:stop] for start, stop in pairwise(offsets)]
    return parts[0], parts[1:]


def decode_frame(frame: Frame, mode: FrameMode) -> tuple[Any, list[memoryview]]:
    """A client's frame -> (comm ``data``, buffers as views of ``frame``); :class:`BadFrame` if
    it cannot be decoded."""
    if isinstance(frame, str):
        if mode is FrameMode.TEXT:
            return frame, []
        return loads(frame), []
    head, buffers = unpack_binary(frame)
    try:
        text = str(head, "utf-8")
    except UnicodeDecodeError as e:
        raise BadFrame("part 0 of a binary frame is not UTF-8") from e
    return loads(text), buffers


def loads(text: str | bytes) -> Any:
    """JSON from a client; :class:`BadFrame` unless it is JSON a kernel can be sent.

    Strict JSON only: ``NaN``, ``Infinity`` and numbers too large for a float (``1e999``), which
    Python's parser takes, are refused, as is nesting deeper than the parser's recursion limit.
    JSON may spell a lone UTF-16 surrogate (``"\\ud800"``) that no UTF-8 encoder takes; it
    would fail only when the message is sent on to the kernel, so it is refused here.
    """
    if isinstance(text, bytes):  # UTF-8 only: json.loads would also take UTF-16 and surrogates
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadFrame(f"not UTF-8: {e}") from None
    try:
        data = json.loads(text, parse_constant=_not_a_number, parse_float=_finite)
    except ValueError as e:
        raise BadFrame(f"not JSON: {e}") from e
    except RecursionError:
        raise BadFrame("JSON nested too deeply") from None
    if "\\u" in text:
        try:
            dumps(data).encode("utf-8")
        except UnicodeEncodeError:
            raise BadFrame("JSON holds a lone surrogate, which is not text") from None
    return data


def _not_a_number(constant: str) -> float:
    raise ValueError(f"{constant} is not a JSON number")


def _finite(number: str) -> float:
    value = float(number)
    if math.isinf(value):
        raise ValueError(f"{number[:20]} is too large for a float")
    return value


@dataclass
class OutgoingFrame:
    """One kernel comm message, encoded at most once per frame mode for all its recipients."""

    data: Any
    buffers: Buffers = field(default_factory=list)
    seq: int = 0  # its place in its comm's sequence (durable sessions)
    sender: str = ""  # the client whose message the server relayed (echo); "" if the kernel's
    # What writers made of this frame, by a key of theirs (the WebSocket frame per mode): made
    # for the first recipient, shared by the others.
    encoded: dict[Hashable, Any] = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def json_text(self) -> str:
        """``data`` as JSON."""
        return dumps(self.data)

    @cached_property
    def parts(self) -> list[Buffer]:
        """The binary frame's pieces (offset table, JSON, buffers), not yet joined."""
        return binary_parts(self.json_text.encode("utf-8"), self.buffers)

    @cached_property
    def _binary(self) -> bytes:
        return b"".join(self.parts)

    @cached_property
    def size(self) -> int:
        """Bytes of the default-mode frame's payload (for the traffic counters)."""
        if not self.buffers:
            return utf8_size(self.json_text)
        return sum(len(part) for part in self.parts)

    def for_mode(self, mode: FrameMode) -> str | bytes:
        """The frame a socket in ``mode`` receives."""
        if self.buffers:
            return self._binary
        if mode is FrameMode.TEXT and isinstance(self.data, str):
            return self.data
        return self.json_text
