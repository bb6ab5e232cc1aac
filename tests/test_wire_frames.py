"""Ready-made WebSocket frames and zero-copy decoding (pure: no server)."""

from __future__ import annotations

import struct

import pytest

from jupyter_transports.framing import (
    LENGTH_16,
    LENGTH_64,
    FrameMode,
    OutgoingFrame,
    decode_frame,
    pack_binary,
    websocket_header,
)


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
    wire = frame.wire(mode)
    payload = frame.for_mode(mode)
    first, length, size = parse_header(wire)
    assert first == (0x82 if isinstance(payload, bytes) else 0x81)
    body = payload if isinstance(payload, bytes) else payload.encode()
    assert (length, wire[size:]) == (len(body), body)
    assert frame.wire(mode) is wire  # built once, shared by every recipient


def test_decode_without_copy_gives_views_of_the_frame():
    frame = pack_binary(b'{"k":1}', [b"abc", b"defg"])
    data, buffers = decode_frame(frame, FrameMode.JSON, copy=False)
    assert data == {"k": 1}
    assert all(isinstance(b, memoryview) for b in buffers)
    assert [bytes(b) for b in buffers] == [b"abc", b"defg"]
    assert decode_frame(frame, FrameMode.JSON)[1] == [b"abc", b"defg"]
