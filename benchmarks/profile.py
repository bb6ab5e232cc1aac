"""``python -m benchmarks.profile {rt,small,big,fanout} [seconds]``: py-spy of the server.

Runs one load against the bridge for a while (round trips, 64 small messages in flight, 1 MiB
buffers, or bursts to 1000 attached sockets) and records the server process with py-spy (``pip
install py-spy``), writing its collapsed stacks to ``/tmp/transports-<load>.txt``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time

from .paths import BridgePath
from .run import BIG_BYTES, BIG_WINDOW, WINDOW, _attach_many, pipelined, round_trips
from .server import ECHO, Server

FAN_SOCKETS = 1000
FAN_BURST = 200


async def load(server: Server, kind: str, seconds: float) -> None:
    end = time.monotonic() + seconds
    if kind == "fanout":
        comm_id = await server.evaluate("fan.comm_id")
        clients = await _attach_many(server, comm_id, FAN_SOCKETS)

        async def drain(client):
            while True:
                await client.recv()

        readers = [asyncio.ensure_future(drain(c)) for c in clients]
        while time.monotonic() < end:
            await server.execute(f"burst({FAN_BURST}, 64)")
            await asyncio.sleep(0.05)
        for r in readers:
            r.cancel()
        return
    path = await BridgePath.open(server.url, server.token, server.kernel_id, ECHO)
    buffers = [os.urandom(BIG_BYTES)] if kind == "big" else []
    i = 0
    if kind == "rt":
        cpu, count = server.server_cpu(), 0
        while time.monotonic() < end:
            await round_trips(path, 100, i)
            i, count = i + 100, count + 100
        print(f"server CPU per round trip: {(server.server_cpu() - cpu) / count * 1e6:.0f} us")
    while time.monotonic() < end:
        count, window = (16, BIG_WINDOW) if buffers else (200, WINDOW)
        await pipelined(path, count, window, buffers, i)
        i += 1000
    await path.close()


async def main(kind: str, seconds: float) -> None:
    server = await Server.start({})
    try:
        out = f"/tmp/transports-{kind}"
        spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        record = subprocess.Popen(
            [
                spy,
                "record",
                "-p",
                str(server.process.pid),
                "-d",
                str(int(seconds)),
                "-r",
                "200",
                "-f",
                "raw",
                "--nonblocking",
                "-o",
                out + ".txt",
            ],
            stdout=subprocess.DEVNULL,
        )
        await load(server, kind, seconds)
        record.wait()
        print(f"collapsed stacks: {out}.txt")
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 10.0))
