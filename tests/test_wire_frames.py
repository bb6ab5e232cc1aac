"""Ready-made WebSocket frames and zero-copy decoding (pure: no server)."""

from __future__ import annotations

import os
import struct

import pytest

from jupyter_transports.framing import FrameMode, OutgoingFrame, decode_frame, pack_binary
from jupyter_transports.writer import (
    LENGTH_16,
    LENGTH_64,
    OPCODE_BINARY,
    UNJOINED_BYTES,
    masked_frame,
    websocket_header,
    wire_pieces,
)


def unmask(mask: bytes, body: bytes) -> bytes:
    """RFC 6455 section 5.3, as a server reads a client's frame."""
    return bytes(byte ^ mask[i % 4] for i, byte in enumerate(body))


def parse_header(frame: bytes) -> tuple[int, int, int]:
    """(first byte, payload length, header length) of an unmasked frame, as a client reads it."""
    first, second = frame[0], frame[1]
    assert not second & 0x80, "server frames are not masked"
    length = second & 0x7F
    if length == LENGTH_16:
        return first, struct.unpack("!H", frame[2:4])[0], 4
    if length == LENGTH_64:
        return first, struct.unpack("!Q", frame[2:10])[0], 10
    return first, length, 2


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536, 1 << 20])
def test_websocket_header_lengths(length):
    first, parsed, size = parse_header(websocket_header(0x2, length) + b"\0" * 10)
    assert (first, parsed) == (0x82, length)
    assert size == (2 if length < 126 else 4 if length < 65536 else 10)


@pytest.mark.parametrize(
    ("data", "buffers", "mode"),
    [
        ({"a": [1, "é"]}, [], FrameMode.JSON),
        ("plain text", [], FrameMode.TEXT),
        ("plain text", [], FrameMode.JSON),
        ({"kind": "blob"}, [b"x" * 70000, memoryview(b"second")], FrameMode.JSON),
    ],
)
def test_wire_is_the_frame_for_the_mode(data, buffers, mode):
    frame = OutgoingFrame(data, buffers)
    pieces = wire_pieces(frame, mode)
    wire = b"".join(pieces)
    payload = frame.for_mode(mode)
    first, length, size = parse_header(wire)
    assert first == (0x82 if isinstance(payload, bytes) else 0x81)
    body = payload if isinstance(payload, bytes) else payload.encode()
    assert (length, wire[size:]) == (len(body), body)
    assert wire_pieces(frame, mode) is pieces  # built once, shared by every recipient
    large = [b for b in buffers if len(b) >= UNJOINED_BYTES]
    assert [p for p in pieces if any(p is b for b in large)] == large  # written, never copied


def test_decode_without_copy_gives_views_of_the_frame():
    frame = pack_binary(b'{"k":1}', [b"abc", b"defg"])
    data, buffers = decode_frame(frame, FrameMode.JSON)
    assert data == {"k": 1}
    assert all(isinstance(b, memoryview) for b in buffers)
    assert [bytes(b) for b in buffers] == [b"abc", b"defg"]


@pytest.mark.parametrize(
    ("sizes", "pieces_written"),
    [([5], 1), ([27, 70_000, 6, 70_001], 4), ([65_536, 3], 3)],  # large ones never joined
)
def test_masked_frame_is_the_payload_masked_as_one(sizes, pieces_written):
    payload = [os.urandom(n) for n in sizes]
    pieces = masked_frame(OPCODE_BINARY, payload)
    wire = b"".join(pieces)
    first, second = wire[0], wire[1]
    assert first == 0x82 and second & 0x80, "a final binary frame, masked"
    length = second & 0x7F
    size = {LENGTH_16: 4, LENGTH_64: 10}.get(length, 2)
    if size > 2:
        (length,) = struct.unpack("!H" if size == 4 else "!Q", wire[2:size])
    mask, body = wire[size : size + 4], wire[size + 4 :]
    assert length == len(body) == sum(sizes)
    assert unmask(mask, body) == b"".join(payload)
    assert len(pieces) == pieces_written
