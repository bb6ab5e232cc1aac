"""``python -m benchmarks.churn``: thousands of sockets opened and closed, and the server's memory.

Not a test and not part of ``make bench``: a few minutes' run that looks for what a closed socket
leaves behind in the server. It starts a real Jupyter server with the extension and one ipykernel
(:class:`benchmarks.server.Server`) and runs ``--cycles`` cycles, each of them:

* a handshake with a query string of ``--refused-query`` bytes (60 KB by default), over
  ``max_query_bytes``: it must be refused with 414;
* a durable-session socket (``--session``, the default; ``--plain`` for v1 sockets) opened to
  the ``echo`` target with a query string of ``--query`` bytes (15 KB by default, under the cap),
  one message echoed, and closed with a close frame (its comm closes with it).

The server's RSS and open file descriptors are read after ``WARM_UP`` cycles (what a server
allocates once, on first use, is not a leak) and again ``SETTLE`` seconds after the last cycle.
The run passes if RSS is back within ``--rss-slack`` MiB (10) of the first reading, the file
descriptors are where they were, and the bridge knows no comm and no client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from jupyter_transports.client import CommClient, Refused

from .server import ECHO, Server

MiB = 1024 * 1024
WARM_UP = 200  # cycles before the first reading
SETTLE = 3.0  # seconds between the last cycle and the last reading


async def cycle(server: Server, query: str, refused_query: str, session: bool) -> None:
    if refused_query:
        await refused(server, refused_query)
    comm = await CommClient.open(
        server.url, server.kernel_id, ECHO, token=server.token, session=session, pad=query
    )
    await comm.send("ping")
    assert (await asyncio.wait_for(comm.recv(), 30)).data == "ping"
    await comm.close()


async def refused(server: Server, refused_query: str) -> None:
    try:
        await CommClient.open(
            server.url, server.kernel_id, ECHO, token=server.token, pad=refused_query
        )
    except Refused as e:
        assert e.status == 414, f"a long query answered {e.status}, not 414"
    else:
        raise AssertionError("a query over max_query_bytes was let in")


async def run(args: argparse.Namespace) -> bool:
    server = await Server.start({})
    try:
        query, refused = "x" * args.query, "x" * args.refused_query
        for _ in range(WARM_UP):
            await cycle(server, query, refused, args.session)
        await asyncio.sleep(SETTLE)
        rss, fds = server.server_rss(), server.server_ps.num_fds()
        print(f"after {WARM_UP} warm-up cycles: RSS {rss / MiB:.1f} MiB, {fds} fds")
        started = time.monotonic()
        for done in range(1, args.cycles + 1):
            await cycle(server, query, refused, args.session)
            if done % 1000 == 0:
                print(
                    f"{done} cycles in {time.monotonic() - started:.0f} s: "
                    f"RSS {server.server_rss() / MiB:.1f} MiB, {server.server_ps.num_fds()} fds"
                )
        await asyncio.sleep(SETTLE)
        end_rss, end_fds = server.server_rss(), server.server_ps.num_fds()
        status = await asyncio.to_thread(server._api, "GET", "api/transports/status")
        kernel = status["kernels"].get(server.kernel_id, {})
    finally:
        server.stop()
    growth = (end_rss - rss) / MiB
    print(
        f"{args.cycles} cycles ({'session' if args.session else 'plain'} sockets, "
        f"{args.query} B queries; {args.refused_query} B queries refused) in "
        f"{time.monotonic() - started:.0f} s\n"
        f"RSS {rss / MiB:.1f} → {end_rss / MiB:.1f} MiB ({growth:+.1f} MiB, allowed "
        f"{args.rss_slack} MiB); fds {fds} → {end_fds}; bridge: "
        f"{json.dumps({k: kernel.get(k) for k in ('comms', 'clients')})}"
    )
    ok = growth <= args.rss_slack and end_fds <= fds and not kernel.get("clients")
    print("PASS" if ok else "FAIL")
    return ok


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.churn", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--cycles", type=int, default=5000, help="open/close cycles (5000)")
    parser.add_argument("--query", type=int, default=15_000, help="query bytes let in (15000)")
    parser.add_argument(
        "--refused-query", type=int, default=60_000, help="query bytes refused (60000; 0: none)"
    )
    parser.add_argument("--rss-slack", type=float, default=10, help="MiB RSS may grow (10)")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--session", dest="session", action="store_true", default=True)
    kind.add_argument("--plain", dest="session", action="store_false")
    sys.exit(0 if asyncio.run(run(parser.parse_args(argv))) else 1)


if __name__ == "__main__":
    main()
