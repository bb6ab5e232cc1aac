"""The kernel's end of RPC channels: call the browsers' handlers, answer their calls.

Runs inside the kernel, so it imports only the standard library and ``comm``, never
jupyter_server. The shape is jupyter-jchannel's (``Channel``, ``call``, ``call_with_stream``,
``echo``, ``pipe``, ``handler``, timeouts in seconds, calls returning awaitable tasks)::

    from jupyter_transports.kernel import Channel

    class Handler:
        def add(self, a, b):               # browsers: await channel.call("add", 1, 2)
            return a + b

    channel = Channel("calc", Handler())   # a comm target named "calc"
    await channel.call("alert", "hello", timeout=3)           # one page answers
    await channel.call("title", to="all")                     # {client id: result} of every page

How clients are known (decided by the server, never guessed here): every client of a channel
opens its own comm to the channel's target through the bridge, so the kernel receives a
``comm_open`` carrying ``metadata.transports.client`` when a client arrives, and the bridge
sends ``comm_close`` for that comm the moment its socket goes away. A call therefore knows
exactly who can answer it, and learns at once when its client leaves.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .protocol import CLIENT_KEY, METADATA_KEY, SENT_KEY, USER_KEY
from .rpc.codec import (
    CALL,
    ECHO,
    PIPE,
    ConnectionLost,
    NoClient,
    RemoteError,
    join_async_stream,
)
from .rpc.endpoint import DEFAULT_TIMEOUT, Endpoint

ANY = "any"
ALL = "all"

__all__ = ["ALL", "ANY", "Channel", "ConnectionLost", "NoClient", "RemoteError", "publish"]


@dataclass
class Peer:
    """One client of the channel: its comm and the conversation on it."""

    id: str
    user: str | None
    comm: Any
    endpoint: Endpoint


class Channel:
    """An RPC channel to every browser (or other client) that opens the comm target ``name``."""

    def __init__(
        self, name: str, handler: Any = None, *, comm_manager: Any = None, batch: bool = True
    ) -> None:
        """``batch=False`` sends one comm message per call and per answer (see :mod:`.rpc`)."""
        if not isinstance(name, str) or not name:
            raise ValueError("a channel needs a non-empty name (its comm target name)")
        if comm_manager is None:
            import comm  # ipykernel installs its comm manager here

            comm_manager = comm.get_comm_manager()
        self.name = name
        self.handler = handler
        self.batch = batch
        self._comm_manager = comm_manager
        self._peers: dict[str, Peer] = {}
        self._arrivals: set[asyncio.Future[None]] = set()
        self._caller: contextvars.ContextVar[str | None] = contextvars.ContextVar(
            f"jupyter_transports.caller.{name}", default=None
        )
        self.closed = False
        comm_manager.register_target(name, self._on_open)

    # -- who is there --------------------------------------------------------------------------

    @property
    def clients(self) -> dict[str, str | None]:
        """The connected clients: client id -> user name, oldest first."""
        return {peer.id: peer.user for peer in self._peers.values()}

    @property
    def caller(self) -> str | None:
        """Inside a handler method: the id of the client whose call is being answered."""
        return self._caller.get()

    async def wait_for_client(self, timeout: float | None = DEFAULT_TIMEOUT) -> str:
        """The id of a connected client, waiting at most ``timeout`` seconds for one to arrive."""
        try:
            return await asyncio.wait_for(self._next_peer(set()), timeout)
        except asyncio.TimeoutError:
            raise NoClient(f"no client opened channel {self.name!r} within {timeout} s") from None

    # -- calls -----------------------------------------------------------------------------------

    def call(
        self, name: str, *args: Any, timeout: float | None = DEFAULT_TIMEOUT, to: str = ANY
    ) -> asyncio.Task[Any]:
        """Call the clients' handler method ``name``; await the task for its result.

        ``to`` is ``"any"`` (one client; if it leaves before answering, another one is asked),
        ``"all"`` (a dict of client id -> result, or -> the exception that client raised), or a
        client id. A client's exception raises :class:`RemoteError` with its type and message;
        no answer within ``timeout`` seconds raises :class:`TimeoutError`.
        """
        if not isinstance(name, str):
            raise TypeError("the method name must be a string")
        return self._start(CALL, name, args, timeout, to)

    def call_with_stream(
        self,
        name: str,
        stream: Any,
        *args: Any,
        timeout: float | None = DEFAULT_TIMEOUT,
        to: str = ANY,
    ) -> asyncio.Task[Any]:
        """Like :meth:`call`, with binary data (bytes, or an (async) iterable of chunks) first.

        The data travels as one comm buffer; the client's handler receives a ``Uint8Array``.
        """

        async def joined() -> Any:
            data = await join_async_stream(stream)
            return await self._route(CALL, name, (data, *args), timeout, to)

        return asyncio.ensure_future(joined())

    def echo(
        self, *args: Any, timeout: float | None = DEFAULT_TIMEOUT, to: str = ANY
    ) -> asyncio.Task[Any]:
        """The arguments back from a client, as a list: checks that they survive the trip."""
        return self._start(ECHO, None, args, timeout, to)

    def pipe(
        self, stream: Any, timeout: float | None = DEFAULT_TIMEOUT, to: str = ANY
    ) -> asyncio.Task[Any]:
        """Binary data to a client and back (as bytes): checks the binary path."""

        async def joined() -> Any:
            data = await join_async_stream(stream)
            return await self._route(PIPE, None, (data,), timeout, to)

        return asyncio.ensure_future(joined())

    def close(self) -> None:
        """Stop being a comm target; close every client's comm (their sockets close with 1000)."""
        if self.closed:
            return
        self.closed = True
        if getattr(self._comm_manager, "targets", {}).get(self.name) == self._on_open:
            self._comm_manager.unregister_target(self.name, self._on_open)  # not a newer channel's
        for peer in list(self._peers.values()):
            peer.comm.close()
            self._leave(peer.id)

    # -- routing -----------------------------------------------------------------------------

    def _start(
        self, kind: str, name: str | None, args: tuple[Any, ...], timeout: float | None, to: str
    ) -> asyncio.Task[Any]:
        return asyncio.ensure_future(self._route(kind, name, args, timeout, to))

    async def _route(
        self, kind: str, name: str | None, args: tuple[Any, ...], timeout: float | None, to: str
    ) -> Any:
        if self.closed:
            raise ConnectionLost(f"channel {self.name!r} is closed")
        if not isinstance(to, str):
            raise TypeError(f'to must be "any", "all" or a client id, not {to!r}')
        if to == ALL:
            return await self._to_all(kind, name, args, timeout)
        if to == ANY:
            return await self._to_any(kind, name, args, timeout)
        peer = self._peers.get(to)
        if peer is None:
            raise NoClient(f"client {to!r} is not connected to channel {self.name!r}")
        return await peer.endpoint.request(kind, name, args, timeout)

    async def _to_any(
        self, kind: str, name: str | None, args: tuple[Any, ...], timeout: float | None
    ) -> Any:
        """Ask one client; if it leaves before answering, ask the next, within one deadline."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        tried: set[str] = set()

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - loop.time())

        while True:
            try:
                peer_id = await asyncio.wait_for(self._next_peer(tried), left())
            except asyncio.TimeoutError:
                gone = f" ({len(tried)} left before answering)" if tried else ""
                raise NoClient(f"no client of channel {self.name!r} could answer{gone}") from None
            tried.add(peer_id)
            try:  # what is left of the deadline once a client was found
                return await self._peers[peer_id].endpoint.request(kind, name, args, left())
            except ConnectionLost:
                continue

    async def _to_all(
        self, kind: str, name: str | None, args: tuple[Any, ...], timeout: float | None
    ) -> dict[str, Any]:
        peers = list(self._peers.values())
        results = await asyncio.gather(
            *(peer.endpoint.request(kind, name, args, timeout) for peer in peers),
            return_exceptions=True,
        )
        return {peer.id: result for peer, result in zip(peers, results, strict=True)}

    async def _next_peer(self, tried: set[str]) -> str:
        """A connected client not in ``tried``, waiting for one to arrive if need be."""
        while True:
            for peer_id in self._peers:
                if peer_id not in tried:
                    return peer_id
            arrival = asyncio.get_running_loop().create_future()
            self._arrivals.add(arrival)
            try:
                await arrival
            finally:
                self._arrivals.discard(arrival)

    # -- the comms ---------------------------------------------------------------------------

    def _on_open(self, comm: Any, open_msg: Mapping[str, Any]) -> None:
        who = (open_msg.get("metadata") or {}).get(METADATA_KEY) or {}
        peer_id = str(who.get(CLIENT_KEY) or comm.comm_id)  # a frontend without the bridge
        numbers = itertools.count(1)  # the bridge counts gaps in them as lost messages
        endpoint = Endpoint(
            lambda data, buffers: comm.send(
                data, metadata={METADATA_KEY: {SENT_KEY: next(numbers)}}, buffers=buffers
            ),
            lambda: self.handler,
            on_call=functools.partial(self._caller.set, peer_id),  # who calls, for a handler
            batch=self.batch,
        )
        self._peers[peer_id] = Peer(peer_id, who.get(USER_KEY), comm, endpoint)
        comm.on_msg(lambda msg: endpoint.receive(msg["content"]["data"], msg.get("buffers") or ()))
        comm.on_close(lambda msg: self._leave(peer_id))
        for arrival in self._arrivals:
            if not arrival.done():
                arrival.set_result(None)

    def _leave(self, peer_id: str) -> None:
        peer = self._peers.pop(peer_id, None)
        if peer is not None:
            peer.endpoint.close(ConnectionLost(f"client {peer_id} left channel {self.name!r}"))


def publish(widget: Any, name: str) -> None:
    """Name an ipywidgets or anywidget widget for web pages (``widgets.render(el, name)``); see
    :mod:`jupyter_transports.widgets`, imported here only when called."""
    from .widgets import publish as publish_widget

    publish_widget(widget, name)
