"""Property tests of the pure modules (hypothesis): framing, REST bodies, routing, sessions, SSE.

Each property states a promise of ``docs/CONTRACT.md`` or of the README's "Where the contract is
silent" over generated inputs, not over a few examples. No server, no kernel.
"""

from __future__ import annotations

import json
import math
import re
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from jupyter_transports import sse
from jupyter_transports.actions import Close, Deliver, Opened, ToKernel
from jupyter_transports.errors import (
    BadFrame,
    BadRequest,
    CloseCode,
    CommNotFound,
    ReadOnly,
    TooLarge,
)
from jupyter_transports.framing import (
    MAX_PARTS,
    FrameMode,
    OutgoingFrame,
    decode_frame,
    dumps,
    loads,
    pack_binary,
    unpack_binary,
)
from jupyter_transports.kernel_message import KernelCommMessage
from jupyter_transports.protocol import COMM_CLOSE, COMM_MSG, COMM_OPEN
from jupyter_transports.rest import (
    COUNT,
    DATA,
    MAX_WAIT,
    OPEN_DEFAULTS,
    SEND_DEFAULTS,
    WAIT,
    parse_body,
)
from jupyter_transports.router import Router, Subscriber
from jupyter_transports.session import (
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
)

# Hypothesis keeps caches (constants of the code under test) out of the work tree.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "jupyter_transports-hypothesis")

FAST = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
SLOWER = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# -- strategies --------------------------------------------------------------------------------

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)
BUFFERS = st.lists(st.binary(max_size=48), max_size=4)


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON, types included (``1``, ``1.0`` and ``true`` differ)."""
    return dumps(a) == dumps(b)


def non_finite(value: Any) -> bool:
    """Whether a NaN or an infinity hides anywhere in ``value``."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(map(non_finite, value))
    if isinstance(value, dict):
        return any(map(non_finite, value.values()))
    return False


@st.composite
def valid_frames(draw: st.DrawFn) -> bytes | str:
    """A frame a correct client could send: JSON text, or the binary layout."""
    data = draw(JSON_VALUES)
    buffers = draw(BUFFERS)
    if buffers or draw(st.booleans()):
        return pack_binary(dumps(data).encode(), buffers)
    return dumps(data)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes | str:
    """A valid frame, truncated, bit-flipped, with bytes inserted or cut out."""
    frame = draw(valid_frames())
    raw = bytearray(frame.encode() if isinstance(frame, str) else frame)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, len(raw)))
        how = draw(st.sampled_from(["truncate", "flip", "insert", "cut"]))
        if how == "truncate":
            del raw[where:]
        elif how == "flip" and where < len(raw):
            raw[where] ^= 1 << draw(st.integers(0, 7))
        elif how == "insert":
            raw[where:where] = draw(st.binary(min_size=1, max_size=4))
        else:
            del raw[where : where + draw(st.integers(1, 8))]
    if isinstance(frame, str):
        return raw.decode("utf-8", "replace")  # a text frame is UTF-8, whatever it says
    return bytes(raw)


@st.composite
def binary_layouts(draw: st.DrawFn) -> bytes:
    """A header of any part count and offsets (small, huge, out of order, past the end)."""
    n = draw(st.integers(0, 2048) | st.integers(0, 2**32 - 1))
    declared = draw(st.integers(0, min(n, 40)))
    offset = st.integers(0, 2**32 - 1) | st.integers(0, 4 * (declared + 1) + 64)
    offsets = draw(st.lists(offset, min_size=declared, max_size=declared))
    body = draw(st.binary(max_size=64))
    return struct.pack(f"!{declared + 1}I", n, *offsets) + body


ANY_FRAMES = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    binary_layouts(),
    mutated_frames(),
    valid_frames(),
)


# -- framing -----------------------------------------------------------------------------------


@FAST
@given(data=JSON_VALUES, buffers=BUFFERS)
def test_json_mode_frames_round_trip(data: Any, buffers: list[bytes]) -> None:
    frame = OutgoingFrame(data, buffers)
    wire = frame.for_mode(FrameMode.JSON)
    assert isinstance(wire, bytes) == bool(buffers)  # buffers: binary; else text
    decoded, views = decode_frame(wire, FrameMode.JSON)
    assert same_json(decoded, data)
    assert [bytes(v) for v in views] == buffers
    assert frame.size == len(wire if isinstance(wire, bytes) else wire.encode())


@FAST
@given(text=st.text(max_size=100))
def test_text_mode_strings_travel_verbatim(text: str) -> None:
    assert OutgoingFrame(text).for_mode(FrameMode.TEXT) == text
    assert decode_frame(text, FrameMode.TEXT) == (text, [])


@FAST
@given(data=JSON_VALUES, buffers=BUFFERS)
def test_text_mode_other_data_is_json_and_buffers_binary(data: Any, buffers: list[bytes]) -> None:
    wire = OutgoingFrame(data, buffers).for_mode(FrameMode.TEXT)
    if buffers:
        decoded, views = decode_frame(wire, FrameMode.TEXT)
        assert same_json(decoded, data) and [bytes(v) for v in views] == buffers
    elif isinstance(data, str):
        assert wire == data
    else:
        assert isinstance(wire, str) and same_json(loads(wire), data)


@FAST
@given(head=st.binary(max_size=64), buffers=st.lists(st.binary(max_size=16), max_size=8))
def test_binary_layout_round_trips(head: bytes, buffers: list[bytes]) -> None:
    frame = pack_binary(head, buffers)
    (n,) = struct.unpack_from("!I", frame)
    assert n == 1 + len(buffers)
    part0, rest = unpack_binary(frame)
    assert bytes(part0) == head and [bytes(b) for b in rest] == buffers


@pytest.mark.parametrize(("parts", "ok"), [(1, True), (MAX_PARTS, True), (MAX_PARTS + 1, False)])
def test_at_most_1024_parts(parts: int, ok: bool) -> None:
    frame = pack_binary(b"{}", [b""] * (parts - 1))
    if ok:
        assert len(decode_frame(frame, FrameMode.JSON)[1]) == parts - 1
    else:
        with pytest.raises(BadFrame):
            decode_frame(frame, FrameMode.JSON)


@FAST
@given(frame=ANY_FRAMES, mode=st.sampled_from(FrameMode))
def test_decoding_anything_is_a_value_or_bad_frame(frame: bytes | str, mode: FrameMode) -> None:
    started = time.perf_counter()
    try:
        data, buffers = decode_frame(frame, mode)
    except BadFrame:
        pass
    else:
        # whatever is taken can be sent on to a kernel: strict JSON, UTF-8 text
        assert not non_finite(data)
        dumps(data).encode("utf-8")
        assert len(buffers) < MAX_PARTS
        if isinstance(frame, str) and mode is FrameMode.TEXT:
            assert data == frame
    assert time.perf_counter() - started < 2  # bounded inputs, bounded work


NON_NUMBERS = st.sampled_from(["NaN", "Infinity", "-Infinity"])
HUGE_FLOATS = st.builds(
    "{}{}e{}".format,
    st.sampled_from(["", "-"]),
    st.integers(1, 9),
    st.integers(309, 10**6),
) | st.builds(lambda digits: "9" * digits + ".5", st.integers(310, 2000))


@st.composite
def embedded(draw: st.DrawFn, literal: st.SearchStrategy[str]) -> str:
    """``literal`` put in place of one leaf of a JSON document."""
    doc = draw(JSON_VALUES)
    marker = "\x00MARK\x00"
    where = draw(st.sampled_from(["alone", "list", "dict", "deep"]))
    wrapped: Any = {
        "alone": marker,
        "list": [doc, marker],
        "dict": {"k": doc, "x": marker},
        "deep": [[{"a": [marker]}], doc],
    }[where]
    return json.dumps(wrapped).replace(json.dumps(marker), draw(literal))


@FAST
@given(text=embedded(NON_NUMBERS) | embedded(HUGE_FLOATS), as_bytes=st.booleans())
def test_strict_json_refuses_nan_infinity_and_huge_floats(text: str, as_bytes: bool) -> None:
    with pytest.raises(BadFrame):
        loads(text.encode() if as_bytes else text)


@FAST
@given(digits=st.integers(1, 6000), sign=st.sampled_from(["", "-"]))
def test_huge_integers_are_refused_or_kept_exactly(digits: int, sign: str) -> None:
    """Never a float, never 'inf': an integer is taken as that integer, or refused."""
    literal = sign + "7" * digits
    try:
        value = loads(f"[{literal}]")
    except BadFrame:
        assert digits > sys.get_int_max_str_digits()  # Python's limit, 4300 by default
    else:
        assert dumps(value) == f"[{literal}]"


@SLOWER
@given(
    extra=st.integers(0, 20_000),
    opener=st.sampled_from(["[", '{"a":', '[{"b":']),
    closed=st.booleans(),
)
def test_nesting_deeper_than_the_parser_goes_is_bad_frame(
    extra: int, opener: str, closed: bool
) -> None:
    # hypothesis raises the recursion limit while it runs a test: go by the limit in force
    depth = sys.getrecursionlimit() + extra
    closer = {"[": "]", '{"a":': "}", '[{"b":': "}]"}[opener]
    text = opener * depth + "0" + (closer * depth if closed else "")
    with pytest.raises(BadFrame):
        loads(text)
    with pytest.raises(BadFrame):
        decode_frame(pack_binary(text.encode(), []), FrameMode.JSON)


@SLOWER
@given(depth=st.integers(1, 1_200), opener=st.sampled_from(["[", '{"a":']))
def test_nesting_is_refused_or_taken_whole(depth: int, opener: str) -> None:
    """Near the parser's limit: refused, or a value that can be encoded again."""
    closer = {"[": "]", '{"a":': "}"}[opener]
    try:
        value = loads(opener * depth + "0" + closer * depth)
    except BadFrame:
        return
    assert dumps(value).count(closer) == depth


SURROGATES = st.integers(0xD800, 0xDFFF)


@FAST
@given(unit=SURROGATES, before=st.text(max_size=5), after=st.text(max_size=5))
def test_lone_surrogate_escapes_are_bad_frames(unit: int, before: str, after: str) -> None:
    text = json.dumps([before])[:-2] + f"\\u{unit:04x}" + json.dumps(after)[1:] + "]"
    if 0xD800 <= unit < 0xDC00:  # a high surrogate followed by no low one
        text = text.replace(f"\\u{unit:04x}", f"\\u{unit:04x}x")
    with pytest.raises(BadFrame):
        loads(text)
    with pytest.raises(BadFrame):
        loads(text.encode())


@FAST
@given(char=st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF))
def test_surrogate_pairs_are_text(char: str) -> None:
    escaped = json.dumps(char, ensure_ascii=True)  # "\udXXX\udXXX"
    assert loads(escaped) == char


@FAST
@given(data=JSON_VALUES)
def test_bytes_and_text_parse_alike(data: Any) -> None:
    text = dumps(data)
    assert same_json(loads(text.encode()), loads(text))


@pytest.mark.parametrize(
    "raw",
    [
        b'"\xed\xa0\x80"',  # U+D800 encoded as if it were a character: not UTF-8
        b'{"data": "\xed\xb2\x80"}',  # U+DC80
        '{"data": "\ud800"}'.encode("utf-16-le", "surrogatepass"),  # UTF-16, lone surrogate
    ],
)
def test_bytes_with_encoded_surrogates_are_bad_frames(raw: bytes) -> None:
    with pytest.raises(BadFrame):
        loads(raw)


# -- REST bodies -------------------------------------------------------------------------------


@st.composite
def mutated_bodies(draw: st.DrawFn) -> bytes:
    fields = draw(
        st.dictionaries(
            st.sampled_from([DATA, WAIT, COUNT, "extra", ""]),
            JSON_VALUES | st.integers(-5, MAX_WAIT + 5),
            max_size=4,
        )
    )
    raw = bytearray(json.dumps(fields).encode())
    if draw(st.booleans()) and raw:
        where = draw(st.integers(0, len(raw) - 1))
        raw[where] ^= 1 << draw(st.integers(0, 7))
    return bytes(raw)


BODIES = (
    st.binary(max_size=200)
    | mutated_bodies()
    | st.sampled_from([b"", b" ", b"\n\t", b"null", b"[]", b'"x"', b"1", b"{}", b"\xef\xbb\xbf{}"])
)
BODY_DEFAULTS = st.sampled_from([OPEN_DEFAULTS, SEND_DEFAULTS])


@FAST
@given(body=BODIES, defaults=BODY_DEFAULTS, max_bytes=st.integers(0, 300))
def test_any_body_is_fields_or_a_client_fault(
    body: bytes, defaults: dict[str, Any], max_bytes: int
) -> None:
    try:
        fields = parse_body(body, defaults, max_bytes=max_bytes)
    except TooLarge:
        assert len(body) > max_bytes
        return
    except BadRequest:
        return
    assert len(body) <= max_bytes
    assert isinstance(fields, dict) and DATA in fields
    assert set(fields) <= {DATA, *defaults}
    wait = fields[WAIT]
    assert type(wait) in (int, float) and 0 <= wait <= MAX_WAIT
    if COUNT in fields:
        assert type(fields[COUNT]) is int and fields[COUNT] >= 0
    assert not non_finite(fields[DATA])


WAITS = st.integers(0, MAX_WAIT) | st.floats(0, MAX_WAIT)


@FAST
@given(
    body=st.fixed_dictionaries(
        {}, optional={DATA: JSON_VALUES, WAIT: WAITS, COUNT: st.integers(0, 10**9)}
    ),
    defaults=BODY_DEFAULTS,
)
def test_valid_bodies_round_trip(body: dict[str, Any], defaults: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    acceptable = (DATA in body or DATA in defaults) and (COUNT not in body or COUNT in defaults)
    if not acceptable:
        with pytest.raises(BadRequest):
            parse_body(raw, defaults, max_bytes=len(raw))
        return
    fields = parse_body(raw, defaults, max_bytes=len(raw))
    assert same_json(fields, {**defaults, **body})


@FAST
@given(
    wait=st.floats(allow_nan=False, allow_infinity=False)
    | st.integers()
    | st.booleans()
    | st.text(max_size=3)
    | st.none()
    | st.lists(st.integers(), max_size=1),
    count=st.none() | st.integers(-3, 3) | st.floats(-1, 3) | st.booleans() | st.text(max_size=2),
)
def test_wait_and_count_bounds(wait: Any, count: Any) -> None:
    body: dict[str, Any] = {DATA: 1, WAIT: wait}
    if count is not None:
        body[COUNT] = count
    raw = json.dumps(body).encode()
    wait_ok = type(wait) in (int, float) and 0 <= wait <= MAX_WAIT
    count_ok = count is None or (type(count) is int and count >= 0)
    if wait_ok and count_ok:
        assert parse_body(raw, SEND_DEFAULTS, max_bytes=len(raw))[WAIT] == wait
    else:
        with pytest.raises(BadRequest):
            parse_body(raw, SEND_DEFAULTS, max_bytes=len(raw))


def test_wait_is_at_most_one_day() -> None:
    assert parse_body(b'{"data": 0, "wait": 86400}', SEND_DEFAULTS, max_bytes=99)[WAIT] == MAX_WAIT
    for bad in (b"86400.001", b"-0.0001", b"1e999", b"NaN", b"true"):
        with pytest.raises(BadRequest):
            parse_body(b'{"data": 0, "wait": ' + bad + b"}", SEND_DEFAULTS, max_bytes=99)


# -- routing -----------------------------------------------------------------------------------

CODES = st.sampled_from([CloseCode.GOING_AWAY, CloseCode.BRIDGE_FAILED, CloseCode.RESTARTING])


class RouterMachine(RuleBasedStateMachine):
    """Random clients and kernel messages against a model of the routing rules."""

    def __init__(self) -> None:
        super().__init__()
        self.router = Router()
        self.counter = 0
        self.attached: dict[str, list[str]] = {}  # comm -> its clients, in attach order
        self.owner: dict[str, str | None] = {}
        self.comm_of: dict[str, str] = {}  # live client -> its comm (attached or collecting)
        self.read_only: set[str] = set()
        self.collecting: dict[str, dict[str, list[Any]]] = {}  # comm -> parent -> [client, n]
        self.closed: set[str] = set()  # clients the router said its last word about
        self.every_client: list[str] = []
        self.seq: dict[str, int] = {}  # last seq per comm (comm ids are never reused)

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def subscriber(self, comm_id: str, *, can_send: bool = True) -> Subscriber:
        client_id = self.fresh("c")
        self.every_client.append(client_id)
        return Subscriber(client_id, comm_id, f"user-{client_id}", can_send)

    # -- checks ---------------------------------------------------------------------------------

    def check(self, actions: list[Any]) -> None:
        """No word about a client after its Close; every Deliver numbered, and to clients of
        its comm (or its collector), each once."""
        for action in actions:
            if isinstance(action, Deliver):
                assert len(set(action.clients)) == len(action.clients)
                assert action.clients, "a Deliver to nobody"
                for client_id in action.clients:
                    assert client_id not in self.closed
                    assert self.comm_of.get(client_id) == action.comm_id
                assert action.frame.seq == self.seq.get(action.comm_id, 0) + 1
                self.seq[action.comm_id] = action.frame.seq
            elif isinstance(action, Close):
                assert action.client not in self.closed, "closed twice"
                assert action.client in self.comm_of
                self.closed.add(action.client)
                self.forget(action.client)

    def forget(self, client_id: str) -> None:
        comm_id = self.comm_of.pop(client_id)
        if client_id in self.attached.get(comm_id, []):
            self.attached[comm_id].remove(client_id)
        for parent, (collector, _) in list(self.collecting.get(comm_id, {}).items()):
            if collector == client_id:
                del self.collecting[comm_id][parent]

    def end_comm(self, comm_id: str) -> None:
        for table in (self.attached, self.owner, self.collecting):
            table.pop(comm_id, None)

    @invariant()
    def router_agrees_with_the_model(self) -> None:
        assert set(self.router.clients) == set(self.comm_of)
        assert set(self.router.comms) == set(self.attached)
        for comm_id, clients in self.attached.items():
            assert list(self.router.comms[comm_id].clients) == clients
            assert self.router.subscribers(comm_id) == len(clients)

    # -- clients --------------------------------------------------------------------------------

    @rule(owned=st.booleans())
    def open_comm(self, owned: bool) -> None:
        client = self.subscriber(self.fresh("k"))
        [action] = self.router.open_comm(client, "echo", {"x": 1}, {"q": "v"}, owned=owned)
        assert isinstance(action, ToKernel) and action.msg_type == COMM_OPEN
        assert action.metadata["transports"]["client"] == client.id
        assert action.metadata["transports"]["query"] == {"q": "v"}
        self.attached[client.comm_id] = [client.id]
        self.owner[client.comm_id] = client.id if owned else None
        self.comm_of[client.id] = client.comm_id

    @rule()
    def kernel_opens(self) -> None:
        comm_id = self.fresh("k")
        message = KernelCommMessage(COMM_OPEN, {"comm_id": comm_id, "target_name": "w"}, {})
        assert self.router.from_kernel(message) == [Opened(comm_id, "w", None, {})]
        self.attached[comm_id] = []
        self.owner[comm_id] = None

    @precondition(lambda self: self.attached)
    @rule(data=st.data(), can_send=st.booleans())
    def attach(self, data: st.DataObject, can_send: bool) -> None:
        comm_id = data.draw(st.sampled_from(sorted(self.attached)))
        client = self.subscriber(comm_id, can_send=can_send)
        assert self.router.attach(client) == []
        self.attached[comm_id].append(client.id)
        self.comm_of[client.id] = comm_id
        if not can_send:
            self.read_only.add(client.id)

    @rule()
    def attach_unknown(self) -> None:
        with pytest.raises(CommNotFound):
            self.router.attach(self.subscriber(self.fresh("gone")))

    @precondition(lambda self: self.every_client)
    @rule(data=st.data())
    def send(self, data: st.DataObject) -> None:
        client_id = data.draw(st.sampled_from(self.every_client))
        collecting = any(
            c == client_id for table in self.collecting.values() for c, _ in table.values()
        )
        if collecting:
            return  # a REST call sends once, through post
        if client_id not in self.comm_of:
            assert self.router.send(client_id, "late") == []
            return
        if client_id in self.read_only:
            with pytest.raises(ReadOnly):
                self.router.send(client_id, "no")
            return
        [action] = self.router.send(client_id, {"n": 1}, [b"b"])
        assert action.msg_type == COMM_MSG
        assert action.content == {"comm_id": self.comm_of[client_id], "data": {"n": 1}}
        assert action.metadata == {"transports": {"client": client_id, "user": f"user-{client_id}"}}

    @precondition(lambda self: self.attached)
    @rule(data=st.data(), count=st.integers(0, 3))
    def post(self, data: st.DataObject, count: int) -> None:
        comm_id = data.draw(st.sampled_from(sorted(self.attached)))
        client = self.subscriber(comm_id)
        [action] = self.router.post(client, "rest")
        assert action.metadata["transports"]["client"] == client.id
        if count:
            parent = self.fresh("m")
            self.router.expect_replies(client, parent, count)
            self.collecting.setdefault(comm_id, {})[parent] = [client.id, count]
            self.comm_of[client.id] = comm_id

    @precondition(lambda self: self.every_client)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        client_id = data.draw(st.sampled_from(self.every_client))
        actions = self.router.leave(client_id)
        comm_id = self.comm_of.get(client_id)
        if comm_id is None:
            assert actions == []
            return
        owner = self.owner.get(comm_id) == client_id
        self.forget(client_id)
        if not owner:
            assert actions == []
            return
        closing, *closes = actions
        assert isinstance(closing, ToKernel) and closing.msg_type == COMM_CLOSE
        assert closing.content["comm_id"] == comm_id
        expected = [
            *self.attached[comm_id],
            *(c for c, _ in self.collecting.get(comm_id, {}).values()),
        ]
        assert [c.client for c in closes] == expected
        assert {c.code for c in closes} <= {CloseCode.COMM_CLOSED}
        self.check(closes)
        self.end_comm(comm_id)

    # -- the kernel -----------------------------------------------------------------------------

    def draw_comm(self, data: st.DataObject) -> str:
        """Mostly a comm the router knows; sometimes one it never heard of."""
        known = sorted(self.attached)
        if known and data.draw(st.integers(0, 9)) > 0:
            return data.draw(st.sampled_from(known))
        return self.fresh("unknown")

    def draw_to(self, data: st.DataObject) -> list[Any] | None:
        if data.draw(st.booleans()):
            return None
        pool = [*self.every_client, "nobody", "", 7, None]
        return data.draw(st.lists(st.sampled_from(pool), max_size=6))

    def draw_parent(self, data: st.DataObject, comm_id: str) -> str | None:
        parents = sorted(self.collecting.get(comm_id, {}))
        return data.draw(st.sampled_from([None, "other", *parents]))

    def expected_delivery(
        self, comm_id: str, to: list[Any] | None, parent: str | None
    ) -> tuple[list[str], list[str]]:
        """(recipients, collectors completed) of a kernel message, by the rules."""
        attached = self.attached[comm_id]
        recipients = attached if to is None else [c for c in dict.fromkeys(to) if c in attached]
        recipients = list(recipients)
        done = []
        collector = self.collecting.get(comm_id, {}).get(parent) if parent else None
        if collector is not None and (to is None or collector[0] in to):
            recipients.append(collector[0])
            collector[1] -= 1
            if collector[1] == 0:
                done.append(collector[0])
        return recipients, done

    @rule(data=st.data(), payload=JSON_VALUES, with_buffers=st.booleans(), burst=st.integers(1, 4))
    def kernel_sends(
        self, data: st.DataObject, payload: Any, with_buffers: bool, burst: int
    ) -> None:
        comm_id = self.draw_comm(data)
        to = self.draw_to(data)
        parent = self.draw_parent(data, comm_id)
        for _ in range(burst):
            self.kernel_message(comm_id, to, parent, payload, with_buffers)

    def kernel_message(
        self,
        comm_id: str,
        to: list[Any] | None,
        parent: str | None,
        payload: Any,
        with_buffers: bool,
    ) -> None:
        metadata = {} if to is None else {"transports": {"to": to}}
        buffers = [b"x"] if with_buffers else []
        message = KernelCommMessage(
            COMM_MSG, {"comm_id": comm_id, "data": payload}, metadata, buffers, "comm_msg", parent
        )
        actions = self.router.from_kernel(message)
        if comm_id not in self.attached:
            assert actions == []
            return
        recipients, done = self.expected_delivery(comm_id, to, parent)
        if not recipients:
            assert actions == []
            return
        deliver, *closes = actions
        assert isinstance(deliver, Deliver)
        assert list(deliver.clients) == recipients
        assert deliver.broadcast == (to is None)
        assert same_json(deliver.frame.data, payload)
        assert [bytes(b) for b in deliver.frame.buffers] == buffers
        assert [(c.client, c.code) for c in closes] == [(c, CloseCode.COMM_CLOSED) for c in done]
        self.check(actions)

    @rule(data=st.data(), payload=st.sampled_from([{}, None, 0, "", {"bye": 1}, "x"]))
    def kernel_closes(self, data: st.DataObject, payload: Any) -> None:
        comm_id = self.draw_comm(data)
        refusal = data.draw(st.booleans())
        to = self.draw_to(data)
        parent = None if refusal else self.draw_parent(data, comm_id)
        metadata = {} if to is None else {"transports": {"to": to}}
        parent_type = COMM_OPEN if refusal else "comm_msg"
        message = KernelCommMessage(
            COMM_CLOSE, {"comm_id": comm_id, "data": payload}, metadata, (), parent_type, parent
        )
        actions = self.router.from_kernel(message)
        if comm_id not in self.attached:
            assert actions == []
            return
        everyone = [*self.attached[comm_id]]
        everyone += [c for c, _ in self.collecting.get(comm_id, {}).values()]
        if refusal:
            assert [(a.client, a.code) for a in actions] == [
                (c, CloseCode.NO_SUCH_COMM) for c in everyone
            ]
        else:
            delivered = [a for a in actions if isinstance(a, Deliver)]
            if payload:  # "a comm_close that carries data" is delivered, then the close
                recipients, _ = self.expected_delivery(comm_id, to, parent)
                assert [list(d.clients) for d in delivered] == ([recipients] if recipients else [])
            else:
                assert delivered == []
            closes = [a for a in actions if isinstance(a, Close)]
            assert sorted(c.client for c in closes) == sorted(everyone)
        self.check(actions)
        self.end_comm(comm_id)
        assert all(c not in self.comm_of for c in everyone)

    @precondition(lambda self: self.attached)
    @rule(data=st.data(), elsewhere=st.booleans())
    def server_closes_comm(self, data: st.DataObject, elsewhere: bool) -> None:
        comm_id = data.draw(st.sampled_from(sorted(self.attached)))
        everyone = [*self.attached[comm_id]]
        everyone += [c for c, _ in self.collecting.get(comm_id, {}).values()]
        if elsewhere:
            actions = self.router.closed_elsewhere(comm_id)
            closes = actions
        else:
            closing, *closes = self.router.close_comm(comm_id)
            assert isinstance(closing, ToKernel) and closing.msg_type == COMM_CLOSE
            actions = closes
        assert sorted(c.client for c in closes) == sorted(everyone)
        self.check(actions)
        self.end_comm(comm_id)

    @rule(code=CODES)
    def kernel_gone(self, code: CloseCode) -> None:
        live = set(self.comm_of)
        actions = self.router.kernel_gone(code, "gone")
        assert all(isinstance(a, Close) and a.code == code for a in actions)
        assert {a.client for a in actions} == live and len(actions) == len(live)
        self.check(actions)
        assert self.router.comms == {} and self.router.clients == {}
        self.attached.clear()
        self.owner.clear()
        self.collecting.clear()


TestRouterMachine = RouterMachine.TestCase
TestRouterMachine.settings = settings(
    max_examples=80,
    stateful_step_count=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.parametrize("to", [[["a"]], [{"id": "a"}], ["a", []]])
def test_unhashable_addressees_are_ignored_not_fatal(to: list[Any]) -> None:
    router = Router()
    router.comm_exists("c1", "w")
    router.attach(Subscriber("a", "c1", "u"))
    message = KernelCommMessage(COMM_MSG, {"comm_id": "c1", "data": 1}, {"transports": {"to": to}})
    actions = router.from_kernel(message)
    assert all(isinstance(a, Deliver) for a in actions)


# -- sessions ----------------------------------------------------------------------------------

LOGGED = st.lists(
    st.tuples(st.integers(0, 60), st.frozensets(st.sampled_from("abc")), st.booleans()),
    max_size=25,
)


@FAST
@given(messages=LOGGED, window=st.integers(0, 400), since=st.integers(0, 5))
def test_comm_log_keeps_the_latest_and_replays_exactly_whats_missed(
    messages: list[tuple[int, frozenset[str], bool]], window: int, since: int
) -> None:
    log = CommLog(window, since, entry_bytes=0)
    frames = []
    for i, (pad, clients, broadcast) in enumerate(messages):
        frame = OutgoingFrame("x" * pad, seq=since + i + 1)  # size pad + 2
        frames.append((frame, clients, broadcast))
        log.add(frame, sorted(clients), broadcast)
        assert log.size == sum(e.frame.size for e in log.entries) <= window
    kept = [e.frame.seq for e in log.entries]
    # the longest run of latest messages that fits the window: oldest go first
    fits, total = 0, 0
    for frame, _, _ in reversed(frames):
        total += frame.size
        if total > window:
            break
        fits += 1
    assert kept == [f.seq for f, _, _ in frames[len(frames) - fits :]]
    dropped = [f.seq for f, _, _ in frames[: len(frames) - fits]]
    assert log.lost_through == (dropped[-1] if dropped else 0)
    assert log.last == since + len(frames)
    for last in range(log.last + 2):
        for client in (None, "a", "b", "z"):
            missed = log.after(last, client)
            if last < since or any(seq > last for seq in dropped):
                assert missed is None  # an overflow: the log cannot say
                continue
            assert missed is not None
            assert [f.seq for f in missed] == [
                f.seq
                for f, clients, broadcast in frames
                if f.seq > last and (broadcast if client is None else client in clients)
            ]


@FAST
@given(
    moves=st.lists(
        st.tuples(st.sampled_from(["next", "again", "skip", "zero"]), st.integers(0, 4)),
        max_size=80,
    )
)
def test_client_messages_reach_the_kernel_once_and_gaps_are_refused(
    moves: list[tuple[str, int]],
) -> None:
    state = SessionState(since=0)
    handed: list[int] = []
    for move, k in moves:
        before = state.handed
        seq = {
            "next": before + 1,
            "again": max(before - k, 0),  # a resend of one already handed
            "skip": before + 2 + k,
            "zero": 0,
        }[move]
        if seq > before + 1:
            with pytest.raises(OutOfOrder) as info:
                state.received(seq)
            assert info.value.close_code == CloseCode.PROTOCOL_ERROR
            assert state.handed == before
        elif state.received(seq):
            assert seq == before + 1
            handed.append(seq)
        else:
            assert seq <= before and state.handed == before
        assert state.ack_due() == (state.unacked >= 64)
    assert handed == list(range(1, len(handed) + 1))
    acked = state.take_ack()
    assert acked == (state.handed if handed else None)
    assert state.take_ack() is None


STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("number"), st.integers(1, 4)),
        st.tuples(st.just("write"), st.integers(0, 4)),
        st.tuples(st.just("arrive"), st.integers(0, 4)),
        st.tuples(st.just("kernel"), st.integers(1, 4), st.booleans(), st.integers(0, 40)),
        st.tuples(st.just("receive"), st.integers(0, 4)),
        st.tuples(st.just("server_ack")),
        st.tuples(st.just("client_ack")),
        st.tuples(st.just("replay")),
        st.tuples(st.just("drop")),
    ),
    min_size=15,
    max_size=60,
)


@SLOWER
@given(steps=STEPS, window=st.sampled_from([10**6, 60, 150]))
def test_a_session_across_drops_loses_and_repeats_nothing(
    steps: list[tuple[Any, ...]], window: int
) -> None:
    """Both ends of a session wired by hand, over connections that drop with frames in flight
    both ways: each client message reaches the kernel once, in order; the client gets every
    kernel message for it once, in order, unless a resume says ``overflow``."""
    log, server, client = CommLog(window, since=0, entry_bytes=0), SessionState(0), ClientSession()
    client.greeted(Hello.parse(hello(Outcome.NEW, "c", "m", 0, window)))
    up: list[ClientMessage] = []  # written by the client, not yet read by the server
    down: list[OutgoingFrame] = []  # for the client, not yet read by it
    kernel_got: list[Any] = []
    for_me: list[int] = []  # seqs of the kernel messages addressed to the client
    got: list[int] = []
    overflowed = False

    def reconnect() -> None:
        nonlocal overflowed
        up.clear()
        down.clear()
        base = max(client.last, server.since)  # in step with the comm up to there
        outcome, missed = server.resume(log, "c", client.last)
        reason = Reason.OVERFLOW if outcome is Outcome.RESET else None
        if outcome is Outcome.RESET:  # only if the log dropped messages after base
            overflowed = True
            assert base < log.lost_through
        else:
            assert [f.seq for f in missed] == [s for s in for_me if s > base]
        client.greeted(Hello.parse(hello(outcome, "c", "m", server.handed, window, reason)))
        down.extend(missed)

    for step in [*steps, ("drop",), ("write", 10**6), ("arrive", 10**6), ("receive", 10**6)]:
        kind = step[0]
        if kind == "number":
            for _ in range(step[1]):
                client.number(client.numbered, ())  # data: its place, from 0
        elif kind == "write":
            for _ in range(min(step[1], len(client.unwritten))):
                up.append(client.unwritten.popleft())
        elif kind == "arrive":
            for _ in range(min(step[1], len(up))):
                message = up.pop(0)
                if server.received(message.seq):  # OutOfOrder would be a bug of either end
                    kernel_got.append(message.data)
        elif kind == "kernel":
            for _ in range(step[1]):
                seq = log.last + 1
                frame = OutgoingFrame("y" * step[3], seq=seq)
                to_me = step[2]
                log.add(frame, ["c"] if to_me else ["other"], broadcast=False)
                if to_me:
                    for_me.append(seq)
                    down.append(frame)
        elif kind == "receive":
            for _ in range(min(step[1], len(down))):
                received = client.receive(envelope(down.pop(0)))
                assert received is not None
                got.append(received.seq)
        elif kind == "server_ack":
            if (number := server.take_ack()) is not None:
                assert client.receive(ack(number)) is None
                assert all(m.seq > number for m in client.unacked)
        elif kind == "replay":  # a cautious client writes again what it wrote before
            up.extend(m for m in client.unacked if m not in client.unwritten)
        elif kind == "client_ack":
            client.take_ack()
        else:
            reconnect()
    assert kernel_got == list(range(client.numbered))  # each once, in order
    assert got == sorted(set(got))  # never repeated, never out of order
    assert set(got) <= set(for_me)
    if not overflowed:
        assert got == for_me  # and nothing lost


@FAST
@given(frame=ANY_FRAMES)
def test_session_frames_decode_or_are_bad_frames(frame: bytes | str) -> None:
    try:
        decoded = decode_client_frame(frame)
    except BadFrame:
        return
    assert isinstance(decoded, (ClientMessage, ClientAck))
    assert type(decoded.seq) is int and decoded.seq >= 0


@FAST
@given(
    frame=st.none()
    | st.text(max_size=200)
    | st.binary(max_size=50)
    | st.builds(
        json.dumps,
        st.fixed_dictionaries(
            {},
            optional={
                "session": st.sampled_from(["new", "resumed", "reset", "other"]) | JSON_VALUES,
                "reason": st.sampled_from([r.value for r in Reason]) | JSON_VALUES,
                "client": JSON_VALUES,
                "comm_id": JSON_VALUES,
                "ack": JSON_VALUES,
                "window": JSON_VALUES,
            },
        ),
    )
)
def test_a_hello_parses_or_is_a_bad_frame(frame: Any) -> None:
    try:
        parsed = Hello.parse(frame)
    except BadFrame:
        return
    assert isinstance(parsed.outcome, Outcome)
    assert type(parsed.ack) is int and type(parsed.window) is int


@pytest.mark.parametrize("frame", ["[" * 100_000, '{"session":' * 5000])
def test_a_deeply_nested_hello_is_a_bad_frame(frame: str) -> None:
    with pytest.raises(BadFrame):
        Hello.parse(frame)


@FAST
@given(key=st.text(max_size=80) | st.from_regex(r"[A-Za-z0-9_-]{10,70}", fullmatch=True))
def test_session_keys_are_exactly_the_contracts_form(key: str) -> None:
    form = re.fullmatch(r"[A-Za-z0-9_\-]{16,64}", key, re.ASCII) is not None
    if form:
        assert check_session_key(key) == key
    else:
        with pytest.raises(BadFrame):
            check_session_key(key)


# -- Server-Sent Events ------------------------------------------------------------------------


def parse_events(stream: bytes) -> list[dict[str, str]]:
    """Events as a WHATWG EventSource parses them (data joined with LF, one space stripped)."""
    events: list[dict[str, str]] = []
    data: list[str] = []
    fields: dict[str, str] = {}
    for line in re.split(r"\r\n|\r|\n", stream.decode("utf-8")):
        if not line:
            if data:
                events.append({**fields, "data": "\n".join(data)})
            data, fields = [], {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name in ("event", "id"):
            fields[name] = value
    return events


SSE_NAMES = st.none() | st.sampled_from([sse.OPEN, sse.CLOSE, sse.RESET])
SSE_IDS = st.none() | st.from_regex(r"[0-9a-f]{8}-[0-9]{1,6}", fullmatch=True)


@FAST
@given(
    data=st.text(max_size=80)
    | st.lists(
        st.sampled_from(["a", "\r", "\n", "\r\n", " ", ":", "data: x", ""]), max_size=12
    ).map("".join),
    name=SSE_NAMES,
    event_id=SSE_IDS,
)
def test_an_event_parses_back_to_its_data(
    data: str, name: str | None, event_id: str | None
) -> None:
    wire = sse.event(data, name, event_id)
    assert wire.endswith(b"\n\n")
    [parsed] = parse_events(wire)
    # SSE has one line break: CR LF, CR and LF all come back as LF, everything else exactly
    assert parsed["data"] == re.sub(r"\r\n|\r|\n", "\n", data)
    assert parsed.get("event") == name
    assert parsed.get("id") == event_id


@FAST
@given(values=st.lists(JSON_VALUES, max_size=5))
def test_a_stream_of_json_events_parses_back_exactly(values: list[Any]) -> None:
    """What the server sends: each message's JSON, keep-alives between."""
    stream = sse.event(dumps({"comm_id": "c"}), sse.OPEN, "00000000-0")
    for i, value in enumerate(values):
        stream += sse.KEEPALIVE + sse.event(dumps(value), event_id=f"00000000-{i + 1}")
    opened, *messages = parse_events(stream)
    assert opened == {"event": "open", "id": "00000000-0", "data": '{"comm_id":"c"}'}
    assert all(same_json(json.loads(m["data"]), v) for m, v in zip(messages, values, strict=True))
    assert [m["id"] for m in messages] == [f"00000000-{i + 1}" for i in range(len(values))]
