"""The bridge's view of a kernel's channels: one small protocol, an adapter per kind of kernel.

:class:`~.local.ZmqChannels` reads a local kernel's ZMQ sockets; :class:`~.gateway.
GatewayChannels` speaks to a kernel behind a gateway through jupyter_server's gateway client.
:func:`open_channels` picks the adapter that fits a kernel client.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from jupyter_client.session import Session
from jupyter_server.gateway.gateway_client import GatewayClient
from jupyter_server.gateway.managers import GatewayKernelManager

from ..framing import Buffers
from .base import IopubObserver
from .gateway import GatewayChannels
from .local import ZmqChannels

__all__ = ["GatewayChannels", "IopubObserver", "KernelChannels", "ZmqChannels", "open_channels"]


class KernelChannels(Protocol):
    """What the bridge needs of a kernel: requests and comm messages out, iopub in."""

    async def start(self, timeout: float) -> None:
        """Connect, and return once iopub is known to deliver (or raise ``KernelTimeout``)."""

    async def next_iopub(self) -> dict[str, Any]:
        """The next message broadcast by the kernel (``KernelFault`` once the channels fail)."""

    def send(
        self,
        msg_type: str,
        content: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        buffers: Buffers = (),
        header: Mapping[str, str] | None = None,
    ) -> str:
        """Send a message on the shell channel, with extra ``header`` fields if given (JEP 91's
        ``subshell_id``, a ``comm_close``'s ``comm_id``); its id."""

    async def request(
        self, msg_type: str, content: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        """Send a shell request and await its reply (``KernelTimeout`` after ``timeout``)."""

    def send_control(self, msg_type: str, content: dict[str, Any]) -> str:
        """Send a request on the control channel, not waiting for its reply; its id."""

    async def control_request(
        self, msg_type: str, content: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        """Send a control request and await its reply (``KernelTimeout`` after ``timeout``)."""

    def stop(self) -> None:
        """Close the channels (what was sent just before still goes out)."""


def open_channels(
    kernel: Any,
    session: Session,
    *,
    log: logging.Logger,
    iopub_types: Collection[str] | None = None,
    observe_iopub: IopubObserver | None = None,
    iopub_hwm: int = 1000,
    max_message_bytes: int = 10 * 1024 * 1024,
    ping_interval: float = 0,
    ping_timeout: float | None = None,
) -> KernelChannels:
    """The adapter for ``kernel`` (a kernel manager of jupyter_server's), talking as ``session``.

    ``iopub_types``: the only iopub message types :meth:`~KernelChannels.next_iopub` returns
    (besides ``status``); ``observe_iopub``: sees every iopub message of a local kernel (see
    :data:`IopubObserver`);
    ``iopub_hwm``: the iopub messages a local kernel's socket holds unread;
    ``max_message_bytes``, ``ping_interval``, ``ping_timeout``: of a gateway connection.
    """
    if isinstance(kernel, GatewayKernelManager):
        return GatewayChannels(
            str(kernel.kernel_id),
            session,
            GatewayClient.instance(),
            iopub_types,
            log=log,
            max_message_bytes=max_message_bytes,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
        )
    client = kernel.client(session=session)
    return ZmqChannels(client, iopub_types, observe_iopub=observe_iopub, iopub_hwm=iopub_hwm)
