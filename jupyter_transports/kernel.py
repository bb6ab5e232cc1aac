"""The kernel side of the bridge: one jupyter_client kernel client, seen through a small protocol.

Only what jupyter_server's gateway kernel client offers too is used (channels with ``get_msg`` and
``send``, and the client's ``session`` to build messages), so kernels behind a gateway work the
same way as local ones.
"""

from __future__ import annotations

import asyncio
import inspect
from queue import Empty
from typing import Any, Protocol

from .errors import KernelTimeout
from .framing import Buffers

KERNEL_INFO_REQUEST = "kernel_info_request"
COMM_INFO_REQUEST = "comm_info_request"
STATUS = "status"
NUDGE_INTERVAL = 0.5  # seconds between kernel_info_requests while waiting for iopub
RECHECK_INTERVAL = 0.2  # seconds: the latest a message whose wake-up was lost is read


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
    ) -> str:
        """Send a request on the shell channel; return its message id."""

    def stop(self) -> None:
        """Close the channels."""


class ClientChannels:
    """:class:`KernelChannels` over a ``jupyter_client`` kernel client (``km.client()``)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def start(self, timeout: float) -> None:
        started = self.client.start_channels(shell=True, iopub=True, stdin=False, hb=False)
        if inspect.isawaitable(started):  # the gateway client starts asynchronously
            await started
        try:
            await asyncio.wait_for(self._nudge(), timeout)
        except asyncio.TimeoutError:
            raise KernelTimeout(f"the kernel did not answer within {timeout} s") from None

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
                    msg = await self.client.iopub_channel.get_msg(timeout=left)
                except Empty:
                    break
                if msg["msg_type"] == STATUS and msg["parent_header"].get("msg_id") == msg_id:
                    return

    async def next_iopub(self) -> dict[str, Any]:
        return await _next_msg(self.client.iopub_channel)

    async def next_shell(self) -> dict[str, Any]:
        return await _next_msg(self.client.shell_channel)

    def send(
        self,
        msg_type: str,
        content: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        buffers: Buffers = (),
    ) -> str:
        msg = self.client.session.msg(msg_type, content, metadata=metadata)
        if buffers:
            msg["buffers"] = list(buffers)
        self.client.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    def stop(self) -> None:
        self.client.stop_channels()


async def _next_msg(channel: Any) -> dict[str, Any]:
    """The channel's next message, even if the socket's wake-up was lost.

    A ZMQ socket signals readiness edge-triggered, and another operation on the socket (the
    bridge sends requests on shell while it waits for replies) can consume the signal: pyzmq
    re-arms only its pending receives after a send, not a pending poll (``get_msg``), and the
    message then sits unread. Seen in the tests as a comm_info_reply that never came (the
    socket's ZMQ_EVENTS said POLLIN). Waiting in short polls makes each timeout re-check the
    socket itself, so such a message is late by at most ``RECHECK_INTERVAL``.
    """
    while True:
        try:
            return await channel.get_msg(timeout=RECHECK_INTERVAL)  # type: ignore[no-any-return]
        except Empty:
            continue
