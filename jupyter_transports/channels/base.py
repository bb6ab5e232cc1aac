"""A ``jupyter_client`` kernel client's shell and control channels (requests paired with their
replies, a failure that ends the iopub stream), and the nudge every adapter starts with."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping
from queue import Empty
from typing import Any, Protocol

import zmq

from ..errors import KernelFault, KernelTimeout
from ..framing import Buffers
from ..protocol import KERNEL_INFO_REQUEST, STATUS

# (message type, its parent's type, its content still packed): every iopub message, unverified
IopubObserver = Callable[[str, str | None, bytes], None]

NUDGE_INTERVAL = 0.5  # seconds between kernel_info_requests while waiting for iopub
# pyzmq's asyncio sockets can miss the wakeup for a message that is already there (the ZMQ file
# descriptor is edge-triggered, and a send on the same socket can consume the edge): the message
# then sits in the socket until something else happens on it. Every wait is cut into slices
# this long, and each new wait looks at the socket first, so such a message waits one slice at
# most instead of forever.
WAKEUP_GUARD = 0.1  # seconds
STOP_LINGER_MS = 100  # ms that what was sent just before stop() may take to go out
CLOSED = "the kernel's channels closed"


class PendingReplies:
    """Requests sent and awaiting their replies, by msg id."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def wait(self, msg_id: str, msg_type: str, timeout: float) -> dict[str, Any]:
        """The reply to ``msg_id``, a ``msg_type`` (``KernelTimeout`` after ``timeout``)."""
        reply = self._waiting[msg_id] = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(reply, timeout)
        except asyncio.TimeoutError:
            raise KernelTimeout(f"no {msg_type} reply within {timeout} s") from None
        finally:
            self._waiting.pop(msg_id, None)

    def answer(self, msg: dict[str, Any]) -> None:
        """A reply came: to a request still waiting, or to nobody."""
        reply = self._waiting.get(msg["parent_header"].get("msg_id"))
        if reply is not None and not reply.done():
            reply.set_result(msg)

    def fail(self, failure: Exception) -> None:
        for reply in self._waiting.values():
            if not reply.done():
                reply.set_exception(failure)


class ClientChannels:
    """The shell and control half of a :class:`~jupyter_transports.channels.KernelChannels`
    over a kernel client; subclasses say how iopub is read."""

    def __init__(self, client: Any, iopub_types: Collection[str] | None = None) -> None:
        self.client = client
        self.iopub_types = None if iopub_types is None else frozenset(iopub_types) | {STATUS}
        self.failure: KernelFault | None = None  # why the channels stopped working, once they did
        self.replies = PendingReplies()
        self._shell_reader: asyncio.Task[None] | None = None

    # -- subclasses ----------------------------------------------------------------------------

    async def next_iopub(self) -> dict[str, Any]:
        raise NotImplementedError

    def _start_iopub(self) -> bool:
        """Open iopub before the client's channels start; True if the client must not open it."""
        return False

    def _interrupt_iopub(self) -> None:
        """Wake a pending :meth:`next_iopub`, which then raises :attr:`failure`."""

    # -- starting ------------------------------------------------------------------------------

    async def start(self, timeout: float) -> None:
        own_iopub = self._start_iopub()
        self.client.start_channels(
            shell=True, iopub=not own_iopub, stdin=False, hb=False, control=True
        )
        self._shell_reader = asyncio.create_task(self._read_shell())
        self._shell_reader.add_done_callback(self._shell_reader_done)
        try:
            await asyncio.wait_for(nudge(self), timeout)
        except asyncio.TimeoutError:
            raise KernelTimeout(f"the kernel did not answer within {timeout} s") from None

    # -- shell -----------------------------------------------------------------------------------

    def send(
        self,
        msg_type: str,
        content: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        buffers: Buffers = (),
        header: Mapping[str, str] | None = None,
    ) -> str:
        msg = self.client.session.msg(msg_type, content, metadata=metadata)
        if header:
            msg["header"].update(header)
        if buffers:
            msg["buffers"] = list(buffers)
        self.client.shell_channel.send(msg)
        return msg["header"]["msg_id"]  # type: ignore[no-any-return]

    async def request(
        self, msg_type: str, content: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        if self.failure is not None:
            raise self.failure
        return await self.replies.wait(self.send(msg_type, content), msg_type, timeout)

    async def _read_shell(self) -> None:
        while True:
            msg = await next_msg(self.client.shell_channel)
            self.replies.answer(msg)

    def _shell_reader_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            self._fail(KernelFault(f"the kernel's shell channel failed: {error!r}"), error)

    def _fail(self, failure: KernelFault, cause: BaseException | None = None) -> None:
        """The channels stopped working: fail every pending request, and iopub's reader."""
        if self.failure is not None:
            return
        failure.__cause__ = cause
        self.failure = failure
        self.replies.fail(failure)
        self._interrupt_iopub()

    # -- control -------------------------------------------------------------------------------

    def send_control(self, msg_type: str, content: dict[str, Any]) -> str:
        msg = self.client.session.msg(msg_type, content)
        self.client.control_channel.send(msg)
        return msg["header"]["msg_id"]  # type: ignore[no-any-return]

    async def control_request(
        self, msg_type: str, content: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        msg_id = self.send_control(msg_type, content)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                left = deadline - asyncio.get_running_loop().time()
                reply = await next_msg(self.client.control_channel, left)
            except Empty:
                raise KernelTimeout(f"no reply to {msg_type} within {timeout} s") from None
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply

    # -- stopping ------------------------------------------------------------------------------

    def stop(self) -> None:
        if self._shell_reader is not None:
            self._shell_reader.cancel()
        self._fail(KernelFault(CLOSED))
        # jupyter_client closes its sockets with linger 0, dropping what is still queued (a
        # comm_close, a delete_subshell_request): close ours first, letting that go out.
        for channel in (self.client.shell_channel, self.client.control_channel):
            socket = getattr(channel, "socket", None)
            if isinstance(socket, zmq.Socket) and not socket.closed:
                socket.close(linger=STOP_LINGER_MS)
        self.client.stop_channels()


class Nudgeable(Protocol):
    def send(self, msg_type: str, content: dict[str, Any]) -> str: ...

    def send_control(self, msg_type: str, content: dict[str, Any]) -> str: ...

    async def next_iopub(self) -> dict[str, Any]: ...


async def nudge(channels: Nudgeable) -> dict[str, Any]:
    """Send kernel_info_requests until iopub shows a status caused by one of them; that status.

    An iopub subscription takes effect some time after it is made; messages the kernel
    publishes before then are lost. jupyter_server nudges its own kernel sockets the same way,
    on shell and control: a kernel busy in a cell answers on control (ipykernel publishes a
    status for it too) while its shell waits for the cell to end.
    """
    loop = asyncio.get_running_loop()
    while True:
        sent = {
            channels.send(KERNEL_INFO_REQUEST, {}),
            channels.send_control(KERNEL_INFO_REQUEST, {}),
        }
        deadline = loop.time() + NUDGE_INTERVAL
        while (left := deadline - loop.time()) > 0:
            try:
                msg = await asyncio.wait_for(channels.next_iopub(), left)
            except asyncio.TimeoutError:
                break
            if msg["msg_type"] == STATUS and msg["parent_header"].get("msg_id") in sent:
                return msg


async def next_msg(channel: Any, timeout: float | None = None) -> dict[str, Any]:
    """The channel's next message within ``timeout`` seconds (None: no limit), else :class:`Empty`.

    It waits in slices of ``WAKEUP_GUARD``, each of which asks the channel anew (see there).
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
