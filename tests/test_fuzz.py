"""Seeded fuzz against a real server: socket handshakes, frames on open sockets, REST bodies.

Each surface gets hostile inputs from a seeded ``random.Random`` (mutations of valid inputs:
truncation, bit flips, huge or deep JSON, NaN, invalid UTF-8, 0 or 1025 binary parts, offsets
past the end, wrong types, very long strings, unknown parameters, empty), and each case is
checked against the contract: a handshake is 101 or a 4xx, a frame is echoed or closes its socket
with the contract's code (never 1006), a REST body is a 2xx or a 4xx, and the server logs no
traceback. Meanwhile a healthy client on the same server keeps echoing.

The default run takes ``FUZZ_CASES`` cases per surface (400); the ``fuzz``-marked variants take
``FUZZ_BIG_CASES`` (2,000): ``pytest -m fuzz tests/test_fuzz.py -s`` prints their figures.
``FUZZ_SEED`` changes the seed (each failure names its seed and case number).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import websockets
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from websockets.asyncio.client import ClientConnection

from jupyter_transports.client import comm_url
from jupyter_transports.errors import BadFrame, BadRequest, TooLarge
from jupyter_transports.framing import FrameMode, decode_frame, dumps, pack_binary
from jupyter_transports.rest import OPEN_DEFAULTS, SEND_DEFAULTS, parse_body
from jupyter_transports.session import ClientAck, decode_client_frame

from .conftest import TIMEOUT, Kernel

LIMIT = 256 * 1024  # max_message_bytes of these tests: a frame or body over it is refused
MAX_QUERY = 16 * 1024  # max_query_bytes' default
# Tornado's HTTP server reads a request's head up to 64 KiB; past that it drops the connection
# without an answer, before the extension sees the request: no status can be asked of it.
HEADER_LIMIT = 64 * 1024
SLOW = 5.0  # seconds: a case that takes longer waited for something that did not come
# How a socket the fuzz opened may end besides its own close: its comm refused (an unknown
# target; a session's comm that ended while it waited), a newer connection of its session.
SOCKET_ENDS = (1000, 4404, 4409)
SEED = int(os.environ.get("FUZZ_SEED", "20261130"))
CASES = int(os.environ.get("FUZZ_CASES", "400"))
BIG_CASES = max(2000, int(os.environ.get("FUZZ_BIG_CASES", "2000")))
COUNTS = [
    pytest.param(CASES, id="default"),
    pytest.param(BIG_CASES, id="big", marks=[pytest.mark.fuzz, pytest.mark.timeout(1800)]),
]
API = "/api/transports/kernels"
WIDGET = """
from comm import create_comm
fuzz_widget = create_comm(target_name="fuzz.widget", data={})
"""
# Frames sent to a socket after the server closed it: the kernel records what reaches it.
RECORDER = """
from comm import get_comm_manager
FUZZ_RECORDED = []
def fuzz_recorder(comm, open_msg):
    def on_msg(msg):
        FUZZ_RECORDED.append(msg["content"]["data"])
        comm.send(msg["content"]["data"], buffers=msg["buffers"])
    comm.on_msg(on_msg)
get_comm_manager().register_target("fuzz_recorder", fuzz_recorder)
"""

ECHO = "echo"
CLOSED = "closed"
NOTHING = "nothing"
EITHER = "echo or 1007"  # JSON nested about as deep as the parser goes: depends on its stack


@pytest.fixture
def transports_config() -> dict[str, Any]:
    return {"max_message_bytes": LIMIT}


# -- what every surface shares -----------------------------------------------------------------


@dataclass
class Case:
    """One fuzz input, for the failure messages and the known bugs it may hit."""

    number: int
    surface: str
    what: str  # a short description of the input, for failure messages
    tags: frozenset[str] = frozenset()


@dataclass
class Tally:
    """Outcomes, failures and known bugs of one surface's run."""

    surface: str
    seed: int
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    known: Counter[str] = field(default_factory=Counter)

    def fail(self, case: Case, problem: str) -> None:
        self.failures.append(f"seed {self.seed} case {case.number} ({case.what}): {problem}")

    def summary(self) -> str:
        outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(self.outcomes.items()))
        known = ", ".join(f"{k}: {v}" for k, v in sorted(self.known.items())) or "none"
        return f"{self.surface}: {sum(self.outcomes.values())} cases; {outcomes}; known bugs hit: {known}"


# Inputs that hit a known bug of the package with a strict xfail test of its own: tag -> (what
# it answers today, the test). Such cases are counted apart, not failed twice; none today.
KNOWN_BUGS: dict[str, tuple[str, str]] = {}


def server_errors(records: list[logging.LogRecord]) -> list[str]:
    """The log records that betray a fault of the server: tracebacks, uncaught exceptions,
    5xx answers."""
    found = []
    for record in records:
        message = record.getMessage()
        if (
            record.exc_info
            or record.levelno >= logging.ERROR
            or "Traceback" in message
            or "Uncaught exception" in message
        ):
            found.append(f"{record.levelname} {record.name}: {message[:300]}")
    return found


class LogWatch:
    """The server's log records since the last look (the server runs in this process)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        for name in ("", "ServerApp", "TransportsExtension", "tornado"):
            caplog.set_level(logging.WARNING, logger=name or None)
        self.seen = 0

    def new_errors(self) -> list[str]:
        records = self.caplog.records
        fresh, self.seen = records[self.seen :], len(records)
        return server_errors(fresh)


class Healthy:
    """A well-behaved client that keeps echoing on the same server; its round trips."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url, self.headers = url, headers
        self.round_trips: list[float] = []
        self.error: BaseException | None = None
        self.stopping = False
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            async with websockets.connect(
                self.url, additional_headers=self.headers, max_size=None, open_timeout=TIMEOUT
            ) as ws:
                n = 0
                while not self.stopping:
                    n += 1
                    started = time.perf_counter()
                    await ws.send(json.dumps({"healthy": n}))
                    echo = await asyncio.wait_for(ws.recv(), TIMEOUT)
                    self.round_trips.append(time.perf_counter() - started)
                    assert json.loads(echo) == {"healthy": n}, echo
                    await asyncio.sleep(0.01)
        except BaseException as e:  # reported by check()
            self.error = e

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Healthy]:
        self.task = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            self.stopping = True
            await asyncio.wait_for(self.task, TIMEOUT)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.round_trips)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")

    def check(self, tally: Tally) -> None:
        p50, p99 = self.percentile(0.5), self.percentile(0.99)
        worst = max(self.round_trips, default=float("nan"))
        print(
            f"\n{tally.summary()}\n  healthy client: {len(self.round_trips)} round trips, "
            f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {worst * 1000:.1f} ms"
        )
        assert self.error is None, f"the healthy client failed: {self.error!r}"
        assert len(self.round_trips) >= 10, "the healthy client was starved"
        assert p99 < 1.0, f"healthy p99 {p99:.3f} s"


def finish(tally: Tally, healthy: Healthy, cases: int) -> None:
    healthy.check(tally)
    assert sum(tally.outcomes.values()) == cases
    assert not tally.failures, f"{len(tally.failures)} failures:\n" + "\n".join(tally.failures[:20])


# -- hostile input ---------------------------------------------------------------------------

CHARS = (
    [chr(c) for c in range(0x20, 0x7F)] * 4
    + [chr(c) for c in range(0x20)]
    + ["\x7f", "\u0085", "\u00e9", "\u2028", "\u2029", "\ufeff", "\ufffd", "\uffff"]
    + ["\u65e5", "\U0001f600", "\U0010ffff", '"', "\\", "/", "%", "&", "=", "#", "?"]
)


class Hostile:
    """A seeded source of hostile inputs."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def text(self, most: int = 12) -> str:
        return "".join(self.rng.choices(CHARS, k=self.rng.randint(0, most)))

    def number(self) -> int | float:
        rng = self.rng
        kind = rng.randrange(6)
        if kind == 0:
            return rng.randint(-(2**63), 2**63)
        if kind == 1:
            return int("9" * rng.randint(20, 300))  # far past a float, kept exact
        if kind == 2:
            return rng.uniform(-1e308, 1e308)
        if kind == 3:
            return rng.choice([0.0, -0.0, 5e-324, 1.7976931348623157e308, 1e-300])
        return rng.randint(-5, 5)

    def value(self, depth: int = 0) -> Any:
        """A JSON value, shallow and small."""
        rng = self.rng
        kind = rng.randrange(7 if depth < 3 else 5)
        if kind == 0:
            return rng.choice([None, True, False])
        if kind in (1, 2):
            return self.number()
        if kind in (3, 4):
            return self.text()
        if kind == 5:
            return [self.value(depth + 1) for _ in range(rng.randint(0, 4))]
        return {self.text(6): self.value(depth + 1) for _ in range(rng.randint(0, 4))}

    def obj(self) -> dict[str, Any]:
        return {self.text(6): self.value(1) for _ in range(self.rng.randint(0, 4))}

    def buffers(self) -> list[bytes]:
        rng = self.rng
        count = rng.choice([0, 0, 1, 1, 2, 3, 5])
        return [rng.randbytes(rng.choice([0, 1, 3, 64, 1000])) for _ in range(count)]

    def mutate(self, raw: bytes) -> bytes:
        """Truncated, bit-flipped, with bytes inserted, cut out or repeated."""
        rng = self.rng
        out = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            where = rng.randint(0, len(out))
            how = rng.randrange(5)
            if how == 0:
                del out[where:]
            elif how == 1 and where < len(out):
                out[where] ^= 1 << rng.randrange(8)
            elif how == 2:
                out[where:where] = rng.randbytes(rng.randint(1, 4))
            elif how == 3:
                del out[where : where + rng.randint(1, 8)]
            else:
                out[where:where] = out[where : where + rng.randint(1, 16)]
        return bytes(out)

    def poison(self, value: Any) -> tuple[str, str]:
        """JSON text of ``value`` with one leaf replaced by something strict JSON refuses."""
        literal = self.rng.choice(
            ["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "9" * 400 + ".0", '"\\ud800"']
        )
        marker = "MARKER-6d1f"
        doc = self.rng.choice([marker, [value, marker], {"k": value, "x": [marker]}])
        return dumps(doc).replace(f'"{marker}"', literal), literal

    def deep(self, either: bool = True) -> tuple[str, str]:
        """JSON nested deep: taken (20, 200), refused (5,000+) or, if ``either``, either
        (about the parser's limit, which depends on the stack it runs on)."""
        depths = [20, 200, 5000, 50_000] + ([900, 990, 1000, 1100] if either else [])
        depth = self.rng.choice(depths)
        opener, closer = self.rng.choice([("[", "]"), ('{"a":', "}")])
        verdict = "ok" if depth <= 200 else "refused" if depth >= 5000 else "either"
        return opener * depth + "0" + closer * depth, verdict


# -- surface 1: handshakes -------------------------------------------------------------------


def handshake_query(h: Hostile) -> tuple[str, frozenset[str]]:
    """A raw query string (already percent-encoded, maybe badly) and what it holds."""
    rng = h.rng
    params: list[tuple[str, str]] = []
    tags: set[str] = set()

    def add(name: str, value: str, *, raw: bool = False) -> None:
        params.append((name, value if raw else quote(value, safe="")))

    for _ in range(rng.randint(0, 5)):
        kind = rng.randrange(12)
        if kind == 0:
            choice = rng.randrange(9)
            if choice == 0:
                add("data", dumps(h.obj()))
            elif choice == 1:
                add("data", dumps(h.value()))  # not always an object
            elif choice == 2:
                add("data", h.mutate(dumps(h.obj()).encode()).decode("utf-8", "replace"))
            elif choice == 3:
                add("data", h.poison(h.obj())[0])
            elif choice == 4:
                add("data", h.deep()[0][:20_000])
            elif choice == 5:
                add("data", "%FF%FE", raw=True)  # not UTF-8
            elif choice == 6:
                add("data", "%ED%A0%80", raw=True)  # an encoded surrogate
            elif choice == 7:
                add("data", dumps({"long": "x" * rng.choice([100, 5000, 17_000])}))
            else:
                add("data", "")
        elif kind == 1:
            add("frames", rng.choice(["json", "text", "", "JSON", "binary", h.text(4)]))
        elif kind in (2, 3):
            choice = rng.randrange(7)
            key = secrets.token_urlsafe(rng.choice([16, 12, 48]))
            if choice == 0:
                key = key[: rng.choice([0, 1, 15])]
            elif choice == 1:
                key = "k" * rng.choice([16, 64, 65, 200])
            elif choice == 2:
                key = key[:10] + rng.choice(["!", " ", "é", "/", "+", "=", "\x00"]) + key[10:]
            elif choice == 3:
                key = "fuzz-session-key-" + str(rng.randrange(3))  # a few, reused
            add("session_key", key)
        elif kind == 4:
            choice = rng.randrange(9)
            if choice == 0:
                last = "9" * 5000  # too long for an int
                tags.add("huge_last")
            else:
                last = rng.choice(
                    [
                        "0",
                        str(rng.randrange(100)),
                        "-1",
                        "1.5",
                        "",
                        "9" * 100,
                        "\u0663",  # an Arabic-Indic 3: a digit, not ASCII
                        "+1",
                        " 1",
                        "0x10",
                    ]
                )
            add("last", last)
        elif kind == 5:
            if h.chance(0.2):  # a token in the query wins over the header: mostly 403
                add("token", h.text(8))
            else:
                add(h.text(3) + "token", h.text(8))  # not the token: passed on to the kernel
        elif kind in (6, 7):
            add(h.text(6) or "x", h.text(20))
        elif kind == 8:
            params.append((rng.choice(["%", "%G1", "&&", "=", "a=b=c", ";", "%00"]), ""))
        elif kind == 9:
            add("codec", rng.choice(["msgpack", "json", ""]))
        elif kind == 10:
            add("x" * rng.choice([10, 1000]), "y" * rng.choice([10, 9000, 17_000]))
        else:
            name = rng.choice(["data", "frames", "session_key", "last"])
            add(name, dumps(h.value()))  # a value of the wrong kind
    names = [quote(name, safe="%=&;") for name, _ in params]
    query = "&".join(f"{n}={v}" if v else n for n, (_, v) in zip(names, params, strict=True))
    if h.chance(0.1):
        query = h.mutate(query.encode()).decode("ascii", "ignore")
        query = quote(query, safe="%=&;+")
    return query, frozenset(tags)


async def attempt_handshake(
    url: str, headers: dict[str, str], drop: bool = False
) -> tuple[str, str, str]:
    """(outcome, note, problem): "101" (then closed with 1000, or dropped if ``drop``), a
    status, or an error; what the socket said (a session's hello, a close); what is wrong."""
    try:
        ws = await websockets.connect(
            url,
            additional_headers=headers,
            max_size=None,
            open_timeout=TIMEOUT,
            close_timeout=TIMEOUT,
            compression=None,
            max_queue=None,  # a full queue would stop it reading, the server's close frame too
        )
    except websockets.InvalidStatus as e:
        status = e.response.status_code
        return str(status), "", e.response.body.decode("utf-8", "replace")[:200]
    except (websockets.InvalidHandshake, OSError, TimeoutError) as e:
        return "error", "", repr(e)
    note = problem = ""
    try:
        query = parse_qs(urlsplit(url).query, keep_blank_values=True)
        if "session_key" in query:  # a session's first frame says what it is
            first = await asyncio.wait_for(ws.recv(), TIMEOUT)
            hello = json.loads(first)
            if not isinstance(hello, dict) or "session" not in hello:
                problem = f"first frame is no hello: {first!r:.200}"
            else:
                note = " ".join(str(hello.get(k, "")) for k in ("session", "reason")).strip()
        if drop:
            ws.transport.abort()  # no close frame: a session waits for its client
            note += " dropped"
        else:
            await ws.close(1000)
            if ws.close_code != 1000:  # the server closed first, or never answered (1006)
                note += f" closed {ws.close_code}"
                if ws.close_code not in SOCKET_ENDS:
                    problem = f"closed {ws.close_code} after the client's close (1000)"
    except websockets.ConnectionClosed as e:
        code = e.rcvd.code if e.rcvd else 1006
        note += f" closed {code}"
        if code not in SOCKET_ENDS:
            problem = f"closed with {code}"
    except TimeoutError:
        ws.transport.abort()
        problem = f"no hello within {TIMEOUT} s"
    return "101", note.strip(), problem


async def run_handshakes(
    server_url: str, token: str, kernel: Kernel, caplog: pytest.LogCaptureFixture, cases: int
) -> None:
    headers = {"Authorization": f"token {token}"}
    rng = random.Random(SEED)
    h = Hostile(rng)
    await kernel.execute(WIDGET)
    widget_id = await kernel.evaluate("fuzz_widget.comm_id")
    tally = Tally("handshakes", SEED)
    logs = LogWatch(caplog)
    healthy = Healthy(comm_url(server_url, kernel.id, "targets", "echo"), headers)
    async with healthy.running():
        healthy_comm = await kernel.opened_comm("echo")
        for number in range(cases):
            query, tags = handshake_query(h)
            which = rng.randrange(10)
            if which < 6:
                path = f"targets/{rng.choice(['echo'] * 8 + ['nope', 'fuzz_recorder'])}"
            else:
                comm = rng.choice(
                    [healthy_comm, widget_id, secrets.token_hex(16), "%20", "x" * 300, ".."]
                )
                path = f"comms/{comm}"
            url = f"{comm_url(server_url, kernel.id)}/{path}" + (f"?{query}" if query else "")
            case = Case(number, "handshake", f"GET …/{path[:40]}?{query[:160]}", tags)
            started = time.perf_counter()
            outcome, note, detail = await attempt_handshake(url, headers, drop=h.chance(0.1))
            took = time.perf_counter() - started
            errors = logs.new_errors()
            if took > SLOW:
                tally.fail(case, f"took {took:.1f} s ({outcome} {note})")
            if outcome == "error" and len(url) > HEADER_LIMIT - 1024:
                outcome, note = "no answer", "(over tornado's 64 KiB head)"
            tally.outcomes[f"{outcome} {note}".strip()] += 1
            bug = next((t for t in tags if t in KNOWN_BUGS), None)
            if bug and outcome == KNOWN_BUGS[bug][0]:
                tally.known[bug] += 1
                continue
            if outcome == "no answer":
                pass
            elif not (outcome == "101" or outcome.startswith("4")):
                tally.fail(case, f"answered {outcome}: {detail}")
            elif outcome == "101" and detail:
                tally.fail(case, detail)
            if len(query) > MAX_QUERY and outcome not in ("414", "403", "400", "no answer"):
                # refused for its length (or, before that is looked at, its credentials)
                tally.fail(case, f"a query of {len(query)} bytes answered {outcome}, not 414")
            if errors:
                tally.fail(case, f"server log: {errors[:3]}")
    finish(tally, healthy, cases)


@pytest.mark.parametrize("cases", COUNTS)
async def test_fuzz_handshakes(
    server_url: str, token: str, kernel: Kernel, caplog: pytest.LogCaptureFixture, cases: int
) -> None:
    """Query strings of both socket endpoints: 101 or a 4xx, never a 5xx or a traceback."""
    await run_handshakes(server_url, token, kernel, caplog, cases)


# -- surface 2: frames on an open socket -----------------------------------------------------


@dataclass
class Frame:
    """A frame to send, and what must come of it."""

    payload: str | bytes
    text: bool  # sent as a text frame (bytes then may be invalid UTF-8)
    what: str


def frame_for(h: Hostile, kind: str, handed: int) -> Frame:
    """A hostile frame for a socket of ``kind`` (json, text or session)."""
    rng = h.rng

    def data_and_buffers() -> tuple[Any, list[bytes]]:
        value = h.value()
        if kind == "session":
            seq = rng.choice([handed + 1] * 6 + [handed, max(handed - 1, 0), handed + 2, 10**30])
            shape = rng.randrange(16)  # mostly well-formed: 0 to 3 are not
            envelope: Any = {"seq": seq, "data": value}
            if shape == 0:
                envelope = {"ack": rng.choice([0, handed, 10**30, -1, "1", True])}
            elif shape == 1:
                envelope = {"seq": rng.choice(["1", -1, 1.5, True, None]), "data": value}
            elif shape == 2:
                envelope = {"seq": seq, "data": value, "extra": 1}
            elif shape == 3:
                envelope = rng.choice([{"seq": seq}, {"data": value}, [seq, value], value])
            return envelope, h.buffers() if rng.random() < 0.4 else []
        return value, h.buffers() if rng.random() < 0.4 else []

    choice = rng.randrange(-2, 15)
    data, buffers = data_and_buffers()
    if choice <= 2:
        return Frame(dumps(data), True, "valid text")
    if choice <= 4:
        return Frame(pack_binary(dumps(data).encode(), buffers), False, "valid binary")
    if choice == 5:
        raw = h.mutate(dumps(data).encode())
        try:
            return Frame(raw.decode("utf-8"), True, "mutated text")
        except UnicodeDecodeError:
            return Frame(raw, True, "mutated text, not UTF-8")
    if choice == 6:
        return Frame(h.mutate(pack_binary(dumps(data).encode(), buffers)), False, "mutated binary")
    if choice == 7:
        text, literal = h.poison(data)
        if rng.random() < 0.5:
            return Frame(text, True, f"text with {literal[:12]}")
        return Frame(pack_binary(text.encode(), buffers), False, f"binary with {literal[:12]}")
    if choice == 8:
        text, verdict = h.deep(either=kind != "session")  # a session's next number must be known
        if kind == "session":
            text = f'{{"seq":{handed + 1},"data":{text}}}'
        return Frame(text, True, f"deep ({verdict}, {len(text)} chars)")
    if choice == 9:  # part counts and offsets
        head = dumps(data).encode()
        shape = rng.randrange(6)
        if shape == 0:
            return Frame(pack_binary(head, [b""] * 1023), False, "1024 parts")
        if shape == 1:
            return Frame(pack_binary(head, [b"x"] * 1024), False, "1025 parts")
        if shape == 2:
            return Frame(struct.pack("!I", 0) + head, False, "0 parts")
        if shape == 3:
            return Frame(struct.pack("!2I", 1, 8 + len(head) + 5) + head, False, "offset past end")
        if shape == 4:
            return Frame(
                struct.pack("!3I", 2, 12 + len(head), 12) + head, False, "offsets reversed"
            )
        n = rng.choice([2**32 - 1, 2**20, 1025])
        return Frame(struct.pack("!I", n) + rng.randbytes(rng.randint(0, 64)), False, f"n={n}")
    if choice == 10:
        tiny = Frame(rng.randbytes(rng.randint(1, 3)), False, "1-3 bytes")
        return rng.choice([Frame("", True, "empty text"), Frame(b"", False, "empty binary"), tiny])
    if choice == 11:  # near and past the limit
        size = rng.choice([LIMIT - 64, LIMIT + 1, 2 * LIMIT, 16 * LIMIT])
        if rng.random() < 0.5:
            return Frame(dumps(["x" * (size - 6)]), True, f"text of about {size} bytes")
        return Frame(pack_binary(b"{}", [bytes(size)]), False, f"binary of about {size} bytes")
    if choice == 12:
        long = "".join(rng.choices(CHARS, k=rng.choice([1000, 20_000])))
        envelope = {"seq": handed + 1, "data": long} if kind == "session" else long
        return Frame(dumps(envelope), True, f"string of {len(long)} characters")
    if choice == 13:
        return Frame(rng.randbytes(rng.randint(1, 200)), rng.random() < 0.5, "random bytes")
    return Frame(h.text(40), True, "random text")


@dataclass
class Expected:
    """What a frame must cause: an echo (of ``data`` and ``buffers``), nothing, or a close."""

    outcome: str
    code: int | None = None
    data: Any = None
    buffers: list[bytes] = field(default_factory=list)
    verbatim: str | None = None  # a text-mode echo: exactly this text


def expect(frame: Frame, kind: str, handed: int) -> Expected:
    """The contract's verdict on ``frame`` (the pure decoders are tested on their own)."""
    payload = frame.payload
    size = len(payload.encode() if isinstance(payload, str) else payload)
    if size > LIMIT:
        return Expected(CLOSED, 1009)
    if frame.text and isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError:
            return Expected(CLOSED, 1007)
    if "either" in frame.what:
        return Expected(EITHER)
    try:
        if kind == "session":
            message = decode_client_frame(payload)
            if isinstance(message, ClientAck):
                return Expected(NOTHING)
            if message.seq > handed + 1:
                return Expected(CLOSED, 1002)
            if message.seq <= handed:
                return Expected(NOTHING)  # a resend: dropped
            return Expected(ECHO, data=message.data, buffers=[bytes(b) for b in message.buffers])
        mode = FrameMode.TEXT if kind == "text" else FrameMode.JSON
        data, buffers = decode_frame(payload, mode)
    except BadFrame:
        return Expected(CLOSED, 1007)
    expected = Expected(ECHO, data=data, buffers=[bytes(b) for b in buffers])
    if kind == "text" and not buffers and isinstance(data, str):
        expected.verbatim = data
    return expected


def echo_matches(received: str | bytes, expected: Expected, kind: str) -> bool:
    if expected.verbatim is not None:
        return received == expected.verbatim
    data, buffers = decode_frame(received, FrameMode.JSON)
    if kind == "session":
        if not (isinstance(data, dict) and set(data) == {"seq", "data"}):
            return False
        data = data["data"]
    sent = {} if expected.data is None else expected.data  # the kernel's Comm.send(None) sends {}
    return dumps(data) == dumps(sent) and [bytes(b) for b in buffers] == expected.buffers


class Sockets:
    """One open socket per kind, reopened after the server closes it."""

    def __init__(self, server_url: str, kernel: Kernel, headers: dict[str, str]) -> None:
        self.server_url, self.kernel, self.headers = server_url, kernel, headers
        self.open: dict[str, ClientConnection] = {}
        self.handed: dict[str, int] = {}  # a session's last message handed to the kernel

    async def get(self, kind: str) -> ClientConnection:
        ws = self.open.get(kind)
        if ws is not None and ws.close_code is None:
            return ws
        query = {"text": {"frames": "text"}, "session": {"session_key": secrets.token_urlsafe(16)}}
        url = comm_url(self.server_url, self.kernel.id, "targets", "echo", **query.get(kind, {}))
        ws = await websockets.connect(
            url,
            additional_headers=self.headers,
            max_size=None,
            open_timeout=TIMEOUT,
            close_timeout=TIMEOUT,
            compression=None,
            ping_interval=None,
            max_queue=None,
        )
        if kind == "session":
            hello = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert hello["session"] == "new", hello
            self.handed[kind] = 0
        self.open[kind] = ws
        return ws

    async def close(self) -> None:
        for ws in self.open.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1000), TIMEOUT)


async def next_frame(ws: ClientConnection, kind: str) -> str | bytes:
    """The next frame that is not a session's acknowledgement."""
    while True:
        frame = await asyncio.wait_for(ws.recv(), TIMEOUT)
        if kind == "session" and isinstance(frame, str) and frame.startswith('{"ack":'):
            continue
        return frame


async def send_frame(ws: ClientConnection, frame: Frame) -> None:
    payload = frame.payload
    if isinstance(payload, bytes):
        await ws.send(payload, text=frame.text)
    else:
        await ws.send(payload)


async def try_frame(sockets: Sockets, kind: str, frame: Frame, number: int) -> tuple[str, str]:
    """Send ``frame`` then a sentinel; (outcome, problem or "")."""
    ws = await sockets.get(kind)
    handed = sockets.handed.get(kind, 0)
    expected = expect(frame, kind, handed)
    marker = f"sentinel-{number}"
    try:
        await send_frame(ws, frame)
        if expected.outcome == ECHO and kind == "session":
            handed += 1
        sentinel: Any = marker
        if kind == "session":
            sentinel = {"seq": handed + 1, "data": marker}
        await ws.send(sentinel if kind == "text" else json.dumps(sentinel))
        received = await next_frame(ws, kind)
        if expected.outcome == EITHER and not is_sentinel(received, marker, kind):
            received = await next_frame(ws, kind)  # its echo came: the sentinel follows
            if kind == "session":
                handed += 1
        elif expected.outcome == ECHO:
            if not echo_matches(received, expected, kind):
                return "echo", f"echo differs: got {received!r:.200}"
            received = await next_frame(ws, kind)
        if not is_sentinel(received, marker, kind):
            return "echo", f"expected the sentinel, got {received!r:.200}"
        sockets.handed[kind] = handed + 1
        outcome = "dropped" if expected.outcome == NOTHING else "echoed"
        if expected.outcome == CLOSED:
            return outcome, f"should have closed with {expected.code}"
        return outcome, ""
    except websockets.ConnectionClosed:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        code = ws.close_code
        outcome = f"closed {code}"
        if expected.outcome == EITHER and code == 1007:
            return outcome, ""
        if expected.outcome != CLOSED or code != expected.code:
            return outcome, f"expected {expected.outcome} {expected.code or ''}"
        return outcome, ""
    except TimeoutError:
        ws.transport.abort()  # in no known state: the next case opens another
        return "timeout", f"nothing within {TIMEOUT} s (expected {expected.outcome})"


def is_sentinel(received: str | bytes, marker: str, kind: str) -> bool:
    if kind == "text":
        return received == marker
    with contextlib.suppress(ValueError):
        decoded = json.loads(received)
        return decoded == marker or (isinstance(decoded, dict) and decoded.get("data") == marker)
    return False


async def run_frames(
    server_url: str, token: str, kernel: Kernel, caplog: pytest.LogCaptureFixture, cases: int
) -> None:
    headers = {"Authorization": f"token {token}"}
    rng = random.Random(SEED + 1)
    h = Hostile(rng)
    tally = Tally("frames", SEED + 1)
    logs = LogWatch(caplog)
    sockets = Sockets(server_url, kernel, headers)
    healthy = Healthy(comm_url(server_url, kernel.id, "targets", "echo"), headers)
    async with healthy.running():
        try:
            for number in range(cases):
                kind = rng.choice(["json", "json", "text", "session", "session"])
                await sockets.get(kind)  # open, so the frame knows its session's numbers
                frame = frame_for(h, kind, sockets.handed.get(kind, 0))
                what = f"{kind} socket, {frame.what}: {frame.payload!r:.120}"
                case = Case(number, "frame", what)
                started = time.perf_counter()
                outcome, problem = await try_frame(sockets, kind, frame, number)
                if (took := time.perf_counter() - started) > SLOW:
                    tally.fail(case, f"took {took:.1f} s ({outcome})")
                tally.outcomes[f"{kind} {outcome}"] += 1
                if problem:
                    tally.fail(case, problem)
                    sockets.open.pop(kind).transport.abort()  # out of step: start afresh
                if errors := logs.new_errors():
                    tally.fail(case, f"server log: {errors[:3]}")
        finally:
            await sockets.close()
    finish(tally, healthy, cases)


@pytest.mark.parametrize("cases", COUNTS)
async def test_fuzz_frames(
    server_url: str, token: str, kernel: Kernel, caplog: pytest.LogCaptureFixture, cases: int
) -> None:
    """Frames on open sockets (json, text and session): echoed, dropped as the contract says,
    or closed with its code (1007, 1009, 1002), never 1006."""
    await run_frames(server_url, token, kernel, caplog, cases)


# -- surface 3: REST bodies ------------------------------------------------------------------


def rest_body(h: Hostile, opening: bool) -> tuple[bytes, frozenset[str]]:
    """A POST body for ``targets/echo`` (``opening``) or ``comms/{id}``, and what it holds."""
    rng = h.rng
    body: dict[str, Any] = {"data": h.obj() if opening or rng.random() < 0.5 else h.value()}
    if rng.random() < 0.7:
        body["wait"] = rng.choice([0, 0, 0.01, 0.05])
    if not opening and rng.random() < 0.6:
        body["count"] = rng.choice([0, 1, 1, 2])
    choice = rng.randrange(12)
    tags: set[str] = set()
    if choice <= 3:
        raw = dumps(body).encode()
    elif choice == 4:
        raw = h.mutate(dumps(body).encode())
    elif choice == 5:
        raw = h.poison(body)[0].encode()
    elif choice == 6:
        raw = f'{{"data": {h.deep()[0]}}}'.encode()
    elif choice == 7:  # wrong types and unknown fields
        field_name = rng.choice(["wait", "count", "data", "extra", "Data", ""])
        body[field_name] = rng.choice(
            ["5", -1, 1.5, 86_401, 1e300, True, None, [], {}, "x" * 100, 10**30]
        )
        raw = dumps(body).encode()
    elif choice == 8:
        raw = rng.choice(
            [b"", b" ", b"null", b"[]", b'"data"', b"{}", b"{", b"\xef\xbb\xbf{}", b"\x00" * 4]
        )
    elif choice == 9:  # not UTF-8, or an encoded surrogate
        raw = dumps(body).encode()
        where = rng.randint(0, len(raw))
        insert = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xed\xbf\xbf"])
        if rng.random() < 0.5:  # inside a string, where the parser reads it
            raw = json.dumps({"data": "a|b"}).encode().replace(b"|", insert)
        else:
            raw = raw[:where] + insert + raw[where:]
    elif choice == 10:  # near and past the limit
        size = rng.choice([LIMIT - 100, LIMIT + 1, 4 * LIMIT])
        raw = dumps({"data": {"x": "y" * size}}).encode()
    else:
        raw = rng.randbytes(rng.randint(0, 100))
    if b"\xed\xa0\x80" in raw or b"\xed\xbf\xbf" in raw:
        tags.add("surrogate_bytes")
    return raw, frozenset(tags)


def expected_status(raw: bytes, opening: bool, comm_known: bool) -> tuple[int, float]:
    """The status a body must get (the tests of ``parse_body`` check the parser), and how long
    the call will wait for replies that do not come (the echo sends one)."""
    try:
        fields = parse_body(raw, OPEN_DEFAULTS if opening else SEND_DEFAULTS, max_bytes=LIMIT)
    except TooLarge:
        return 413, 0
    except BadRequest:
        return 400, 0
    if opening:
        return (201 if isinstance(fields["data"], dict) else 400), fields["wait"]
    waits = comm_known and fields["count"] >= 2
    return (200 if comm_known else 404), fields["wait"] if waits else 0


async def run_rest(
    server_url: str, token: str, kernel: Kernel, caplog: pytest.LogCaptureFixture, cases: int
) -> None:
    headers = {"Authorization": f"token {token}"}
    rng = random.Random(SEED + 2)
    h = Hostile(rng)
    tally = Tally("rest", SEED + 2)
    logs = LogWatch(caplog)
    http = AsyncHTTPClient()
    base = server_url.rstrip("/") + f"{API}/{kernel.id}"

    async def call(method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        request = HTTPRequest(
            f"{base}/{path}",
            method=method,
            body=body,
            headers=headers,
            request_timeout=TIMEOUT,
            allow_nonstandard_methods=True,
        )
        response = await http.fetch(request, raise_error=False)
        return response.code, response.body or b""

    status, answer = await call("POST", "targets/echo", b'{"data": {}}')
    assert status == 201, answer
    comm_id = json.loads(answer)["comm_id"]
    healthy = Healthy(comm_url(server_url, kernel.id, "targets", "echo"), headers)
    async with healthy.running():
        for number in range(cases):
            opening = rng.random() < 0.35
            for _ in range(100):  # a body that waits long for replies that will not come: again
                raw, tags = rest_body(h, opening)
                which = rng.choice(["known"] * 7 + ["unknown", "garbage"])
                path = "targets/echo"
                if not opening:
                    target = {"known": comm_id, "unknown": secrets.token_hex(16)}
                    path = f"comms/{target.get(which, quote('x' * 300 + '..'))}"
                expected, wait = expected_status(raw, opening, which == "known")
                if wait <= 0.1:
                    break
            case = Case(number, "rest", f"POST …/{path[:40]} {raw!r:.160}", tags)
            started = time.perf_counter()
            status, answer = await call("POST", path, raw)
            if (took := time.perf_counter() - started) > SLOW:
                tally.fail(case, f"took {took:.1f} s ({status})")
            errors = logs.new_errors()
            tally.outcomes[str(status)] += 1
            bug = next((t for t in tags if t in KNOWN_BUGS), None)
            if bug and str(status) == KNOWN_BUGS[bug][0]:
                tally.known[bug] += 1
                continue
            if status != expected:
                tally.fail(case, f"answered {status} (expected {expected}): {answer[:200]!r}")
            elif status == 200:
                replies = json.loads(answer)["replies"]
                data = json.loads(raw)["data"]
                data = {} if data is None else data  # the kernel's Comm.send(None) sends {}
                if any(dumps(r) != dumps(data) for r in replies) or len(replies) > 1:
                    tally.fail(case, f"replies {replies!r:.200} are not the echo")
            elif status == 201:
                made = json.loads(answer)["comm_id"]
                closed, _ = await call("DELETE", f"comms/{made}")
                if closed != 204:
                    tally.fail(case, f"DELETE of the new comm answered {closed}")
            if errors:
                tally.fail(case, f"server log: {errors[:3]}")
    finish(tally, healthy, cases)


@pytest.mark.parametrize("cases", COUNTS)
async def test_fuzz_rest(
    server_url: str, token: str, kernel: Kernel, caplog: pytest.LogCaptureFixture, cases: int
) -> None:
    """POST bodies to ``targets/echo`` and ``comms/{id}``: the status the contract gives, never
    a 5xx or a traceback."""
    await run_rest(server_url, token, kernel, caplog, cases)


# -- the bugs the fuzz found, one input each --------------------------------------------------


async def test_a_last_too_long_for_an_int_is_400(
    server_url: str, token: str, kernel: Kernel, caplog: pytest.LogCaptureFixture
) -> None:
    logs = LogWatch(caplog)
    url = comm_url(server_url, kernel.id, "targets", "echo", session_key="k" * 22, last="9" * 5000)
    outcome, _, _ = await attempt_handshake(url, {"Authorization": f"token {token}"})
    errors = logs.new_errors()
    assert (outcome, errors) == ("400", [])


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("comms/{comm}", b'{"data": "\xed\xa0\x80"}'),
        ("targets/echo", b'{"data": {"a": "\xed\xb2\x80"}}'),
        ("comms/{comm}", '{"data": "\ud800"}'.encode("utf-16-le", "surrogatepass")),
    ],
)
async def test_rest_body_with_encoded_surrogates_is_400(
    server_url: str,
    token: str,
    kernel: Kernel,
    caplog: pytest.LogCaptureFixture,
    path: str,
    body: bytes,
) -> None:
    logs = LogWatch(caplog)
    http = AsyncHTTPClient()
    base = server_url.rstrip("/") + f"{API}/{kernel.id}"
    headers = {"Authorization": f"token {token}"}
    opened = await http.fetch(
        HTTPRequest(f"{base}/targets/echo", method="POST", body=b"{}", headers=headers)
    )
    comm = json.loads(opened.body)["comm_id"]
    response = await http.fetch(
        HTTPRequest(
            f"{base}/{path.format(comm=comm)}",
            method="POST",
            body=body,
            headers=headers,
            request_timeout=TIMEOUT,
        ),
        raise_error=False,
    )
    assert (response.code, logs.new_errors()) == (400, [])


async def test_a_malformed_transports_to_is_not_fatal_to_the_kernels_sockets(
    server_url: str, token: str, kernel: Kernel, caplog: pytest.LogCaptureFixture
) -> None:
    logs = LogWatch(caplog)
    headers = {"Authorization": f"token {token}"}
    url = comm_url(server_url, kernel.id, "targets", "echo")
    async with websockets.connect(url, additional_headers=headers) as bystander:
        await bystander.send('"before"')
        assert json.loads(await asyncio.wait_for(bystander.recv(), TIMEOUT)) == "before"
        await kernel.execute(WIDGET)  # opened while bridged: the server routes its messages
        await kernel.execute("fuzz_widget.send(1, metadata={'transports': {'to': [['x']]}})")
        await asyncio.sleep(0.2)
        await bystander.send('"after"')
        assert json.loads(await asyncio.wait_for(bystander.recv(), TIMEOUT)) == "after"
    assert logs.new_errors() == []


FRAMES_AFTER_CLOSE: list[tuple[dict[str, str], str, str | bytes, dict[str, Any] | str, int]] = [
    ({}, "not JSON", "{oops", "after-1007", 1007),
    ({}, "no part count", b"\x00", "after-1007-binary", 1007),
    ({"session_key": "s" * 22}, "a skipped number", '{"seq":5,"data":1}', "after-1002", 1002),
]


@pytest.mark.parametrize(
    ("query", "bad", "frame", "after", "code"),
    FRAMES_AFTER_CLOSE,
    ids=[case[1] for case in FRAMES_AFTER_CLOSE],
)
async def test_frames_after_the_servers_close_never_reach_the_kernel(
    server_url: str,
    token: str,
    kernel: Kernel,
    query: dict[str, str],
    bad: str,
    frame: str | bytes,
    after: str,
    code: int,
) -> None:
    await kernel.execute(RECORDER)
    headers = {"Authorization": f"token {token}"}
    url = comm_url(server_url, kernel.id, "targets", "fuzz_recorder", **query)
    async with websockets.connect(url, additional_headers=headers) as ws:
        if query:
            await asyncio.wait_for(ws.recv(), TIMEOUT)  # the session's hello
        await ws.send(frame)
        next_frame = {"seq": 1, "data": after} if query else after
        await ws.send(json.dumps(next_frame))
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert ws.close_code == code
    await kernel.execute("pass")  # the kernel has handled what came before
    assert await kernel.evaluate("FUZZ_RECORDED") == []
