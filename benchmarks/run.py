"""``python -m benchmarks``: the bridge against its anchors, side by side in one run.

Starts a real Jupyter server with the extension and one ipykernel on loopback, then measures, in
interleaved rounds so that the machine's noise hits every path alike:

* small round trip (median), small messages/s with ``WINDOW`` in flight, 1 MiB buffers MB/s,
  for A (jupyter_client direct), B (jupyter_server's ``/channels`` WebSocket, also with
  TCP_NODELAY on the client socket) and the bridge, on a plain socket and on a durable session;
* fan-out: one kernel comm, N attached sockets (and N ``/channels`` sockets for B): nothing lost,
  kernel CPU per message, server CPU per delivery, server RSS per idle socket; at the sizes in
  ``FAN_OUT_SESSION``, plain bridge sockets and session sockets in ``FAN_ROUNDS`` interleaved
  rounds, for what a session costs per delivery;
* a busy kernel: a bridge round trip while a cell runs ``time.sleep``, on a target served by a
  kernel subshell and on one served by the main shell;
* RPC: small calls/s from ``rpc_client.Channel`` through the server to a kernel-side ``Channel``
  with ``RPC_IN_FLIGHT`` calls in flight, batched (the default) and one comm message per call.

Absolute numbers on a shared machine mean little: read the ratios. Results go to stdout as a
table and to ``benchmarks/results.json``; ``--docs`` also puts the table in the docs' performance
page (``docs/performance.md``, between the markers ``DOCS_BEGIN`` and ``DOCS_END``).
``--before REV`` starts a second server with the extension of git revision ``REV`` (a worktree)
and measures its bridge in the same rounds: before and after a change, side by side. Each server
carries an offset of its own (two servers of the same code have differed by 0.13 ms per 1 MiB
echo, 13 of 16 rounds, in one run): for a change smaller than that, ``python -m benchmarks.ab
REV`` measures pairs of fresh servers, started in both orders.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from jupyter_transports.client import CommClient, Refused
from jupyter_transports.rpc_client import Channel

from . import floor, guard
from .browser import BrowserEcho
from .paths import (
    BridgePath,
    ChannelsListener,
    ChannelsPath,
    DirectPath,
    EchoPath,
    WebsocketsPath,
)
from .server import ECHO, ECHO_SUBSHELL, RPC_TARGET, RPC_TARGET_SINGLE, Server

HERE = Path(__file__).parent
RESULTS = HERE / "results.json"
PERFORMANCE_PAGE = HERE.parent / "docs" / "performance.md"
DOCS_BEGIN = "<!-- python -m benchmarks --docs writes from here to the end marker -->"
DOCS_END = "<!-- end of what python -m benchmarks --docs writes -->"

ROUNDS = 9  # every path measured once per round; figures are medians over rounds
WARMUP = 5  # round trips before any timing
ROUND_TRIPS = 100  # small round trips per path per round
ROUND_TRIPS_SLOW = 20  # for B without TCP_NODELAY (each costs a delayed ACK, ~40 ms)
SMALL_MESSAGES = 600  # per path per round, WINDOW in flight
WINDOW = 64
BIG_BYTES = 1024 * 1024
BIG_MESSAGES = 32  # 1 MiB buffers per path per round
BIG_WINDOW = 4
BIG_ROUND_TRIPS = 20  # 1 MiB round trips per path per round, one at a time
# CPU per 1 MiB echo, in ms, of the server, the kernel and the benchmark's own client (this
# process: jupyter_client for A, a Tornado WebSocket client for B and the bridge)
BIG_CPU_KEYS = ("big_server_cpu_ms", "big_kernel_cpu_ms", "big_client_cpu_ms")
FAN_OUT = {1: 2000, 10: 1000, 100: 500, 1000: 300}  # sockets -> messages in the burst
FAN_OUT_B = (1, 10, 100)  # B at N=1000 would be 1000 kernel connections of 4 ZMQ sockets each
FAN_OUT_SESSION = (1, 10, 100)  # sizes at which session sockets are measured beside plain ones
FAN_ROUNDS = 5  # bursts per path at those sizes, interleaved; figures are medians over them
SESSION_GOAL = 1.05  # session ÷ plain, for the small round trip and server CPU per delivery
RSS_MIN_SOCKETS = 100  # fewer sockets than this change RSS less than the allocator's noise
FAN_PAD = 64  # bytes of padding in each fan-out message
CONNECT_BATCH = 50  # sockets opened concurrently
CONNECT_TRIES = 3  # a handshake that times out on a loaded machine is tried again
BUSY_SLEEP = 5.0  # seconds the busy cell sleeps
BUSY_SETTLE = 0.5  # seconds between starting the cell and measuring
BUSY_ROUND_TRIPS = 10
QUIET = 10.0  # seconds without a fan-out message after which the rest count as lost
RPC_ROUNDS = 3  # figures are medians over rounds
RPC_IN_FLIGHT = (64, 1000)  # calls pending at any time
RPC_CALLS = 10_000  # batched calls per round and in-flight count
RPC_CALLS_SINGLE = 1_000  # unbatched calls per round (each costs the kernel a comm message)
RPC_GOAL = 10_000  # calls/s through the server (issue 5)
STEP_TIMEOUT = 120.0  # seconds: any single measurement that takes longer is a failure
MiB = 1024 * 1024
CHROMIUM_PATH = "bridge (Chromium)"  # the browser's own WebSocket (benchmarks.browser)
BARE_PATH = "Chromium, bare echo"  # the same page on a bare Tornado echo: the browser's own cost
THIRD_PARTY = ("bridge (websockets)", CHROMIUM_PATH)  # clients the project did not write
BEFORE_PATHS = ("bridge, before", "bridge (websockets), before")  # --before REV's server
RELAY_FLOOR = guard.RELAY_FLOOR  # floor.measure_big in each round: not a path, no column
TIMED_OUT = 599  # tornado's status for a request that timed out

Opener = Callable[[], Awaitable[EchoPath]]


# -- measurements on one path --------------------------------------------------------------------


async def _until(path: EchoPath, i: int) -> list[bytes]:
    """Receive until the echo of message ``i`` (stale echoes of earlier steps are skipped)."""
    while True:
        data, buffers = await path.recv()
        if isinstance(data, dict) and data.get("i") == i:
            return buffers


async def round_trips(
    path: EchoPath, count: int, start: int = 0, buffers: list[bytes] | None = None
) -> list[float]:
    """Seconds per round trip of a small message (with ``buffers``, if any), one at a time."""
    times = []
    for i in range(start, start + count):
        begin = time.perf_counter()
        await path.send({"i": i}, buffers or [])
        await _until(path, i)
        times.append(time.perf_counter() - begin)
    return times


async def pipelined(
    path: EchoPath, count: int, window: int, buffers: list[bytes], start: int
) -> float:
    """Seconds to echo ``count`` messages with ``window`` of them in flight."""
    sent = received = 0
    begin = time.perf_counter()
    while sent < min(window, count):
        await path.send({"i": start + sent}, buffers)
        sent += 1
    while received < count:
        data, got = await path.recv()
        if not (isinstance(data, dict) and data.get("i") == start + received):
            continue  # a stale echo of an earlier step
        if buffers and (len(got) != 1 or len(got[0]) != len(buffers[0])):
            raise AssertionError(f"{path.name}: buffer came back as {[len(b) for b in got]} bytes")
        received += 1
        if sent < count:
            await path.send({"i": start + sent}, buffers)
            sent += 1
    return time.perf_counter() - begin


async def measure_path(
    server: Server, opener: Opener, *, round_trip_count: int, throughput: bool
) -> dict[str, Any]:
    path = await asyncio.wait_for(opener(), STEP_TIMEOUT)
    try:
        await asyncio.wait_for(round_trips(path, WARMUP, start=-WARMUP), STEP_TIMEOUT)
        rts = await asyncio.wait_for(round_trips(path, round_trip_count), STEP_TIMEOUT)
        result: dict[str, Any] = {"rt_ms": statistics.median(rts) * 1e3}
        if throughput:
            seconds = await asyncio.wait_for(
                pipelined(path, SMALL_MESSAGES, WINDOW, [], 10_000), STEP_TIMEOUT
            )
            result["msg_per_s"] = SMALL_MESSAGES / seconds
            blob = [os.urandom(BIG_BYTES)]
            big_rts = await asyncio.wait_for(
                round_trips(path, BIG_ROUND_TRIPS, 30_000, blob), STEP_TIMEOUT
            )
            result["big_rt_ms"] = statistics.median(big_rts) * 1e3
            cpu = server.server_cpu(), server.kernel_cpu(), time.process_time()
            seconds = await asyncio.wait_for(
                pipelined(path, BIG_MESSAGES, BIG_WINDOW, blob, 20_000), STEP_TIMEOUT
            )
            result["big_mb_per_s"] = BIG_MESSAGES * BIG_BYTES / MiB / seconds
            now = server.server_cpu(), server.kernel_cpu(), time.process_time()
            for key, before, after in zip(BIG_CPU_KEYS, cpu, now, strict=True):
                result[key] = (after - before) / BIG_MESSAGES * 1e3
        return result
    finally:
        await asyncio.wait_for(path.close(), STEP_TIMEOUT)


async def echo_rounds(
    server: Server, rounds: int, before: Server | None = None
) -> dict[str, dict[str, Any]]:
    """Every path, interleaved, ``rounds`` times; the median of each figure over the rounds.
    With ``before`` (a server running an earlier version), its bridge from the project's client
    and from the ``websockets`` library too."""
    url, token, kid = server.url, server.token, server.kernel_id
    paths: list[tuple[str, Opener, int, bool]] = [
        ("A direct", lambda: DirectPath.open(server.connection_file, ECHO), ROUND_TRIPS, True),
        ("B /channels", lambda: ChannelsPath.open(url, token, kid, ECHO), ROUND_TRIPS_SLOW, True),
        (
            "B nodelay",
            lambda: ChannelsPath.open(url, token, kid, ECHO, nodelay=True),
            ROUND_TRIPS,
            False,
        ),
        ("bridge", lambda: BridgePath.open(url, token, kid, ECHO), ROUND_TRIPS, True),
        (
            "bridge (websockets)",
            lambda: WebsocketsPath.open(url, token, kid, ECHO),
            ROUND_TRIPS,
            True,
        ),
        (
            "bridge+session",
            lambda: BridgePath.open(url, token, kid, ECHO, session=True),
            ROUND_TRIPS,
            True,
        ),
    ]
    servers = dict.fromkeys((name for name, *_ in paths), server)
    if before is not None:
        b_url, b_token, b_kid = before.url, before.token, before.kernel_id
        paths += [
            (
                BEFORE_PATHS[0],
                lambda: BridgePath.open(b_url, b_token, b_kid, ECHO),
                ROUND_TRIPS,
                True,
            ),
            (
                BEFORE_PATHS[1],
                lambda: WebsocketsPath.open(b_url, b_token, b_kid, ECHO),
                ROUND_TRIPS,
                True,
            ),
        ]
        servers.update(dict.fromkeys(BEFORE_PATHS, before))
    per_path: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in paths}
    browser = await BrowserEcho.start(server)  # None without chromium
    if browser is not None:
        per_path[CHROMIUM_PATH], per_path[BARE_PATH] = [], []
    try:
        for r in range(rounds):
            for name, opener, count, throughput in paths:
                figures = await measure_path(
                    servers[name], opener, round_trip_count=count, throughput=throughput
                )
                per_path[name].append(figures)
                print(f"  round {r + 1} {name:14} {_brief(figures)}", file=sys.stderr, flush=True)
            if browser is not None:
                for name, bare in ((CHROMIUM_PATH, False), (BARE_PATH, True)):
                    figures = await browser.measure(
                        server,
                        round_trips=ROUND_TRIPS,
                        big_round_trips=BIG_ROUND_TRIPS,
                        messages=BIG_MESSAGES,
                        window=BIG_WINDOW,
                        bare=bare,
                    )
                    per_path[name].append(figures)
                    print(f"  round {r + 1} {name} {_brief(figures)}", file=sys.stderr)
            # in every round, as the paths are: the machine's state moves it by half from run
            # to run (0.6 to 1.6 ms per echo here), and each round's ratio is taken against it
            relay = {
                "big_server_cpu_ms": await asyncio.to_thread(floor.measure_big),
                "big_rt_added_ms": await asyncio.to_thread(floor.measure_big_round_trip),
            }
            per_path.setdefault(RELAY_FLOOR, []).append(relay)
            print(f"  round {r + 1} {RELAY_FLOOR} {_brief(relay)}", file=sys.stderr)
    finally:
        if browser is not None:
            await browser.stop()
    summary: dict[str, dict[str, Any]] = {}
    for name, results in per_path.items():
        summary[name] = {
            key: statistics.median(result[key] for result in results) for key in results[0]
        }
        summary[name]["rounds"] = results
    return summary


def _brief(figures: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.2f}" for k, v in figures.items() if isinstance(v, int | float))


# -- fan-out and memory ----------------------------------------------------------------------------


class Listener(Protocol):
    """One socket that receives the fan-out comm's messages."""

    @property
    def reconnects(self) -> int:
        """Times its connection dropped and was resumed (only a session's can be)."""

    async def recv(self) -> Any:
        """The data of the comm's next message."""

    async def close(self) -> None: ...


class BridgeListener:
    """A bridge socket attached to the fan-out comm: plain, or a durable session whose client
    acknowledges as it receives (every ``ACK_EVERY`` messages or ``ACK_DELAY`` seconds)."""

    def __init__(self, client: CommClient) -> None:
        self.client = client

    @classmethod
    async def open(cls, server: Server, comm_id: str, *, session: bool = False) -> BridgeListener:
        for attempt in range(CONNECT_TRIES):
            try:
                return cls(
                    await CommClient.attach(
                        server.url, server.kernel_id, comm_id, token=server.token, session=session
                    )
                )
            except Refused as e:
                if e.status != TIMED_OUT or attempt == CONNECT_TRIES - 1:
                    raise
        raise AssertionError("unreachable")

    @property
    def reconnects(self) -> int:
        return self.client.reconnects

    async def recv(self) -> Any:
        return (await self.client.recv()).data

    async def close(self) -> None:
        await self.client.close()


async def session_listener(server: Server, comm_id: str) -> BridgeListener:
    return await BridgeListener.open(server, comm_id, session=True)


async def b_listener(server: Server, comm_id: str) -> ChannelsListener:
    return await ChannelsListener.open(server.url, server.token, server.kernel_id, comm_id)


ListenerOpener = Callable[[Server, str], Awaitable[Listener]]
FAN_PATHS: dict[str, tuple[ListenerOpener, tuple[int, ...]]] = {
    "bridge": (BridgeListener.open, tuple(FAN_OUT)),
    "bridge+session": (session_listener, FAN_OUT_SESSION),
    "B nodelay": (b_listener, FAN_OUT_B),
}
FAN_COMPARED = ("bridge", "bridge+session")  # interleaved over FAN_ROUNDS where both are measured
FAN_FIRST_ROUND = ("server_rss_mib", "rss_kib_per_idle_socket")  # later rounds reuse its memory


async def _open_many(
    server: Server, opener: ListenerOpener, comm_id: str, n: int
) -> list[Listener]:
    listeners: list[Listener] = []
    for first in range(0, n, CONNECT_BATCH):
        batch = [opener(server, comm_id) for _ in range(first, min(n, first + CONNECT_BATCH))]
        listeners += await asyncio.wait_for(asyncio.gather(*batch), STEP_TIMEOUT)
    return listeners


async def _count(listener: Listener, count: int) -> int:
    """Receive a burst of ``count`` messages, numbered from 0, up to its last or until ``QUIET``
    s pass without one; how many arrived in order (each after the one before it: a gap counts
    what is missing, not everything after it)."""
    in_order, last = 0, -1
    while last < count - 1:
        try:
            data = await asyncio.wait_for(listener.recv(), QUIET)
        except asyncio.TimeoutError:
            break
        i = data.get("i")
        if isinstance(i, int) and i > last:
            in_order, last = in_order + 1, i
    return in_order


async def burst(server: Server, path: str, comm_id: str, n: int) -> dict[str, Any]:
    """N sockets of ``path`` listening to the fan-out comm, one burst sent once by the kernel."""
    opener, _ = FAN_PATHS[path]
    count = FAN_OUT[n]
    rss_before = server.server_rss()
    listeners = await _open_many(server, opener, comm_id, n)
    await asyncio.sleep(0.5)  # let the server settle before reading its memory
    rss_after = server.server_rss()
    server_cpu, kernel_cpu = server.server_cpu(), server.kernel_cpu()
    begin = time.perf_counter()
    msg_id = server.send_execute(f"burst({count}, {FAN_PAD})")
    received = await asyncio.wait_for(
        asyncio.gather(*(_count(listener, count) for listener in listeners)),
        STEP_TIMEOUT,
    )
    await server.wait_execute(msg_id)
    seconds = time.perf_counter() - begin
    server_cpu = server.server_cpu() - server_cpu
    kernel_cpu = server.kernel_cpu() - kernel_cpu
    deliveries = n * count
    result = {
        "path": path,
        "sockets": n,
        "messages": count,
        "delivered_in_order": sum(received),
        "lost": deliveries - sum(received),
        "reconnects": sum(listener.reconnects for listener in listeners),
        "seconds": seconds,
        "deliveries_per_s": deliveries / seconds,
        "kernel_us_per_msg": kernel_cpu / count * 1e6,
        "server_us_per_delivery": server_cpu / deliveries * 1e6,
        "server_rss_mib": rss_after / MiB,
        "rss_kib_per_idle_socket": (rss_after - rss_before) / n / 1024,
    }
    await asyncio.wait_for(
        asyncio.gather(*(listener.close() for listener in listeners)), STEP_TIMEOUT
    )
    return result


def _fan_median(bursts: list[dict[str, Any]]) -> dict[str, Any]:
    """One (path, N)'s bursts as one figure: medians, losses summed, memory from the first
    burst (the server's allocator keeps what it freed, so later bursts would show none)."""
    first = bursts[0]
    if len(bursts) == 1:
        return {**first, "bursts": 1}
    summary = {
        key: statistics.median(b[key] for b in bursts) if isinstance(value, float) else value
        for key, value in first.items()
    }
    summary.update({key: first[key] for key in FAN_FIRST_ROUND})
    for key in ("delivered_in_order", "lost", "reconnects"):
        summary[key] = sum(b[key] for b in bursts)
    summary["bursts"] = len(bursts)
    summary["rounds"] = bursts
    return summary


async def fan_out(server: Server) -> list[dict[str, Any]]:
    """One kernel comm, N sockets listening to it, a burst of messages sent once by the kernel;
    through the bridge (plain sockets, and session sockets in rounds interleaved with plain ones,
    so that their ratio is not the machine's noise) and through B."""
    comm_id = await server.evaluate("fan.comm_id")
    steps: list[tuple[tuple[str, ...], int]] = [(FAN_COMPARED, n) for n in FAN_OUT_SESSION]
    steps += [((path,), n) for path, (_, sizes) in FAN_PATHS.items() for n in sizes]
    measured: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for paths, n in steps:
        if all((path, n) in measured for path in paths):
            continue
        rounds = FAN_ROUNDS if len(paths) > 1 else 1
        for r in range(rounds):
            for path in paths if r % 2 == 0 else paths[::-1]:  # neither always goes first
                result = await burst(server, path, comm_id, n)
                measured.setdefault((path, n), []).append(result)
                label = f"round {r + 1} " if rounds > 1 else ""
                print(
                    f"  fan-out {label}{path} N={n:<5} {_brief(result)}",
                    file=sys.stderr,
                    flush=True,
                )
    order = list(FAN_PATHS)
    keys = sorted(measured, key=lambda key: (order.index(key[0]), key[1]))
    return [_fan_median(measured[key]) for key in keys]


def session_cost(results: dict[str, Any]) -> dict[str, Any]:
    """Session ÷ plain bridge socket, measured in the same rounds: the small round trip (and the
    echo's other figures) and the server's CPU per fan-out delivery at each N."""
    cost: dict[str, Any] = {"goal": SESSION_GOAL}
    echo = results.get("echo", {})
    if "bridge" in echo and "bridge+session" in echo:
        plain, session = echo["bridge"], echo["bridge+session"]
        cost["echo"] = {
            key: session[key] / plain[key]
            for key in plain
            if key in session and isinstance(plain[key], float)
        }
    plain_fan = {f["sockets"]: f for f in results["fan_out"] if f["path"] == "bridge"}
    cost["fan_out_server_per_delivery"] = {
        str(f["sockets"]): f["server_us_per_delivery"]
        / plain_fan[f["sockets"]]["server_us_per_delivery"]
        for f in results["fan_out"]
        if f["path"] == "bridge+session"
    }
    return cost


# -- busy kernel -------------------------------------------------------------------------------------


async def busy_kernel(server: Server) -> dict[str, Any]:
    """Round trips through the bridge while a cell sleeps: subshell target vs main-shell target."""
    url, token, kid = server.url, server.token, server.kernel_id
    threaded = await BridgePath.open(url, token, kid, ECHO_SUBSHELL)
    plain = await BridgePath.open(url, token, kid, ECHO)
    try:
        for path in (threaded, plain):
            await asyncio.wait_for(round_trips(path, WARMUP, start=-WARMUP), STEP_TIMEOUT)
        idle = await round_trips(threaded, BUSY_ROUND_TRIPS)
        msg_id = server.send_execute(f"time.sleep({BUSY_SLEEP})")
        await asyncio.sleep(BUSY_SETTLE)
        busy = await asyncio.wait_for(round_trips(threaded, BUSY_ROUND_TRIPS, 100), STEP_TIMEOUT)
        blocked = await asyncio.wait_for(round_trips(plain, 1, 200), STEP_TIMEOUT)
        await server.wait_execute(msg_id)
    finally:
        for path in (threaded, plain):
            await path.close()
    result = {
        "sleep_s": BUSY_SLEEP,
        "subshell_idle_rt_ms": statistics.median(idle) * 1e3,
        "subshell_busy_rt_ms": statistics.median(busy) * 1e3,
        "subshell_busy_rt_max_ms": max(busy) * 1e3,
        "main_shell_busy_rt_ms": blocked[0] * 1e3,
    }
    print(f"  busy kernel {_brief(result)}", file=sys.stderr, flush=True)
    return result


# -- RPC calls -----------------------------------------------------------------------------------------


async def rpc_calls(channel: Channel, count: int, in_flight: int) -> float:
    """Seconds for ``count`` calls of ``add``, ``in_flight`` of them pending at any time."""
    share, extra = divmod(count, in_flight)

    async def caller(worker: int) -> None:
        for i in range(share + (worker < extra)):
            if await channel.call("add", worker, i) != worker + i:
                raise AssertionError(f"add({worker}, {i}) came back wrong")

    begin = time.perf_counter()
    await asyncio.gather(*(caller(w) for w in range(min(in_flight, count))))
    return time.perf_counter() - begin


async def rpc_throughput(server: Server) -> dict[str, Any]:
    """Small calls/s, batched and one comm message per call, interleaved over rounds."""
    url, token, kid = server.url, server.token, server.kernel_id
    cases = [(f"batched, {n} in flight", RPC_TARGET, True, RPC_CALLS, n) for n in RPC_IN_FLIGHT]
    cases += [
        (f"one message per call, {n} in flight", RPC_TARGET_SINGLE, False, RPC_CALLS_SINGLE, n)
        for n in RPC_IN_FLIGHT
    ]
    figures: dict[str, list[dict[str, float]]] = {name: [] for name, *_ in cases}
    for r in range(RPC_ROUNDS):
        for name, target, batch, count, in_flight in cases:
            channel = await asyncio.wait_for(
                Channel.open(url, kid, target, token=token, batch=batch, session=False),
                STEP_TIMEOUT,
            )
            try:
                await asyncio.wait_for(rpc_calls(channel, WARMUP, 1), STEP_TIMEOUT)
                server_cpu, kernel_cpu = server.server_cpu(), server.kernel_cpu()
                seconds = await asyncio.wait_for(rpc_calls(channel, count, in_flight), STEP_TIMEOUT)
                result = {
                    "calls": count,
                    "calls_per_s": count / seconds,
                    "server_us_per_call": (server.server_cpu() - server_cpu) / count * 1e6,
                    "kernel_us_per_call": (server.kernel_cpu() - kernel_cpu) / count * 1e6,
                }
            finally:
                await asyncio.wait_for(channel.close(), STEP_TIMEOUT)
            figures[name].append(result)
            print(f"  round {r + 1} rpc {name:34} {_brief(result)}", file=sys.stderr, flush=True)
    return {
        name: {
            **{key: statistics.median(result[key] for result in results) for key in results[0]},
            "batched": name.startswith("batched"),
            "in_flight": in_flight,
            "rounds": results,
        }
        for (name, _, _, _, in_flight), results in zip(cases, figures.values(), strict=True)
    }


# -- report -------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def table(results: dict[str, Any]) -> str:
    """Markdown tables of the figures, their ratios to A, and what a session costs."""
    echo = results["echo"]
    cost = results.get("session_cost", {})
    session_echo = cost.get("echo", {})
    session_fan = cost.get("fan_out_server_per_delivery", {})
    names = [name for name in echo if name != RELAY_FLOOR]
    compared = ["bridge", *(name for name in (*THIRD_PARTY, *BEFORE_PATHS) if name in echo)]
    ratios_to = [(name, "A direct", f"{name} ÷ A") for name in compared]
    if BARE_PATH in echo:
        ratios_to.append((CHROMIUM_PATH, BARE_PATH, f"{CHROMIUM_PATH} ÷ bare echo"))
    lines = [
        "| figure | "
        + " | ".join(names)
        + " | "
        + " | ".join(label for *_, label in ratios_to)
        + " | goal | session ÷ plain | goal |",
        "|---|" + "---|" * (len(names) + len(ratios_to) + 3),
    ]
    session_goal = f"≤ {SESSION_GOAL}"
    rows = [
        ("small round trip, median (ms)", "rt_ms", 2, "≤ 1.2", session_goal),
        (f"small msg/s, {WINDOW} in flight", "msg_per_s", 0, "≥ 1.0", ""),
        (f"1 MiB round trip, median (ms){_relay_adds(results)}", "big_rt_ms", 2, "≤ 1.2", ""),
        ("1 MiB buffers, MB/s", "big_mb_per_s", 0, "≥ 1.0", ""),
        (
            "… CPU per 1 MiB echo: server (ms; goal ≤ 1.5; relay floor "
            f"{_fmt(results.get('floor_big_ms'), 2)})",
            "big_server_cpu_ms",
            2,
            "",
            "",
        ),
        ("… kernel (ms)", "big_kernel_cpu_ms", 2, "", ""),
        ("… benchmark client (ms)", "big_client_cpu_ms", 2, "", ""),
    ]
    for label, key, digits, goal, goal_session in rows:
        cells = [_fmt(echo[n].get(key), digits) for n in names]
        ratios = [_fmt(ratio_of(echo, name, anchor, key), 2) for name, anchor, _ in ratios_to]
        lines.append(
            f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + f" | {goal} "
            f"| {_fmt(session_echo.get(key), 2)} | {goal_session} |"
        )
    floors = (
        f"floor {_fmt(results.get('floor_us'))} queued, {_fmt(results.get('floor_paced_us'))} paced"
    )
    lines += [
        "",
        "| fan-out | sockets N | messages | lost | deliveries/s | kernel CPU µs/msg | "
        f"server CPU µs/delivery (goal: N = 1 within 10 % of the floor; {floors}; N ≥ 10 ≤ 5) "
        f"| … session ÷ plain (goal {session_goal}) | server RSS MiB | RSS KiB per idle socket |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in results["fan_out"]:
        ratio = session_fan.get(str(f["sockets"])) if f["path"] == "bridge+session" else None
        lines.append(
            f"| {f['path']} | {f['sockets']} | {f['messages']} | {_lost(f)} | "
            f"{_fmt(f['deliveries_per_s'], 0)} | "
            f"{_fmt(f['kernel_us_per_msg'])} | {_fmt(f['server_us_per_delivery'])} | "
            f"{_fmt(ratio, 2)} | {_fmt(f['server_rss_mib'])} | "
            f"{_fmt(f['rss_kib_per_idle_socket'] if f['sockets'] >= RSS_MIN_SOCKETS else None)} |"
        )
    busy = results["busy"]
    lines += [
        "",
        f"| busy kernel (cell in `time.sleep({busy['sleep_s']:g})`) | round trip (ms) |",
        "|---|---|",
        f"| bridge, subshell target, kernel idle | {_fmt(busy['subshell_idle_rt_ms'], 2)} |",
        f"| bridge, subshell target, kernel busy (median; goal < 50) "
        f"| {_fmt(busy['subshell_busy_rt_ms'], 2)} (max {_fmt(busy['subshell_busy_rt_max_ms'], 2)}) |",
        f"| bridge, main-shell target, kernel busy | {_fmt(busy['main_shell_busy_rt_ms'], 0)} |",
    ]
    if "rpc" in results:
        lines += ["", rpc_table(results["rpc"])]
    return "\n".join(lines)


def _relay_adds(results: dict[str, Any]) -> str:
    """What a bare relay adds to A's 1 MiB round trip, measured in the same rounds."""
    echo = results["echo"]
    added, a = echo.get(RELAY_FLOOR, {}).get("big_rt_added_ms"), echo.get("A direct", {})
    if added is None or not a.get("big_rt_ms"):
        return ""
    ratio = (a["big_rt_ms"] + added) / a["big_rt_ms"]
    return f" (a bare relay adds {added:.2f} ms: A's plus that ÷ A = {ratio:.2f})"


def ratio_of(echo: dict[str, Any], name: str, anchor: str, key: str) -> float | None:
    """A path's figure over its anchor's (None if either lacks it)."""
    figure, base = echo.get(name, {}).get(key), echo.get(anchor, {}).get(key)
    return figure / base if figure is not None and base else None


def _lost(fan: dict[str, Any]) -> str:
    """Messages lost, and how often a session's connection dropped and resumed meanwhile."""
    lost = f"{fan['lost']}"
    return f"{lost} ({fan['reconnects']} resumed)" if fan.get("reconnects") else lost


def rpc_table(rpc: dict[str, Any]) -> str:
    """The RPC calls/s, batched and not, against the goal."""
    lines = [
        "| RPC small calls (`add(a, b)`), Python client → server → kernel `Channel` | calls/s "
        f"| ÷ goal ({RPC_GOAL:,}/s) | server CPU µs/call | kernel CPU µs/call |",
        "|---|---|---|---|---|",
    ]
    for name, f in rpc.items():
        lines.append(
            f"| {name} | {_fmt(f['calls_per_s'], 0)} | {_fmt(f['calls_per_s'] / RPC_GOAL, 2)} "
            f"| {_fmt(f['server_us_per_call'])} | {_fmt(f['kernel_us_per_call'])} |"
        )
    return "\n".join(lines)


def update_docs(text: str, command: str, when: str, rounds: int) -> None:
    """Replace what is between the performance page's markers with the latest table."""
    section = (
        f"Measured by `{command}` ({when}, {os.cpu_count()} cores shared with other work, "
        f"medians of {rounds} interleaved rounds; absolute numbers are noisy, read the ratios). "
        "A is `jupyter_client` straight to the kernel (no server); B is jupyter_server's "
        '`/api/kernels/{id}/channels` WebSocket speaking the kernel protocol, and "B nodelay" '
        "the same with TCP_NODELAY on both ends (Tornado leaves it off; the benchmark patches it "
        "into its server for that column); all talk to the same echo comm target of the same "
        "kernel. Fan-out: a comm opened by the kernel, N sockets attached (for B, N `/channels` "
        "sockets with TCP_NODELAY, each of which gets all of the kernel's iopub), one burst sent "
        "once by the kernel; CPU is the run time of all the server's and the kernel's threads "
        "over the burst (Linux schedstat). "
        '"bridge+session" is the bridge on a durable session (contract v2: numbered frames, which '
        "the client, the project's `CommClient`, acknowledges a quarter of the window at a time), "
        'measured in the same rounds as the plain "bridge"; "session ÷ plain" is their ratio. In '
        f"fan-out, at N = {', '.join(map(str, FAN_OUT_SESSION))} plain and session sockets take "
        f"turns over {FAN_ROUNDS} bursts each (medians; lost: over all bursts; memory: from the "
        "first). The server runs with jupyter_server's "
        "`buffer_offline_messages` off (see above). "
        "The CPU rows under the 1 MiB figure split each echo's CPU between the server, the kernel "
        "and the benchmark's client: on 2 cores the three processes share the machine, so their "
        "sum bounds the throughput (and in A's column the server's CPU is jupyter_server's own "
        "iopub subscriber deserializing A's messages). "
        "RPC: `rpc_client.Channel` calling a kernel `Channel`'s `add(a, b)` with N calls in flight, "
        "batched (the default) and with `batch=False` on both ends (one comm message per call and "
        "per answer). "
        '"bridge (websockets)" and "bridge (Chromium)" are the bridge\'s v1 socket from clients the '
        "project did not write: the `websockets` library (TCP_NODELAY on) and a Chromium page's "
        "own `WebSocket` (Playwright). The same page on a bare Tornado WebSocket echo in a "
        'process of its own (no kernel, no bridge: "Chromium, bare echo") is the browser\'s '
        "anchor: Chromium itself moves 1 MiB messages at a tenth of a Python client's rate, and "
        "that echo's CPU is what any Python server pays to serve them. The 1 "
        "MiB round trip is one buffer at a time (20 per round); the MB/s figure keeps 4 in flight. "
        "The floor is `python -m benchmarks.floor`, measured in the "
        "same run: queued (every message waiting, no event loop) and paced (a bare asyncio loop "
        "forwarding messages that come 100 µs apart, as the fan-out's kernel sends them); the "
        "relay floor of a 1 MiB echo is the CPU of a process that only moves it (a TCP read into "
        "a reused buffer, a zero-copy ZMQ send to a process that echoes it, the ZMQ receive, a "
        "TCP write), with no WebSocket, no Jupyter message and no event loop, measured in every "
        "round (the table gives its median), as is what that relay adds to a 1 MiB round trip "
        "(one at a time, against its peer's echo straight over ZMQ). "
        "The last table compares each ratio with the run before (`results.json` is "
        "kept in the repository) and flags any that got more than 10 % worse. "
        "Full figures in `benchmarks/results.json`.\n\n"
        f"{text}\n"
    )
    page = PERFORMANCE_PAGE.read_text()
    start, end = page.find(DOCS_BEGIN), page.find(DOCS_END)
    if start < 0 or end < start:
        raise SystemExit(f"{PERFORMANCE_PAGE} lacks the markers {DOCS_BEGIN!r} … {DOCS_END!r}")
    start += len(DOCS_BEGIN)
    PERFORMANCE_PAGE.write_text(f"{page[:start]}\n{section}{page[end:]}")


@contextlib.contextmanager
def checkout(rev: str) -> Iterator[str]:
    """A worktree of this repository at ``rev`` (a git revision), removed afterwards."""
    repo = str(HERE.parent)
    path = tempfile.mkdtemp(prefix="transports-before-")
    git = ["git", "-C", repo, "worktree"]
    subprocess.run([*git, "add", "--detach", path, rev], check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run([*git, "remove", "--force", path], check=False, capture_output=True)


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    config = {"TransportsExtension": {"subshell_targets": [ECHO_SUBSHELL]}}
    began = time.perf_counter()
    server = await Server.start(config)
    try:
        print(f"server {server.url}, kernel {server.kernel_id}", file=sys.stderr, flush=True)
        results: dict[str, Any] = {}
        if not args.only_rpc:
            if args.before:
                with checkout(args.before) as source:
                    before = await Server.start(config, source)
                    try:
                        results["echo"] = await echo_rounds(server, args.rounds, before)
                    finally:
                        before.stop()
            elif not args.skip_echo:
                results["echo"] = await echo_rounds(server, args.rounds)
            results["floor_us"] = (await asyncio.to_thread(floor.measure))[floor.WHOLE]
            results["floor_paced_us"] = await asyncio.to_thread(floor.measure_paced)
            if "echo" in results:
                results["floor_big_ms"] = results["echo"][RELAY_FLOOR]["big_server_cpu_ms"]
            results["fan_out"] = await fan_out(server)
            results["session_cost"] = session_cost(results)
            results["busy"] = await busy_kernel(server)
        results["rpc"] = await rpc_throughput(server)
    finally:
        server.stop()
    results["seconds"] = time.perf_counter() - began
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--docs",
        "--readme",  # its former name, when the table was in README.md
        action="store_true",
        help="put the table in docs/performance.md",
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds of the echo figures")
    parser.add_argument("--skip-echo", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--only-rpc", action="store_true", help="measure the RPC calls only")
    parser.add_argument(
        "--before",
        metavar="REV",
        help="also measure the bridge of git revision REV, in the same rounds (a quick look: "
        "neither results.json nor the docs change)",
    )
    args = parser.parse_args(argv)
    results = asyncio.run(run_all(args))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results["meta"] = {
        "when": when,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "rounds": args.rounds,
    }
    if args.only_rpc:  # a quick look: neither results.json nor the docs change
        print(rpc_table(results["rpc"]))
        return
    if args.before:
        print(table(results))
        return
    before = json.loads(RESULTS.read_text()) if RESULTS.exists() else None
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    if "echo" in results:
        since = before.get("meta", {}).get("when", "?") if before else "no earlier run"
        changes = guard.compare(before, results)
        text = table(results) + "\n\n" + guard.report(changes, since)
        print(text)
        if args.docs:
            update_docs(text, "make bench", when, args.rounds)
        for change in changes:
            if change.flagged:
                print(
                    f"WORSE: {change.name}: {change.before:.2f} -> {change.now:.2f}",
                    file=sys.stderr,
                )
    print(f"\n{results['seconds']:.0f} s; results in {RESULTS}", file=sys.stderr)
