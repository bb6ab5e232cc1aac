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
SHELL_POLL_INTERVAL = 0.25  # seconds: the longest a shell reply can wait for a lost wakeup


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
        return await self.client.iopub_channel.get_msg(timeout=None)

    async def next_shell(self) -> dict[str, Any]:
        """The next shell reply, polling at most ``SHELL_POLL_INTERVAL`` s at a time.

        The bridge sends on the shell socket while it waits to read from it. With zmq.asyncio a
        send can consume the socket's (edge-triggered) readiness signal, so a reply may sit
        unread with no wakeup to come; a poll that times out looks again and finds it.
        """
        while True:
            try:
                return await self.client.shell_channel.get_msg(timeout=SHELL_POLL_INTERVAL)
            except Empty:
                continue

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
