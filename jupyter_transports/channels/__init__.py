"""The bridge's view of a kernel's channels: one small protocol, an adapter per kind of kernel.

:class:`~.local.ZmqChannels` reads a local kernel's ZMQ sockets; :class:`~.gateway.
GatewayChannels` speaks to a kernel behind a gateway through jupyter_server's gateway client.
:func:`open_channels` picks the adapter that fits a kernel client.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

from jupyter_server.gateway.managers import GatewayKernelClient

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
        subshell_id: str | None = None,
    ) -> str:
        """Send a message on the shell channel (to a kernel subshell if given); its id."""

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
    client: Any,
    *,
    iopub_types: Collection[str] | None = None,
    control: bool = False,
    observe_iopub: IopubObserver | None = None,
) -> KernelChannels:
    """The adapter for ``client`` (a ``jupyter_client`` kernel client, not yet started).

    ``iopub_types``: the only iopub message types :meth:`~KernelChannels.next_iopub` returns
    (besides ``status``); ``control``: open the control channel (for subshell requests);
    ``observe_iopub``: sees every iopub message of a local kernel (see :data:`IopubObserver`).
    """
    if isinstance(client, GatewayKernelClient):
        return GatewayChannels(client, iopub_types, control=control)
    return ZmqChannels(client, iopub_types, control=control, observe_iopub=observe_iopub)
