"""``python -m benchmarks.floor``: the least CPU a Python server can spend per kernel message.

What any server that forwards one kernel comm message to one WebSocket must do, with nothing
else around it (no event loop, no routing, no Tornado): receive the message's ZMQ frames, verify
its signature and parse it as jupyter_client does, encode the comm ``data`` as a frame, and write
that frame to a TCP socket. The messages are all queued before timing starts, and a separate
process drains the socket. The per-message CPU of each step, cumulative, is what the fan-out's
server CPU per delivery at N = 1 can be compared with.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from hmac import compare_digest
from typing import Any

import zmq
from jupyter_client.session import Session

from jupyter_transports.writer import websocket_frame

MESSAGES = 5000  # per step
WHOLE = "+ write it to TCP"  # the last step: all a server must do per message
DRAIN = "import socket, sys\ns = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\nwhile s.recv(1 << 20): pass"


def measure() -> dict[str, float]:
    """The CPU per message of each step, cumulative, in µs."""
    context = zmq.Context()
    publisher, subscriber = context.socket(zmq.PUB), context.socket(zmq.SUB)
    publisher.sndhwm = subscriber.rcvhwm = 0  # queue every message; drop none
    port = publisher.bind_to_random_port("tcp://127.0.0.1")
    subscriber.connect(f"tcp://127.0.0.1:{port}")
    subscriber.setsockopt(zmq.SUBSCRIBE, b"")
    time.sleep(0.3)  # the subscription reaches the publisher

    session = Session(key=b"benchmark")
    parent = session.msg("comm_msg", {})["header"]
    listener = socket.create_server(("127.0.0.1", 0))
    drain = subprocess.Popen([sys.executable, "-c", DRAIN, str(listener.getsockname()[1])])
    client, _ = listener.accept()
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def parse(frames: list[zmq.Frame]) -> dict[str, Any]:
        _, frames = session.feed_identities(frames, copy=False)
        signature, header, parent_header, metadata, content = (f.bytes for f in frames[:5])
        if not compare_digest(signature, session.sign([header, parent_header, metadata, content])):
            raise SystemExit("invalid signature")
        json.loads(header), json.loads(parent_header), json.loads(metadata)
        return json.loads(content)  # type: ignore[no-any-return]

    def encode(frames: list[zmq.Frame]) -> bytes:
        return websocket_frame(json.dumps(parse(frames)["data"], separators=(",", ":")))

    steps: list[tuple[str, Callable[[list[zmq.Frame]], Any]]] = [
        ("receive the frames", lambda frames: frames),
        ("+ verify and parse", parse),
        ("+ encode the frame", encode),
        (WHOLE, lambda frames: client.sendall(encode(frames))),
    ]
    for i in range(MESSAGES * len(steps)):
        content = {"comm_id": "c" * 32, "data": {"i": i, "pad": "x" * 64}}
        session.send(publisher, "comm_msg", content, parent=parent)
    time.sleep(1.0)  # all queued on the subscriber's side

    figures = {}
    for name, step in steps:
        began = time.thread_time()
        for _ in range(MESSAGES):
            frame = subscriber.recv(copy=False)
            frames = [frame]
            while frame.more:
                frame = subscriber.recv(copy=False)
                frames.append(frame)
            step(frames)
        figures[name] = (time.thread_time() - began) / MESSAGES * 1e6
    client.close()
    drain.wait()
    publisher.close()
    subscriber.close()
    context.term()
    return figures


def main() -> None:
    for name, us in measure().items():
        print(f"{name:20} {us:5.1f} µs per message")


if __name__ == "__main__":
    main()
