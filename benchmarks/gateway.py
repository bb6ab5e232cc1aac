"""``python -m benchmarks.gateway``: the bridge to a kernel behind a gateway, beside its anchors.

Starts a real Jupyter Kernel Gateway and a Jupyter server with the extension pointed at it
(``GatewayClient.url``, with an auth token), one kernel on the gateway, and measures in
interleaved rounds:

* small round trip (median) and 1 MiB buffer echoes (MB/s, buffers checked byte for byte) for
  A (jupyter_client straight to the kernel's ZMQ sockets: no server, no gateway), B
  (jupyter_server's own ``/api/kernels/{id}/channels``, which it proxies to the gateway) and the
  bridge;
* the server's CPU while the kernel is bridged (one socket open) and idle, in % of a core.

Read the ratios: absolute figures move 2-3x between machines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.gateway import GatewayKernel, JupyterServer, KernelGateway

from .paths import BridgePath, ChannelsPath, DirectPath, EchoPath
from .run import MiB, Opener, pipelined, round_trips
from .server import ECHO, KERNEL_CODE

ROUNDS = 5
WARMUP = 5
ROUND_TRIPS = 50
ROUND_TRIPS_SLOW = 10  # for B: each costs the gateway's Nagle delay
BIG_MESSAGES = 16
BIG_WINDOW = 4
BIG_TIMEOUT = 20.0  # seconds for the 1 MiB echoes of one path; past it, they count as lost
IDLE_SECONDS = 30.0
STEP_TIMEOUT = 120.0


async def measure(opener: Opener, round_trip_count: int) -> dict[str, Any]:
    """Round trip (ms) and 1 MiB echo throughput (MB/s; None if buffers were lost)."""
    path: EchoPath = await asyncio.wait_for(opener(), STEP_TIMEOUT)
    try:
        await asyncio.wait_for(round_trips(path, WARMUP, start=-WARMUP), STEP_TIMEOUT)
        rts = await asyncio.wait_for(round_trips(path, round_trip_count), STEP_TIMEOUT)
        result: dict[str, Any] = {"rt_ms": statistics.median(rts) * 1e3, "big_mb_per_s": None}
        blob = [os.urandom(MiB)]
        try:
            seconds = await asyncio.wait_for(
                pipelined(path, BIG_MESSAGES, BIG_WINDOW, blob, 20_000), BIG_TIMEOUT
            )
        except (AssertionError, ConnectionError, asyncio.TimeoutError, UnicodeDecodeError) as e:
            print(f"  {path.name}: 1 MiB buffers lost ({e!r:.80})", file=sys.stderr)
            return result
        result["big_mb_per_s"] = BIG_MESSAGES / seconds
        return result
    finally:
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
            await asyncio.wait_for(path.close(), 10)


async def idle_cpu(server: JupyterServer, kernel_id: str, seconds: float) -> float:
    """The server's CPU, in % of a core, while one socket keeps the kernel bridged, idle."""
    path = await BridgePath.open(server.url, server.token, kernel_id, ECHO)
    try:
        await round_trips(path, WARMUP)
        await asyncio.sleep(1)  # the open's own work is done
        before, start = server.cpu_seconds(), time.monotonic()
        await asyncio.sleep(seconds)
        return 100 * (server.cpu_seconds() - before) / (time.monotonic() - start)
    finally:
        await path.close()


async def run(rounds: int, idle_seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="transports-bench-gw-") as tmp:
        gateway = KernelGateway(Path(tmp, "gateway"))
        await gateway.start()
        server = JupyterServer(Path(tmp, "server"), gateway)
        try:
            await server.start()
            model = await server.api("POST", "api/kernels", {"name": "python3"})
            kernel = GatewayKernel(model["id"], gateway)
            await kernel.wait_ready()
            await kernel.execute(KERNEL_CODE)
            return await _measure_all(gateway, server, kernel.id, rounds, idle_seconds)
        finally:
            server.stop()
            gateway.stop()


async def _measure_all(
    gateway: KernelGateway, server: JupyterServer, kernel_id: str, rounds: int, idle: float
) -> dict[str, Any]:
    connection_file = str(gateway.workdir / "runtime" / f"kernel-{kernel_id}.json")
    url, token = server.url, server.token
    paths: list[tuple[str, Opener, int]] = [
        ("A direct", lambda: DirectPath.open(connection_file, ECHO), ROUND_TRIPS),
        ("B /channels", lambda: ChannelsPath.open(url, token, kernel_id, ECHO), ROUND_TRIPS_SLOW),
        ("bridge", lambda: BridgePath.open(url, token, kernel_id, ECHO), ROUND_TRIPS),
    ]
    per_path: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in paths}
    for r in range(rounds):
        for name, opener, count in paths:
            figures = await measure(opener, count)
            per_path[name].append(figures)
            print(f"  round {r + 1} {name:12} {figures}", file=sys.stderr, flush=True)
    summary: dict[str, Any] = {}
    for name, results in per_path.items():
        big = [f["big_mb_per_s"] for f in results]
        summary[name] = {
            "rt_ms": statistics.median(f["rt_ms"] for f in results),
            "big_mb_per_s": None if None in big else statistics.median(big),
        }
    summary["idle_cpu_percent"] = await idle_cpu(server, kernel_id, idle)
    summary["idle_seconds"] = idle
    return summary


def report(summary: dict[str, Any]) -> str:
    a, b, bridge = summary["A direct"], summary["B /channels"], summary["bridge"]

    def mb(figures: dict[str, Any]) -> str:
        value = figures["big_mb_per_s"]
        return "buffers lost" if value is None else f"{value:.0f}"

    def ratio(x: float | None, y: float | None) -> str:
        return "—" if x is None or y is None else f"{x / y:.2f}"

    lines = [
        "| path | small round trip (ms) | 1 MiB echo (MB/s) |",
        "| --- | --- | --- |",
        f"| A jupyter_client to the kernel (no gateway) | {a['rt_ms']:.2f} | {mb(a)} |",
        f"| B jupyter_server's /channels, via the gateway | {b['rt_ms']:.2f} | {mb(b)} |",
        f"| bridge, via the gateway | {bridge['rt_ms']:.2f} | {mb(bridge)} |",
        "",
        f"- round trip, bridge ÷ B: {ratio(bridge['rt_ms'], b['rt_ms'])} (goal ≤ 1); "
        f"bridge ÷ A: {ratio(bridge['rt_ms'], a['rt_ms'])}",
        f"- 1 MiB echo, bridge ÷ B: {ratio(bridge['big_mb_per_s'], b['big_mb_per_s'])} "
        f"(goal ≥ 1); bridge ÷ A: {ratio(bridge['big_mb_per_s'], a['big_mb_per_s'])}",
        f"- server CPU with the kernel bridged and idle for {summary['idle_seconds']:.0f} s: "
        f"{summary['idle_cpu_percent']:.2f} % of a core (goal < 2 %)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--idle", type=float, default=IDLE_SECONDS, help="idle seconds")
    args = parser.parse_args(argv)
    summary = asyncio.run(run(args.rounds, args.idle))
    print(report(summary))


if __name__ == "__main__":
    main()
