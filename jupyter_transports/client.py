"""An async Python client of bridged comms, speaking the same frames as the browser.

    async with await CommClient.open(server_url, kernel_id, "echo", token=token) as comm:
        await comm.send({"hello": "kernel"})
        reply = await comm.recv()          # a Message: .data and .buffers

A refused handshake raises :class:`Refused` (with the HTTP status); once the comm ends,
:meth:`CommClient.recv` raises :class:`CommClosed` (with the close code and reason).

By default a comm travels over a durable session (contract v2; :mod:`.resumable`): a dropped
connection is resumed with nothing lost or repeated, and :attr:`CommClient.outcome` and
:attr:`CommClient.reason` say how the latest connection began. ``session=False`` (or
``frames="text"``, which sessions do not take) gives one plain v1 socket, whose first drop ends
the comm.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tornado.websocket import WebSocketClientConnection

from .client_socket import CommClosed, Message, Refused, Socket, TransportsClientError, comm_url
from .errors import CloseCode
from .framing import Buffers, FrameMode
from .resumable import ResumableSocket
from .session import Outcome, Reason

__all__ = ["CommClient", "CommClosed", "Message", "Refused", "TransportsClientError", "comm_url"]


class CommClient:
    """One kernel comm, over a durable session or over one plain socket."""

    def __init__(self, link: Socket | ResumableSocket) -> None:
        self.link = link

    @classmethod
    async def open(
        cls,
        server_url: str,
        kernel_id: str,
        target_name: str,
        *,
        token: str | None = None,
        data: dict[str, Any] | None = None,
        frames: str = FrameMode.JSON.value,
        session: bool = True,
        on_reset: Callable[[str], None] | None = None,
        on_lost: Callable[[int], None] | None = None,
        on_presence: Callable[[dict[str, dict[str, Any]]], None] | None = None,
        **query: str,
    ) -> CommClient:
        """Open a new comm to ``target_name``; it closes when this client does.

        ``on_reset(reason)`` is called when a reconnection could not resume the session;
        ``on_lost(count)`` when the server says ``count`` kernel messages on the comm never
        reached it (both: sessions only; the application should resynchronise its state);
        ``on_presence(roster)`` when who is on the comm changes (a session that passed
        ``presence="1"``, on a comm whose kernel opted in).
        """
        if data is not None:
            query["data"] = json.dumps(data)
        url = comm_url(server_url, kernel_id, "targets", target_name, **query, frames=frames)
        session = session and frames == FrameMode.JSON.value
        return await cls._start(
            url, token, session, on_reset=on_reset, on_lost=on_lost, on_presence=on_presence
        )

    @classmethod
    async def attach(
        cls,
        server_url: str,
        kernel_id: str,
        comm_id: str,
        *,
        token: str | None = None,
        frames: str = FrameMode.JSON.value,
        session: bool = True,
        on_reset: Callable[[str], None] | None = None,
        on_lost: Callable[[int], None] | None = None,
        on_presence: Callable[[dict[str, dict[str, Any]]], None] | None = None,
        **query: str,
    ) -> CommClient:
        """Attach to an existing comm (e.g. a widget's); options as for :meth:`open`."""
        url = comm_url(server_url, kernel_id, "comms", comm_id, **query, frames=frames)
        session = session and frames == FrameMode.JSON.value
        return await cls._start(
            url, token, session, on_reset=on_reset, on_lost=on_lost, on_presence=on_presence
        )

    @classmethod
    async def connect(
        cls, url: str, *, token: str | None = None, headers: dict[str, str] | None = None
    ) -> CommClient:
        """One plain socket to an endpoint's ``ws(s)://`` URL as it is (see :func:`comm_url`)."""
        return cls(await Socket.connect(url, token, headers))

    @classmethod
    async def _start(
        cls, url: str, token: str | None, session: bool, **callbacks: Any
    ) -> CommClient:
        if session:
            return cls(await ResumableSocket.start(url, token=token, **callbacks))
        return cls(await Socket.connect(url, token))

    # -- the session ---------------------------------------------------------------------------

    @property
    def resumable(self) -> ResumableSocket | None:
        return self.link if isinstance(self.link, ResumableSocket) else None

    @property
    def outcome(self) -> Outcome | None:
        """How the latest connection began (None without a session)."""
        return self.resumable.hello.outcome if self.resumable else None

    @property
    def reason(self) -> Reason | None:
        """Why the latest connection could not resume, if it could not."""
        return self.resumable.hello.reason if self.resumable else None

    @property
    def comm_id(self) -> str | None:
        """The comm's id, as the session's first frame said it (None without a session)."""
        return self.resumable.hello.comm_id if self.resumable else None

    @property
    def client_id(self) -> str | None:
        """The id the kernel knows this client by (None without a session)."""
        return self.resumable.hello.client_id if self.resumable else None

    @property
    def lost(self) -> int:
        """How many kernel messages on the comm the server said never reached it (sessions)."""
        return self.resumable.session.lost if self.resumable else 0

    @property
    def roster(self) -> dict[str, dict[str, Any]]:
        """Who is on the comm, by client id (sessions with ``presence="1"``; else empty)."""
        return self.resumable.session.roster if self.resumable else {}

    @property
    def reconnects(self) -> int:
        return self.resumable.reconnects if self.resumable else 0

    # -- messages ------------------------------------------------------------------------------

    @property
    def connection(self) -> WebSocketClientConnection:
        """The current WebSocket connection."""
        link = self.link
        socket = link.socket if isinstance(link, ResumableSocket) else link
        assert socket is not None
        return socket.connection

    async def send(self, data: Any, buffers: Buffers = ()) -> None:
        """Send one comm message (buffers as binary parts, never copied into one)."""
        await self.link.send(data, buffers)

    async def send_frame(self, frame: str | bytes) -> None:
        """Send a raw frame."""
        await self.link.send_frame(frame)

    async def recv(self) -> Message:
        """The next comm message; :class:`CommClosed` once the comm has ended.

        Its buffers are views of the frame, as jupyter_client's are of the kernel's message.
        """
        return await self.link.recv()

    def __aiter__(self) -> CommClient:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.recv()
        except CommClosed:
            raise StopAsyncIteration from None

    # -- the end -------------------------------------------------------------------------------

    @property
    def close_code(self) -> int | None:
        return self.link.close_code

    @property
    def close_reason(self) -> str | None:
        return self.link.close_reason

    def start_closing(self, code: int = CloseCode.COMM_CLOSED) -> None:
        """Send the close frame; whoever reads sees the end of the messages next."""
        self.link.start_closing(code)

    async def close(self, code: int = CloseCode.COMM_CLOSED) -> None:
        """Close the comm's socket (and, if this client opened the comm, the comm) and wait for
        it."""
        await self.link.close(code)

    async def __aenter__(self) -> CommClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
