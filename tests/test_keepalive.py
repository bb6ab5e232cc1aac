"""A connection that dies without a word is noticed by the keep-alive pings (issue 13, item 10)."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit

import pytest

from jupyter_transports.client import CommClient

from .conftest import TIMEOUT


class FreezingProxy:
    """Forwards TCP connections until :meth:`freeze`, then swallows everything both ways and
    closes nothing: a network that went away (a laptop asleep, a cable pulled)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.frozen = False
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]  # type: ignore[no-any-return]

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if not self.frozen:
                    writer.write(data)
                    await writer.drain()

    def close(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.server.close()


@pytest.fixture
def frozen_url(server_url, jp_asyncio_loop):
    parts = urlsplit(server_url)
    proxy = FreezingProxy(parts.hostname, parts.port)
    port = jp_asyncio_loop.run_until_complete(proxy.start())
    yield proxy, urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
    proxy.close()


@pytest.mark.parametrize(
    "transports_config", [{"socket_ping_interval": 0.2, "socket_ping_timeout": 0.6}]
)
async def test_a_silent_network_death_closes_the_comm_within_the_ping_timeout(
    kernel, token, frozen_url
):
    proxy, url = frozen_url
    comm = await CommClient.open(url, kernel.id, "echo", token=token, session=False)
    await comm.send("alive")
    assert (await asyncio.wait_for(comm.recv(), TIMEOUT)).data == "alive"
    proxy.frozen = True  # no more bytes either way, and no FIN
    loop = asyncio.get_running_loop()
    start = loop.time()
    while await kernel.comm_ids("echo"):  # the owner's socket is closed: its comm with it
        assert loop.time() - start < 3, "the server did not notice the dead connection"
        await asyncio.sleep(0.1)
    comm.start_closing()
