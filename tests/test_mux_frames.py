"""The frames of a multiplexed socket and a session's log, with no server (pure)."""

from __future__ import annotations

import json

import pytest

from jupyter_transports import mux
from jupyter_transports.errors import BadFrame
from jupyter_transports.framing import OutgoingFrame, pack_binary


def test_client_frames_decode_to_their_events():
    assert mux.decode_client_frame('{"type":"attach","comm_id":"a"}') == mux.Attach("a")
    assert mux.decode_client_frame('{"type":"detach","comm_id":"a"}') == mux.Detach("a")
    assert mux.decode_client_frame('{"type":"close","comm_id":"a"}') == mux.CloseComm("a")
    opened = mux.decode_client_frame(
        pack_binary(b'{"type":"open","comm_id":"c:1","target_name":"t","data":{"x":1}}', [b"b"])
    )
    assert isinstance(opened, mux.Open)
    assert (opened.comm_id, opened.target_name, opened.data, opened.metadata) == (
        "c:1",
        "t",
        {"x": 1},
        {},
    )
    assert [bytes(b) for b in opened.buffers] == [b"b"]
    message = mux.decode_client_frame('{"type":"msg","comm_id":"a","data":[1]}')
    assert message == mux.Message("a", [1], [])


def test_session_frames_carry_a_number_or_acknowledge():
    assert mux.decode_session_frame('{"seq":3,"type":"attach","comm_id":"a"}') == (
        3,
        mux.Attach("a"),
    )
    assert mux.decode_session_frame('{"type":"ack","seq":9}') == 9
    for frame in (
        '{"type":"attach","comm_id":"a"}',
        '{"seq":-1,"type":"ack"}',
        '{"seq":true,"type":"ack"}',
    ):
        with pytest.raises(BadFrame):
            mux.decode_session_frame(frame)
    with pytest.raises(BadFrame):
        mux.decode_session_frame('{"type":"ack","seq":1,"comm_id":"a"}')


def test_server_frames_are_the_contracts():
    frame = OutgoingFrame({"v": 1}, sender='9b/a"b')
    head = mux.message(frame, 'a"b')
    assert json.loads(head) == {"type": "msg", "comm_id": 'a"b', "from": '9b/a"b', "data": {"v": 1}}
    assert json.loads(mux.numbered(4, head))["seq"] == 4
    assert mux.numbered(4, head).startswith('{"seq":4,"type":"msg"')
    assert json.loads(mux.hello("s", False, [("a", "t")])) == {
        "type": "hello",
        "client": "s",
        "can_send": False,
        "comms": [{"comm_id": "a", "target_name": "t"}],
    }
    assert json.loads(mux.session_hello("reset", "overflow", "s", True, 2, 100, [])) == {
        "type": "hello",
        "session": "reset",
        "reason": "overflow",
        "client": "s",
        "can_send": True,
        "ack": 2,
        "window": 100,
        "comms": [],
    }


def test_a_session_log_keeps_what_is_unacknowledged_within_its_window():
    log = mux.MuxLog(window_bytes=1000, entry_bytes=100)
    for _ in range(5):
        seq = log.next()
        log.keep(seq, (b"x" * 100,))  # 200 bytes each: 5 fit
    assert log.after(0) == [(b"x" * 100,)] * 5
    log.acknowledged(2)
    assert log.after(2) == [(b"x" * 100,)] * 3 and log.size == 600
    for _ in range(3):
        log.keep(log.next(), (b"y" * 100,))  # 1,200 bytes: seq 3 goes unacknowledged
    assert log.after(2) is None
    assert log.after(3) == [(b"x" * 100,)] * 2 + [(b"y" * 100,)] * 3
