"""``python -m benchmarks.presence``: what presence and echo cost the server, beside plain fan-out.

Not part of ``make bench``'s table: one run, one server (:class:`benchmarks.server.Server`), one
kernel with two comms it opened, the plain ``fan`` comm and a ``SharedComm`` with presence and
echo on. For each N, N durable sessions (all with ``presence=1``) attach to each comm in turn:

* **join**: the server's CPU per attach, while N attach (on the shared comm each join tells the
  kernel and every member, and sends the joiner the whole roster: O(N) per join);
* **kernel fan-out**: the kernel sends ``MESSAGES`` messages; the server's CPU per delivery;
* **echo** (shared comm only): one session sends ``MESSAGES`` messages, relayed by the server to
  the N - 1 others (and handed to the kernel once each); the server's CPU per delivery.

Every figure is printed beside the plain comm's fan-out in the same run, as a ratio: absolute
rates move 2-3x between machines. Nothing may be lost (each receiver checks order and count).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from jupyter_transports.client import CommClient

from .server import Server

MESSAGES = 200
PAD = 64  # bytes of padding per message
STEP_TIMEOUT = 120.0
SHARED_CODE = """
from jupyter_transports.shared import SharedComm
shared = SharedComm("bench.shared", echo=True)
heard = []
shared.on_msg(lambda data, buffers, sender: heard.append(data["i"]))

def shared_burst(count, pad):
    for i in range(count):
        shared.send({"i": i, "pad": "x" * pad})

def plain_burst(count, pad):
    for i in range(count):
        fan.send({"i": i, "pad": "x" * pad})
"""


async def attach_all(server: Server, comm_id: str, n: int) -> tuple[list[CommClient], float]:
    """N sessions with presence=1 on the comm; the server's CPU seconds for it."""
    cpu = server.server_cpu()
    clients = [
        await CommClient.attach(
            server.url, server.kernel_id, comm_id, token=server.token, presence="1"
        )
        for _ in range(n)
    ]
    await asyncio.sleep(0.3)  # the last roster frames
    return clients, server.server_cpu() - cpu


async def in_order(client: CommClient, count: int) -> int:
    received = 0
    for i in range(count):
        message = await asyncio.wait_for(client.recv(), STEP_TIMEOUT)
        received += message.data.get("i") == i
    return received


async def kernel_fan_out(server: Server, clients: list[CommClient], burst: str) -> dict[str, Any]:
    cpu = server.server_cpu()
    msg_id = server.send_execute(f"{burst}({MESSAGES}, {PAD})")
    received = await asyncio.gather(*(in_order(c, MESSAGES) for c in clients))
    await server.wait_execute(msg_id)
    deliveries = len(clients) * MESSAGES
    return {
        "us_per_delivery": (server.server_cpu() - cpu) / deliveries * 1e6,
        "lost": deliveries - sum(received),
    }


async def echo(server: Server, clients: list[CommClient]) -> dict[str, Any]:
    sender, others = clients[0], clients[1:]
    cpu = server.server_cpu()
    receiving = asyncio.gather(*(in_order(c, MESSAGES) for c in others))
    for i in range(MESSAGES):
        await sender.send({"i": i, "pad": "x" * PAD})
    received = await receiving
    deliveries = len(others) * MESSAGES
    return {
        "us_per_delivery": (server.server_cpu() - cpu) / deliveries * 1e6,
        "lost": deliveries - sum(received),
    }


async def run(sizes: list[int]) -> None:
    server = await Server.start({})
    try:
        await server.execute(SHARED_CODE)
        plain_id = await server.evaluate("fan.comm_id")
        shared_id = await server.evaluate("shared.comm_id")
        rows = []
        for n in sizes:
            plain, plain_join = await attach_all(server, plain_id, n)
            anchor = await kernel_fan_out(server, plain, "plain_burst")
            await asyncio.gather(*(c.close() for c in plain))
            shared, shared_join = await attach_all(server, shared_id, n)
            assert len(shared[0].roster) == n, f"roster of {len(shared[0].roster)}, not {n}"
            fan = await kernel_fan_out(server, shared, "shared_burst")
            relayed = await echo(server, shared)
            await asyncio.gather(*(c.close() for c in shared))
            base = anchor["us_per_delivery"]
            rows.append(
                f"| {n} | {plain_join / n * 1e6:.0f} | {shared_join / n * 1e6:.0f} "
                f"({shared_join / plain_join:.2f}x) | {base:.1f} | "
                f"{fan['us_per_delivery']:.1f} ({fan['us_per_delivery'] / base:.2f}x) | "
                f"{relayed['us_per_delivery']:.1f} ({relayed['us_per_delivery'] / base:.2f}x) | "
                f"{anchor['lost'] + fan['lost'] + relayed['lost']} |"
            )
            heard = await server.evaluate("len(heard)")
            assert heard == MESSAGES * len(rows), f"the kernel heard {heard} echoed messages"
    finally:
        server.stop()
    print(
        "| sessions N | join, plain comm µs | join, presence comm µs | fan-out, plain µs/delivery "
        "| fan-out, presence comm µs/delivery | echo µs/delivery | lost |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.presence", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sizes", default="10,100", help="numbers of sessions (10,100)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    asyncio.run(run([int(n) for n in args.sizes.split(",")]))
    print(f"\n({time.perf_counter() - started:.0f} s; server CPU per attach and per delivery)")


if __name__ == "__main__":
    main()
