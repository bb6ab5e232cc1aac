"""A multiplexed socket: one WebSocket for many comms of a kernel (contract v2).

The socket is a client of its own on each comm it is on (:class:`MuxComm`, the bridge's sink for
that client), and a :class:`~.sinks.Follower` of the targets its ``follow`` parameters name, so
the comms the kernel opens later join it. Frames are :mod:`.mux`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from tornado import web

from . import mux
from .actions import Opened
from .base import AUTH_RESOURCE, EXECUTE, FRAMES_PARAM, READ, SESSION_PARAM
from .bridge import KernelBridge
from .errors import CloseCode, CommExists, CommNotFound, ReadOnly, TransportsError
from .framing import Buffers, OutgoingFrame, utf8_size
from .router import Subscriber
from .socket_base import BridgedSocketHandler
from .writer import enveloped_pieces, object_pieces

MUX_KEY = "websocket mux"  # a frame's encoding for multiplexed sockets (OutgoingFrame.encoded)
COMM_CODES = frozenset({CloseCode.COMM_CLOSED, CloseCode.NO_SUCH_COMM})  # end one comm only
NOT_ALLOWED = "comm target {!r} is not allowed"


class MuxComm:
    """One comm of a multiplexed socket: the bridge's sink for the socket's client on it."""

    def __init__(self, socket: MuxSocketHandler, client: Subscriber) -> None:
        self.socket = socket
        self.client = client

    def deliver(self, frame: OutgoingFrame) -> None:
        self.socket.send(enveloped_pieces(frame, MUX_KEY, self._head))

    def _head(self, frame: OutgoingFrame) -> str:
        return mux.message(frame, self.client.comm_id)

    def close(self, code: CloseCode, reason: str) -> None:
        if code in COMM_CODES:
            self.socket.comm_ended(self.client.comm_id, code, reason)
        else:  # the kernel went away, or the server stops: the whole socket ends
            self.socket.close(code, reason)

    def lost(self, count: int) -> None:
        self.socket.send(object_pieces(mux.lost(self.client.comm_id, count)))

    def presence(self, frame: str) -> None:
        """Roster frames are for durable sessions."""


class MuxSocketHandler(BridgedSocketHandler):
    """``…/kernels/{kernel_id}/comms`` with an upgrade: many comms on one socket."""

    socket: Subscriber  # the socket's own id and user; each comm's client is derived from it
    follows: frozenset[str] = frozenset()
    comms: dict[str, MuxComm]  # the comms the socket is on, by id

    def get_compression_options(self) -> None:
        """Frames are written as built, once for every socket (no per-message compression)."""

    @ws_authenticated
    @authorized(READ, resource=AUTH_RESOURCE)
    async def get(self, kernel_id: str) -> None:  # type: ignore[override]
        self.check_query_size()
        for name in (FRAMES_PARAM, SESSION_PARAM):
            if self.get_query_argument(name, None) is not None:
                raise web.HTTPError(400, f"a multiplexed socket takes no {name}")
        follows = self.get_query_arguments(mux.FOLLOW_PARAM)
        if not all(follows):
            raise web.HTTPError(400, "follow names a comm target: it cannot be empty")
        self.follows = frozenset(follows)
        await self.check_kernel(kernel_id)
        can_send = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, EXECUTE, AUTH_RESOURCE)
        )
        self.socket = self.new_client(can_send=can_send)
        self.query = self.comm_open_query()
        self.comms = {}
        await self.upgrade(kernel_id, check=self.list_comms)

    async def list_comms(self, bridge: KernelBridge) -> None:
        """Learn the kernel's comms (of followed targets) before the upgrade."""
        if self.follows:
            await bridge.comms.refresh()

    def open(self, *args: str, **kwargs: str) -> None:
        super().open(*args, **kwargs)
        bridge = self.bridge
        assert bridge is not None
        try:
            bridge.follow(self, self.follows)
            listed = bridge.comms_of(self.follows, self.socket.user)
            on = [(comm_id, target) for comm_id, target in listed if self.join(comm_id)]
        except TransportsError as e:
            self.close(e.close_code, str(e))
            return
        self.send_text(mux.hello(self.socket.id, self.socket.can_send, on))
        self.log.debug("Multiplexed socket %s connected on %d comms", self.socket.id, len(on))

    def join(self, comm_id: str) -> bool:
        """Be on an existing comm; False if it is gone or not this user's."""
        assert self.bridge is not None
        sink = MuxComm(self, self.client_on(comm_id))
        try:
            self.bridge.attach(sink.client, sink)
        except CommNotFound:
            return False
        self.comms[comm_id] = sink
        return True

    def client_on(self, comm_id: str) -> Subscriber:
        return dataclasses.replace(
            self.socket, id=mux.client_id(self.socket.id, comm_id), comm_id=comm_id
        )

    # -- the bridge's follower -------------------------------------------------------------------

    def kernel_opened(self, opened: Opened) -> None:
        head = mux.opened(opened.comm_id, opened.target_name, opened.data, opened.metadata)
        self.send(object_pieces(head, opened.buffers))
        self.join(opened.comm_id)

    def comm_ended(self, comm_id: str, code: int, reason: str) -> None:
        """The socket is no longer on the comm (the bridge forgot its client already)."""
        self.comms.pop(comm_id, None)
        self.send_text(mux.closed(comm_id, code, reason))

    # -- the client's frames ---------------------------------------------------------------------

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        if self.bridge is None or self.closed_by_server:
            return None  # closed by the server; frames the client sent meanwhile go nowhere
        try:
            frame = mux.decode_client_frame(message)
            if not isinstance(frame, mux.Attach | mux.Detach) and not self.socket.can_send:
                raise ReadOnly("this client may only receive")
            return self.paced(self.handle(frame, utf8_size(message)))
        except TransportsError as e:
            self.log.warning(
                "Closing multiplexed socket %s (%d): %s", self.socket.id, e.close_code, e
            )
            self.close(e.close_code, str(e))
            return None

    def handle(self, frame: mux.ClientFrame, size: int) -> Awaitable[None] | None:
        """Carry out one frame; what to await before reading the next (an attach, or room)."""
        bridge = self.bridge
        assert bridge is not None
        if isinstance(frame, mux.Attach):
            return self.attach(bridge, frame.comm_id)
        sink = self.comms.get(frame.comm_id)
        if isinstance(frame, mux.Open):
            self.open_comm(bridge, frame)
        elif sink is None:
            if not isinstance(frame, mux.Detach):
                self.comm_ended(frame.comm_id, CloseCode.NO_SUCH_COMM, "not on this comm")
        elif isinstance(frame, mux.Message):
            bridge.send(sink.client.id, frame.data, frame.buffers, size)
            return bridge.room(sink.client.id)
        elif isinstance(frame, mux.CloseComm):
            bridge.close_comm(frame.comm_id)  # our close frame comes with everyone's
        else:  # detach
            del self.comms[frame.comm_id]
            bridge.leave(sink.client.id)
        return None

    async def attach(self, bridge: KernelBridge, comm_id: str) -> None:
        if comm_id not in self.comms:
            try:
                await bridge.comms.require(comm_id, self.socket.user)
            except CommNotFound as e:
                self.comm_ended(comm_id, CloseCode.NO_SUCH_COMM, str(e))
                return
            if self.bridge is not bridge:
                return  # the socket closed meanwhile
            if not self.join(comm_id):
                self.comm_ended(comm_id, CloseCode.NO_SUCH_COMM, f"no comm {comm_id}")
                return
        self.send_text(mux.attached(comm_id, bridge.router.comms[comm_id].target_name))

    def open_comm(self, bridge: KernelBridge, frame: mux.Open) -> None:
        allowed = self.extensionapp.allowed_targets  # type: ignore[attr-defined]
        if allowed is not None and frame.target_name not in allowed:
            self.comm_ended(
                frame.comm_id, CloseCode.NOT_ALLOWED, NOT_ALLOWED.format(frame.target_name)
            )
            return
        sink = MuxComm(self, self.client_on(frame.comm_id))
        try:
            bridge.open_comm(
                sink.client,
                sink,
                frame.target_name,
                frame.data,
                self.query,
                metadata=frame.metadata,
                buffers=frame.buffers,
            )
        except CommExists as e:
            self.comm_ended(frame.comm_id, e.close_code, str(e))
            return
        self.comms[frame.comm_id] = sink

    # -- writing ---------------------------------------------------------------------------------

    def send(self, pieces: Any) -> None:
        if self.writer is not None:
            self.writer.send(pieces)

    def send_text(self, head: str, buffers: Buffers = ()) -> None:
        self.send(object_pieces(head, buffers))

    def awaits_answers(self) -> bool:
        bridge = self.bridge
        return bridge is not None and any(
            bridge.awaits_answers(sink.client.id) for sink in self.comms.values()
        )

    def leave_bridge(self, bridge: KernelBridge) -> None:
        bridge.unfollow(self)
        comms, self.comms = self.comms, {}
        for sink in comms.values():
            bridge.leave(sink.client.id)

    def on_close(self) -> None:
        self.log.debug("Multiplexed socket %s closed", self.socket.id)
        super().on_close()
