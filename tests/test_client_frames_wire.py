"""The server's own frame reader on the wire: hand-made frames (fragments, control frames between
them, broken sequences, reserved bits, unmasked and oversized messages) from a raw TCP client,
against a real server and kernel. A broken sequence ends its connection as tornado's reader
does, with nothing in the server's log and the server serving the next client."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import struct
from urllib.parse import urlsplit

import pytest

from jupyter_transports.client_socket import comm_url
from jupyter_transports.framing import pack_binary, unpack_binary

from .conftest import TIMEOUT, Kernel

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
LIMIT = 512 * 1024  # max_message_bytes of these tests


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True
) -> bytes:
    """One client frame (RFC 6455, 5.2), masked unless told otherwise."""
    first = (0x80 if fin else 0) | rsv | opcode
    key = os.urandom(4) if mask else b""
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, bit | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if not mask:
        return head + payload
    whole = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(whole, "big")).to_bytes(n, "big")
    return head + key + masked


class RawSocket:
    """A WebSocket client that writes whatever bytes it is given and reads frames back (a plain
    socket: what the server sent before a reset is still read, which asyncio's streams drop)."""

    def __init__(self, sock: socket.socket, received: bytes) -> None:
        self.sock, self.received = sock, received
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def connect(cls, url: str) -> RawSocket:
        parts = urlsplit(url)
        sock = socket.create_connection((parts.hostname, parts.port))
        sock.setblocking(False)
        key = base64.b64encode(os.urandom(16)).decode()
        await asyncio.get_running_loop().sock_sendall(
            sock,
            f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode(),
        )
        raw = cls(sock, b"")
        while b"\r\n\r\n" not in raw.received:
            raw.received += await raw._chunk()
        head, raw.received = raw.received.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        return raw

    async def _chunk(self) -> bytes:
        chunk = await asyncio.wait_for(self.loop.sock_recv(self.sock, 1 << 20), TIMEOUT)
        if not chunk:
            raise EOFError
        return chunk

    async def _exactly(self, n: int) -> bytes:
        while len(self.received) < n:
            self.received += await self._chunk()
        data, self.received = self.received[:n], self.received[n:]
        return data

    async def send(self, *frames: bytes) -> None:
        for data in frames:
            await self.loop.sock_sendall(self.sock, data)

    async def recv(self) -> tuple[int, bytes]:
        """(opcode, payload) of the server's next frame (unmasked, never fragmented)."""
        first, second = await self._exactly(2)
        n = second & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self._exactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self._exactly(8))
        return first & 0x0F, await self._exactly(n)

    async def ended(self) -> bytes:
        """What the server sent before it ended the connection: with a close, or with a reset
        when bytes of ours were left unread."""
        try:
            while True:
                self.received += await self._chunk()
        except (EOFError, ConnectionResetError):
            return self.received

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def transports_config() -> dict[str, int]:
    return {"max_message_bytes": LIMIT}


@pytest.fixture
def url(server_url: str, token: str, kernel: Kernel) -> str:
    return comm_url(server_url, kernel.id, "targets", "echo", token=token)


async def test_fragments_with_control_frames_between_them_arrive_whole(url):
    """A ping between the fragments of a large message is answered at once; the message,
    small and large fragments alike, arrives whole; so do one-frame unmasked ones (tornado
    takes them, and so does the server)."""
    client = await RawSocket.connect(url)
    payload = os.urandom(300_000)
    message = pack_binary(b'{"n": 1}', [payload])
    await client.send(
        frame(BINARY, message[:5], fin=False),
        frame(CONTINUATION, message[5:200_000], fin=False),
        frame(PING, b"between"),
    )
    assert await client.recv() == (PONG, b"between")
    await client.send(frame(CONTINUATION, message[200_000:], fin=True))
    opcode, echoed = await client.recv()
    head, buffers = unpack_binary(echoed)
    assert opcode == BINARY and json.loads(bytes(head)) == {"n": 1}
    assert bytes(buffers[0]) == payload
    for size in (10, 100_000):
        text = json.dumps({"unmasked": "x" * size}).encode()
        await client.send(frame(TEXT, text, mask=False))
        opcode, echoed = await client.recv()
        assert opcode == TEXT and json.loads(echoed) == json.loads(text)
    client.close()


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([frame(CONTINUATION, b"{}")], id="continuation-of-nothing"),
        pytest.param([frame(CONTINUATION, b"x" * 70_000)], id="large-continuation-of-nothing"),
        pytest.param(
            [frame(TEXT, b"{", fin=False), frame(TEXT, b"{}")], id="new-message-before-the-end"
        ),
        pytest.param(
            [frame(BINARY, b"x" * 70_000, fin=False), frame(BINARY, b"x" * 70_000)],
            id="large-new-message-before-the-end",
        ),
        pytest.param([frame(TEXT, b"{}", rsv=0x40)], id="reserved-bit-without-extension"),
        pytest.param([frame(PING, b"x" * 126)], id="control-frame-too-long"),
        pytest.param([frame(PING, b"x", fin=False)], id="fragmented-control-frame"),
    ],
)
async def test_a_broken_sequence_ends_its_connection_and_nothing_else(url, caplog, frames):
    client = await RawSocket.connect(url)
    await client.send(*frames)
    assert await client.ended() == b""  # dropped as tornado's reader drops it: no close frame
    client.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    other = await RawSocket.connect(url)  # the server serves the next client
    await other.send(frame(TEXT, b'{"still": "here"}'))
    assert await other.recv() == (TEXT, b'{"still":"here"}')
    other.close()


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        pytest.param(
            [frame(BINARY, b"x" * (LIMIT // 2 + 1), fin=False)] * 2 + [frame(CONTINUATION, b"")],
            1009,
            id="fragments-over-the-limit",
        ),
        pytest.param([frame(TEXT, b"\xff" * 100_000)], 1007, id="large-text-not-utf8"),
        pytest.param(
            [frame(TEXT, b'{"a": "', fin=False), frame(CONTINUATION, b"\xc3\x28" * 40_000)],
            1007,
            id="fragmented-text-not-utf8",
        ),
    ],
)
async def test_messages_refused_with_their_close_codes(url, frames, code):
    client = await RawSocket.connect(url)
    await client.send(*frames)
    rest = await client.ended()
    assert rest[0] & 0x0F == CLOSE and struct.unpack("!H", rest[2:4])[0] == code
    client.close()


async def test_a_connection_cut_in_a_large_payload_frees_its_buffer(jp_serverapp, url):
    """A client gone halfway through a large frame: its connection ends and the pooled buffer
    it was read into is lent again to the next large message."""
    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_transports"]
    client = await RawSocket.connect(url)
    whole = frame(BINARY, pack_binary(b"{}", [os.urandom(200_000)]))
    await client.send(whole[: len(whole) // 2])
    await asyncio.sleep(0.2)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # a reset: the client is gone
    await asyncio.sleep(0.2)
    other = await RawSocket.connect(url)
    for _ in range(3):
        await other.send(whole)
        assert (await other.recv())[0] == BINARY
    other.close()
    assert len(app.read_buffers.buffers) <= 2
