"""``python -m benchmarks.ab REV [--pairs 6] [--rounds 8] [--client websockets]``: the server's
CPU per 1 MiB echo, this checkout's bridge against the bridge of git revision ``REV``.

Two servers side by side differ by an offset of their own, even of the same code (0.13 ms per
1 MiB echo, 13 of 16 rounds, in one run): one pair of servers cannot resolve a change that
small. So each of ``--pairs`` pairs starts two fresh servers, ``REV``'s first and this
checkout's first in turn, and measures them in ``--rounds`` interleaved rounds of
``ROUND_SECONDS`` of echoes (4 in flight). A pair's figure is the median of its rounds'
differences, this checkout's less ``REV``'s; the result is the median over pairs, and how many
pairs found this checkout cheaper. With ``REV`` = ``HEAD`` and a clean checkout it shows what the
method itself makes of no change.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .paths import BridgePath, EchoPath, WebsocketsPath
from .run import BIG_BYTES, BIG_WINDOW, checkout, pipelined
from .server import ECHO, Server

ROUND_SECONDS = 1.5
STEP = 16  # echoes between looks at the clock (and of warm-up)
CLIENTS: dict[str, Callable[[str, str, str, str], Awaitable[Any]]] = {
    "websockets": WebsocketsPath.open,
    "bridge": BridgePath.open,  # the project's own CommClient
}


async def cpu_per_echo(server: Server, client: str, buffers: list[bytes]) -> float:
    """The server's CPU per echo over one round, in ms."""
    path: EchoPath = await CLIENTS[client](server.url, server.token, server.kernel_id, ECHO)
    try:
        await pipelined(path, STEP, BIG_WINDOW, buffers, 0)
        cpu, count = server.server_cpu(), 0
        end = time.monotonic() + ROUND_SECONDS
        while time.monotonic() < end:
            await pipelined(path, STEP, BIG_WINDOW, buffers, STEP + count)
            count += STEP
        return (server.server_cpu() - cpu) / count * 1e3
    finally:
        await path.close()


async def pair(source: str, rev_first: bool, args: argparse.Namespace) -> list[float]:
    """One pair of fresh servers: each round's difference, this checkout's less ``REV``'s."""
    buffers = [os.urandom(args.bytes)]
    servers: dict[str, Server] = {}
    try:
        for name in ("rev", "here") if rev_first else ("here", "rev"):
            servers[name] = await Server.start({}, source if name == "rev" else None)
        differences = []
        for i in range(args.rounds):
            cpu = {}
            for name in ("rev", "here") if i % 2 else ("here", "rev"):
                cpu[name] = await cpu_per_echo(servers[name], args.client, buffers)
            differences.append(cpu["here"] - cpu["rev"])
        return differences
    finally:
        for server in servers.values():
            server.stop()


async def main(args: argparse.Namespace) -> None:
    print(f"server CPU per echo of {args.bytes} bytes from the {args.client} client, ms:")
    print("this checkout less", args.rev)
    medians = []
    with checkout(args.rev) as source:
        for i in range(args.pairs):
            differences = await pair(source, rev_first=i % 2 == 0, args=args)
            medians.append(statistics.median(differences))
            better = sum(d < 0 for d in differences)
            first = args.rev if i % 2 == 0 else "this checkout"
            print(
                f"  pair {i + 1} ({first} started first): {medians[-1]:+.3f}"
                f" ({better} of {len(differences)} rounds cheaper)",
                flush=True,
            )
    cheaper = sum(m < 0 for m in medians)
    print(
        f"median over pairs: {statistics.median(medians):+.3f} ms;"
        f" this checkout cheaper in {cheaper} of {len(medians)} pairs"
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("rev", help="the git revision to compare this checkout with")
    parser.add_argument("--pairs", type=int, default=6, help="pairs of fresh servers")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds per pair")
    parser.add_argument("--client", choices=sorted(CLIENTS), default="websockets")
    parser.add_argument("--bytes", type=int, default=BIG_BYTES, help="the buffer's size")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
