"""The Python client's end of an RPC channel (the counterpart of the browser's ``Channel``).

    async with await Channel.open(server_url, kernel_id, "calc", token=token, handler=obj) as ch:
        assert await ch.call("add", 1, 2) == 3        # a method of the kernel's handler
        # and the kernel may call obj's methods: await channel.call("name", ...) in the kernel

Calls have no timeout unless given one (``timeout=`` in seconds); if the socket closes, pending
calls raise :class:`~.rpc.ConnectionLost`. Calls made in the same turn of the event loop (say,
by ``asyncio.gather``) leave as one comm message, a batch (see :mod:`.rpc`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from .client import CommClient
from .errors import CloseCode
from .rpc.codec import CALL, ECHO, PIPE, ConnectionLost, RemoteError, join_async_stream
from .rpc.endpoint import Endpoint

__all__ = ["Channel", "ConnectionLost", "RemoteError"]


class Channel:
    """One client's RPC channel to the kernel's ``kernel.Channel`` of the same name."""

    def __init__(
        self,
        comm: CommClient,
        handler: Any = None,
        timeout: float | None = None,
        *,
        batch: bool = True,
    ) -> None:
        """``batch=False`` sends one comm message per call and per answer (see :mod:`.rpc`)."""
        self.comm = comm
        self.handler = handler
        self.timeout = timeout
        self._endpoint = Endpoint(comm.send, lambda: self.handler, batch=batch)
        self._reader = asyncio.ensure_future(self._read())
        if comm.resumable is not None:
            comm.resumable.on_reset = self._reset

    def _reset(self, reason: str) -> None:
        """The session could not resume: an answer may be lost, and nobody can say which."""
        lost = ConnectionLost(f"the channel's session was reset ({reason}) before the answer came")
        self._endpoint.fail_pending(lost)

    @classmethod
    async def open(
        cls,
        server_url: str,
        kernel_id: str,
        name: str,
        *,
        token: str | None = None,
        handler: Any = None,
        timeout: float | None = None,
        batch: bool = True,
        session: bool = True,
        **query: Any,
    ) -> Channel:
        """Open the channel ``name`` of a kernel (a new comm to its target; over a durable
        session unless ``session`` is false, see :class:`~.resumable.ResumableSocket`)."""
        comm = await CommClient.open(
            server_url, kernel_id, name, token=token, session=session, on_reset=None, **query
        )
        return cls(comm, handler, timeout, batch=batch)

    async def call(self, name: str, *args: Any, timeout: float | None = None) -> Any:
        """The result of the kernel handler's method ``name``."""
        return await self._endpoint.request(CALL, name, args, self._timeout(timeout))

    async def call_with_stream(
        self, name: str, stream: Any, *args: Any, timeout: float | None = None
    ) -> Any:
        """Like :meth:`call`, with binary data first (bytes or an (async) iterable of chunks)."""
        data = await join_async_stream(stream)
        return await self._endpoint.request(CALL, name, (data, *args), self._timeout(timeout))

    async def echo(self, *args: Any, timeout: float | None = None) -> list[Any]:
        return await self._endpoint.request(ECHO, None, args, self._timeout(timeout))  # type: ignore[no-any-return]

    async def pipe(self, stream: Any, timeout: float | None = None) -> bytes:
        data = await join_async_stream(stream)
        return await self._endpoint.request(PIPE, None, (data,), self._timeout(timeout))  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Close the socket and wait for it to close; the kernel sees the client leave."""
        self.comm.start_closing(CloseCode.COMM_CLOSED)  # the reader drains until the close
        await self._reader

    async def __aenter__(self) -> Channel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    async def _read(self) -> None:
        try:
            async for message in self.comm:  # ends when the socket closes
                self._endpoint.receive(message.data, message.buffers)
        finally:
            code, reason = self.comm.close_code, self.comm.close_reason
            self._endpoint.close(
                ConnectionLost(f"the channel's socket closed ({code}): {reason or ''}")
            )
