"""A local kernel's channels: iopub read straight from a ZMQ socket of the bridge's own.

A handler on the event loop drains iopub whenever it is readable (no future per message), and
messages of unwanted types are dropped after their header alone is read: a kernel publishes two
``status`` messages for every request, and fully deserializing them (JSON of every part, dates
parsed) would cost more than the comm messages the bridge routes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Collection
from hmac import compare_digest
from typing import Any

import zmq
from tornado.ioloop import IOLoop

from ..errors import KernelFault
from .base import ClientChannels, IopubObserver

IOPUB_HWM = 1000  # ZMQ's default
IOPUB_RCVBUF = 8 * 1024 * 1024  # bytes of the iopub connection's TCP receive buffer
MAX_DRAIN = 256  # iopub messages read in one go before other work gets a turn
HEAD_PARTS = 5  # signature, header, parent header, metadata, content; buffers follow


class ZmqChannels(ClientChannels):
    """:class:`~jupyter_transports.channels.KernelChannels` of a kernel reached over ZMQ.

    ``observe_iopub``, if given, sees every iopub message, wanted or not, unverified.
    ``iopub_hwm``: ZMQ drops what a kernel publishes past this many messages the bridge has
    not read yet; a kernel's bursts can outrun the bridge's reading for a moment.
    """

    def __init__(
        self,
        client: Any,
        iopub_types: Collection[str] | None = None,
        *,
        observe_iopub: IopubObserver | None = None,
        iopub_hwm: int = IOPUB_HWM,
    ) -> None:
        super().__init__(client, iopub_types)
        self.observe_iopub = observe_iopub
        self.iopub_hwm = iopub_hwm  # messages the bridge's iopub socket holds before dropping
        self._iopub_socket: zmq.Socket[Any] | None = None  # made by jupyter_client
        self._iopub: zmq.Socket[Any] | None = None  # a blocking view of it
        self._iopub_fd = -1  # the descriptor that says it has messages
        self._iopub_received: deque[list[zmq.Frame]] = deque()
        self._iopub_wake: asyncio.Future[None] | None = None

    def _start_iopub(self) -> bool:
        # A socket made by jupyter_client, its asyncio API unused: read without blocking by a
        # handler of our own on the event loop.
        self._iopub_socket = socket = self.client.connect_iopub()
        # Room for a kernel's bursts (the kernel's own socket holds 1,000 messages, then drops):
        # a high-water mark and a TCP buffer of their own, in place before the connection is
        # made, so the socket is connected again with them (jupyter_client's options kept).
        endpoint = socket.LAST_ENDPOINT.decode()
        socket.disconnect(endpoint)
        socket.rcvhwm = self.iopub_hwm
        socket.rcvbuf = IOPUB_RCVBUF
        socket.connect(endpoint)
        self._iopub = zmq.Socket.shadow(self._iopub_socket.underlying)
        self._iopub_fd = self._iopub.FD
        IOLoop.current().add_handler(self._iopub_fd, self._on_iopub, IOLoop.READ)
        self._on_iopub()  # what came before the handler
        return True

    def _on_iopub(self, *_event: Any) -> None:
        """Receive what is ready, up to ``MAX_DRAIN`` messages, and wake :meth:`next_iopub`.

        ZMQ's descriptor signals again only once the socket has been read empty, so a batch that
        stops short reschedules itself.
        """
        socket = self._iopub
        if socket is None or socket.closed:
            return
        for _ in range(MAX_DRAIN):
            try:
                self._iopub_received.append(recv_frames(socket))
            except zmq.Again:
                break
        else:
            IOLoop.current().add_callback(self._on_iopub)
        if self._iopub_received:
            self._interrupt_iopub()

    def _interrupt_iopub(self) -> None:
        wake = self._iopub_wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def next_iopub(self) -> dict[str, Any]:
        while True:
            while not self._iopub_received:
                if self.failure is not None:
                    raise self.failure
                self._iopub_wake = asyncio.get_running_loop().create_future()
                try:
                    await self._iopub_wake
                finally:
                    self._iopub_wake = None
            parsed = self._parse(self._iopub_received.popleft())
            if parsed is not None:
                return parsed

    def _parse(self, parts: list[zmq.Frame]) -> dict[str, Any] | None:
        """A message dict as ``Session.deserialize`` makes, or None for a type not wanted.

        The headers are read first and unwanted messages are dropped unverified (they are never
        acted on); wanted ones are verified as jupyter_client does. Dates are left as the
        strings they are (the bridge reads none), and buffers are zero-copy views of the frames.
        """
        session = self.client.session
        _, parts = session.feed_identities(parts, copy=False)
        if len(parts) < HEAD_PARTS:
            raise KernelFault(f"malformed iopub message of {len(parts)} parts")
        head = [part.bytes for part in parts[:HEAD_PARTS]]
        header = session.unpack(head[1])
        msg_type = header["msg_type"]
        parent_header = session.unpack(head[2])
        if self.observe_iopub is not None:
            self.observe_iopub(msg_type, parent_header.get("msg_type"), head[4])
        if self.iopub_types is not None and msg_type not in self.iopub_types:
            return None
        if session.auth is not None and not compare_digest(head[0], session.sign(head[1:])):
            raise KernelFault("iopub message with an invalid signature")
        return {
            "header": header,
            "msg_id": header["msg_id"],
            "msg_type": msg_type,
            "parent_header": parent_header,
            "metadata": session.unpack(head[3]),
            "content": session.unpack(head[4]),
            "buffers": [part.buffer for part in parts[HEAD_PARTS:]],
        }

    def stop(self) -> None:
        if self._iopub_socket is not None:
            IOLoop.current().remove_handler(self._iopub_fd)
            self._iopub_socket.close(linger=0)
            self._iopub = self._iopub_socket = None
        super().stop()


def recv_frames(socket: zmq.Socket[Any]) -> list[zmq.Frame]:
    """The next message's parts as zero-copy frames, or :class:`zmq.Again` if there is none.

    Half the cost of ``recv_multipart``, which asks the socket (``getsockopt``) after each part
    whether more follow; a frame knows. A message arrives whole, so its other parts never block.
    """
    frame = socket.recv(zmq.NOBLOCK, copy=False)
    frames = [frame]
    while frame.more:
        frame = socket.recv(zmq.NOBLOCK, copy=False)
        frames.append(frame)
    return frames
