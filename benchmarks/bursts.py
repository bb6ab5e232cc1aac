"""``python -m benchmarks.bursts [bursts]``: a kernel's bursts on a busy machine, and where what
is lost goes missing.

While a process of its own keeps one core busy, the kernel sends ``bursts`` (100 by default)
bursts of ``FAN_OUT[1]`` comm messages to one socket, first a stock ipykernel's, then one whose
iopub socket holds ``IOPUB_HWM`` messages per subscriber before it drops (set before ipykernel
binds it: set after, it reaches no connection; ipykernel has no setting for it). For each kernel
it prints the bursts that lost messages and where they went missing: before the server (the
kernel's comm messages the bridge never received, from ``/api/transports/status``) or after it.

What it showed on 2 cores: the stock kernel lost 4,349 messages in 10 of 100 bursts, all before
the server; the other lost none. ipykernel publishes through ZeroMQ's default high-water mark,
1,000 messages, and drops what its own sending falls further behind, whatever its subscribers'
speed (the bridge's iopub socket holds 100,000 and a large TCP buffer).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from typing import Any

from .run import FAN_OUT, burst
from .server import Server

BURSTS = 100
IOPUB_HWM = 100_000  # messages

# A kernel launcher: ipykernel, its iopub socket given a higher send high-water mark first.
IOPUB_HWM_KERNEL = textwrap.dedent(
    f"""
    import zmq
    from ipykernel.kernelapp import IPKernelApp

    class App(IPKernelApp):
        def _bind_socket(self, socket, port):
            if socket.socket_type == zmq.XPUB:
                socket.sndhwm = {IOPUB_HWM}
            return super()._bind_socket(socket, port)

    App.launch_instance()
    """
)


async def run(server: Server, bursts: int) -> dict[str, Any]:
    """The bursts' losses on ``server``'s kernel, with a process hogging one core meanwhile."""
    comm_id = await server.evaluate("fan.comm_id")
    hwm = await server.evaluate("get_ipython().kernel.iopub_thread.socket.sndhwm")
    totals = {"bursts with loss": 0, "lost before the server": 0, "lost after it": 0}
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        for _ in range(bursts):
            routed = _routed(server)
            result = await burst(server, "bridge", comm_id, 1)
            before = result["messages"] - (_routed(server) - routed)
            totals["bursts with loss"] += result["lost"] > 0
            totals["lost before the server"] += before
            totals["lost after it"] += result["lost"] - before
    finally:
        hog.kill()
        hog.wait()
    return {"kernel's iopub high-water mark": hwm, **totals}


def _routed(server: Server) -> int:
    """The kernel's comm messages the bridge has routed (to the one socket attached)."""
    return int(server.transports_status().get("messages_from_kernel", 0))


async def main(bursts: int) -> None:
    print(f"{bursts} bursts of {FAN_OUT[1]} messages to one socket, one core kept busy")
    for argv in (None, [sys.executable, "-c", IOPUB_HWM_KERNEL, "-f", "{connection_file}"]):
        server = await Server.start({}, kernel_argv=argv)
        try:
            figures = await run(server, bursts)
        finally:
            server.stop()
        print(", ".join(f"{name}: {value}" for name, value in figures.items()))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else BURSTS))
