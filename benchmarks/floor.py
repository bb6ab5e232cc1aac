"""``python -m benchmarks.floor``: the least CPU a Python server can spend per kernel message.

What any server that forwards one kernel comm message to one WebSocket must do, with nothing
else around it (no routing, no Tornado): receive the message's ZMQ frames, verify its signature
and parse it as jupyter_client does, encode the comm ``data`` as a frame, and write that frame to
a TCP socket; a separate process drains the socket. Two ways:

* **queued**: every message is waiting before timing starts (no event loop at all): the CPU per
  message of each step, cumulative;
* **paced**: the messages come one at a time, ``PACED_INTERVAL`` apart, as a kernel sends a
  burst it computes (the fan-out's kernel spends 70 to 130 µs per message): a bare asyncio loop
  waits on the ZMQ socket and forwards each as it arrives. A server that keeps up with its
  kernel pays the wake-up of its event loop once per message, which no queued floor shows.

The fan-out's server CPU per delivery at N = 1 compares with the paced floor.

:func:`measure_big` is the same for a 1 MiB echo: the least a relay spends moving a client's
1 MiB to the kernel and the kernel's echo back (TCP in, ZMQ out and in, TCP out), with no
WebSocket framing, no Jupyter message and no event loop. The server's CPU per 1 MiB echo
compares with it. :func:`measure_big_round_trip` is what that relay adds to a 1 MiB round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from hmac import compare_digest
from typing import Any

import zmq
from jupyter_client.session import Session

from jupyter_transports.writer import websocket_frame

MESSAGES = 5000  # per step
PACED_INTERVAL = 100e-6  # seconds between the paced messages
WHOLE = "+ write it to TCP"  # the last queued step: all a server must do per message
PACED = "paced, on an asyncio loop"
KEY = b"benchmark"
DRAIN = "import socket, sys\ns = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\nwhile s.recv(1 << 20): pass"
# Publishes MESSAGES comm messages INTERVAL apart (a busy wait: sleep is too coarse).
PACER = """
import sys, time, zmq
from jupyter_client.session import Session
count, interval = int(sys.argv[1]), float(sys.argv[2])
context = zmq.Context()
publisher = context.socket(zmq.PUB)
publisher.sndhwm = 0
print(publisher.bind_to_random_port("tcp://127.0.0.1"), flush=True)
time.sleep(1.0)  # the subscriber connects, and its subscription reaches the publisher
session = Session(key=b"benchmark")
parent = session.msg("comm_msg", {})["header"]
due = time.perf_counter()
for i in range(count):
    session.send(publisher, "comm_msg", {"comm_id": "c" * 32, "data": {"i": i, "pad": "x" * 64}}, parent=parent)
    due += interval
    while time.perf_counter() < due:
        pass
publisher.close(linger=-1)  # every message out before the process ends
context.term()
"""


BIG_BYTES = 1024 * 1024
BIG_MESSAGES = 64
BIG_WARMUP = 16  # echoes before the timing: the first ones fault in every buffer on the way
BIG_WINDOW = 4  # in flight, as the echo benchmark keeps them
# Sends BIG_MESSAGES of BIG_BYTES, BIG_WINDOW in flight, and reads each echo back.
BIG_CLIENT = """
import os, socket, sys
port, size, count, window = (int(a) for a in sys.argv[1:5])
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
blob, echo = os.urandom(size), memoryview(bytearray(size))
for _ in range(min(window, count)):
    s.sendall(blob)
for i in range(count):
    got = 0
    while got < size:
        got += s.recv_into(echo[got:])
    if i + window < count:
        s.sendall(blob)
"""
# The kernel's side: echoes each ZMQ message it gets.
BIG_PEER = """
import sys, zmq
context = zmq.Context()
peer = context.socket(zmq.PAIR)
peer.connect(sys.argv[1])
for _ in range(int(sys.argv[2])):
    peer.send(peer.recv(copy=False), copy=False)
peer.close(linger=-1)
context.term()
"""


class Rig:
    """A SUB socket the kernel's messages come to, a TCP client they go out on, and the steps."""

    def __init__(self, count: int, interval: float) -> None:
        self.publisher = subprocess.Popen(
            [sys.executable, "-c", PACER, str(count), str(interval)], stdout=subprocess.PIPE
        )
        assert self.publisher.stdout is not None
        port = int(self.publisher.stdout.readline())
        self.context = zmq.Context()
        self.subscriber = self.context.socket(zmq.SUB)
        self.subscriber.rcvhwm = 0  # queue every message; drop none
        self.subscriber.setsockopt(zmq.SUBSCRIBE, b"")
        self.subscriber.connect(f"tcp://127.0.0.1:{port}")
        self.session = Session(key=KEY)
        listener = socket.create_server(("127.0.0.1", 0))
        self.drain = subprocess.Popen([sys.executable, "-c", DRAIN, str(listener.getsockname()[1])])
        self.client, _ = listener.accept()
        self.client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listener.close()

    def receive(self) -> list[zmq.Frame]:
        frame = self.subscriber.recv(zmq.NOBLOCK, copy=False)
        frames = [frame]
        while frame.more:
            frame = self.subscriber.recv(copy=False)
            frames.append(frame)
        return frames

    def parse(self, frames: list[zmq.Frame]) -> dict[str, Any]:
        session = self.session
        _, frames = session.feed_identities(frames, copy=False)
        signature, header, parent_header, metadata, content = (f.bytes for f in frames[:5])
        if not compare_digest(signature, session.sign([header, parent_header, metadata, content])):
            raise SystemExit("invalid signature")
        json.loads(header), json.loads(parent_header), json.loads(metadata)
        return json.loads(content)  # type: ignore[no-any-return]

    def encode(self, frames: list[zmq.Frame]) -> bytes:
        return websocket_frame(json.dumps(self.parse(frames)["data"], separators=(",", ":")))

    def forward(self, frames: list[zmq.Frame]) -> None:
        self.client.sendall(self.encode(frames))

    def close(self) -> None:
        self.publisher.wait()
        self.client.close()
        self.drain.wait()
        self.subscriber.close()
        self.context.term()


def measure() -> dict[str, float]:
    """The CPU per message of each step (queued), cumulative, in µs."""
    rig = Rig(MESSAGES * 4, 0.0)  # all queued, as fast as the publisher can
    steps: list[tuple[str, Callable[[list[zmq.Frame]], Any]]] = [
        ("receive the frames", lambda frames: frames),
        ("+ verify and parse", rig.parse),
        ("+ encode the frame", rig.encode),
        (WHOLE, rig.forward),
    ]
    rig.publisher.wait()
    time.sleep(1.0)  # on the subscriber's side
    figures = {}
    for name, step in steps:
        began = time.thread_time()
        for _ in range(MESSAGES):
            while True:
                try:
                    frames = rig.receive()
                    break
                except zmq.Again:
                    time.sleep(0.001)
            step(frames)
        figures[name] = (time.thread_time() - began) / MESSAGES * 1e6
    rig.close()
    return figures


def measure_paced(interval: float = PACED_INTERVAL, count: int = MESSAGES) -> float:
    """The CPU per message, in µs, of a bare asyncio loop that forwards each message as it
    comes, ``interval`` seconds after the one before."""
    rig = Rig(count, interval)

    async def forward_all() -> float:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        received = 0
        began = 0.0

        def readable() -> None:
            nonlocal received, began
            while rig.subscriber.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                frames = rig.receive()
                if received == 0:
                    began = time.thread_time()
                rig.forward(frames)
                received += 1
                if received == count and not done.done():
                    done.set_result(time.thread_time() - began)

        loop.add_reader(rig.subscriber.getsockopt(zmq.FD), readable)
        readable()  # edge-triggered: what came before the reader was added
        seconds: float = await done
        loop.remove_reader(rig.subscriber.getsockopt(zmq.FD))
        return seconds / (count - 1) * 1e6

    try:
        return asyncio.run(forward_all())
    finally:
        rig.close()


@contextlib.contextmanager
def _relay(peer_count: int) -> Iterator[zmq.Socket[Any]]:
    """A ZMQ socket to a peer process that echoes ``peer_count`` messages (the kernel's part)."""
    context = zmq.Context()
    relay = context.socket(zmq.PAIR)
    port = relay.bind_to_random_port("tcp://127.0.0.1")
    args = [f"tcp://127.0.0.1:{port}", str(peer_count)]
    peer = subprocess.Popen([sys.executable, "-c", BIG_PEER, *args])
    try:
        yield relay
    finally:
        peer.wait()
        relay.close()
        context.term()


def _relayed(relay: zmq.Socket[Any], count: int, window: int) -> Iterator[None]:
    """Relay ``count`` 1 MiB echoes of a client process (``window`` in flight) to the peer; a
    step per echo, at its end."""
    listener = socket.create_server(("127.0.0.1", 0))
    args = [listener.getsockname()[1], BIG_BYTES, count, window]
    client = subprocess.Popen([sys.executable, "-c", BIG_CLIENT, *map(str, args)])
    connection, _ = listener.accept()
    listener.close()
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # one buffer for every message: the echo's arrival means ZMQ is done sending it
    buffer = memoryview(bytearray(BIG_BYTES))
    with connection:
        for _ in range(count):
            got = 0
            while got < BIG_BYTES:
                got += connection.recv_into(buffer[got:])
            relay.send(buffer, copy=False)
            connection.sendall(relay.recv(copy=False).buffer)
            yield
    client.wait()


def measure_big(count: int = BIG_MESSAGES) -> float:
    """The CPU, in ms, a relay spends per 1 MiB echo: a TCP read into a buffer it reuses, a
    zero-copy ZMQ send to a peer that echoes it, a ZMQ receive of the echo, a TCP write of it.
    All threads of this process count (ZMQ's I/O thread too), as they do for the server."""
    with _relay(count) as relay:
        for i, _ in enumerate(_relayed(relay, count, BIG_WINDOW)):
            if i + 1 == BIG_WARMUP:
                began = time.process_time()
        return (time.process_time() - began) / (count - BIG_WARMUP) * 1e3


def measure_big_round_trip(count: int = BIG_MESSAGES) -> float:
    """The ms a relay adds to a 1 MiB round trip (one at a time, medians): this process's
    echoes straight to the peer over ZMQ, against a client's through the relay of
    :func:`measure_big`. Any server between a client and the kernel adds at least this to A's
    round trip, which it cannot start to forward before the whole message has come."""
    blob = os.urandom(BIG_BYTES)
    direct, relayed = [], []
    with _relay(2 * count) as relay:
        for _ in range(count):
            began = time.perf_counter()
            relay.send(blob, copy=False)
            relay.recv(copy=False)
            direct.append(time.perf_counter() - began)
        began = time.perf_counter()
        for _ in _relayed(relay, count, 1):  # each step waits for the client's next message
            relayed.append(time.perf_counter() - began)
            began = time.perf_counter()
    added = statistics.median(relayed[BIG_WARMUP:]) - statistics.median(direct[BIG_WARMUP:])
    return added * 1e3


def main() -> None:
    for name, us in measure().items():
        print(f"{name:26} {us:5.1f} µs per message")
    print(f"{PACED:26} {measure_paced():5.1f} µs per message ({PACED_INTERVAL * 1e6:.0f} µs apart)")
    print(f"{'1 MiB echo, relayed':26} {measure_big():5.2f} ms per echo")
    print(f"{'1 MiB round trip, relayed':26} {measure_big_round_trip():+5.2f} ms against direct")


if __name__ == "__main__":
    main()
