"""The bridge's view of a kernel: one jupyter_client kernel client, seen through a small protocol.

The bridge relies only on what jupyter_server's gateway kernel client offers too (channels with
``get_msg`` and ``send``, the client's ``session``), so kernels behind a gateway work the same
way as local ones. For local kernels, iopub is read straight from its ZMQ socket (the fast path:
unwanted messages are dropped after their header), and control serves kernel subshells.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Callable, Collection
from hmac import compare_digest
from queue import Empty
from typing import Any, Protocol

import zmq
from jupyter_server.gateway.managers import GatewayKernelClient
from tornado.ioloop import IOLoop

from .errors import KernelFault, KernelTimeout
from .framing import Buffers

KERNEL_INFO_REQUEST = "kernel_info_request"
COMM_INFO_REQUEST = "comm_info_request"
STATUS = "status"
NUDGE_INTERVAL = 0.5  # seconds between kernel_info_requests while waiting for iopub
# pyzmq's asyncio sockets can miss the wakeup for a message that is already there (the ZMQ file
# descriptor is edge-triggered, and a send on the same socket can consume the edge): the reply
# then sits in the socket until something else happens on it. Every wait is cut into slices
# this long, and each new wait looks at the socket first, so such a message waits one slice at
# most instead of forever.
WAKEUP_GUARD = 0.1  # seconds
STOP_LINGER_MS = 100  # ms that what was sent just before stop() may take to go out
MAX_DRAIN = 256  # iopub messages read in one go before other work gets a turn
HEAD_PARTS = 5  # signature, header, parent header, metadata, content; buffers follow


class KernelChannels(Protocol):
    """What the bridge needs of a kernel: send on shell, receive from iopub and shell."""

    async def start(self, timeout: float) -> None:
        """Connect, and return once iopub is known to deliver (or raise :class:`KernelTimeout`)."""

    async def next_iopub(self) -> dict[str, Any]:
        """The next message broadcast by the kernel."""

    async def next_shell(self) -> dict[str, Any]:
        """The next reply to a request this bridge sent."""

    def send(
        self,
        msg_type: str,
        content: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        buffers: Buffers = (),
        subshell_id: str | None = None,
    ) -> str:
        """Send a request on the shell channel (to a kernel subshell if given); its message id."""

    def send_control(self, msg_type: str, content: dict[str, Any]) -> str:
        """Send a request on the control channel; return its message id."""

    async def control_request(
        self, msg_type: str, content: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        """Send a control request and await its reply (:class:`KernelTimeout` after ``timeout``)."""

    def stop(self) -> None:
        """Close the channels (what was sent just before still goes out)."""


class ClientChannels:
    """:class:`KernelChannels` over a ``jupyter_client`` kernel client (``km.client()``).

    ``iopub_types``, if given, are the only iopub message types :meth:`next_iopub` returns
    (besides ``status``, which :meth:`start` waits for). For a local kernel, iopub is a ZMQ
    socket of the bridge's own, drained whenever it is readable (no future per message), and the
    other types are dropped after reading their headers alone: a kernel publishes two ``status``
    messages for every request, and fully deserializing them (JSON of every part, dates parsed
    with dateutil) cost the bridge more than the comm messages it routes. A gateway kernel's
    iopub comes through its client's channel.

    ``observe_iopub``, if set, sees every iopub message read over ZMQ, wanted or not, unverified:
    its type, its parent's type, and its content still packed.
    """

    def __init__(
        self, client: Any, iopub_types: Collection[str] | None = None, *, control: bool = False
    ) -> None:
        self.client = client
        self.control = control  # whether to open the control channel (for subshell requests)
        self.iopub_types = None if iopub_types is None else frozenset(iopub_types) | {STATUS}
        self.observe_iopub: Callable[[str, str | None, bytes], None] | None = None
        self._local = not isinstance(client, GatewayKernelClient)
        self._iopub_socket: zmq.Socket[Any] | None = None  # local kernels: our subscriber
        self._iopub: zmq.Socket[Any] | None = None  # a blocking view of it
        self._iopub_fd = -1  # the descriptor that says it has messages
        self._iopub_received: deque[list[zmq.Frame]] = deque()
        self._iopub_wake: asyncio.Future[None] | None = None

    async def start(self, timeout: float) -> None:
        if self._local:
            self._open_iopub()
        started = self.client.start_channels(
            shell=True, iopub=not self._local, stdin=False, hb=False, control=self.control
        )
        if inspect.isawaitable(started):  # the gateway client starts asynchronously
            await started
        try:
            await asyncio.wait_for(self._nudge(), timeout)
        except asyncio.TimeoutError:
            raise KernelTimeout(f"the kernel did not answer within {timeout} s") from None

    def _open_iopub(self) -> None:
        # A socket made by jupyter_client, its asyncio API unused: read without blocking by a
        # handler of our own on the event loop.
        self._iopub_socket = self.client.connect_iopub()
        self._iopub = zmq.Socket.shadow(self._iopub_socket.underlying)
        self._iopub_fd = self._iopub.FD
        IOLoop.current().add_handler(self._iopub_fd, self._on_iopub, IOLoop.READ)
        self._on_iopub()  # what came before the handler

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
                self._iopub_received.append(_recv_frames(socket))
            except zmq.Again:
                break
        else:
            IOLoop.current().add_callback(self._on_iopub)
        wake = self._iopub_wake
        if self._iopub_received and wake is not None and not wake.done():
            wake.set_result(None)

    async def _nudge(self) -> None:
        """Send kernel_info_requests until iopub shows a status caused by one of them.

        An iopub subscription takes effect some time after it is made; messages the kernel
        publishes before then are lost. jupyter_server nudges its own kernel sockets the same way.
        """
        while True:
            msg_id = self.send(KERNEL_INFO_REQUEST, {})
            deadline = asyncio.get_running_loop().time() + NUDGE_INTERVAL
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                try:
                    msg = await asyncio.wait_for(self.next_iopub(), left)
                except asyncio.TimeoutError:
                    break
                if msg["msg_type"] == STATUS and msg["parent_header"].get("msg_id") == msg_id:
                    return

    async def next_iopub(self) -> dict[str, Any]:
        while True:
            if not self._local:
                msg = await _next_msg(self.client.iopub_channel)
                if self.iopub_types is None or msg["msg_type"] in self.iopub_types:
                    return msg
                continue
            while not self._iopub_received:
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

    async def next_shell(self) -> dict[str, Any]:
        return await _next_msg(self.client.shell_channel)

    def send(
        self,
        msg_type: str,
        content: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        buffers: Buffers = (),
        subshell_id: str | None = None,
    ) -> str:
        msg = self.client.session.msg(msg_type, content, metadata=metadata)
        if subshell_id is not None:
            msg["header"]["subshell_id"] = subshell_id  # JEP 91
        if buffers:
            msg["buffers"] = list(buffers)
        self.client.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    def send_control(self, msg_type: str, content: dict[str, Any]) -> str:
        msg = self.client.session.msg(msg_type, content)
        self.client.control_channel.send(msg)
        return msg["header"]["msg_id"]

    async def control_request(
        self, msg_type: str, content: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        msg_id = self.send_control(msg_type, content)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                left = deadline - asyncio.get_running_loop().time()
                reply = await _next_msg(self.client.control_channel, left)
            except Empty:
                raise KernelTimeout(f"no reply to {msg_type} within {timeout} s") from None
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply

    def stop(self) -> None:
        if self._iopub_socket is not None:
            IOLoop.current().remove_handler(self._iopub_fd)
            self._iopub_socket.close(linger=0)
            self._iopub = self._iopub_socket = None
        # jupyter_client closes its sockets with linger 0, dropping what is still queued (a
        # comm_close, a delete_subshell_request): close ours first, letting that go out.
        channels = [self.client.shell_channel]
        if self.control:
            channels.append(self.client.control_channel)
        for channel in channels:
            socket = getattr(channel, "socket", None)
            if isinstance(socket, zmq.Socket) and not socket.closed:
                socket.close(linger=STOP_LINGER_MS)
        self.client.stop_channels()


def _recv_frames(socket: zmq.Socket[Any]) -> list[zmq.Frame]:
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


async def _next_msg(channel: Any, timeout: float | None = None) -> dict[str, Any]:
    """The channel's next message within ``timeout`` seconds (None: no limit), else :class:`Empty`.

    It waits in slices of ``WAKEUP_GUARD``, each of which looks at the socket anew (see there).
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        left = WAKEUP_GUARD if deadline is None else min(WAKEUP_GUARD, deadline - loop.time())
        if left <= 0:
            raise Empty
        try:
            return await channel.get_msg(timeout=left)  # type: ignore[no-any-return]
        except Empty:
            continue
