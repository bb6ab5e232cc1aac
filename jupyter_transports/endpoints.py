"""The two WebSocket endpoints: what each handshake checks, and how its socket joins the bridge.

``…/targets/{target_name}`` opens a new comm owned by the socket; ``…/comms/{comm_id}`` attaches
to one that exists. Everything else a socket does is :class:`~.websocket.CommSocketHandler`'s.
"""

from __future__ import annotations

from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from tornado import web

from .base import AUTH_RESOURCE, DATA_PARAM, EXECUTE, READ
from .bridge import KernelBridge
from .errors import BadFrame
from .framing import loads
from .websocket import CommSocketHandler


class NewCommHandler(CommSocketHandler):
    """``…/targets/{target_name}``: open a new comm, owned by this socket."""

    @ws_authenticated
    @authorized(EXECUTE, resource=AUTH_RESOURCE)
    async def get(self, kernel_id: str, target_name: str) -> None:  # type: ignore[override]
        await self.parse_common(kernel_id)
        self.check_target(target_name)
        self.target_name = target_name
        self.data = self.parse_data()
        self.query = self.comm_open_query()
        self.client = self.new_client()
        await self.upgrade(kernel_id, target_name)

    def parse_data(self) -> Any:
        text = self.get_query_argument(DATA_PARAM, None)
        if text is None:
            return {}
        try:
            return self.check_open_data(loads(text))
        except BadFrame as e:
            raise web.HTTPError(400, f"data is {e}") from None

    def open(self, *args: str, **kwargs: str) -> None:
        super().open(*args, **kwargs)
        bridge = self.bridge
        assert bridge is not None
        self.subscribe(
            lambda client, sink: bridge.open_comm(
                client, sink, self.target_name, self.data, self.query
            )
        )


class AttachHandler(CommSocketHandler):
    """``…/comms/{comm_id}``: receive (and, with ``execute``, send on) an existing comm."""

    @ws_authenticated
    @authorized(READ, resource=AUTH_RESOURCE)
    async def get(self, kernel_id: str, comm_id: str) -> None:  # type: ignore[override]
        await self.parse_common(kernel_id)
        can_send = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, EXECUTE, AUTH_RESOURCE)
        )
        self.client = self.new_client(comm_id, can_send=can_send)
        if self.resuming is not None and self.resuming.subscriber.can_send and not can_send:
            raise web.HTTPError(403, "this session sends; this user may no longer send")
        await self.upgrade(kernel_id, comm_id, check=self.check_comm)

    async def check_comm(self, bridge: KernelBridge) -> None:
        """404 for a comm the kernel does not have, unless a live session resumes: it is told
        how its comm ended (after what was waiting for it), whenever that was."""
        if self.resuming is None:
            await bridge.comms.require(self.client.comm_id, self.client.user)

    def open(self, *args: str, **kwargs: str) -> None:
        super().open(*args, **kwargs)
        assert self.bridge is not None
        self.subscribe(self.bridge.attach)
