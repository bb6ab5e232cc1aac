"""``python -m benchmarks.profile {rt,small,big,big-websockets,fanout,rpc} [seconds]``: py-spy
of the server.

Runs one load against the bridge for a while (round trips, 64 small messages in flight, 1 MiB
buffers from the project's client or from the ``websockets`` library, bursts to ``FAN_SOCKETS``
attached sockets (an environment variable, 1000 by default), or unbatched RPC calls with 64 in
flight) and records the server process with py-spy (``pip install py-spy``), writing its
collapsed stacks to ``/tmp/transports-<load>.txt``. ``PY_SPY_ARGS`` adds options to py-spy's:
``--gil`` keeps only the samples of the thread holding the GIL, which is where Python spends CPU
(a 1 MiB echo spends most of its server time in syscalls that release it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time

from jupyter_transports.rpc_client import Channel

from .paths import BridgePath, WebsocketsPath
from .run import (
    BIG_BYTES,
    BIG_WINDOW,
    WINDOW,
    BridgeListener,
    _open_many,
    pipelined,
    round_trips,
    rpc_calls,
)
from .server import ECHO, RPC_TARGET_SINGLE, Server

FAN_SOCKETS = int(os.environ.get("FAN_SOCKETS", 1000))
FAN_BURST = 200


async def load(server: Server, kind: str, seconds: float) -> None:
    end = time.monotonic() + seconds
    if kind == "fanout":
        comm_id = await server.evaluate("fan.comm_id")
        listeners = await _open_many(server, BridgeListener.open, comm_id, FAN_SOCKETS)

        async def drain(listener):
            while True:
                await listener.recv()

        readers = [asyncio.ensure_future(drain(listener)) for listener in listeners]
        while time.monotonic() < end:
            await server.execute(f"burst({FAN_BURST}, 64)")
            await asyncio.sleep(0.05)
        for r in readers:
            r.cancel()
        return
    if kind == "rpc":
        channel = await Channel.open(
            server.url, server.kernel_id, RPC_TARGET_SINGLE, token=server.token, batch=False
        )
        cpu, count = server.server_cpu(), 0
        while time.monotonic() < end:
            await rpc_calls(channel, 200, WINDOW)
            count += 200
        print(f"server CPU per call: {(server.server_cpu() - cpu) / count * 1e6:.0f} us")
        await channel.close()
        return
    opener = WebsocketsPath.open if kind == "big-websockets" else BridgePath.open
    path = await opener(server.url, server.token, server.kernel_id, ECHO)
    buffers = [os.urandom(BIG_BYTES)] if kind.startswith("big") else []
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
                *os.environ.get("PY_SPY_ARGS", "").split(),
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
