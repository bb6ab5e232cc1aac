"""TCP proxies of the tests' own, between a client and the server, to make the network fail."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit


class Proxy:
    """Forwards every TCP connection it accepts to ``target``."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.frozen = False  # swallow everything both ways, and close nothing

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]  # type: ignore[no-any-return]

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        link = (writer, up_writer)
        self.links.add(link)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self.links.discard(link)
            for end in link:
                end.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if not self.frozen:
                    writer.write(data)
                    await writer.drain()

    def close(self) -> None:
        self.cut()
        self.server.close()

    def cut(self) -> bool:
        """Abort every connection, both sides, with no close frame and no FIN: what a dead
        network looks like to each end; whether there was one to cut."""
        links = list(self.links)
        for link in links:
            for end in link:
                end.transport.abort()
        return bool(links)


class CuttingProxy(Proxy):
    """A :class:`Proxy` that counts the cuts that cut something."""

    cuts = 0

    def cut(self) -> bool:
        cut = super().cut()
        self.cuts += cut
        return cut


def proxied(server_url: str, loop: Any, proxy_class: type[Proxy]) -> Iterator[tuple[Any, str]]:
    """For a fixture: (a proxy to the server, the server's URL through it)."""
    parts = urlsplit(server_url)
    proxy = proxy_class(parts.hostname or "127.0.0.1", parts.port or 80)
    port = loop.run_until_complete(proxy.start())
    yield proxy, urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
    proxy.close()
