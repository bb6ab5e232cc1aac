"""The frame codec, byte for byte (pure: no server)."""

from __future__ import annotations

import struct

import pytest

from jupyter_transports.errors import BadFrame
from jupyter_transports.framing import (
    FrameMode,
    OutgoingFrame,
    decode_frame,
    pack_binary,
    unpack_binary,
)


def test_binary_layout_is_jupyters():
    frame = pack_binary(b'{"a":1}', [b"xy", b""])
    n, *offsets = struct.unpack_from("!4I", frame)
    assert n == 3
    assert offsets == [16, 16 + 7, 16 + 7 + 2]
    assert frame[16:] == b'{"a":1}xy'
    assert unpack_binary(frame) == (b'{"a":1}', [b"xy", b""])


@pytest.mark.parametrize("mode", list(FrameMode))
def test_buffers_travel_binary_in_every_mode(mode):
    frame = OutgoingFrame({"k": "v"}, [b"\x00\x01"]).for_mode(mode)
    assert isinstance(frame, bytes)
    assert decode_frame(frame, mode) == ({"k": "v"}, [b"\x00\x01"])


def test_text_mode_passes_strings_verbatim():
    wire = '{"t":"snapshot"}'  # a string that happens to be JSON stays a string
    assert OutgoingFrame(wire).for_mode(FrameMode.TEXT) == wire
    assert OutgoingFrame(wire).for_mode(FrameMode.JSON) == '"{\\"t\\":\\"snapshot\\"}"'
    assert OutgoingFrame({"a": 1}).for_mode(FrameMode.TEXT) == '{"a":1}'
    assert decode_frame("not json at all", FrameMode.TEXT) == ("not json at all", [])


def test_json_mode_parses_text():
    assert decode_frame('{"a": [1, "é"]}', FrameMode.JSON) == ({"a": [1, "é"]}, [])


def test_one_encoding_for_all_recipients():
    frame = OutgoingFrame({"big": "x" * 100})
    assert frame.for_mode(FrameMode.JSON) is frame.for_mode(FrameMode.JSON)


@pytest.mark.parametrize(
    "frame",
    [
        "{not json",
        b"\x00\x00",  # too short for the part count
        b"\x00\x00\x00\x00",  # zero parts
        b"\x00\x00\x00\x05\x00\x00\x00\x18",  # five parts, no room for their offsets
        struct.pack("!3I", 2, 12, 8) + b"{}",  # offsets out of order
        struct.pack("!2I", 1, 99) + b"{}",  # offset past the end
        struct.pack("!2I", 1, 8) + b"\xff",  # part 0 not UTF-8
        struct.pack("!2I", 1, 8) + b"{oops",  # part 0 not JSON
        '{"a": "\\ud800"}',  # a lone surrogate: JSON, but no text a kernel can take
        "[NaN]",  # not strict JSON
        '{"x": -Infinity}',
        "[1e999]",  # too large for a float: would reach the kernel as "inf"
        "[" * 1000 + "]" * 1000,  # deeper than the parser goes
        struct.pack("!I", 100_000) + bytes(400_000),  # more parts than a message has
    ],
)
def test_undecodable_frames_are_client_faults(frame):
    with pytest.raises(BadFrame):
        decode_frame(frame, FrameMode.JSON)
