"""The rules of durable sessions, both ends wired together in memory (pure: no server)."""

from __future__ import annotations

import json

import pytest

from jupyter_transports.durable import Owner
from jupyter_transports.errors import BadFrame
from jupyter_transports.framing import OutgoingFrame, pack_binary
from jupyter_transports.router import Subscriber
from jupyter_transports.session import (
    ENTRY_BYTES,
    ClientAck,
    ClientMessage,
    ClientSession,
    CommLog,
    Hello,
    Outcome,
    OutOfOrder,
    Reason,
    SessionState,
    ack,
    check_session_key,
    decode_client_frame,
    envelope,
    hello,
    lost_frame,
)
from jupyter_transports.sessions import Session


def frames(*seqs: int, size: int = 10) -> list[OutgoingFrame]:
    return [OutgoingFrame("x" * (size - 2), seq=seq) for seq in seqs]  # "xx…" is size bytes


def logged(log: CommLog, *seqs: int, clients=("a", "b"), broadcast=True) -> None:
    for frame in frames(*seqs):
        log.add(frame, clients, broadcast)


def test_the_log_keeps_each_message_once_with_whom_it_went_to():
    log = CommLog(window_bytes=1000, since=0, entry_bytes=0)
    logged(log, 1, 2)
    logged(log, 3, clients=("b",), broadcast=False)  # transports.to b alone
    logged(log, 4)
    state = SessionState(since=0)
    outcome, missed = state.resume(log, "a", last=1)
    assert outcome is Outcome.RESUMED
    assert [f.seq for f in missed] == [2, 4]  # not 3: it was not for a
    assert [f.seq for f in log.after(1)] == [2, 4]  # every client's, for event streams
    assert log.size == 40 and log.last == 4


def test_the_window_counts_what_the_server_keeps_of_each_message():
    """Small messages cost the server about a kilobyte each, whatever their own size: the
    window counts that, so that session_window_bytes bounds memory."""
    log = CommLog(window_bytes=4 * (10 + ENTRY_BYTES), since=0)
    logged(log, 1, 2, 3, 4, 5)  # 10 bytes each
    assert [entry.frame.seq for entry in log.entries] == [2, 3, 4, 5]
    assert log.size == 4 * (10 + ENTRY_BYTES)


def test_a_log_that_overflows_turns_the_next_resume_into_a_reset_then_goes_on():
    log = CommLog(window_bytes=25, since=0, entry_bytes=0)
    logged(log, 1, 2, 3, 4)  # 40 bytes: the oldest two go
    assert [entry.frame.seq for entry in log.entries] == [3, 4]
    assert (log.size, log.lost_through) == (20, 2)
    state = SessionState(since=0)
    assert state.resume(log, "a", last=1) == (Outcome.RESET, [])
    logged(log, 5)
    outcome, missed = state.resume(log, "a", last=1)  # in sync since the reset: from 4 on
    assert outcome is Outcome.RESUMED
    assert [f.seq for f in missed] == [5]


def test_a_resume_past_what_was_dropped_is_not_a_reset():
    log = CommLog(window_bytes=25, since=0, entry_bytes=0)
    logged(log, 1, 2, 3, 4)
    outcome, missed = SessionState(since=0).resume(log, "a", last=2)  # it had 1 and 2
    assert outcome is Outcome.RESUMED
    assert [f.seq for f in missed] == [3, 4]


def test_a_session_that_began_after_the_log_needs_nothing_from_before():
    log = CommLog(window_bytes=25, since=0, entry_bytes=0)
    logged(log, 1, 2, 3, 4)  # 1 and 2 dropped, before the session began
    outcome, missed = SessionState(since=4).resume(log, "a", last=0)
    assert (outcome, missed) == (Outcome.RESUMED, [])
    assert log.after(0) is None  # an event stream from before the log's drops cannot resume


def test_each_client_message_reaches_the_kernel_once_and_gaps_are_refused():
    state = SessionState(since=0)
    assert [state.received(seq) for seq in (1, 2, 1, 2, 3)] == [True, True, False, False, True]
    with pytest.raises(OutOfOrder):
        state.received(5)
    assert state.handed == 3


def test_acknowledgements_come_every_64_messages_and_none_when_nothing_is_new():
    state = SessionState(since=0)
    for seq in range(1, 64):
        state.received(seq)
        assert not state.ack_due()
    state.received(64)
    assert state.ack_due()
    assert state.take_ack() == 64
    assert state.take_ack() is None


def test_client_and_server_agree_across_a_dropped_connection():
    """Both ends wired together by hand; the 'connection' drops frames in flight both ways."""
    log, server, client = (
        CommLog(window_bytes=10_000, since=0, entry_bytes=0),
        SessionState(0),
        ClientSession(),
    )
    client.greeted(Hello.parse(hello(Outcome.NEW, "c", "comm", 0, 1000)))
    delivered: list[int] = []

    for n in range(5):  # the client sends 5; the connection carries only the first 3
        client.number({"n": n}, ())
    written = [client.unwritten.popleft() for _ in range(5)]  # it wrote all 5
    for message in written[:3]:
        if server.received(message.seq):
            delivered.append(message.data["n"])
    for frame in frames(1, 2, 3):  # the kernel sends 3; the client gets the first 1
        log.add(frame, ("c",), True)
    received = client.receive(envelope(log.entries[0].frame))
    assert received is not None and received.seq == 1

    # the connection drops; the client comes back with last=1
    outcome, missed = server.resume(log, "c", client.last)
    client.greeted(Hello.parse(hello(outcome, "c", "comm", server.handed, 10_000)))
    assert [m.seq for m in client.unwritten] == [4, 5]  # what the server has not
    for message in client.unwritten:
        if server.received(message.seq):
            delivered.append(message.data["n"])
    for frame in missed:
        received = client.receive(envelope(frame))
        assert received is not None
    assert outcome is Outcome.RESUMED
    assert delivered == [0, 1, 2, 3, 4]  # each once, in order
    assert client.last == 3
    client.receive(ack(server.take_ack() or 0))
    assert not client.unacked


def test_a_reset_for_a_new_session_restarts_the_numbering():
    client = ClientSession()
    client.greeted(Hello.parse(hello(Outcome.NEW, "c", "comm", 0, 1000)))
    client.number("a", ())
    client.number("b", ())
    client.receive(envelope(OutgoingFrame("x", seq=3)))
    client.greeted(Hello.parse(hello(Outcome.RESET, "c2", "comm2", 0, 1000, Reason.EXPIRED)))
    assert not client.unacked and client.numbered == 0
    assert client.last == 0  # the new comm numbers from 1: an old last would skip its first
    client.number("c", ())
    assert [m.seq for m in client.unwritten] == [1]


def test_an_overflow_reset_keeps_the_numbering():
    client = ClientSession()
    client.greeted(Hello.parse(hello(Outcome.NEW, "c", "comm", 0, 1000)))
    for data in "abc":
        client.number(data, ())
    client.greeted(Hello.parse(hello(Outcome.RESET, "c", "comm", 1, 1000, Reason.OVERFLOW)))
    assert [m.seq for m in client.unwritten] == [2, 3]


def test_wire_frames_are_exactly_the_contracts():
    assert hello(Outcome.NEW, "c1", "m1", 0, 512) == (
        '{"session":"new","client":"c1","comm_id":"m1","ack":0,"window":512}'
    )
    assert json.loads(hello(Outcome.RESET, "c", "m", 4, 64, Reason.OVERFLOW)) == {
        "session": "reset",
        "reason": "overflow",
        "client": "c",
        "comm_id": "m",
        "ack": 4,
        "window": 64,
    }
    assert ack(12) == '{"ack":12}'
    assert lost_frame(3) == '{"lost":3}'
    assert envelope(OutgoingFrame({"a": [1]}, seq=7)) == '{"seq":7,"data":{"a":[1]}}'


def test_client_frames_decode_or_are_refused():
    assert decode_client_frame('{"ack":3}') == ClientAck(3)
    message = decode_client_frame(pack_binary(b'{"seq":2,"data":null}', [b"xy"]))
    assert isinstance(message, ClientMessage)
    assert (message.seq, message.data, [bytes(b) for b in message.buffers]) == (2, None, [b"xy"])
    for bad in [
        '{"seq":1}',
        '{"seq":-1,"data":0}',
        '{"seq":true,"data":0}',
        '"x"',
        "[]",
        '{"ack":1,"extra":0}',
        '{"seq":1,"data":0,"x":1}',
    ]:
        with pytest.raises(BadFrame):
            decode_client_frame(bad)
    with pytest.raises(BadFrame):
        decode_client_frame(pack_binary(b'{"ack":1}', [b"buffer"]))


@pytest.mark.parametrize("key", ["short", "x" * 65, "has space in it!!", "é" * 20])
def test_session_keys_are_checked(key):
    with pytest.raises(BadFrame):
        check_session_key(key)


def test_the_client_acknowledges_a_quarter_of_the_window_at_a_time():
    client = ClientSession()
    client.greeted(Hello.parse(hello(Outcome.NEW, "c", "comm", 0, 400)))
    frame = envelope(OutgoingFrame("x" * 80, seq=1))  # 100 characters
    client.receive(frame)
    assert not client.ack_due()
    client.receive(envelope(OutgoingFrame("x" * 80, seq=2)))
    assert client.ack_due()
    assert client.take_ack() == 2
    assert not client.ack_due()


def test_a_hello_that_is_not_one_is_refused():
    for bad in [
        None,
        b"binary",
        "{}",
        '{"session":"maybe","client":"c","comm_id":"m","ack":0,"window":1}',
        '{"session":"new","client":"c","comm_id":"m","ack":-1,"window":1}',
        '{"session":"new","client":"c","comm_id":"m","ack":0}',
    ]:
        with pytest.raises(BadFrame):
            Hello.parse(bad)


def test_the_client_counts_what_the_server_says_was_lost():
    client = ClientSession()
    client.greeted(Hello.parse(hello(Outcome.NEW, "c", "comm", 0, 1000)))
    assert client.receive(lost_frame(3)) is None
    assert client.receive(lost_frame(2)) is None
    assert client.lost == 5
    with pytest.raises(BadFrame):
        client.receive('{"lost":-1}')


class RecordingConnection:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send_pieces(self, pieces) -> None:
        self.frames.append(b"".join(pieces))

    def close(self, code=None, reason=None) -> None:
        pass


def test_a_loss_while_the_client_is_away_is_told_right_after_the_hello():
    """Told live when connected; while away, added up and told once on the next connection,
    before what it missed."""
    subscriber = Subscriber("c", "comm", "alice")
    session = Session(None, ("k", "key"), Owner("alice", False), subscriber, None, CommLog(64, 0))
    first = RecordingConnection()
    session.begin(first, None)
    session.lost(4)
    assert first.frames[-1].endswith(b'{"lost":4}')
    session.connection = None  # dropped
    session.lost(2)
    session.lost(3)
    second = RecordingConnection()
    session.begin(second, None)
    assert [frame[-10:] for frame in second.frames[1:]] == [b'{"lost":5}']
    third = RecordingConnection()
    session.begin(third, None)
    assert len(third.frames) == 1  # told once
