"""``python -m benchmarks.many [sockets]``: 10,000 sockets on one kernel comm of one server.

Opens ``sockets`` (10,000 by default) WebSockets attached to a comm the kernel opened, from one
process of small clients of its own (a WebSocket handshake and frame parser on an asyncio
``Protocol``, a few KiB each, so that the clients' own cost does not hide the server's), then:

* the server's RSS per idle socket (its RSS with every socket open and idle, less its RSS
  before, over the sockets);
* ``BROADCASTS`` times, one kernel message to all of them: from the request to the kernel to the
  last socket's receipt (goal: under 1 s), the server's CPU per delivery, and that every socket
  got every message once (nothing lost).

The file-descriptor limit is raised to the hard limit first (the server inherits it); a
deployment needs the same: ``ulimit -n`` (or ``LimitNOFILE=`` in a systemd unit) above the
sockets it serves, plus the kernel's and the server's own.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import statistics
import struct
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from .server import Server

SOCKETS = 10_000
OPENING_AT_ONCE = 200  # handshakes in flight
BROADCASTS = 5
RSS_GOAL_KIB = 16
LATENCY_GOAL_S = 1.0
PING, PONG, CLOSE = 0x9, 0xA, 0x8


class Listener(asyncio.Protocol):
    """One socket that only listens: it counts the kernel's messages and answers pings."""

    def __init__(self, request: bytes, on_message: Any) -> None:
        self.request = request
        self.on_message = on_message
        self.upgraded = asyncio.get_running_loop().create_future()
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.received: list[int] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buffer[: self.buffer.find(b"\r\n")])
            del self.buffer[: end + 4]
            if b" 101 " not in status:
                self.upgraded.set_exception(ConnectionError(status.decode()))
                return
            self.upgraded.set_result(None)
        self._frames()

    def _frames(self) -> None:
        buffer = self.buffer
        while len(buffer) >= 2:
            opcode, length, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    return
                (length,), start = struct.unpack_from("!H", buffer, 2), 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                (length,), start = struct.unpack_from("!Q", buffer, 2), 10
            if len(buffer) < start + length:
                return
            payload = bytes(buffer[start : start + length])
            del buffer[: start + length]
            if opcode == PING:
                self._send(PONG, payload)
            elif opcode == CLOSE:
                return
            else:
                self.received.append(json.loads(payload)["k"])
                self.on_message()

    def _send(self, opcode: int, payload: bytes) -> None:
        """A client's frame is masked (RFC 6455, 5.3); a zero mask will do here."""
        assert self.transport is not None and len(payload) < 126
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)

    def close(self) -> None:
        if self.transport is not None:
            self._send(CLOSE, struct.pack("!H", 1000))
            self.transport.close()


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def main(sockets: int) -> None:
    limit = raise_fd_limit()
    if limit < sockets + 100:
        sys.exit(f"the hard limit of open files is {limit}: raise it above {sockets + 100}")
    server = await Server.start({"ServerApp": {"log_level": "WARNING"}})
    listeners: list[Listener] = []
    try:
        comm_id = await server.evaluate("fan.comm_id")
        host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
        path = (
            f"{urlsplit(server.url).path}api/transports/kernels/{server.kernel_id}/comms/{comm_id}"
        )
        expected = {"count": 0, "target": 0}
        arrived = asyncio.Event()

        def on_message() -> None:
            expected["count"] += 1
            if expected["count"] == expected["target"]:
                arrived.set()

        def request() -> bytes:
            key = base64.b64encode(os.urandom(16)).decode()
            return (
                f"GET {path}?token={server.token} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()

        await asyncio.sleep(1.0)
        rss_before = server.server_rss()
        loop = asyncio.get_running_loop()
        began = time.perf_counter()
        semaphore = asyncio.Semaphore(OPENING_AT_ONCE)

        async def open_one() -> None:
            async with semaphore:
                listener = Listener(request(), on_message)
                await loop.create_connection(lambda: listener, host, port)
                await listener.upgraded
                listeners.append(listener)

        await asyncio.gather(*(open_one() for _ in range(sockets)))
        opening = time.perf_counter() - began
        print(f"{sockets} sockets open in {opening:.1f} s", file=sys.stderr)
        await asyncio.sleep(2.0)  # idle
        rss_after = server.server_rss()
        per_socket_kib = (rss_after - rss_before) / sockets / 1024

        latencies, cpu_per_delivery = [], []
        for k in range(BROADCASTS):
            expected["count"], expected["target"] = 0, sockets
            arrived.clear()
            cpu = server.server_cpu()
            sent = time.perf_counter()
            await server.execute(f"fan.send({{'k': {k}}})")
            await asyncio.wait_for(arrived.wait(), 60)
            latencies.append(time.perf_counter() - sent)
            cpu_per_delivery.append((server.server_cpu() - cpu) / sockets * 1e6)
            await asyncio.sleep(0.5)
        lost = sum(BROADCASTS - len(set(listener.received)) for listener in listeners)
        repeated = sum(
            len(listener.received) - len(set(listener.received)) for listener in listeners
        )
        latency = statistics.median(latencies)
        print(
            f"| sockets on one comm | {sockets:,} |\n|---|---|\n"
            f"| server RSS before / with them idle (MiB) | {rss_before / 2**20:.1f} / {rss_after / 2**20:.1f} |\n"
            f"| RSS per idle socket (KiB; goal ≤ {RSS_GOAL_KIB}) | {per_socket_kib:.1f} |\n"
            f"| one broadcast to all, request to last receipt (s, median of {BROADCASTS}; goal < {LATENCY_GOAL_S:g}) | {latency:.3f} (max {max(latencies):.3f}) |\n"
            f"| server CPU per delivery (µs, median) | {statistics.median(cpu_per_delivery):.1f} |\n"
            f"| lost / repeated | {lost} / {repeated} |\n"
            f"| handshakes (s for all) | {opening:.1f} |\n"
            f"| open-file limit (raised to the hard limit) | {limit:,} |"
        )
        ok = per_socket_kib <= RSS_GOAL_KIB and latency < LATENCY_GOAL_S and lost == repeated == 0
        print("PASS" if ok else "FAIL")
    finally:
        for listener in listeners:
            listener.close()
        server.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else SOCKETS))
