"""A gateway kernel's channels, through jupyter_server's gateway kernel client (its websocket)."""

from __future__ import annotations

from queue import Empty
from typing import Any

from .base import WAKEUP_GUARD, ClientChannels, next_msg


class GatewayChannels(ClientChannels):
    """:class:`~jupyter_transports.channels.KernelChannels` of a kernel behind a gateway: iopub
    comes through the client's own iopub channel."""

    async def next_iopub(self) -> dict[str, Any]:
        while True:
            if self.failure is not None:
                raise self.failure
            try:
                msg = await next_msg(self.client.iopub_channel, WAKEUP_GUARD)
            except Empty:
                continue  # look at the failure again
            if self.iopub_types is None or msg["msg_type"] in self.iopub_types:
                return msg
